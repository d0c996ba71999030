/* `dreamstate plan` arithmetic against closed forms: parameter count and layout against the real model
 * table, activation floats against ds_rwkv7_reserve, the ring alpha-beta formula, compute and memory
 * per rank, and the overlap model in its two limits (no backward to hide behind: everything exposed;
 * a very long backward: only the buckets that backward finishes last exposed). The other tasks'
 * workloads against the models they describe (parameters, DiT activations, a frozen RWKV-7), their
 * memory and compute in closed form (EMA, held buffers), their allreduce never hidden (the gradient
 * is handed over when the micro-batch is done), and their probes doing real work. */
#include "dreamstate/common.h"
#include "dreamstate/plan.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/state_dit.h"
#include "dreamstate/states.h"
#include "test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(fabs(b), 1e-300); }

static void check_layout(ds_rwkv7_dims d) {
    ds_rwkv7_default_ranks(&d, "released");
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d);
    CHECK(ds_plan_n_params(&d) == m.n_params, "L%d C%d V%d Dw%d: n_params %lld, model %lld", d.n_layer, d.n_embd,
          d.vocab_size, d.dim_w, (long long)ds_plan_n_params(&d), (long long)m.n_params);
    int64_t sum = 0;
    for (int i = 0; i < m.n_tensors; i++) sum += m.tensors[i].numel;
    CHECK(sum == m.n_params, "the table has padding (%lld of %lld): plan's no-padding closed form is wrong",
          (long long)sum, (long long)m.n_params);
    for (int l = 0; l <= d.n_layer; l++)
        CHECK(ds_plan_layer_begin(&d, l) == m.layer_begin[l], "layer_begin[%d]: %lld, model %lld", l,
              (long long)ds_plan_layer_begin(&d, l), (long long)m.layer_begin[l]);
    int shapes[][2] = {{1, 16}, {3, 17}, {2, 64}};
    for (int s = 0; s < 3; s++)
        for (int cp = 0; cp < 2; cp++) {
            int B = shapes[s][0], T = shapes[s][1];
            m.grad_checkpoint = cp;
            ds_rwkv7_reserve(&m, B, T);
            CHECK(ds_rwkv7_activation_floats(&d, B, T, cp) == m.acts_numel,
                  "activation floats B%d T%d grad_checkpoint %d: %lld, reserve %lld", B, T, cp,
                  (long long)ds_rwkv7_activation_floats(&d, B, T, cp), (long long)m.acts_numel);
            ds_rwkv7_destroy(&m);
            ds_rwkv7_create(&m, &d);
        }
    ds_rwkv7_destroy(&m);
}

static ds_plan_job base_job(void) {
    ds_plan_job j = {.shape = {.kind = DS_TASK_LM, .rwkv7 = {.n_layer = 4, .n_embd = 256, .vocab_size = 4096},
                               .ctx_len = 128}, .batch_size = 32,
                     .micro_batch = 2, .fp64 = 1, .nodes = 1, .ranks_per_node = 1, .bucket_bytes = (int64_t)1 << 20,
                     .node_memory_bytes = 1e12, .rates = {1e-4, 2e-9, 3e-9, 5e-9, 7e-9, 11e-9},
                     .intra = {2.0, 3.0}, .inter = {10.0, 5.0}};
    ds_rwkv7_default_ranks(&j.shape.rwkv7, "released");
    return j;
}

/* DiT activations and parameters without a model, against ds_dit_reserve and ds_dit_create. */
static void check_dit_sizes(ds_dit_dims d) {
    ds_dit m;
    ds_dit_create(&m, &d);
    CHECK(ds_dit_n_params(&d) == m.n_params, "DiT d%d depth %d: n_params %lld, model %lld", d.hidden, d.depth,
          (long long)ds_dit_n_params(&d), (long long)m.n_params);
    for (int B = 1; B <= 3; B += 2) {
        ds_dit_reserve(&m, B);
        CHECK(ds_dit_activation_floats(&d, B) == m.acts_numel,
              "DiT d%d depth %d B%d: activation floats %lld, reserve %lld", d.hidden, d.depth, B, (long long)ds_dit_activation_floats(&d, B), (long long)m.acts_numel);
    }
    ds_dit_destroy(&m);
}

