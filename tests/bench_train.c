/* Training-step throughput of the C RWKV-7: forward + backward + gradient clipping + AdamW, random
 * tokens, for a given shape, with fp32 or bf16 matrix products (blas.h), or both: then the steps
 * alternate between the two on the same model (after a warm-up step of each), so that a machine whose
 * load changes slows both alike. With `frozen`, a state-tuning step instead (fp32): forward from a state
 * and the frozen backward to the state gradient (src/rwkv7/README.md §3.4), its MFU over the frozen
 * step's FLOPs. Prints one JSON line per precision (tokens/s, MFU against the peak of that precision,
 * FP32 FMA or bf16 dot products, measured here with the same threads; the shares of the step spent in
 * matrix products and in bf16 conversions) for tests/bench.sh.
 * usage: bench_train L C V T B STEPS [THREADS [fp32|bf16|both|frozen]]   (STEPS per precision) */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/optim.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/train.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: bench_train L C V T B STEPS [THREADS [fp32|bf16|both|frozen]]\n"); return 2; }
    int L = atoi(argv[1]), C = atoi(argv[2]), V = atoi(argv[3]), T = atoi(argv[4]), B = atoi(argv[5]);
    int steps = atoi(argv[6]), threads = argc > 7 ? atoi(argv[7]) : 0;
    const char *which = argc > 8 ? argv[8] : "fp32";
    int frozen = strcmp(which, "frozen") == 0;
    const char *arch = ds_blas_init(threads);
    const char *kern = ds_kernels_init();
    threads = ds_blas_threads();
    int n_prec = strcmp(which, "both") == 0 ? 2 : 1;
    ds_precision precs[2] = {strcmp(which, "bf16") == 0 ? DS_PRECISION_BF16 : DS_PRECISION_FP32, DS_PRECISION_BF16};
    const char *backends[2];
    for (int p = 0; p < n_prec; p++) backends[p] = ds_blas_set_precision(precs[p]);
    ds_rwkv7_dims d = {.n_layer = L, .n_embd = C, .vocab_size = V};
    ds_rwkv7_default_ranks(&d, "released");
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d);
    ds_rwkv7_init_weights(&m, 1);
    ds_optim_group *groups = ds_train_optim_groups(&m);
    int64_t all_begin = 0, all_len = m.n_params;
    ds_adamw opt;
    ds_adamw_create(&opt, 1, &all_begin, &all_len, m.n_tensors, groups, 0.9, 0.99, 1e-18, 0.001);
    int32_t *tok = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
    ds_rwkv7_state s0, ds0;
    ds_rwkv7_state_create(&s0, &d, B);
    ds_rwkv7_state_create(&ds0, &d, B);
    m.frozen = frozen;
    double best[2] = {1e30, 1e30}, total[2] = {0, 0}, products[2] = {0, 0}, conversions[2] = {0, 0};
    /* the first step of each precision warms up (allocation, page faults, BLIS buffers, oneDNN kernels) */
    for (int s = -n_prec; s < steps * n_prec; s++) {
        int p = (s + n_prec) % n_prec;
        ds_blas_set_precision(precs[p]);
        for (int64_t i = 0; i < (int64_t)B * T; i++) {
            tok[i] = (int32_t)(ds_rng_u64(7, 1, (uint64_t)(s + n_prec) * B * T + i) % V);
            tgt[i] = (int32_t)(ds_rng_u64(7, 2, (uint64_t)(s + n_prec) * B * T + i) % V);
        }
        ds_blas_seconds b0 = ds_blas_time();
        double t0 = ds_now_seconds();
        if (frozen) {
            ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, &s0, NULL, NULL);
            ds_rwkv7_backward_state(&m, &ds0);
        } else {
            ds_rwkv7_zero_grad(&m);
            ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, NULL, NULL, NULL);
            ds_rwkv7_backward(&m);
            ds_clip_grad_norm(m.grads, m.n_params, 1.0);
            ds_adamw_step(&opt, m.params, m.grads, 1e-4, s + n_prec + 1);
        }
        double dt = ds_now_seconds() - t0;
        ds_blas_seconds b1 = ds_blas_time();
        if (s >= 0) {
            total[p] += dt;
            best[p] = dt < best[p] ? dt : best[p];
            products[p] += b1.products - b0.products;
            conversions[p] += b1.conversions - b0.conversions;
        }
    }
    double peaks[2] = {ds_measure_fma_peak(threads, 1.0), ds_measure_bf16_peak(threads, 1.0)};
    double flops = frozen ? ds_rwkv7_frozen_flops_per_token(&d) : ds_rwkv7_flops_per_token(&d, T);
    int64_t params = 0;
    for (int i = 0; i < m.n_tensors; i++) params += m.tensors[i].numel;
    const char *arch_env = getenv("BLIS_ARCH_TYPE");  /* as ds_blas_init left it: the PyTorch peer gets the same */
    for (int p = 0; p < n_prec; p++) {
        int bf16 = precs[p] == DS_PRECISION_BF16;
        double tok_s = (double)B * T * steps / total[p], peak = peaks[bf16];
        printf("{\"mode\":\"%s\",\"shape\":\"L%d C%d V%d T%d B%d\",\"params\":%lld,\"threads\":%d,\"kernels\":\"%s\","
               "\"blis\":\"%s\",\"blis_arch_type\":\"%s\",\"precision\":\"%s\",\"products\":\"%s\",\"step_s\":%.4f,"
               "\"best_step_s\":%.4f,\"tokens_per_s\":%.1f,\"gflops\":%.1f,\"peak_gflops\":%.1f,\"fp32_peak_gflops\":%.1f,"
               "\"bf16_peak_gflops\":%.1f,\"mfu\":%.4f,\"products_share\":%.3f,\"conversions_share\":%.3f}\n",
               frozen ? "state_tuning" : "train", L, C, V, T, B, (long long)params, threads, kern, arch,
               arch_env ? arch_env : "", bf16 ? "bf16" : "fp32", backends[p], total[p] / steps, best[p], tok_s,
               flops * tok_s * 1e-9, peak, peaks[0], peaks[1], flops * tok_s * 1e-9 / peak, products[p] / total[p],
               conversions[p] / total[p]);
    }
    ds_rwkv7_state_destroy(&s0);
    ds_rwkv7_state_destroy(&ds0);
    ds_adamw_destroy(&opt);
    ds_rwkv7_destroy(&m);
    ds_free(groups); free(tok); free(tgt);
    return 0;
}
