/* `dreamstate plan`: predicts, before a job is queued, the step time, the communication share and the
 * memory per rank of data-parallel training on N nodes, for every task (run.task lm: the RWKV-7;
 * state_diffusion: the state DiT of part A; hybrid: the part-B hybrid), from measured compute rates
 * and an alpha-beta model of the gradient allreduce. What differs between tasks comes from the
 * task's own workload function (train.h: parameters, FLOPs, activations and other memory, gradient
 * order), which the task reports too; the rest models what src/train/loop.c and src/dist/dist.c do,
 * so a change there may need a change here.
 *
 * Assumptions (also printed by `dreamstate plan --help`):
 *  - Shapes: lm from model.*; state_diffusion from dit.*, diffusion.layers / condition / normalize and
 *    the header of diffusion.states' index (no shard read); hybrid from dit.*, hybrid.* and the header
 *    of hybrid.init's weights (no weights read).
 *  - Ranks: p = nodes x ranks_per_node, each a full replica with `threads` threads; micro-batch and
 *    accumulation as the trainer: micro = train.micro_batch (0: batch_size / p), accum =
 *    batch_size / (p x micro), which must divide exactly.
 *  - Compute per rank and step = accum x micro x units x sec_per_unit (a unit is a token for lm and
 *    hybrid, ctx_len per sample, and a sample for state_diffusion; forward + backward and the task's
 *    work around them: noise draws, the hybrid's generated matrices) + the trainer's per-parameter
 *    loops where it runs them: fp64 mode: per micro-step zeroing the gradient and adding it into the
 *    fp64 accumulator, per step zeroing the accumulator and converting the owned parameters back to
 *    fp32 (one rank with one micro-step skips the accumulator); fp32 mode: zeroing once per step;
 *    both: clipping and AdamW over the owned parameters (all of them, or ~1/p under ZeRO-1), and
 *    state_diffusion's EMA over all parameters. Ranks of one node are assumed not to slow each other
 *    down (shared memory bandwidth and caches are ignored).
 *  - Rates: measured on this machine (--measure: the task's own micro-step on random inputs of the
 *    right shape, at 1 and 2 layers (lm) or DiT blocks (state_diffusion, hybrid; the hybrid's RWKV-7
 *    whole), extrapolated linearly; the static hybrid baseline whole; the per-parameter loops on a
 *    16M-parameter buffer), with the matrix products in train.precision, or defaults per thread
 *    measured for the 0.1B lm shape on the project's 2-core Zen 5 machine (README.md, Machine notes),
 *    fp32 or bf16, applied to every task's FLOPs: wider models run faster, small ones (and the DiT
 *    tasks' per-sample work) far slower.
 *  - MFU = FLOPs per unit x units/s / (ranks x the peak per rank of the precision in use: the FP32 FMA
 *    peak, or the bf16 dot-product peak in train.precision bf16), both measured with --measure
 *    (ds_measure_fma_peak, ds_measure_bf16_peak), else the dev machine's per thread.
 *  - Gradient allreduce: n_params (trainable) x 8 bytes (train.grad_reduce fp64) or x 4 (fp32) in the
 *    trainer's 8 MiB buckets; ring cost per bucket 2(p-1)/p x bytes / beta + 2(p-1) alpha. One node:
 *    the intra-node link (shared memory); one rank per node: the inter-node link; both: the slower of
 *    the two (a ring runs at its slowest link). Under ZeRO-1 the buckets are reduced to their owners
 *    ((p-1)/p x bytes / beta + (p-1) alpha each, like a reduce-scatter) and after the update the
 *    owners share the fp32 parameters (the same cost for n_params x 4 bytes, not overlapped).
 *  - Overlap: buckets are sent as backward hands them over, one at a time over the link. lm: the head
 *    first, then layers from the last, embedding last, backward time split over head and layers by
 *    their FLOPs; state_diffusion and hybrid hand the whole gradient over when the micro-batch is done,
 *    so nothing of theirs hides. Exposed communication = what is still in flight when backward ends.
 *    This assumes the MPI library progresses transfers while the rank computes; Open MPI does so only
 *    inside MPI calls, and over shared memory the copies need the cores that compute: on the 2-core
 *    dev machine a 2-rank run hid 46% of its allreduce where this model says 70% (`make bench`). Read
 *    `exposed` as a lower bound and the whole allreduce (`comm`) as the upper one.
 *  - Not counted: evaluation, checkpoints, data loading, start-up (state_diffusion's statistics pass,
 *    the hybrid's score of hybrid.init); other per-step collectives (a few 8-byte allreduces).
 *  - Memory of rank 0 (the largest): parameters 4 + gradients 4 + fp64 accumulator 8 (fp64 only) +
 *    AdamW moments 8 bytes per owned trainable parameter + under ZeRO-1 the full moments rank 0
 *    gathers for checkpoints (8 bytes per parameter) + the task's activations of one micro-batch (lm:
 *    ds_rwkv7_activation_floats, with train.grad_checkpoint each block's input and one block's
 *    internals; state_diffusion: ds_dit_activation_floats; hybrid: the RWKV-7's and the DiT's for the
 *    micro-batch, which they run at once) and batch buffers + what the task holds besides
 *    (state_diffusion: the EMA, 4 bytes per parameter; hybrid: a frozen RWKV-7's parameters and
 *    gradient slots, 8 bytes per its parameter, and its buffers of the micro-batch's sequences) + in
 *    train.precision bf16 the operands converted for the products (the task's bf16_operand_bytes) + with
 *    more than one rank, MPI's temporary buffers of the buckets in flight (all of them at once: n_params
 *    x 8 or x 4 bytes) + a fixed runtime overhead (MPI, BLIS, program). Mapped input files (token
 *    shards, state shards) are page cache and not counted. Fits: the ranks of one node together
 *    within the node's memory.
 *  - train.grad_checkpoint (lm, hybrid): the backward runs every RWKV-7 block's forward again, which adds
 *    the blocks' forward FLOPs (ds_rwkv7_recompute_flops_per_token: 2 per block matrix parameter and
 *    token, and the WKV forward) to the time of a step, not to its MFU: the default rates apply to both,
 *    --measure times the probe with the recomputation; rows that fit only with it are pointed out. */
