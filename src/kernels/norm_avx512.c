/* Group/LayerNorm and the adaLN modulation, AVX-512 twin of norm_ref.c: same passes and blocking,
 * 16 channels per vector, any G (masked tail). */
#include "impl.h"

#include <math.h>

#include "dreamstate/common.h"
#include "simd_math.h"

static void group_forward(int G, float eps, const float *x, const float *gamma, float one, const float *beta,
                          float *y, float *mean, float *rstd) {
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < G; j += 16) acc = _mm512_add_ps(acc, ds_load16(ds_lanes(j, G), x + j));
    float mu = _mm512_reduce_add_ps(acc) / G;
    __m512 vmu = _mm512_set1_ps(mu);
    acc = _mm512_setzero_ps();
    for (int j = 0; j < G; j += 16) {
        __mmask16 m = ds_lanes(j, G);
        __m512 d = _mm512_maskz_sub_ps(m, ds_load16(m, x + j), vmu);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    float rs = 1.0f / sqrtf(_mm512_reduce_add_ps(acc) / G + eps);
    __m512 vrs = _mm512_set1_ps(rs), vone = _mm512_set1_ps(one);
    for (int j = 0; j < G; j += 16) {
        __mmask16 m = ds_lanes(j, G);
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(ds_load16(m, x + j), vmu), vrs);
        __m512 out = _mm512_fmadd_ps(xhat, _mm512_add_ps(ds_load16(m, gamma + j), vone), ds_load16(m, beta + j));
        ds_store16(y + j, m, out);
    }
    *mean = mu;
    *rstd = rs;
}

static void rows_backward(int64_t r0, int64_t r1, int C, int G, const float *dy, const float *x, const float *mean,
                          const float *rstd, const float *gamma, float one, float *dx, float *pg, float *pb) {
    int groups = C / G;
    __m512 vone = _mm512_set1_ps(one);
    for (int64_t r = r0; r < r1; r++) {
        for (int g = 0; g < groups; g++) {
            int64_t off = (int64_t)r * C + (int64_t)g * G;
            __m512 vmu = _mm512_set1_ps(mean[(int64_t)r * groups + g]);
            __m512 vrs = _mm512_set1_ps(rstd[(int64_t)r * groups + g]);
            const float *xg = x + off, *dyg = dy + off, *ga = gamma + g * G;
            float *pgg = pg + g * G, *pbg = pb + g * G;
            __m512 sum_g = _mm512_setzero_ps(), sum_gx = _mm512_setzero_ps();
            for (int j = 0; j < G; j += 16) {
                __mmask16 m = ds_lanes(j, G);
                __m512 d = ds_load16(m, dyg + j);
                __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(ds_load16(m, xg + j), vmu), vrs);
                __m512 gj = _mm512_mul_ps(d, _mm512_add_ps(ds_load16(m, ga + j), vone));
                sum_g = _mm512_add_ps(sum_g, gj);
                sum_gx = _mm512_fmadd_ps(gj, xhat, sum_gx);
                ds_store16(pgg + j, m, _mm512_fmadd_ps(d, xhat, ds_load16(m, pgg + j)));
                ds_store16(pbg + j, m, _mm512_add_ps(d, ds_load16(m, pbg + j)));
            }
            __m512 mean_g = _mm512_set1_ps(_mm512_reduce_add_ps(sum_g) / G);
            __m512 mean_gx = _mm512_set1_ps(_mm512_reduce_add_ps(sum_gx) / G);
            for (int j = 0; j < G; j += 16) {
                __mmask16 m = ds_lanes(j, G);
                __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(ds_load16(m, xg + j), vmu), vrs);
                __m512 gj = _mm512_mul_ps(ds_load16(m, dyg + j), _mm512_add_ps(ds_load16(m, ga + j), vone));
                __m512 t = _mm512_fnmadd_ps(xhat, mean_gx, _mm512_sub_ps(gj, mean_g));
                ds_store16(dx + off + j, m, _mm512_fmadd_ps(vrs, t, ds_load16(m, dx + off + j)));
            }
        }
    }
}

void norm_forward_avx512(int rows, int C, int G, float eps, const float *x, const float *gamma,
                         const float *beta, float *y, float *mean, float *rstd) {
    int groups = C / G;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < groups; g++) {
            int64_t off = (int64_t)r * C + (int64_t)g * G, s = (int64_t)r * groups + g;
            group_forward(G, eps, x + off, gamma + g * G, 0.0f, beta + g * G, y + off, mean + s, rstd + s);
        }
}

void norm_backward_avx512(int rows, int C, int G, const float *dy, const float *x,
                          const float *mean, const float *rstd, const float *gamma, float *dx,
                          float *dgamma, float *dbeta) {
    if (rows <= 0) return;
    int nblocks = ds_reduce_blocks(rows);
    float *part = ds_alloc((size_t)nblocks * 2 * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        float *pg = part + (int64_t)blk * 2 * C;
        int r_end = (blk + 1) * DS_REDUCE_ROWS < rows ? (blk + 1) * DS_REDUCE_ROWS : rows;
        rows_backward(blk * DS_REDUCE_ROWS, r_end, C, G, dy, x, mean, rstd, gamma, 0.0f, dx, pg, pg + C);
    }
    ds_sum_block_partials(nblocks, 2 * C, part);
    for (int c = 0; c < C; c++) {
        dgamma[c] += part[c];
        dbeta[c] += part[C + c];
    }
    ds_free(part);
}

void modulate_forward_avx512(int B, int T, int C, float eps, const float *x, const float *shift, const float *scale,
                             int64_t stride, float *y, float *mean, float *rstd) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < (int64_t)B * T; r++) {
        int64_t b = r / T;
        group_forward(C, eps, x + r * C, scale + b * stride, 1.0f, shift + b * stride, y + r * C, mean + r, rstd + r);
    }
}

void modulate_backward_avx512(int B, int T, int C, const float *dy, const float *x, const float *mean,
                              const float *rstd, const float *scale, int64_t stride, float *dx, float *dshift,
                              float *dscale) {
    if (B <= 0 || T <= 0) return;
    int nblocks = ds_reduce_blocks(T);
    float *part = ds_alloc((size_t)B * nblocks * 2 * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * nblocks; task++) {
        int b = task / nblocks, blk = task % nblocks;
        float *pg = part + (int64_t)task * 2 * C;
        int64_t r0, r1;
        ds_group_block(T, b, blk, &r0, &r1);
        rows_backward(r0, r1, C, C, dy, x, mean, rstd, scale + b * stride, 1.0f, dx, pg, pg + C);
    }
    ds_add_group_partials(B, nblocks, C, 2 * C, part, dscale, stride);
    ds_add_group_partials(B, nblocks, C, 2 * C, part + C, dshift, stride);
    ds_free(part);
}
