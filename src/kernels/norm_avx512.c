/* Group/LayerNorm, AVX-512 twin of norm_ref.c: same passes and blocking, 16 channels per vector,
 * any G (masked tail). */
#include "impl.h"

#include <math.h>

#include "dreamstate/common.h"
#include "simd_math.h"

void norm_forward_avx512(int rows, int C, int G, float eps, const float *x, const float *gamma,
                         const float *beta, float *y, float *mean, float *rstd) {
    int groups = C / G;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        for (int g = 0; g < groups; g++) {
            int64_t off = (int64_t)r * C + (int64_t)g * G;
            const float *xg = x + off, *ga = gamma + g * G, *be = beta + g * G;
            __m512 acc = _mm512_setzero_ps();
            for (int j = 0; j < G; j += 16)
                acc = _mm512_add_ps(acc, ds_load16(ds_lanes(j, G), xg + j));
            float mu = _mm512_reduce_add_ps(acc) / G;
            __m512 vmu = _mm512_set1_ps(mu);
            acc = _mm512_setzero_ps();
            for (int j = 0; j < G; j += 16) {
                __mmask16 m = ds_lanes(j, G);
                __m512 d = _mm512_maskz_sub_ps(m, ds_load16(m, xg + j), vmu);
                acc = _mm512_fmadd_ps(d, d, acc);
            }
            float rs = 1.0f / sqrtf(_mm512_reduce_add_ps(acc) / G + eps);
            __m512 vrs = _mm512_set1_ps(rs);
            for (int j = 0; j < G; j += 16) {
                __mmask16 m = ds_lanes(j, G);
                __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(ds_load16(m, xg + j), vmu), vrs);
                __m512 out = _mm512_fmadd_ps(xhat, ds_load16(m, ga + j), ds_load16(m, be + j));
                ds_store16(y + off + j, m, out);
            }
            mean[(int64_t)r * groups + g] = mu;
            rstd[(int64_t)r * groups + g] = rs;
        }
    }
}

void norm_backward_avx512(int rows, int C, int G, const float *dy, const float *x,
                          const float *mean, const float *rstd, const float *gamma, float *dx,
                          float *dgamma, float *dbeta) {
    if (rows <= 0) return;
    int groups = C / G, nblocks = ds_reduce_blocks(rows);
    /* per-block partials [block][dgamma C | dbeta C] */
    float *part = ds_alloc((size_t)nblocks * 2 * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        float *pg = part + (int64_t)blk * 2 * C, *pb = pg + C;
        int r_end = (blk + 1) * DS_REDUCE_ROWS < rows ? (blk + 1) * DS_REDUCE_ROWS : rows;
        for (int r = blk * DS_REDUCE_ROWS; r < r_end; r++) {
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
                    __m512 gj = _mm512_mul_ps(d, ds_load16(m, ga + j));
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
                    __m512 gj = _mm512_mul_ps(ds_load16(m, dyg + j), ds_load16(m, ga + j));
                    __m512 t = _mm512_fnmadd_ps(xhat, mean_gx, _mm512_sub_ps(gj, mean_g));
                    ds_store16(dx + off + j, m,
                               _mm512_fmadd_ps(vrs, t, ds_load16(m, dx + off + j)));
                }
            }
        }
    }
    ds_sum_block_partials(nblocks, 2 * C, part);
    for (int c = 0; c < C; c++) {
        dgamma[c] += part[c];
        dbeta[c] += part[C + c];
    }
    ds_free(part);
}
