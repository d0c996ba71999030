/* `dreamstate plan`: step time, communication and memory per rank of a data-parallel job of any task,
 * predicted from the task's workload (train.h), compute rates and an alpha-beta allreduce model
 * (include/dreamstate/plan.h lists the assumptions; `dreamstate plan --help` repeats them for users). */
#include "dreamstate/plan.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/dist.h"
#include "dreamstate/kernels.h"
#include "dreamstate/optim.h"
#include "dreamstate/weights.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Defaults per thread: `plan --measure --threads 1` of the 0.1B config (L12 C768 V65536, T512) on the
 * project's 2-core Zen 5 machine (README.md, Machine notes); wider models run their GEMMs more efficiently
 * (the 1.5B shape measured ~2x this rate per thread). */
#define DEFAULT_GFLOPS_PER_THREAD 100.0   /* ds_rwkv7_flops_per_token x tokens / s */
#define DEFAULT_GFLOPS_PER_THREAD_BF16 175.0  /* the same in bf16: 1.75x, `make bench`'s 0.1B step ratio */
#define DEFAULT_FP32_PEAK_PER_THREAD 265.0  /* GFLOP/s: FMA chains (ds_measure_fma_peak) */
#define DEFAULT_BF16_PEAK_PER_THREAD 530.0  /* VDPBF16PS chains: 2 bf16 products per fp32 lane at the FMA rate */
#define DEFAULT_NS_ZERO 0.1               /* per parameter, the loops of ds_plan_rates */
#define DEFAULT_NS_ACCUMULATE 0.5
#define DEFAULT_NS_RESET 0.4
#define DEFAULT_NS_CONVERT 0.45
#define DEFAULT_NS_OPTIMIZER 0.95
#define DEFAULT_NS_EMA 0.3                /* per parameter on one thread (a serial loop; a 10M-parameter state DiT) */
/* Links: shared memory on that machine (`make bench`: 8-64 MB in-place MPI_Iallreduce with glibc's
 * malloc thresholds fixed; 1-2.5 GB/s between runs); between nodes a typical 100 Gb/s InfiniBand or
 * Ethernet fabric. */
#define DEFAULT_INTRA_GBPS 1.5
#define DEFAULT_INTRA_LATENCY_US 3.0
#define DEFAULT_INTER_GBPS 10.0
#define DEFAULT_INTER_LATENCY_US 5.0
#define PARAM_PROBE ((int64_t)16 << 20)   /* parameters of the per-parameter timing buffer */

/* Per layer: 12 C^2 in the projections and FFN, 2 C (Dw + Da + Dv + Dg) in the LoRAs, 19 vectors of C
 * (norms, token-shift mixes, w0 a0 v0, k_k k_a, r_k, ln_x, ffn x_k). Order: emb, ln0, layers, ln_out,
 * head (src/rwkv7/params.c; tests/test_plan.c checks both against ds_rwkv7_create). */
int64_t ds_plan_layer_begin(const ds_rwkv7_dims *d, int l) {
    int64_t C = d->n_embd, V = d->vocab_size;
    int64_t per_layer = 12 * C * C + 2 * C * ((int64_t)d->dim_w + d->dim_a + d->dim_v + d->dim_g) + 19 * C;
    return V * C + 2 * C + l * per_layer;
}

int64_t ds_plan_n_params(const ds_rwkv7_dims *d) {
    int64_t C = d->n_embd, V = d->vocab_size;
    return ds_plan_layer_begin(d, d->n_layer) + 2 * C + V * C;
}

double ds_plan_allreduce_seconds(double bytes, int p, const ds_plan_link *link, double bucket_bytes) {
    if (p <= 1 || bytes <= 0) return 0.0;
    double pieces = isinf(bucket_bytes) ? 1.0 : ceil(bytes / bucket_bytes);
    return 2.0 * (p - 1) / p * bytes / (link->gbps * 1e9) + pieces * 2.0 * (p - 1) * link->latency_us * 1e-6;
}

