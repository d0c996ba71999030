/* `dreamstate plan`: predicts, before a job is queued, the step time, the communication share and the
 * memory per rank of data-parallel RWKV-7 training (`task: lm`) on N nodes, from measured compute
 * rates and an alpha-beta model of the gradient allreduce. It models what src/train/loop.c and
 * src/dist/dist.c do, so a change there may need a change here.
 *
 * Assumptions (also printed by `dreamstate plan --help`):
 *  - Ranks: p = nodes x ranks_per_node, each a full replica with `threads` threads; micro-batch and
 *    accumulation as the trainer: micro = train.micro_batch (0: batch_size / p), accum =
 *    batch_size / (p x micro), which must divide exactly.
 *  - Compute per rank and step = accum x micro x T x sec_per_token (forward + backward) + the
 *    trainer's per-parameter loops where it runs them: fp64 mode: per micro-step zeroing the gradient
 *    and adding it into the fp64 accumulator, per step zeroing the accumulator and converting the
 *    owned parameters back to fp32 (one rank with one micro-step skips the accumulator); fp32 mode:
 *    zeroing once per step; both: clipping and AdamW over the owned parameters (all of them, or ~1/p
 *    under ZeRO-1). Ranks of one node are assumed not to slow each other down (shared memory
 *    bandwidth and caches are ignored).
 *  - Rates: measured on this machine (--measure: the model's real forward + backward at 1 and 2 layers,
 *    extrapolated linearly in layers, with the matrix products in train.precision; the per-parameter
 *    loops on a 16M-parameter buffer), or defaults per thread measured for the 0.1B shape on the
 *    project's 2-core Zen 5 machine (README.md, Machine notes), fp32 or bf16: wider models run faster,
 *    small models far slower.
 *  - MFU = FLOPs per token x tokens/s / (ranks x the peak per rank of the precision in use: the FP32 FMA
 *    peak, or the bf16 dot-product peak in train.precision bf16), both measured with --measure
 *    (ds_measure_fma_peak, ds_measure_bf16_peak), else the dev machine's per thread.
 *  - Gradient allreduce: n_params x 8 bytes (train.grad_reduce fp64) or x 4 (fp32) in the trainer's
 *    8 MiB buckets; ring cost per bucket 2(p-1)/p x bytes / beta + 2(p-1) alpha. One node: the
 *    intra-node link (shared memory); one rank per node: the inter-node link; both: the slower of
 *    the two (a ring runs at its slowest link). Under ZeRO-1 the buckets are reduced to their owners
 *    ((p-1)/p x bytes / beta + (p-1) alpha each, like a reduce-scatter) and after the update the
 *    owners share the fp32 parameters (the same cost for n_params x 4 bytes, not overlapped).
 *  - Overlap: buckets are sent as backward finishes them (head first, then layers from the last,
 *    embedding last), one at a time over the link; backward time is split over head and layers by
 *    their FLOPs. Exposed communication = what is still in flight when backward ends. This assumes
 *    the MPI library progresses transfers while the rank computes; Open MPI does so only inside MPI
 *    calls, and over shared memory the copies need the cores that compute: on the 2-core dev machine
 *    a 2-rank run hid 46% of its allreduce where this model says 70% (`make bench`). Read `exposed`
 *    as a lower bound and the whole allreduce (`comm`) as the upper one.
 *  - Not counted: evaluation, checkpoints, data loading, start-up; other per-step collectives (a few
 *    8-byte allreduces).
 *  - Memory of rank 0 (the largest): parameters 4 + gradients 4 + fp64 accumulator 8 (fp64 only) +
 *    AdamW moments 8 bytes per owned parameter + under ZeRO-1 the full moments rank 0 gathers for
 *    checkpoints (8 bytes per parameter) + activations of one micro-batch
 *    (ds_rwkv7_activation_floats) + in bf16 the operands converted for the products (2 bytes x the
 *    largest activation and weight operands: micro x T x F and F x C, F = max(V, 4C)) + a fixed runtime
 *    overhead (MPI, BLIS, program). Fits: the ranks of one node together within the node's memory. */
#ifndef DREAMSTATE_PLAN_H
#define DREAMSTATE_PLAN_H

#include "dreamstate/config.h"
#include "dreamstate/rwkv7.h"

#include <stdint.h>

#define DS_PLAN_BUCKET_BYTES ((int64_t)8 << 20)   /* the trainer's gradient bucket (src/train/loop.c) */
#define DS_PLAN_RUNTIME_BYTES 1e8                 /* per rank beyond the model: MPI, BLIS, libraries (measured) */

/* Seconds per unit of work on one rank with its threads. The per-parameter costs are the trainer's
 * memory-bound loops; ds_plan_predict applies each where the trainer runs it. */
