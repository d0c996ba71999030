/* WKV-7 kernel throughput: the AVX-512 kernels against their scalar reference twins, forward and
 * backward, on the 0.1B layer shape (H = 12 heads of 64) with T = 512. Prints one JSON line.
 * usage: bench_wkv7 [B] [T] [H] */
#include "../src/kernels/impl.h"
#include "dreamstate/common.h"

#include <stdlib.h>
#include <math.h>

typedef struct { double fwd, bwd; } timing;

static timing measure(int B, int T, int H, const float *in[6], float *work[9], int simd) {
    void (*fwd)(int, int, int, const float *, const float *, const float *, const float *, const float *,
                const float *, const float *, float *, float *, float *) = simd ? wkv7_forward_avx512 : wkv7_forward_ref;
    void (*bwd)(int, int, int, const float *, const float *, const float *, const float *, const float *,
                const float *, const float *, const float *, const float *, float *, float *, float *, float *,
                float *, float *, float *) = simd ? wkv7_backward_avx512 : wkv7_backward_ref;
    timing best = {1e30, 1e30};
    for (int rep = 0; rep < 5; rep++) {
        double t0 = ds_now_seconds();
        fwd(B, T, H, in[0], in[1], in[2], in[3], in[4], in[5], NULL, work[0], NULL, work[1]);
        double t1 = ds_now_seconds();
        bwd(B, T, H, in[0], in[1], in[2], in[3], in[4], in[5], work[1], work[2], NULL, work[3], work[4], work[5],
            work[6], work[7], work[8], NULL);
        double t2 = ds_now_seconds();
        best.fwd = fmin(best.fwd, t1 - t0);
        best.bwd = fmin(best.bwd, t2 - t1);
    }
    return best;
}

int main(int argc, char **argv) {
    int B = argc > 1 ? atoi(argv[1]) : 1, T = argc > 2 ? atoi(argv[2]) : 512, H = argc > 3 ? atoi(argv[3]) : 12;
    int64_t n = (int64_t)B * T * H * 64;
    float *buf[6];
    for (int i = 0; i < 6; i++) buf[i] = ds_alloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) {
        buf[0][i] = (float)ds_rng_uniform(1, 0, i) - 0.5f;                     /* r */
        buf[1][i] = 0.6f + 0.39f * (float)ds_rng_uniform(1, 1, i);             /* decay */
        buf[2][i] = (float)ds_rng_uniform(1, 2, i) - 0.5f;                     /* k */
        buf[3][i] = (float)ds_rng_uniform(1, 3, i) - 0.5f;                     /* v */
        buf[4][i] = -0.125f * (float)ds_rng_uniform(1, 4, i);                  /* alpha */
        buf[5][i] = 0.125f * (float)ds_rng_uniform(1, 5, i);                   /* beta */
    }
    const float *in[6] = {buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]};
    float *work[9];
    int64_t nck = (int64_t)B * H * ((T + 15) / 16) * 64 * 64;
    for (int i = 0; i < 9; i++) work[i] = ds_alloc(sizeof(float) * (i == 1 ? nck : n));
    timing ref = measure(B, T, H, in, work, 0);
    if (!ds_cpu_has_avx512()) { printf("{\"note\":\"no AVX-512 on this CPU\"}\n"); return 0; }
    timing simd = measure(B, T, H, in, work, 1);
    double tok = (double)B * T;
    printf("{\"shape\":\"B%d T%d H%d\",\"ref_fwd_tok_s\":%.0f,\"avx512_fwd_tok_s\":%.0f,\"fwd_speedup\":%.2f,"
           "\"ref_bwd_tok_s\":%.0f,\"avx512_bwd_tok_s\":%.0f,\"bwd_speedup\":%.2f}\n",
           B, T, H, tok / ref.fwd, tok / simd.fwd, ref.fwd / simd.fwd, tok / ref.bwd, tok / simd.bwd, ref.bwd / simd.bwd);
    return 0;
}
