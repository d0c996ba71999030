/* Training-step throughput of the C DiT (src/dit/README.md §1, §2): forward + backward + gradient
 * clipping + AdamW on random label-conditioned samples, for a given shape. Prints one JSON line for
 * tests/bench.sh: samples/s, tokens/s, GFLOP/s (3x the forward's matrix-product FLOPs, as the trainer
 * counts them) and MFU against the FP32 peak measured here with the same threads, and where the time
 * of the best step goes: forward, backward, clipping + AdamW ("optim_s"); the step's token-wise Linear
 * layers (matrix products and bias sums) timed alone at the same shapes ("linear_s"), the attention
 * kernels alone ("attention_s"), and the rest ("other_s": adaLN modulation, gated residuals, GELU, the
 * per-sample adaLN and timestep Linears, patch layouts, embeddings).
 * With `bf16` the matrix products take bf16 operands (train.precision bf16, src/dit/README.md §2) and MFU
 * is against the bf16 peak; with `both` the steps alternate between fp32 and bf16 on one model and one
 * JSON line per precision is printed.
 * usage: bench_dit C I P D DEPTH HEADS B STEPS [THREADS [fp32|bf16|both]] */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/dit.h"
#include "dreamstate/kernels.h"
#include "dreamstate/optim.h"

#include <stdlib.h>
#include <string.h>

/* Seconds of one forward + backward of a Linear [rows, in] -> [rows, out] (ds_linear and
 * ds_linear_backward, with the input gradient if want_dx), best of 3 after a warm-up. */
static double time_linear(int64_t rows, int in, int out, int want_dx) {
    float *x = ds_alloc(sizeof(float) * rows * in), *y = ds_alloc(sizeof(float) * rows * out);
    float *W = ds_alloc(sizeof(float) * in * out), *dW = ds_alloc(sizeof(float) * in * out);
    float *b = ds_alloc(sizeof(float) * out), *db = ds_alloc(sizeof(float) * out);
    float *dx = ds_alloc(sizeof(float) * rows * in);
    for (int64_t i = 0; i < rows * in; i++) x[i] = (float)ds_rng_normal(3, 1, (uint64_t)i);
    for (int64_t i = 0; i < (int64_t)in * out; i++) W[i] = 0.02f * (float)ds_rng_normal(3, 2, (uint64_t)i);
    double best = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = ds_now_seconds();
        ds_linear(rows, in, out, x, W, b, y);
        ds_linear_backward(rows, in, out, x, W, y, dW, db, want_dx ? dx : NULL, 0);
        double dt = ds_now_seconds() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    ds_free(x); ds_free(y); ds_free(W); ds_free(dW); ds_free(b); ds_free(db); ds_free(dx);
    return best;
}

/* Attention forward + backward of a batch at the DiT's layout (q, k, v interleaved per token as the
 * qkv Linear writes them), best of 3 after a warm-up. */
static double time_attention(int B, int H, int T, int dh) {
    int D = H * dh;
    int64_t n = (int64_t)B * T * 3 * D;
    float *qkv = ds_alloc(sizeof(float) * n), *dqkv = ds_alloc(sizeof(float) * n);
    float *o = ds_alloc(sizeof(float) * (int64_t)B * T * D), *lse = ds_alloc(sizeof(float) * (int64_t)B * H * T);
    for (int64_t i = 0; i < n; i++) qkv[i] = (float)ds_rng_normal(5, 1, (uint64_t)i);
    ds_attn_layout in = {(int64_t)T * 3 * D, dh, 3 * D}, out = {(int64_t)T * D, dh, D};
    double best = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = ds_now_seconds();
        ds_k.attention_forward(B, H, T, dh, qkv, qkv + D, qkv + 2 * D, in, o, out, lse);
        ds_k.attention_backward(B, H, T, dh, qkv, qkv + D, qkv + 2 * D, in, o, o, out, lse, dqkv, dqkv + D,
                                dqkv + 2 * D);
        double dt = ds_now_seconds() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    ds_free(qkv); ds_free(dqkv); ds_free(o); ds_free(lse);
    return best;
}