/* The sum of squares of a probe's gradient after one micro-step: it did real work if above 0. */
static double probe_grad_sumsq(const float *grads, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)grads[i] * grads[i];
    return s;
}

static ds_hybrid_dims hybrid_dims(int train_static, int n_targets) {
    ds_hybrid_dims d = {.model = {.n_layer = 2, .n_embd = 128, .vocab_size = 256}, .n_targets = n_targets,
                        .targets = {0, 1}, .matrices = DS_HYBRID_R | DS_HYBRID_K | DS_HYBRID_V,
                        .param = DS_HYBRID_FULL, .u0_seed = DS_HYBRID_U0_SEED, .condition = DS_HYBRID_FIRST_TOKEN,
                        .prefix = 4, .learn_alpha = 1, .alpha_init = 0.9, .alpha_lr_scale = 10, .lambda_lm = 1,
                        .lambda_pd = 0.1, .t_star = 199, .p_uncond = 0.1, .train_static = train_static,
                        .dit = {.hidden = 32, .depth = 2, .heads = 2, .patch_size = 16, .mlp_ratio = 4}};
    ds_rwkv7_default_ranks(&d.model, "released");
    return d;
}

/* The hybrid's sizes against the hybrid it describes; its workload's memory, compute and overlap. */
static void check_hybrid(void) {
    /* frozen, trained, static baseline, the static baseline restricted to layer 1's W_r, W_k, W_v, and the
     * direct generator with the ln_out_prefix condition (frozen) */
    for (int k = 0; k < 5; k++) {
        int train_static = k == 1 || k == 2 || k == 3, n_targets = k == 2 || k == 3 ? 0 : 2;
        ds_hybrid_dims d = hybrid_dims(train_static, n_targets);
        if (k == 3) d.n_static_layers = 1, d.static_layers[0] = 1, d.static_matrices = 7;
        if (k == 4) d.generator = DS_HYBRID_DIRECT, d.lambda_pd = 0, d.condition = DS_HYBRID_LN_OUT_PREFIX;
        int whole_model = train_static && k != 3;
        ds_hybrid h;
        ds_hybrid_create(&h, &d);
        ds_fill_pattern(h.params, h.n_params, 0.1f);
        ds_fill_pattern(h.model.params, h.model.n_params, 0.1f);
        ds_probe_batch in = ds_probe_batch_random(2, 32, d.model.vocab_size);
        ds_hybrid_forward_backward(&h, 2, 32, in.tokens, in.targets, NULL, 1, 0, 0.5f, NULL);
        ds_probe_batch_free(&in);
        ds_hybrid_sizes z = ds_hybrid_sizes_of(&d, 2, 32);
        CHECK(z.n_params == h.n_params, "hybrid %d: n_params %lld, model %lld", k, (long long)z.n_params,
              (long long)h.n_params);
        CHECK(z.model_floats == (whole_model ? 0 : 2 * h.model.n_params), "hybrid %d: frozen RWKV-7 floats %lld", k,
              (long long)z.model_floats);
        CHECK(z.dit_activation_floats == (n_targets ? h.dit.acts_numel : 0) &&
              h.model.acts_numel == ds_rwkv7_activation_floats(&d.model, 2, 32, 0),
              "hybrid %d, 2 sequences: DiT activations %lld, reserved %lld; the RWKV-7's reserved for the micro-batch",
              k, (long long)z.dit_activation_floats, n_targets ? (long long)h.dit.acts_numel : 0LL);
        /* the whole work buffer block is at least the micro-batch's DiT batch and fused matrices */
        int rows = k == 4 ? 1 : 2;
        CHECK(z.work_floats >= n_targets * 2 * (4.0 * rows * h.n_img + 3.0 * h.n_mat * 128 * 128), "hybrid %d: work %.0f",
              k, z.work_floats);
        ds_hybrid_destroy(&h);

        ds_task_shape shape = {.kind = DS_TASK_HYBRID, .ctx_len = 32, .hybrid = d};
        ds_plan_job job = {.shape = shape, .batch_size = 8, .micro_batch = 2, .fp64 = 1, .nodes = 2,
                           .ranks_per_node = 1, .bucket_bytes = (int64_t)1 << 20, .node_memory_bytes = 1e12,
                           .rates = {.sec_per_unit = 1.0}, .intra = {2.0, 3.0}, .inter = {10.0, 5.0}};
        ds_plan_result r;
        ds_plan_predict(&job, &r);
        double act = 4.0 * ((double)ds_rwkv7_activation_floats(&d.model, 2, 32, 0) + z.dit_activation_floats) +
                     16.0 * 2 * 32;
        double want = ds_plan_allreduce_seconds(8.0 * z.n_params, 2, &job.inter, (double)job.bucket_bytes);
        CHECK(r.valid && r.n_params == z.n_params && close_rel(r.activation_bytes, act, 1e-12) &&
              /* 24 bytes per parameter (fp64) + 8 of MPI's buffers of the buckets in flight (2 ranks) */
              close_rel(r.memory_bytes, 32.0 * z.n_params + act + 4.0 * (z.model_floats + z.work_floats) +
                                        DS_PLAN_RUNTIME_BYTES, 1e-12),
              "hybrid %d: memory %.6g, activations %.6g vs %.6g", k, r.memory_bytes, r.activation_bytes, act);
        CHECK(close_rel(r.exposed_s, want, 1e-9) && close_rel(r.comm_s, want, 1e-9),
              "hybrid %d, long backward: nothing hides (exposed %.6g, allreduce %.6g)", k, r.exposed_s, want);
        CHECK(close_rel(r.compute_s, 2 * 2 * 32 * 1.0, 1e-12) && close_rel(r.units_per_s, 8 * 32 / r.step_s, 1e-12),
              "hybrid %d: compute %.6g", k, r.compute_s);

        ds_task_probe p;
        ds_hybrid_probe(&shape, 2, &p);
        p.step(p.ctx);
        double g = probe_grad_sumsq(p.grads, p.n_params);
        CHECK(p.n_params == z.n_params && g > 0 && isfinite(g), "hybrid %d probe: gradient sum of squares %g", k, g);
        p.destroy(p.ctx);
    }
}