ds_plan_rates ds_plan_default_rates(double flops_per_unit, int threads, int bf16) {
    double ns = 1e-9 / threads, gflops = bf16 ? DEFAULT_GFLOPS_PER_THREAD_BF16 : DEFAULT_GFLOPS_PER_THREAD;
    return (ds_plan_rates){.sec_per_unit = flops_per_unit / (gflops * 1e9 * threads),
                           .sec_zero = DEFAULT_NS_ZERO * ns, .sec_accumulate = DEFAULT_NS_ACCUMULATE * ns,
                           .sec_reset = DEFAULT_NS_RESET * ns, .sec_convert = DEFAULT_NS_CONVERT * ns,
                           .sec_optimizer = DEFAULT_NS_OPTIMIZER * ns, .sec_ema = DEFAULT_NS_EMA * 1e-9};
}

/* ---- the tasks ---- */

void ds_plan_task_shape(const ds_config *cfg, ds_task_shape *s) {
    const char *task = cfg->run.task;
    if (strcmp(task, "lm") == 0)
        *s = (ds_task_shape){.kind = DS_TASK_LM, .cfg = cfg, .ctx_len = cfg->train.ctx_len,
                             .grad_checkpoint = cfg->train.grad_checkpoint, .rwkv7 = ds_rwkv7_dims_from_config(cfg)};
    else if (strcmp(task, "state_diffusion") == 0) ds_state_diffusion_shape(cfg, s);
    else if (strcmp(task, "hybrid") == 0) ds_hybrid_shape(cfg, s);
    else ds_die(DS_EXIT_BAD_INPUT, "%s: run.task '%s': plan knows lm, state_diffusion, hybrid", cfg->source, task);
}

void ds_plan_workload(const ds_task_shape *s, int micro, ds_task_workload *w) {
    switch (s->kind) {
    case DS_TASK_LM: ds_lm_workload(s, micro, w); break;
    case DS_TASK_STATE_DIFFUSION: ds_state_diffusion_workload(s, micro, w); break;
    case DS_TASK_HYBRID: ds_hybrid_workload(s, micro, w); break;
    }
}

/* The shape with `depth` layers (lm) or DiT blocks (the others) instead of its own. */
static ds_task_shape at_depth(const ds_task_shape *s, int depth) {
    ds_task_shape cut = *s;
    if (s->kind == DS_TASK_LM) cut.rwkv7.n_layer = depth;
    else if (s->kind == DS_TASK_STATE_DIFFUSION) cut.dit.depth = depth;
    else cut.hybrid.dit.depth = depth;
    return cut;
}

static void make_probe(const ds_task_shape *s, int micro, ds_task_probe *p) {
    switch (s->kind) {
    case DS_TASK_LM: ds_lm_probe(s, micro, p); break;
    case DS_TASK_STATE_DIFFUSION: ds_state_diffusion_probe(s, micro, p); break;
    case DS_TASK_HYBRID: ds_hybrid_probe(s, micro, p); break;
    }
}

/* ---- measuring on this machine ---- */

/* Runs body at least 3 times and 0.5 s (at most 20 times) after one warm-up run (page faults, BLIS
 * buffers); best = the fastest run. */
#define TIME_BEST(best, body)                                                       \
    do {                                                                            \
        double total_ = 0;                                                          \
        (best) = INFINITY;                                                          \
        for (int rep_ = -1; rep_ < 3 || (total_ < 0.5 && rep_ < 20); rep_++) {      \
            double t0_ = ds_now_seconds();                                          \
            body;                                                                   \
            double dt_ = ds_now_seconds() - t0_;                                    \
            if (rep_ >= 0) { total_ += dt_; if (dt_ < (best)) (best) = dt_; }        \
        }                                                                           \
    } while (0)

/* The task's micro-step on its probe of shape s; with after_update (if not NULL) the task's work after
 * an update, per parameter of the probe. */
static double time_probe(const ds_task_shape *s, int micro, double *after_update) {
    ds_task_probe p;
    make_probe(s, micro, &p);
    ds_task_workload w;
    ds_plan_workload(s, micro, &w);
    if (p.n_params != w.n_params)
        ds_die(DS_EXIT_FAIL, "plan: parameter count %lld differs from the model's %lld", (long long)w.n_params,
               (long long)p.n_params);
    double best, t;
    TIME_BEST(best, p.step(p.ctx));
    if (after_update && p.after_update) {
        TIME_BEST(t, p.after_update(p.ctx));
        *after_update = t / p.n_params;
    }
    p.destroy(p.ctx);
    return best;
}

