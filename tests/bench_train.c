/* Training-step throughput of the C RWKV-7: forward + backward + gradient clipping + AdamW, random
 * tokens, for a given shape. Prints one JSON line (tokens/s, MFU against the FP32 peak measured here
 * with the same threads) for tests/bench.sh. With `frozen`, a state-tuning step instead: forward from
 * a state and the frozen backward to the state gradient (src/rwkv7/README.md §3.4), its MFU over the
 * frozen step's FLOPs.
 * usage: bench_train L C V T B STEPS [THREADS] [frozen] */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/optim.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/train.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: bench_train L C V T B STEPS [THREADS]\n"); return 2; }
    int L = atoi(argv[1]), C = atoi(argv[2]), V = atoi(argv[3]), T = atoi(argv[4]), B = atoi(argv[5]);
    int steps = atoi(argv[6]), threads = argc > 7 ? atoi(argv[7]) : 0;
    int frozen = argc > 8 && strcmp(argv[8], "frozen") == 0;
    const char *arch = ds_blas_init(threads);
    const char *kern = ds_kernels_init();
    threads = ds_blas_threads();
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
    double best = 1e30, total = 0;
    for (int s = -1; s < steps; s++) {  /* step -1 warms up (allocation, page faults, BLIS buffers) */
        for (int64_t i = 0; i < (int64_t)B * T; i++) {
            tok[i] = (int32_t)(ds_rng_u64(7, 1, (uint64_t)(s + 1) * B * T + i) % V);
            tgt[i] = (int32_t)(ds_rng_u64(7, 2, (uint64_t)(s + 1) * B * T + i) % V);
        }
        double t0 = ds_now_seconds();
        if (frozen) {
            ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, &s0, NULL, NULL);
            ds_rwkv7_backward_state(&m, &ds0);
        } else {
            ds_rwkv7_zero_grad(&m);
            ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, NULL, NULL, NULL);
            ds_rwkv7_backward(&m);
            ds_clip_grad_norm(m.grads, m.n_params, 1.0);
            ds_adamw_step(&opt, m.params, m.grads, 1e-4, s + 2);
        }
        double dt = ds_now_seconds() - t0;
        if (s >= 0) { total += dt; if (dt < best) best = dt; }
    }
    double peak = ds_measure_fma_peak(threads, 0.5);
    double tok_s = (double)B * T * steps / total;
    double flops = frozen ? ds_rwkv7_frozen_flops_per_token(&d) : ds_rwkv7_flops_per_token(&d, T);
    int64_t params = 0;
    for (int i = 0; i < m.n_tensors; i++) params += m.tensors[i].numel;
    const char *arch_env = getenv("BLIS_ARCH_TYPE");  /* as ds_blas_init left it: the PyTorch peer gets the same */
    printf("{\"mode\":\"%s\",\"shape\":\"L%d C%d V%d T%d B%d\",\"params\":%lld,\"threads\":%d,\"kernels\":\"%s\","
           "\"blis\":\"%s\",\"blis_arch_type\":\"%s\",\"step_s\":%.4f,\"best_step_s\":%.4f,\"tokens_per_s\":%.1f,"
           "\"gflops\":%.1f,\"peak_gflops\":%.1f,\"mfu\":%.4f}\n",
           frozen ? "state_tuning" : "train", L, C, V, T, B, (long long)params, threads, kern, arch,
           arch_env ? arch_env : "", total / steps, best, tok_s, flops * tok_s * 1e-9, peak, flops * tok_s * 1e-9 / peak);
    ds_rwkv7_state_destroy(&s0);
    ds_rwkv7_state_destroy(&ds0);
    ds_adamw_destroy(&opt);
    ds_rwkv7_destroy(&m);
    ds_free(groups); free(tok); free(tgt);
    return 0;
}