/* The state-diffusion task from a state dataset's index header alone (the shard it names does not
 * exist: plan never opens it). */
static void check_state_diffusion(void) {
    char dir[] = "/tmp/ds-test-plan.XXXXXX", path[64];
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    snprintf(path, sizeof path, "%s/index.txt", dir);
    char *labels[] = {"a", "b", "c"};
    ds_states_info info = {.shape = {.n_layer = 3, .n_embd = 128, .n_head = 2, .head_size = 64, .cond_dim = 128,
                                     .flags = DS_COND_FIRST_TOKEN},
                           .n_records = 1000, .n_labels = 3, .labels = labels, .n_shards = 1, .max_tokens = 64,
                           .model = "rwkv7 test", .tokenizer = "byte", .checkpoint = "none", .contexts = "none"};
    ds_states_shard shard = {"absent.bin", 1000};
    ds_states_write_index(path, &info, &shard);
    ds_config cfg;
    ds_config_defaults(&cfg);
    snprintf(cfg.run.task, sizeof cfg.run.task, "state_diffusion");
    snprintf(cfg.diffusion.states, sizeof cfg.diffusion.states, "%s", path);
    snprintf(cfg.diffusion.layers, sizeof cfg.diffusion.layers, "0,2");
    cfg.dit.hidden = 32, cfg.dit.depth = 2, cfg.dit.heads = 2, cfg.dit.patch_size = 16, cfg.dit.mlp_ratio = 4;
    for (int element = 0; element <= 1; element++) {
        snprintf(cfg.diffusion.normalize, sizeof cfg.diffusion.normalize, element ? "element" : "head");
        ds_task_shape shape;
        ds_plan_task_shape(&cfg, &shape);
        ds_dit_dims want = ds_state_dit_dims(&info.shape, (int[]){0, 2}, 2, DS_STATE_COND_LABEL, 3,
                                             &(ds_dit_dims){.hidden = 32, .depth = 2, .heads = 2, .patch_size = 16,
                                                            .mlp_ratio = 4});
        CHECK(shape.kind == DS_TASK_STATE_DIFFUSION && memcmp(&shape.dit, &want, sizeof want) == 0 &&
              shape.dit.in_channels == 4 && shape.dit.num_classes == 3 && shape.n_records == 1000 &&
              shape.n_stats == (element ? 4 * 4096 : 4), "state DiT from the index header: %d channels, %lld stats",
              shape.dit.in_channels, (long long)shape.n_stats);
        check_dit_sizes(shape.dit);
        /* memory: 24 bytes per parameter (fp64) + 8 of MPI's buffers of the buckets in flight (2 ranks) +
         * the EMA and the rest held + activations; compute with
         * the EMA; 2 ranks on a very long backward: the whole allreduce exposed */
        ds_plan_job job = {.shape = shape, .batch_size = 8, .micro_batch = 2, .fp64 = 1, .nodes = 2,
                           .ranks_per_node = 1, .bucket_bytes = (int64_t)1 << 20, .node_memory_bytes = 1e12,
                           .rates = {.sec_per_unit = 1.0, .sec_optimizer = 11e-9, .sec_ema = 13e-9},
                           .intra = {2.0, 3.0}, .inter = {10.0, 5.0}};
        ds_plan_result r;
        ds_plan_predict(&job, &r);
        int64_t n = ds_dit_n_params(&shape.dit), X = 4 * 4096;
        double act = 4.0 * ds_dit_activation_floats(&shape.dit, 2) + 2 * (4.0 * (3 * X + 2) + 14);
        double held = 4.0 * n + 4.0 * 16 * 32 + 8.0 * shape.n_stats + 8.0 * 1000;
        CHECK(r.n_params == n && close_rel(r.activation_bytes, act, 1e-12) && close_rel(r.held_bytes, held, 1e-12) &&
              close_rel(r.memory_bytes, 32.0 * n + act + held + DS_PLAN_RUNTIME_BYTES, 1e-12),
              "state DiT memory %.6g (activations %.6g, held %.6g)", r.memory_bytes, r.activation_bytes, r.held_bytes);
        double comm = ds_plan_allreduce_seconds(8.0 * n, 2, &job.inter, (double)job.bucket_bytes);
        CHECK(close_rel(r.compute_s, 2 * 2 * 1.0 + n * (11e-9 + 13e-9), 1e-12) && close_rel(r.exposed_s, comm, 1e-9),
              "state DiT: compute %.9g, exposed %.6g of %.6g", r.compute_s, r.exposed_s, comm);
    }
    ds_task_shape shape;
    ds_plan_task_shape(&cfg, &shape);
    ds_task_probe p;
    ds_state_diffusion_probe(&shape, 2, &p);
    p.step(p.ctx);
    double g = probe_grad_sumsq(p.grads, p.n_params);
    CHECK(p.n_params == ds_dit_n_params(&shape.dit) && p.after_update && g > 0 && isfinite(g),
          "state DiT probe: gradient sum of squares %g", g);
    p.destroy(p.ctx);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    /* parameter table and activations */
    check_layout((ds_rwkv7_dims){.n_layer = 2, .n_embd = 128, .vocab_size = 256});
    check_layout((ds_rwkv7_dims){.n_layer = 3, .n_embd = 192, .vocab_size = 1000, .dim_w = 7, .dim_a = 9, .dim_v = 5, .dim_g = 3});
    check_layout((ds_rwkv7_dims){.n_layer = 1, .n_embd = 64, .vocab_size = 77});
    /* the 0.1B shape, by its published size (~191M with the 65536 vocabulary) */
    ds_rwkv7_dims small = {.n_layer = 12, .n_embd = 768, .vocab_size = 65536};
    ds_rwkv7_default_ranks(&small, "released");
    CHECK(fabs(ds_plan_n_params(&small) / 1e6 - 191.0) < 0.5, "0.1B: %.2fM parameters", ds_plan_n_params(&small) / 1e6);

    /* ring allreduce: 2(p-1)/p bytes / beta + pieces x 2(p-1) alpha */
    ds_plan_link link = {10.0, 5.0};
    double t = ds_plan_allreduce_seconds(100e6, 4, &link, 8388608.0);
    CHECK(close_rel(t, 1.5 * 100e6 / 10e9 + 12 * 6 * 5e-6, 1e-12), "allreduce 100 MB p4: %.9g", t);
    CHECK(close_rel(ds_plan_allreduce_seconds(8e6, 2, &link, INFINITY), 8e6 / 10e9 + 2 * 5e-6, 1e-12), "one piece");
    CHECK(ds_plan_allreduce_seconds(1e9, 1, &link, 8388608.0) == 0.0, "one rank communicates nothing");

    /* one rank: compute only, closed forms; rates: token 1e-4, zero 2e-9, accumulate 3e-9, reset 5e-9,
     * convert 7e-9, optimizer 11e-9. fp64: per micro-step zero + accumulate, per step reset + convert +
     * optimizer; memory 4 + 4 + 8 + 8 bytes/param */
    ds_plan_job job = base_job();
    ds_plan_result r;
    ds_plan_predict(&job, &r);
    int64_t n = ds_plan_n_params(&job.shape.rwkv7);
    double act = 4.0 * ds_rwkv7_activation_floats(&job.shape.rwkv7, 2, 128, 0) + 16.0 * 2 * 128;
    double compute = 16 * (2 * 128 * 1e-4 + n * 5e-9) + n * 23e-9;
    CHECK(r.valid && r.micro == 2 && r.accum == 16, "1 rank: micro %d accum %d", r.micro, r.accum);
    CHECK(close_rel(r.compute_s, compute, 1e-12) && r.exposed_s == 0 && r.comm_s == 0 && r.step_s == r.compute_s,
          "1 rank: compute %.9g vs %.9g, exposed %g", r.compute_s, compute, r.exposed_s);
    CHECK(close_rel(r.units_per_s, 32 * 128 / compute, 1e-12), "tokens/s %g", r.units_per_s);
    CHECK(close_rel(r.memory_bytes, 24.0 * n + act + DS_PLAN_RUNTIME_BYTES, 1e-12), "fp64 memory %.6g", r.memory_bytes);
    job.fp64 = 0;  /* fp32: no accumulator, gradients zeroed once per step */
    ds_plan_predict(&job, &r);
    CHECK(close_rel(r.memory_bytes, 16.0 * n + act + DS_PLAN_RUNTIME_BYTES, 1e-12), "fp32 memory %.6g", r.memory_bytes);
    CHECK(close_rel(r.compute_s, 16 * 2 * 128 * 1e-4 + n * (2e-9 + 11e-9), 1e-12), "fp32 compute %.9g", r.compute_s);
    /* bf16: the same compute for the same rates, + the converted operands (micro x T x F and F x C bf16,
     * F = max(V, 4C)); MFU against the given peak */
    job.bf16 = 1;
    job.peak_gflops = 500;
    ds_plan_result r16;
    ds_plan_predict(&job, &r16);
    const ds_rwkv7_dims *dm = &job.shape.rwkv7;
    double F = dm->vocab_size > 4 * dm->n_embd ? dm->vocab_size : 4.0 * dm->n_embd;
    CHECK(close_rel(r16.memory_bytes, r.memory_bytes + 2.0 * (2 * 128 * F + F * dm->n_embd), 1e-12) &&
              r16.compute_s == r.compute_s, "bf16 memory %.6g", r16.memory_bytes);
    double flops_tok = ds_rwkv7_flops_per_token(dm, 128);
    CHECK(close_rel(r16.mfu, flops_tok * r16.units_per_s / 500e9, 1e-12) && r.mfu == 0, "MFU %.6g (none without a peak)",
          r16.mfu);
    job.bf16 = 0;
    job.peak_gflops = 0;
    job.fp64 = 1;  /* one rank, one micro-step: the trainer skips the fp64 accumulator (an exact copy) */
    job.micro_batch = 32;
    ds_plan_predict(&job, &r);
    CHECK(r.accum == 1 && close_rel(r.compute_s, 32 * 128 * 1e-4 + n * (2e-9 + 11e-9), 1e-12), "passthrough compute %.9g",
          r.compute_s);

    /* nothing to hide behind (zero compute): every bucket exposed, on the link the layout picks */
    struct { int nodes, rpn; double gbps, lat; } links[] = {{1, 4, 2.0, 3.0}, {4, 1, 10.0, 5.0}, {2, 2, 2.0, 5.0}};
    for (int k = 0; k < 3; k++) {
        for (int fp64 = 0; fp64 <= 1; fp64++) {
            job = base_job();
            job.fp64 = fp64;
            job.nodes = links[k].nodes;
            job.ranks_per_node = links[k].rpn;
            job.rates = (ds_plan_rates){0};
            ds_plan_predict(&job, &r);
            ds_plan_link lk = {links[k].gbps, links[k].lat};
            double bytes = n * (fp64 ? 8.0 : 4.0);
            double want = ds_plan_allreduce_seconds(bytes, 4, &lk, (double)job.bucket_bytes);
            CHECK(r.valid && r.ranks == 4 && r.n_buckets == (int64_t)ceil(bytes / job.bucket_bytes),
                  "%d nodes x %d: buckets %lld", links[k].nodes, links[k].rpn, (long long)r.n_buckets);
            CHECK(close_rel(r.comm_s, want, 1e-9) && close_rel(r.exposed_s, want, 1e-9) && close_rel(r.comm_share, 1.0, 1e-12),
                  "%d nodes x %d fp64=%d: comm %.9g exposed %.9g, closed form %.9g", links[k].nodes, links[k].rpn, fp64,
                  r.comm_s, r.exposed_s, want);
        }
    }

    /* a very long backward: everything hides except the buckets that backward finishes last, when layer 0
     * is done (the embedding's gradient takes no time after that): offsets below layer_begin(1) */
    job = base_job();
    job.nodes = 2;
    job.rates = (ds_plan_rates){.sec_per_unit = 1.0};
    ds_plan_predict(&job, &r);
    int64_t len = job.bucket_bytes / 8, k_last = (ds_plan_layer_begin(&job.shape.rwkv7, 1) + len - 1) / len;
    double want = ds_plan_allreduce_seconds((double)k_last * len * 8, 2, &job.inter, (double)job.bucket_bytes);
    CHECK(close_rel(r.exposed_s, want, 1e-9), "long backward: exposed %.9g, last buckets %.9g", r.exposed_s, want);
    CHECK(r.comm_s > 2 * r.exposed_s, "long backward: most of the allreduce (%.6g s) hides", r.comm_s);

    /* ZeRO-1: reduce to owners (half a ring allreduce of the gradient) + sharing fp32 parameters (half a
     * ring allreduce of 4 bytes/param), same buckets; rank 0 owns ~1/p of the moments but holds the full
     * ones for checkpoints */
    job = base_job();
    job.nodes = 4;
    job.zero_stage = 1;
    job.rates = (ds_plan_rates){0};
    ds_plan_predict(&job, &r);
    len = job.bucket_bytes / 8;
    if (len > n / 16) len = n / 16;
    double zero_comm = 0.5 * ds_plan_allreduce_seconds(8.0 * n, 4, &job.inter, 8.0 * len)
                     + 0.5 * ds_plan_allreduce_seconds(4.0 * n, 4, &job.inter, 4.0 * len);
    CHECK(close_rel(r.comm_s, zero_comm, 1e-9) && close_rel(r.exposed_s, zero_comm, 1e-9), "ZeRO-1 comm %.9g vs %.9g",
          r.comm_s, zero_comm);
    CHECK(r.n_owned >= n / 4 && r.n_owned <= n / 4 + len, "ZeRO-1: rank 0 owns %lld of %lld", (long long)r.n_owned,
          (long long)n);
    /* + the full moments rank 0 gathers, + every fp64 bucket in flight (MPI's temporary buffers) */
    CHECK(close_rel(r.memory_bytes, 16.0 * n + 8.0 * r.n_owned + 8.0 * n + 8.0 * n + act + DS_PLAN_RUNTIME_BYTES, 1e-12),
          "ZeRO-1 memory %.6g", r.memory_bytes);
    CHECK(close_rel(r.node_bytes, r.memory_bytes, 1e-12), "one rank per node");
    job.ranks_per_node = 2;
    job.nodes = 2;
    ds_plan_predict(&job, &r);
    CHECK(close_rel(r.node_bytes, 2 * r.memory_bytes - 8.0 * n, 1e-12), "node 0 = rank 0 + a rank without full moments");

    /* fits, and a batch that does not split */
    job = base_job();
    job.node_memory_bytes = 24.0 * n + act + DS_PLAN_RUNTIME_BYTES - 1;
    ds_plan_predict(&job, &r);
    CHECK(!r.fits, "one byte short does not fit");
    job.node_memory_bytes += 1;
    ds_plan_predict(&job, &r);
    CHECK(r.fits, "exactly enough fits");
    job.nodes = 3;
    ds_plan_predict(&job, &r);
    CHECK(!r.valid && strstr(r.reason, "not a multiple"), "32 sequences over 3 ranks x 2: %s", r.reason);
    job.micro_batch = 0;
    job.nodes = 8;
    ds_plan_predict(&job, &r);
    CHECK(r.valid && r.micro == 4 && r.accum == 1, "micro_batch 0 = batch / ranks: %d x %d", r.micro, r.accum);

    /* train.grad_checkpoint: its own (smaller) activations, and the blocks' forward once more in the
     * workload's recomputation FLOPs (what the rates are applied to; MFU's FLOPs stay the model's) */
    job = base_job();
    ds_plan_result full;
    ds_plan_predict(&job, &full);
    job.shape.grad_checkpoint = 1;
    ds_plan_predict(&job, &r);
    const ds_rwkv7_dims *jd = &job.shape.rwkv7;
    double act_cp = 4.0 * ds_rwkv7_activation_floats(jd, 2, 128, 1) + 16.0 * 2 * 128;
    CHECK(act_cp < 0.6 * act && close_rel(r.activation_bytes, act_cp, 1e-12) &&
          close_rel(r.memory_bytes, full.memory_bytes - act + act_cp, 1e-12),
          "grad_checkpoint activations %.6g (without %.6g), memory %.6g", r.activation_bytes, act, r.memory_bytes);
    ds_task_workload w0, w1;
    ds_task_shape without = job.shape;
    without.grad_checkpoint = 0;
    ds_plan_workload(&without, 2, &w0);
    ds_plan_workload(&job.shape, 2, &w1);
    double C = jd->n_embd, block_fwd = jd->n_layer * (2 * (12 * C * C + 2 * C * (jd->dim_w + jd->dim_a + jd->dim_v +
                                                                                 jd->dim_g)) + 9 * 64 * C);
    CHECK(w0.recompute_flops_per_unit == 0 && close_rel(w1.recompute_flops_per_unit, block_fwd, 1e-12) &&
          w1.flops_per_unit == w0.flops_per_unit && block_fwd > 0.15 * w0.flops_per_unit,
          "grad_checkpoint recomputes %.6g FLOPs per token (%.6g in the step)", w1.recompute_flops_per_unit,
          w1.flops_per_unit);
    /* measured rates: the model's real forward + backward runs and gives usable numbers */
    ds_rwkv7_dims tiny = {.n_layer = 2, .n_embd = 64, .vocab_size = 64};
    ds_rwkv7_default_ranks(&tiny, "released");
    ds_plan_rates mr = ds_plan_measure_rates(&(ds_task_shape){.kind = DS_TASK_LM, .rwkv7 = tiny, .ctx_len = 16}, 2, 1, 0);
    double rates[] = {mr.sec_per_unit, mr.sec_zero, mr.sec_accumulate, mr.sec_reset, mr.sec_convert, mr.sec_optimizer};
    for (int i = 0; i < 6; i++) CHECK(rates[i] > 0 && isfinite(rates[i]), "measured rate %d: %g s", i, rates[i]);

    check_dit_sizes((ds_dit_dims){.in_channels = 3, .input_size = 64, .patch_size = 8, .hidden = 48, .depth = 3,
                                  .heads = 3, .mlp_ratio = 4, .num_classes = 5});
    check_dit_sizes((ds_dit_dims){.in_channels = 2, .input_size = 64, .patch_size = 16, .hidden = 32, .depth = 0,
                                  .heads = 2, .mlp_ratio = 2, .cond_dim = 7});
    check_hybrid();
    check_state_diffusion();
    return test_summary("test_plan");
}