double ds_plan_default_peak(int threads, int bf16) {
    return threads * (bf16 ? DEFAULT_BF16_PEAK_PER_THREAD : DEFAULT_FP32_PEAK_PER_THREAD);
}

ds_plan_rates ds_plan_measure_rates(const ds_task_shape *s, int micro, int threads, int bf16) {
    ds_blas_init(threads);
    ds_kernels_init();
    ds_blas_set_precision(bf16 ? DS_PRECISION_BF16 : DS_PRECISION_FP32);
    omp_set_num_threads(threads);
    ds_plan_rates r = {0};
    ds_task_workload w;
    ds_plan_workload(s, micro, &w);
    double t;
    if (w.probe_depth >= 0) {
        /* a micro-step is (what the depth does not change) + depth x (one layer or block): two depths fix
         * both terms */
        ds_task_shape one = at_depth(s, 1), two = at_depth(s, 2);
        double t1 = time_probe(&one, micro, NULL), t2 = time_probe(&two, micro, &r.sec_ema);
        double per_layer = t2 > t1 ? t2 - t1 : 0.0;
        t = t1 + (w.probe_depth - 1) * per_layer;
    } else {
        t = time_probe(s, micro, &r.sec_ema);
    }
    r.sec_per_unit = t / ((double)micro * w.units_per_sample);

    /* the trainer's per-parameter loops, on buffers larger than the caches */
    int64_t n = PARAM_PROBE, begin = 0;
    float *params = ds_alloc(sizeof(float) * n), *grads = ds_alloc(sizeof(float) * n);
    ds_fill_pattern(params, n, 0.1f);
    ds_fill_pattern(grads, n, 0.1f);
    ds_grad_sync *gs = ds_grad_sync_create(grads, n, DS_PLAN_BUCKET_BYTES, 1, 0);
    ds_optim_group group = {0, n, 1.0f, 1};
    ds_adamw opt;
    ds_adamw_create(&opt, 1, &begin, &n, 1, &group, 0.9, 0.99, 1e-18, 0.001);
    TIME_BEST(t, ds_zero_floats(grads, n));
    r.sec_zero = t / n;
    ds_grad_sync_micro_begin(gs, 0, 1);  /* a later micro-step: adds into the accumulator */
    TIME_BEST(t, ds_grad_sync_ready(gs, 0, n));
    r.sec_accumulate = t / n;
    TIME_BEST(t, ds_grad_sync_micro_begin(gs, 1, 0));  /* a step's first of several: zeroes it */
    r.sec_reset = t / n;
    TIME_BEST(t, ds_grad_sync_finish(gs));
    r.sec_convert = t / n;
    int64_t step = 0;
    TIME_BEST(t, {
        double norm = sqrt(ds_adamw_grad_sumsq(&opt, grads));
        ds_adamw_scale_grads(&opt, grads, (float)(1.0 / (norm + 1.0)));
        ds_adamw_step(&opt, params, grads, 1e-4, ++step);
    });
    r.sec_optimizer = t / n;
    ds_adamw_destroy(&opt);
    ds_grad_sync_free(gs);
    ds_free(params);
    ds_free(grads);
    return r;
}

/* ---- the model ---- */

/* The trainer's gradient buckets (ds_grad_sync_create): elements per bucket. */
static int64_t bucket_len(int64_t n, int64_t bucket_bytes, int elem, int zero1, int p) {
    int64_t len = bucket_bytes / elem;
    if (zero1 && len > n / (4 * p)) len = n / (4 * p);
    if (len < 1024) len = 1024;
    if (len > INT32_MAX) len = INT32_MAX;
    return len;
}

/* The trainer's micro-batch on p ranks, or 0 when the batch does not split over them. */
static int micro_batch_for(int batch_size, int micro_batch, int p) {
    int micro = micro_batch ? micro_batch : batch_size / p;
    return micro >= 1 && batch_size % ((int64_t)p * micro) == 0 ? micro : 0;
}