#ifndef DREAMSTATE_PLAN_H
#define DREAMSTATE_PLAN_H

#include "dreamstate/config.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/train.h"

#include <stdint.h>

#define DS_PLAN_BUCKET_BYTES ((int64_t)8 << 20)   /* the trainer's gradient bucket (src/train/loop.c) */
#define DS_PLAN_RUNTIME_BYTES 1e8                 /* per rank beyond the model: MPI, BLIS, libraries (measured) */

/* Seconds per unit of work on one rank with its threads. The per-parameter costs are the trainer's
 * memory-bound loops; ds_plan_predict applies each where the trainer runs it. */
typedef struct ds_plan_rates {
    double sec_per_unit;         /* the task's micro-step per unit (token or sample): forward + backward */
    double sec_zero;             /* zeroing the fp32 gradient (per micro-step in fp64 mode, else per step) */
    double sec_accumulate;       /* adding it into the fp64 accumulator (per micro-step) */
    double sec_reset;            /* zeroing the fp64 accumulator (per step) */
    double sec_convert;          /* fp64 -> fp32 after the reduction (per step, owned parameters) */
    double sec_optimizer;        /* sum of squares, clipping, AdamW (per step, owned parameters) */
    double sec_ema;              /* the task's EMA update (per step, its ema_params) */
} ds_plan_rates;

typedef struct ds_plan_link {
    double gbps;                 /* allreduce bus bandwidth beta, GB/s (1e9 bytes) */
    double latency_us;           /* alpha, per ring step */
} ds_plan_link;

typedef struct ds_plan_job {
    ds_task_shape shape;         /* the task's model (lm: LoRA ranks resolved) */
    int batch_size, micro_batch; /* as train.*: micro_batch 0 = batch_size / ranks */
    int fp64, zero_stage;        /* train.grad_reduce == fp64, train.zero_stage */
    int bf16;                    /* train.precision == bf16 (only the memory depends on it; the rates do) */
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
    double step_s, units_per_s, comm_share;   /* units (tokens or samples) per second; comm_share = exposed_s / step_s */
    double mfu;                               /* FLOPs/unit x units/s / (ranks x peak_gflops); 0 without a peak */
    double activation_bytes, held_bytes;      /* the task's, of rank 0 (ds_task_workload) */
    double memory_bytes;                      /* rank 0's total */
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

/* The shape of cfg's task (run.task), from the config and its inputs' headers; exit 2 on bad input. */
void ds_plan_task_shape(const ds_config *cfg, ds_task_shape *s);
/* The task's workload at micro-batch `micro` (its ds_*_workload). */
void ds_plan_workload(const ds_task_shape *s, int micro, ds_task_workload *w);

/* Default rates for `threads` threads, a task of this many FLOPs per unit and fp32 or bf16 matrix
 * products (see the assumptions). */
ds_plan_rates ds_plan_default_rates(double flops_per_unit, int threads, int bf16);
/* Rates measured on this machine with `threads` threads at micro-batch `micro`, fp32 or bf16 matrix
 * products (seconds of work; allocates the task's probe at 1 and 2 layers or DiT blocks: the hybrid's
 * RWKV-7 whole). */
ds_plan_rates ds_plan_measure_rates(const ds_task_shape *s, int micro, int threads, int bf16);
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
/* Returns the exit code. */
int ds_plan(const ds_config *cfg, const ds_plan_options *o);

#endif
