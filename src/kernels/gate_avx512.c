/* Gated residual with a per-sample gate, AVX-512 twin of gate_ref.c (same blocking). */
#include "impl.h"

#include "dreamstate/common.h"
#include "simd_math.h"

void gated_residual_forward_avx512(int B, int T, int C, const float *x, const float *f, const float *gate,
                                   int64_t stride, float *out) {
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= DS_PARALLEL_MIN)
    for (int64_t r = 0; r < (int64_t)B * T; r++) {
        const float *g = gate + r / T * stride;
        for (int c = 0; c < C; c += 16) {
            __mmask16 m = ds_lanes(c, C);
            int64_t i = r * C + c;
            ds_store16(out + i, m, _mm512_fmadd_ps(ds_load16(m, g + c), ds_load16(m, f + i), ds_load16(m, x + i)));
        }
    }
}

void gated_residual_backward_avx512(int B, int T, int C, const float *dout, const float *f, const float *gate,
                                    int64_t stride, float *df, float *dgate) {
    if (B <= 0 || T <= 0) return;
    int nblocks = ds_reduce_blocks(T);
    float *part = ds_alloc((size_t)B * nblocks * C * sizeof(float));
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= DS_PARALLEL_MIN)
    for (int task = 0; task < B * nblocks; task++) {
        int b = task / nblocks, blk = task % nblocks;
        const float *g = gate + b * stride;
        float *p = part + (int64_t)task * C;
        int64_t r0, r1;
        ds_group_block(T, b, blk, &r0, &r1);
        for (int64_t r = r0; r < r1; r++)
            for (int c = 0; c < C; c += 16) {
                __mmask16 m = ds_lanes(c, C);
                int64_t i = r * C + c;
                __m512 d = ds_load16(m, dout + i);
                ds_store16(df + i, m, _mm512_fmadd_ps(d, ds_load16(m, g + c), ds_load16(m, df + i)));
                ds_store16(p + c, m, _mm512_fmadd_ps(d, ds_load16(m, f + i), ds_load16(m, p + c)));
            }
    }
    ds_add_group_partials(B, nblocks, C, C, part, dgate, stride);
    ds_free(part);
}