/* The link a ring over these ranks runs at: its slowest. */
static ds_plan_link ring_link(const ds_plan_job *job) {
    if (job->nodes == 1) return job->intra;
    if (job->ranks_per_node == 1) return job->inter;
    return (ds_plan_link){fmin(job->intra.gbps, job->inter.gbps), fmax(job->intra.latency_us, job->inter.latency_us)};
}

void ds_plan_predict(const ds_plan_job *job, ds_plan_result *out) {
    memset(out, 0, sizeof *out);
    int p = job->nodes * job->ranks_per_node, B = job->batch_size;
    int micro = micro_batch_for(B, job->micro_batch, p);
    out->ranks = p;
    out->micro = micro;
    if (!micro) {
        micro = job->micro_batch ? job->micro_batch : B / p;
        snprintf(out->reason, sizeof out->reason, "batch_size %d is not a multiple of %d rank(s) x micro-batch %d", B,
                 p, micro < 1 ? 1 : micro);
        return;
    }
    out->valid = 1;
    int accum = out->accum = B / (p * micro);
    ds_task_workload w;
    ds_plan_workload(&job->shape, micro, &w);
    int L = w.n_layer;
    int64_t n = out->n_params = w.n_params;
    int zero1 = job->zero_stage == 1 && p > 1, elem = job->fp64 ? 8 : 4;
    int64_t len = bucket_len(n, job->bucket_bytes, elem, zero1, p), nb = out->n_buckets = (n + len - 1) / len;
    int64_t owned = 0;  /* rank 0's: buckets 0, p, 2p, ... under ZeRO-1 */
    for (int64_t b = 0; b < nb; b += zero1 ? p : 1) owned += (b + 1) * len <= n ? len : n - b * len;
    out->n_owned = owned;

    /* compute, with the per-parameter loops where the trainer runs them (ds_grad_sync, loop.c) */
    const ds_plan_rates *r = &job->rates;
    double fwd_bwd = (double)micro * w.units_per_sample * r->sec_per_unit;
    int accumulates = job->fp64 && !(p == 1 && accum == 1);  /* else the fp64 sum would be a copy */
    out->compute_s = accum * fwd_bwd + (double)owned * r->sec_optimizer + (double)w.ema_params * r->sec_ema;
    if (accumulates)
        out->compute_s += accum * (double)n * (r->sec_zero + r->sec_accumulate)
                        + (double)n * r->sec_reset + (double)owned * r->sec_convert;
    else
        out->compute_s += (double)n * r->sec_zero;

    if (p > 1) {
        ds_plan_link link = ring_link(job);
        /* backward of the last micro-step: about 2/3 of the model's forward + backward FLOPs, and with
         * train.grad_checkpoint the blocks' second forward, split by FLOPs over the ranges the task hands
         * over (ds_task_workload); in fp64 mode each range is also added into the accumulator before its
         * buckets go out */
        double flops = w.flops_per_unit + w.recompute_flops_per_unit;
        double bwd = (2.0 / 3.0 * w.flops_per_unit + w.recompute_flops_per_unit) / flops * fwd_bwd;
        double acc = accumulates ? r->sec_accumulate : 0.0;
        int64_t lb0 = w.layer_begin, lbL = w.head_begin, per_layer = L > 0 ? (lbL - lb0) / L : 1;
        double head_done = bwd * w.head_share + (double)(n - lbL) * acc;
        double layer_time = L > 0 ? bwd * (1.0 - w.head_share) / L + (double)per_layer * acc : 0.0;
        double bwd_end = L > 0 ? head_done + L * layer_time + (double)lb0 * acc : bwd + (double)n * acc;
        /* a bucket is ready when its lowest element is (regions finish from high offsets to low);
         * buckets go over the link one at a time */
        double link_free = 0.0, share = 0.0;
        for (int64_t b = nb - 1; b >= 0; b--) {
            int64_t first = b * len, size = (b + 1) * len <= n ? len : n - first;
            double ready = first >= lbL ? head_done
                         : first >= lb0 ? head_done + (double)(L - (first - lb0) / per_layer) * layer_time
                                        : bwd_end;
            double t = ds_plan_allreduce_seconds((double)size * elem, p, &link, INFINITY);
            if (zero1) {  /* reduce to the owner (half a ring allreduce), later the fp32 parameters back */
                t *= 0.5;
                share += 0.5 * ds_plan_allreduce_seconds((double)size * 4, p, &link, INFINITY);
            }
            out->comm_s += t;
            link_free = fmax(link_free, ready) + t;
        }
        out->comm_s += share;
        out->exposed_s = fmax(0.0, link_free - bwd_end) + share;
    }
    out->step_s = out->compute_s + out->exposed_s;
    out->units_per_s = (double)B * w.units_per_sample / out->step_s;
    out->comm_share = out->exposed_s / out->step_s;
    if (job->peak_gflops > 0) out->mfu = w.flops_per_unit * out->units_per_s / (p * job->peak_gflops * 1e9);

    /* memory of rank 0: the trainer's, and the task's activations and other buffers */
    out->activation_bytes = w.activation_bytes;
    out->held_bytes = w.held_bytes;
    double full_moments = zero1 ? 8.0 * n : 0.0;  /* rank 0 gathers them for checkpoints */
    /* Open MPI's nonblocking collectives hold a temporary buffer of each bucket while it is in flight,
     * and every bucket is in flight until the end of backward (measured: +1.04 GB on each of 2 ranks
     * for a 130M-parameter DiT in fp64, tests/bench_paper_scale.sh) */
    double in_flight = p > 1 ? (double)n * elem : 0.0;
    /* the fp64 accumulator is allocated but never touched when it would be a copy: not resident */
    double others = 8.0 * n + (accumulates ? 8.0 * n : 0.0) + 8.0 * owned + in_flight + out->activation_bytes +
                    out->held_bytes + (job->bf16 ? w.bf16_operand_bytes : 0.0) + DS_PLAN_RUNTIME_BYTES;
    out->memory_bytes = others + full_moments;
    out->node_bytes = out->memory_bytes + (job->ranks_per_node - 1) * others;
    out->fits = out->node_bytes <= job->node_memory_bytes;
}

