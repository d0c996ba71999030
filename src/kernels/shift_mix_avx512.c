/* Token shift with a per-channel lerp, AVX-512 twin of shift_mix_ref.c (same blocking). */
#include "impl.h"

#include "dreamstate/common.h"
#include "simd_math.h"

void shift_mix_forward_avx512(int B, int T, int C, const float *x, const float *prev,
                              const float *mu, float *out) {
    int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        const float *xr = x + row * C, *xp = ds_shift_previous_row(T, C, x, prev, row);
        float *o = out + row * C;
        for (int c = 0; c < C; c += 16) {
            __mmask16 m = ds_lanes(c, C);
            __m512 xc = ds_load16(m, xr + c);
            __m512 xpc = xp ? ds_load16(m, xp + c) : _mm512_setzero_ps();
            __m512 r = _mm512_fmadd_ps(_mm512_sub_ps(xpc, xc), ds_load16(m, mu + c), xc);
            ds_store16(o + c, m, r);
        }
    }
}

void shift_mix_backward_avx512(int B, int T, int C, const float *x, const float *prev,
                               const float *mu, const float *dout, float *dx, float *dprev,
                               float *dmu) {
    int rows = B * T;
    if (rows <= 0) return;
    int nblocks = ds_reduce_blocks(rows);
    float *part = ds_alloc((size_t)nblocks * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        float *pm = part + (int64_t)blk * C;
        int r_end = (blk + 1) * DS_REDUCE_ROWS < rows ? (blk + 1) * DS_REDUCE_ROWS : rows;
        for (int row = blk * DS_REDUCE_ROWS; row < r_end; row++) {
            int t = row % T;
            const float *xr = x + (int64_t)row * C, *xp = ds_shift_previous_row(T, C, x, prev, row);
            const float *d = dout + (int64_t)row * C, *dnext = t + 1 < T ? d + C : NULL;
            float *dxr = dx + (int64_t)row * C;
            float *dp = t == 0 && dprev ? dprev + (int64_t)(row / T) * C : NULL;
            for (int c = 0; c < C; c += 16) {
                __mmask16 m = ds_lanes(c, C);
                __m512 mc = ds_load16(m, mu + c), dc = ds_load16(m, d + c);
                __m512 xc = ds_load16(m, xr + c);
                __m512 xpc = xp ? ds_load16(m, xp + c) : _mm512_setzero_ps();
                __m512 g = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), mc), dc,
                                           ds_load16(m, dxr + c));
                if (dnext) g = _mm512_fmadd_ps(mc, ds_load16(m, dnext + c), g);
                ds_store16(dxr + c, m, g);
                __m512 pmc = _mm512_fmadd_ps(dc, _mm512_sub_ps(xpc, xc), ds_load16(m, pm + c));
                ds_store16(pm + c, m, pmc);
                if (dp) ds_store16(dp + c, m, _mm512_fmadd_ps(mc, dc, ds_load16(m, dp + c)));
            }
        }
    }
    ds_sum_block_partials(nblocks, C, part);
    for (int c = 0; c < C; c++) dmu[c] += part[c];
    ds_free(part);
}