int main(int argc, char **argv) {
    if (argc < 9) { fprintf(stderr, "usage: bench_dit C I P D DEPTH HEADS B STEPS [THREADS [fp32|bf16|both]]\n"); return 2; }
    enum { LABELS = 8 };
    ds_dit_dims d = {.in_channels = atoi(argv[1]), .input_size = atoi(argv[2]), .patch_size = atoi(argv[3]),
                     .hidden = atoi(argv[4]), .depth = atoi(argv[5]), .heads = atoi(argv[6]), .mlp_ratio = 4,
                     .num_classes = LABELS};
    int B = atoi(argv[7]), steps = atoi(argv[8]), threads = argc > 9 ? atoi(argv[9]) : 0;
    const char *which = argc > 10 ? argv[10] : "fp32";
    const char *arch = ds_blas_init(threads);
    const char *kern = ds_kernels_init();
    threads = ds_blas_threads();
    int n_prec = strcmp(which, "both") == 0 ? 2 : 1;
    ds_precision precs[2] = {strcmp(which, "bf16") == 0 ? DS_PRECISION_BF16 : DS_PRECISION_FP32, DS_PRECISION_BF16};
    const char *backends[2];
    for (int p = 0; p < n_prec; p++) backends[p] = ds_blas_set_precision(precs[p]);
    ds_dit m;
    ds_dit_create(&m, &d);
    ds_dit_init_weights(&m, 1);
    ds_optim_group *groups = ds_alloc(sizeof(ds_optim_group) * m.n_tensors);
    for (int i = 0; i < m.n_tensors; i++)
        groups[i] = (ds_optim_group){m.tensors[i].offset, m.tensors[i].numel, 1.0f, m.tensors[i].weight_decay};
    int64_t all_begin = 0, all_len = m.n_params;
    ds_adamw opt;
    ds_adamw_create(&opt, 1, &all_begin, &all_len, m.n_tensors, groups, 0.9, 0.999, 1e-8, 0.01);
    int64_t n = (int64_t)d.in_channels * d.input_size * d.input_size;
    float *x = ds_alloc(sizeof(float) * B * n), *noise = ds_alloc(sizeof(float) * B * n);
    int32_t *t = ds_alloc(sizeof(int32_t) * B), *labels = ds_alloc(sizeof(int32_t) * B);
    ds_dit_cond cond = {.labels = labels};
    /* per precision: total time, and the best step with its phases */
    double total[2] = {0, 0}, best[2] = {1e30, 1e30}, t_fwd[2] = {0}, t_bwd[2] = {0}, t_opt[2] = {0};
    /* steps alternate between the precisions, so a change of load slows both alike; the first step of
     * each warms up (allocation, page faults, BLIS buffers, oneDNN kernels) */
    for (int s = -n_prec; s < steps * n_prec; s++) {
        int p = (s + n_prec) % n_prec;
        uint64_t draw = (uint64_t)(s + n_prec) / (uint64_t)n_prec;  /* both precisions see the same batches */
        ds_blas_set_precision(precs[p]);
        for (int64_t i = 0; i < B * n; i++) {
            x[i] = (float)ds_rng_normal(7, 1, draw * B * n + i);
            noise[i] = (float)ds_rng_normal(7, 2, draw * B * n + i);
        }
        for (int b = 0; b < B; b++) {
            t[b] = (int32_t)(ds_rng_u64(7, 3, draw * B + b) % 1000);
            labels[b] = (int32_t)(ds_rng_u64(7, 4, draw * B + b) % (LABELS + 1));
        }
        double t0 = ds_now_seconds();
        ds_dit_zero_grad(&m);
        ds_dit_forward(&m, B, x, t, &cond, noise, NULL);
        double t1 = ds_now_seconds();
        ds_dit_backward(&m, NULL);
        double t2 = ds_now_seconds();
        ds_clip_grad_norm(m.grads, m.n_params, 1.0);
        ds_adamw_step(&opt, m.params, m.grads, 1e-4, s + n_prec + 1);
        double t3 = ds_now_seconds();
        if (s >= 0) {
            total[p] += t3 - t0;
            if (t3 - t0 < best[p]) best[p] = t3 - t0, t_fwd[p] = t1 - t0, t_bwd[p] = t2 - t1, t_opt[p] = t3 - t2;
        }
    }
    double peaks[2] = {ds_measure_fma_peak(threads, 0.5), ds_measure_bf16_peak(threads, 0.5)};
    int D = d.hidden, R = 4 * D, T = m.tokens, P = m.patch_dim;
    int64_t BT = (int64_t)B * T;
    double flops = 3 * ds_dit_forward_flops(&d) * B;
    const char *arch_env = getenv("BLIS_ARCH_TYPE");  /* as ds_blas_init left it: the PyTorch peer gets the same */
    for (int p = 0; p < n_prec; p++) {
        int bf16 = precs[p] == DS_PRECISION_BF16;
        ds_blas_set_precision(precs[p]);
        /* the token-wise Linears alone, in this precision: per block qkv, proj, fc1, fc2, then patch
         * embed and final Linear */
        double linear = d.depth * (time_linear(BT, D, 3 * D, 1) + time_linear(BT, D, D, 1) + time_linear(BT, D, R, 1) +
                                   time_linear(BT, R, D, 1)) +
                        time_linear(BT, P, D, 0) + time_linear(BT, D, P, 1);
        double attention = d.depth * time_attention(B, d.heads, T, D / d.heads);
        double step = total[p] / steps, peak = peaks[bf16];
        printf("{\"shape\":\"C%d I%d p%d d%d depth%d heads%d B%d\",\"params\":%lld,\"tokens\":%d,\"threads\":%d,"
               "\"kernels\":\"%s\",\"blis\":\"%s\",\"blis_arch_type\":\"%s\",\"precision\":\"%s\",\"products\":\"%s\","
               "\"step_s\":%.4f,\"best_step_s\":%.4f,\"samples_per_s\":%.3f,\"tokens_per_s\":%.1f,\"gflops\":%.1f,"
               "\"best_gflops\":%.1f,\"peak_gflops\":%.1f,\"fp32_peak_gflops\":%.1f,\"bf16_peak_gflops\":%.1f,"
               "\"mfu\":%.4f,\"best_mfu\":%.4f,\"fp32_peak_share\":%.4f,\"forward_s\":%.4f,\"backward_s\":%.4f,"
               "\"optim_s\":%.4f,\"linear_s\":%.4f,\"attention_s\":%.4f,\"other_s\":%.4f}\n",
               d.in_channels, d.input_size, d.patch_size, D, d.depth, d.heads, B, (long long)m.n_params, T, threads,
               kern, arch, arch_env ? arch_env : "", bf16 ? "bf16" : "fp32", backends[p], step, best[p], B / step,
               BT / step, flops / step * 1e-9, flops / best[p] * 1e-9, peak, peaks[0], peaks[1],
               flops / step * 1e-9 / peak, flops / best[p] * 1e-9 / peak, flops / step * 1e-9 / peaks[0], t_fwd[p],
               t_bwd[p], t_opt[p], linear, attention, best[p] - t_opt[p] - linear - attention);
    }
    ds_adamw_destroy(&opt);
    ds_dit_destroy(&m);
    ds_free(groups); ds_free(x); ds_free(noise); ds_free(t); ds_free(labels);
    return 0;
}