typedef struct ds_plan_rates {
    double sec_per_token;        /* forward + backward of one token through the whole model */
    double sec_zero;             /* zeroing the fp32 gradient (per micro-step in fp64 mode, else per step) */
    double sec_accumulate;       /* adding it into the fp64 accumulator (per micro-step) */
    double sec_reset;            /* zeroing the fp64 accumulator (per step) */
    double sec_convert;          /* fp64 -> fp32 after the reduction (per step, owned parameters) */
    double sec_optimizer;        /* sum of squares, clipping, AdamW (per step, owned parameters) */
} ds_plan_rates;

typedef struct ds_plan_link {
    double gbps;                 /* allreduce bus bandwidth beta, GB/s (1e9 bytes) */
    double latency_us;           /* alpha, per ring step */
} ds_plan_link;

typedef struct ds_plan_job {
    ds_rwkv7_dims dims;          /* LoRA ranks resolved */
    int ctx_len, batch_size, micro_batch;  /* as train.*: micro_batch 0 = batch_size / ranks */
    int fp64, zero_stage;        /* train.grad_reduce == fp64, train.zero_stage */
    int bf16;                    /* train.precision == bf16 (only the memory depends on it; rates do) */
    double peak_gflops;          /* per rank, of the precision in use: MFU's denominator (0: no MFU) */
    int nodes, ranks_per_node;
    int64_t bucket_bytes;
    double node_memory_bytes;
    ds_plan_rates rates;
    ds_plan_link intra, inter;
} ds_plan_job;

typedef struct ds_plan_result {
    int ranks, micro, accum;
    int valid;                   /* 0: the batch does not split over these ranks (see reason) */
    char reason[160];
    int64_t n_params, n_owned, n_buckets;
    double compute_s;            /* per rank per step */
    double comm_s;               /* the gradient communication if nothing overlapped */
    double exposed_s;            /* the part not hidden behind backward (+ ZeRO-1's parameter sharing) */
    double step_s, tokens_per_s, comm_share;  /* comm_share = exposed_s / step_s */
    double mfu;                  /* FLOPs/token x tokens/s / (ranks x peak_gflops); 0 without a peak */
    double activation_bytes, memory_bytes;    /* memory_bytes: rank 0's total */
    double node_bytes;           /* all ranks of node 0 */
    int fits;                    /* node_bytes <= node_memory_bytes */
} ds_plan_result;

/* Parameters of the model (the trainer's n_params: every tensor is a multiple of 16 floats, so the
 * table has no padding), and the flat offset where layer l's parameters begin (l = n_layer: ln_out). */
int64_t ds_plan_n_params(const ds_rwkv7_dims *d);
int64_t ds_plan_layer_begin(const ds_rwkv7_dims *d, int l);

/* Seconds of one ring allreduce of `bytes` over p ranks on `link`, as consecutive pieces of at most
 * bucket_bytes: sum over pieces of 2(p-1)/p x piece / beta + 2(p-1) alpha. 0 when p == 1. */
double ds_plan_allreduce_seconds(double bytes, int p, const ds_plan_link *link, double bucket_bytes);

/* Default rates for `threads` threads, fp32 or bf16 matrix products (see the assumptions above). */
ds_plan_rates ds_plan_default_rates(const ds_rwkv7_dims *d, int T, int threads, int bf16);
/* Rates measured on this machine with `threads` threads at micro-batch `micro` x T, fp32 or bf16 matrix
 * products (seconds of work; allocates about 2 layers of the model). */
ds_plan_rates ds_plan_measure_rates(const ds_rwkv7_dims *d, int micro, int T, int threads, int bf16);
/* The dev machine's peak for `threads` threads, FP32 FMA or bf16 dot products (README.md, Machine notes). */
double ds_plan_default_peak(int threads, int bf16);

/* The prediction for one job. */
void ds_plan_predict(const ds_plan_job *job, ds_plan_result *out);

/* `dreamstate plan`: the prediction for each node count of a config's job, as a table or one JSON
 * object on stdout. */
typedef struct ds_plan_options {
    int n_nodes;
    const int *nodes;            /* node counts, one row each */
    int ranks_per_node;          /* default 1 */
    int threads;                 /* per rank; 0 (default): run.threads, else this machine's cores / ranks_per_node */
    int measure;                 /* measure the compute rates here instead of the defaults */
    int json;
    ds_plan_link intra, inter;   /* default 1.5 GB/s 3 us, 10 GB/s 5 us */
    double node_memory_bytes;    /* default: this machine's */
} ds_plan_options;

ds_plan_options ds_plan_defaults(void);
/* Returns the exit code; a config whose run.task is not lm exits 2. */
int ds_plan(const ds_config *cfg, const ds_plan_options *o);

#endif
