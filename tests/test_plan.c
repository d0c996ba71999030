/* `dreamstate plan` arithmetic against closed forms: parameter count and layout against the real model
 * table, activation floats against ds_rwkv7_reserve, the ring alpha-beta formula, compute and memory
 * per rank, and the overlap model in its two limits (no backward to hide behind: everything exposed;
 * a very long backward: only the buckets that backward finishes last exposed). */
#include "dreamstate/plan.h"
#include "dreamstate/rwkv7.h"
#include "test.h"

#include <math.h>
#include <string.h>

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
    for (int s = 0; s < 3; s++) {
        int B = shapes[s][0], T = shapes[s][1];
        ds_rwkv7_reserve(&m, B, T);
        CHECK(ds_rwkv7_activation_floats(&d, B, T) == m.acts_numel, "activation floats B%d T%d: %lld, reserve %lld", B,
              T, (long long)ds_rwkv7_activation_floats(&d, B, T), (long long)m.acts_numel);
        ds_rwkv7_destroy(&m);
        ds_rwkv7_create(&m, &d);
    }
    ds_rwkv7_destroy(&m);
}

static ds_plan_job base_job(void) {
    ds_plan_job j = {.dims = {.n_layer = 4, .n_embd = 256, .vocab_size = 4096}, .ctx_len = 128, .batch_size = 32,
                     .micro_batch = 2, .fp64 = 1, .nodes = 1, .ranks_per_node = 1, .bucket_bytes = (int64_t)1 << 20,
                     .node_memory_bytes = 1e12, .rates = {1e-4, 2e-9, 3e-9, 5e-9, 7e-9, 11e-9},
                     .intra = {2.0, 3.0}, .inter = {10.0, 5.0}};
    ds_rwkv7_default_ranks(&j.dims, "released");
    return j;
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
    int64_t n = ds_plan_n_params(&job.dims);
    double act = 4.0 * ds_rwkv7_activation_floats(&job.dims, 2, 128) + 16.0 * 2 * 128;
    double compute = 16 * (2 * 128 * 1e-4 + n * 5e-9) + n * 23e-9;
    CHECK(r.valid && r.micro == 2 && r.accum == 16, "1 rank: micro %d accum %d", r.micro, r.accum);
    CHECK(close_rel(r.compute_s, compute, 1e-12) && r.exposed_s == 0 && r.comm_s == 0 && r.step_s == r.compute_s,
          "1 rank: compute %.9g vs %.9g, exposed %g", r.compute_s, compute, r.exposed_s);
    CHECK(close_rel(r.tokens_per_s, 32 * 128 / compute, 1e-12), "tokens/s %g", r.tokens_per_s);
    CHECK(close_rel(r.memory_bytes, 24.0 * n + act + DS_PLAN_RUNTIME_BYTES, 1e-12), "fp64 memory %.6g", r.memory_bytes);
    job.fp64 = 0;  /* fp32: no accumulator, gradients zeroed once per step */
    ds_plan_predict(&job, &r);
    CHECK(close_rel(r.memory_bytes, 16.0 * n + act + DS_PLAN_RUNTIME_BYTES, 1e-12), "fp32 memory %.6g", r.memory_bytes);
    CHECK(close_rel(r.compute_s, 16 * 2 * 128 * 1e-4 + n * (2e-9 + 11e-9), 1e-12), "fp32 compute %.9g", r.compute_s);
    /* bf16: the same compute for the same rates, + the converted operands (micro x T x F and F x C bf16,
     * F = max(V, 4C) = 4096 here); MFU against the given peak */
    job.bf16 = 1;
    job.peak_gflops = 500;
    ds_plan_result r16;
    ds_plan_predict(&job, &r16);
    CHECK(close_rel(r16.memory_bytes, r.memory_bytes + 2.0 * (2 * 128 * 4096 + 4096 * 256), 1e-12) &&
              r16.compute_s == r.compute_s, "bf16 memory %.6g", r16.memory_bytes);
    double flops_tok = ds_rwkv7_flops_per_token(&job.dims, 128);
    CHECK(close_rel(r16.mfu, flops_tok * r16.tokens_per_s / 500e9, 1e-12) && r.mfu == 0, "MFU %.6g (none without a peak)",
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
    job.rates = (ds_plan_rates){.sec_per_token = 1.0};
    ds_plan_predict(&job, &r);
    int64_t len = job.bucket_bytes / 8, k_last = (ds_plan_layer_begin(&job.dims, 1) + len - 1) / len;
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
    CHECK(close_rel(r.memory_bytes, 16.0 * n + 8.0 * r.n_owned + 8.0 * n + act + DS_PLAN_RUNTIME_BYTES, 1e-12),
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

    /* measured rates: the model's real forward + backward runs and gives usable numbers */
    ds_rwkv7_dims tiny = {.n_layer = 2, .n_embd = 64, .vocab_size = 64};
    ds_rwkv7_default_ranks(&tiny, "released");
    ds_plan_rates mr = ds_plan_measure_rates(&tiny, 2, 16, 1, 0);
    double rates[] = {mr.sec_per_token, mr.sec_zero, mr.sec_accumulate, mr.sec_reset, mr.sec_convert, mr.sec_optimizer};
    for (int i = 0; i < 6; i++) CHECK(rates[i] > 0 && isfinite(rates[i]), "measured rate %d: %g s", i, rates[i]);
    return test_summary("test_plan");
}