/* ---- the report ---- */

static double machine_memory_bytes(void) {
    return (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
}

static void print_row_json(const ds_plan_job *job, const ds_plan_result *r, const char *unit, int first) {
    printf("%s\n    {\"nodes\":%d,\"ranks_per_node\":%d,\"ranks\":%d,\"valid\":%s", first ? "" : ",", job->nodes,
           job->ranks_per_node, r->ranks, r->valid ? "true" : "false");
    if (!r->valid) {
        printf(",\"reason\":\"%s\"}", r->reason);
        return;
    }
    printf(",\"micro_batch\":%d,\"accum\":%d,\"compute_s\":%.9g,\"comm_s\":%.9g,\"exposed_comm_s\":%.9g,"
           "\"step_s\":%.9g,\"%s_per_s\":%.9g,\"comm_share\":%.6f,\"mfu\":%.6f,\"activation_bytes\":%.0f,"
           "\"held_bytes\":%.0f,\"memory_per_rank_bytes\":%.0f,\"node_bytes\":%.0f,\"fits\":%s,\"buckets\":%lld,"
           "\"owned_params\":%lld}",
           r->micro, r->accum, r->compute_s, r->comm_s, r->exposed_s, r->step_s, unit, r->units_per_s, r->comm_share, r->mfu,
           r->activation_bytes, r->held_bytes, r->memory_bytes, r->node_bytes, r->fits ? "true" : "false",
           (long long)r->n_buckets, (long long)r->n_owned);
}

ds_plan_options ds_plan_defaults(void) {
    return (ds_plan_options){.ranks_per_node = 1, .intra = {DEFAULT_INTRA_GBPS, DEFAULT_INTRA_LATENCY_US},
                             .inter = {DEFAULT_INTER_GBPS, DEFAULT_INTER_LATENCY_US},
                             .node_memory_bytes = machine_memory_bytes()};
}

/* The model of a task, in a few words. */
static void describe_model(const ds_task_shape *s, char *buf, size_t len) {
    const ds_rwkv7_dims *m = s->kind == DS_TASK_HYBRID ? &s->hybrid.model : &s->rwkv7;
    const ds_dit_dims *d = s->kind == DS_TASK_HYBRID ? &s->hybrid.dit : &s->dit;
    char dit[128];
    snprintf(dit, sizeof dit, "DiT d%d depth %d heads %d patch %d", d->hidden, d->depth, d->heads, d->patch_size);
    if (s->kind == DS_TASK_LM)
        snprintf(buf, len, "RWKV-7 L%d C%d V%d", m->n_layer, m->n_embd, m->vocab_size);
    else if (s->kind == DS_TASK_STATE_DIFFUSION)
        snprintf(buf, len, "state %s over %d channel(s) of 64x64", dit, d->in_channels);
    else if (s->hybrid.n_targets == 0)
        snprintf(buf, len, "hybrid static baseline: RWKV-7 L%d C%d V%d trained", m->n_layer, m->n_embd, m->vocab_size);
    else
        snprintf(buf, len, "hybrid: RWKV-7 L%d C%d V%d %s + parameter %s for %d layer(s)", m->n_layer, m->n_embd,
                 m->vocab_size, s->hybrid.train_static ? "trained" : "frozen", dit, s->hybrid.n_targets);
}

int ds_plan(const ds_config *cfg, const ds_plan_options *o) {
    const int *nodes = o->nodes, n_nodes = o->n_nodes, rpn = o->ranks_per_node, measure = o->measure, json = o->json;
    const ds_plan_link intra = o->intra, inter = o->inter;
    const double node_memory = o->node_memory_bytes;
    int threads = o->threads;
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads == 0) threads = cfg->run.threads > 0 ? cfg->run.threads : (cores / rpn > 0 ? cores / rpn : 1);

    ds_plan_job job = {.batch_size = cfg->train.batch_size, .micro_batch = cfg->train.micro_batch,
                       .fp64 = strcmp(cfg->train.grad_reduce, "fp64") == 0, .zero_stage = cfg->train.zero_stage,
                       .bf16 = strcmp(cfg->train.precision, "bf16") == 0,
                       .ranks_per_node = rpn, .bucket_bytes = DS_PLAN_BUCKET_BYTES, .node_memory_bytes = node_memory,
                       .intra = intra, .inter = inter};
    ds_plan_task_shape(cfg, &job.shape);
    const ds_task_shape *shape = &job.shape;
    int checkpointable = shape->kind != DS_TASK_STATE_DIFFUSION;  /* runs the RWKV-7 (train.grad_checkpoint) */
    /* the smallest valid micro-batch of the rows (per-unit cost rises as micro-batches shrink) */
    int micro = 0;
    for (int i = 0; i < n_nodes; i++) {
        int m = micro_batch_for(job.batch_size, job.micro_batch, nodes[i] * rpn);
        if (m && (micro == 0 || m < micro)) micro = m;
    }
    if (micro == 0) micro = 1;
    ds_task_workload w;
    ds_plan_workload(shape, micro, &w);
    int64_t n = w.n_params;
    const char *unit = w.unit, *per = strcmp(unit, "tokens") == 0 ? "token" : "sample";
    char model[256];
    describe_model(shape, model, sizeof model);

    /* the measured probe runs the recomputation of train.grad_checkpoint; the default rates are per FLOP */
    double hw_flops = w.flops_per_unit + w.recompute_flops_per_unit;
    char rates_note[256];
    double peaks[2];  /* per rank: FP32 FMA, bf16 dot products */
    if (measure) {
        /* small enough that the probe's model (two layers or blocks) fits in half of this machine's memory */
        ds_task_shape probed = w.probe_depth >= 0 ? at_depth(shape, 2) : *shape;
        ds_task_workload pw;
        for (;; micro /= 2) {
            ds_plan_workload(&probed, micro, &pw);
            if (micro == 1 || pw.activation_bytes + pw.held_bytes + 8.0 * pw.n_params <= 0.5 * machine_memory_bytes())
                break;
        }
        if (threads > cores)
            ds_log("plan: warning: measuring %d threads on %d cores: the rates will be too low", threads, cores);
        ds_log("plan: measuring %s at micro-batch %d with %d thread(s)...", cfg->source, micro, threads);
        job.rates = ds_plan_measure_rates(shape, micro, threads, job.bf16);
        peaks[0] = ds_measure_fma_peak(threads, 0.5);
        peaks[1] = ds_measure_bf16_peak(threads, 0.5);
        snprintf(rates_note, sizeof rates_note,
                 "measured here at micro-batch %d, %d thread(s)/rank: %.3g ms/%s (%.1f GFLOP/s)", micro, threads,
                 job.rates.sec_per_unit * 1e3, per, hw_flops / job.rates.sec_per_unit * 1e-9);
    } else {
        job.rates = ds_plan_default_rates(hw_flops, threads, job.bf16);
        peaks[0] = ds_plan_default_peak(threads, 0);
        peaks[1] = ds_plan_default_peak(threads, 1);
        snprintf(rates_note, sizeof rates_note,
                 "defaults (no --measure) for %d thread(s)/rank: %.0f GFLOP/s per thread (0.1B lm shape; --measure "
                 "for yours)",
                 threads, job.bf16 ? DEFAULT_GFLOPS_PER_THREAD_BF16 : DEFAULT_GFLOPS_PER_THREAD);
    }
    job.peak_gflops = peaks[job.bf16];
    const ds_plan_rates *rt = &job.rates;

    if (json) {
        printf("{\"config\":");
        ds_json_string(stdout, cfg->source);
        printf(",\"task\":\"%s\",\"model\":", cfg->run.task);
        ds_json_string(stdout, model);
        printf(",\"unit\":\"%s\",\"units_per_sample\":%g,\"ctx_len\":%d,\"batch_size\":%d,"
               "\"micro_batch\":%d,\"grad_reduce\":\"%s\",\"zero_stage\":%d,\"precision\":\"%s\",\"params\":%lld,"
               "\"grad_checkpoint\":%s,\"recompute_flops_per_unit\":%.6g,\"flops_per_unit\":%.6g,"
               "\"fp32_peak_gflops_per_rank\":%.6g,\"bf16_peak_gflops_per_rank\":%.6g,"
               "\"threads_per_rank\":%d,\"measured\":%s,\"sec_per_unit\":%.6g,\"sec_per_param\":{\"zero\":%.6g,"
               "\"accumulate\":%.6g,\"reset\":%.6g,\"convert\":%.6g,\"optimizer\":%.6g,\"ema\":%.6g},\"intra_gbps\":%g,"
               "\"intra_latency_us\":%g,\"inter_gbps\":%g,\"inter_latency_us\":%g,\"node_memory_bytes\":%.0f,\"rows\":[",
               unit, w.units_per_sample, cfg->train.ctx_len, job.batch_size, job.micro_batch, cfg->train.grad_reduce,
               job.zero_stage, cfg->train.precision, (long long)n, shape->grad_checkpoint ? "true" : "false",
               w.recompute_flops_per_unit, w.flops_per_unit, peaks[0], peaks[1], threads,
               measure ? "true" : "false", rt->sec_per_unit,
               rt->sec_zero, rt->sec_accumulate, rt->sec_reset, rt->sec_convert, rt->sec_optimizer, rt->sec_ema,
               intra.gbps, intra.latency_us, inter.gbps, inter.latency_us, node_memory);
    } else {
        printf("dreamstate plan: %s: task %s, %s, %.2fM trainable parameters, %.3g GFLOP/%s (forward + backward)\n",
               cfg->source, cfg->run.task, model, n / 1e6, w.flops_per_unit * 1e-9, per);
        char batch[64] = "";
        if (w.units_per_sample != 1) snprintf(batch, sizeof batch, " x %g = %.0f %s", w.units_per_sample,
                                              job.batch_size * w.units_per_sample, unit);
        printf("  batch %d samples%s/step; gradients %s: %.3g GB/step in 8 MiB buckets; ZeRO-%d\n", job.batch_size,
               batch, cfg->train.grad_reduce, n * (job.fp64 ? 8.0 : 4.0) * 1e-9, job.zero_stage);
        printf("  compute (matrix products %s): %s;\n           per parameter (ns): zero %.2f, fp64 accumulate %.2f, "
               "reset %.2f, convert %.2f, optimizer %.2f", cfg->train.precision, rates_note, rt->sec_zero * 1e9, rt->sec_accumulate * 1e9, rt->sec_reset * 1e9,
               rt->sec_convert * 1e9, rt->sec_optimizer * 1e9);
        if (w.ema_params) printf(", EMA %.2f", rt->sec_ema * 1e9);
        printf("\n  peak per rank (%s): FP32 FMA %.0f GFLOP/s, bf16 dot products %.0f GFLOP/s; MFU against the %s one\n",
               measure ? "measured here" : "dev machine defaults", peaks[0], peaks[1], job.bf16 ? "bf16" : "FP32");
        printf("  ring allreduce: intra-node %g GB/s %g us, inter-node %g GB/s %g us; node memory %.1f GB\n",
               intra.gbps, intra.latency_us, inter.gbps, inter.latency_us, node_memory * 1e-9);
        if (checkpointable)
            printf("  train.grad_checkpoint %s: %s\n", shape->grad_checkpoint ? "true" : "false",
                   shape->grad_checkpoint ? "RWKV-7 activations: each block's input and one block's internals; compute "
                                            "includes the blocks' second forward"
                                          : "RWKV-7 activations of every block kept (true keeps each block's input only)");
        printf("  (assumptions: dreamstate plan --help)\n");
        char per_s[32];
        snprintf(per_s, sizeof per_s, "%s/s", unit);
        printf("%6s %6s %13s %10s %9s %10s %9s %10s %6s %6s %7s %8s %5s\n", "nodes", "ranks", "micro x acc",
               "compute s", "comm s", "exposed s", "step s", per_s, "comm%", "MFU", "act GB", "GB/rank", "fits");
    }
    ds_plan_result cp_row = {0}, full_row = {0};  /* a row that fits only with train.grad_checkpoint */
    for (int i = 0; i < n_nodes; i++) {
        job.nodes = nodes[i];
        ds_plan_result r;
        ds_plan_predict(&job, &r);
        if (json) {
            print_row_json(&job, &r, unit, i == 0);
            continue;
        }
        if (!r.valid) {
            printf("%6d %6d   invalid: %s\n", job.nodes, r.ranks, r.reason);
            continue;
        }
        char ma[32];
        snprintf(ma, sizeof ma, "%d x %d", r.micro, r.accum);
        printf("%6d %6d %13s %10.4g %9.3g %10.3g %9.4g %10.4g %5.1f%% %5.1f%% %7.2f %8.2f %5s\n", job.nodes, r.ranks,
               ma, r.compute_s, r.comm_s, r.exposed_s, r.step_s, r.units_per_s, 100 * r.comm_share, 100 * r.mfu,
               r.activation_bytes * 1e-9, r.memory_bytes * 1e-9, r.fits ? "yes" : "NO");
        if (!r.fits && checkpointable && !shape->grad_checkpoint) {
            ds_plan_job with = job;
            with.shape.grad_checkpoint = 1;
            ds_plan_result c;
            ds_plan_predict(&with, &c);
            if (c.fits) { cp_row = c; full_row = r; }
        }
    }
    if (cp_row.fits) {
        ds_task_workload cw;
        ds_task_shape with = *shape;
        with.grad_checkpoint = 1;
        ds_plan_workload(&with, cp_row.micro, &cw);
        printf("  rows marked NO fit with train.grad_checkpoint: true (activations %.2f GB per rank instead of %.2f GB, "
               "%.0f%% more compute)\n", cp_row.activation_bytes * 1e-9, full_row.activation_bytes * 1e-9,
               100 * cw.recompute_flops_per_unit / cw.flops_per_unit);
    }
    if (json) printf("\n  ]\n}\n");
    return DS_EXIT_OK;
}
