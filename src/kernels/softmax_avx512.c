/* Row softmax forward and backward, AVX-512 twin of softmax_ref.c: 16 lanes of max, exp-sum and
 * dot product per row, reduced across lanes at the end of each pass. */
#include "impl.h"

#include <float.h>

#include "simd_math.h"

void softmax_forward_avx512(int64_t rows, int n, const float *x, float *y) {
#pragma omp parallel for schedule(static) if (rows * n >= DS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        /* lanes past n read as -FLT_MAX: they never win the max (and -FLT_MAX - max cannot be NaN) */
        __m512 m = _mm512_set1_ps(-FLT_MAX);
        for (int i = 0; i < n; i += 16) {
            __mmask16 k = ds_lanes(i, n);
            m = _mm512_max_ps(m, _mm512_mask_blend_ps(k, _mm512_set1_ps(-FLT_MAX), ds_load16(k, xr + i)));
        }
        __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(m)), s = _mm512_setzero_ps();
        for (int i = 0; i < n; i += 16) {
            __mmask16 k = ds_lanes(i, n);
            __m512 e = _mm512_maskz_mov_ps(k, ds_exp512(_mm512_sub_ps(ds_load16(k, xr + i), max)));
            ds_store16(yr + i, k, e);
            s = _mm512_add_ps(s, e);
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
        for (int i = 0; i < n; i += 16) {
            __mmask16 k = ds_lanes(i, n);
            ds_store16(yr + i, k, _mm512_mul_ps(ds_load16(k, yr + i), inv));
        }
    }
}

void softmax_backward_avx512(int64_t rows, int n, const float *y, const float *dy, float *dx) {
#pragma omp parallel for schedule(static) if (rows * n >= DS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < n; i += 16) {
            __mmask16 k = ds_lanes(i, n);
            acc = _mm512_fmadd_ps(ds_load16(k, dyr + i), ds_load16(k, yr + i), acc);
        }
        __m512 d = _mm512_set1_ps(_mm512_reduce_add_ps(acc));
        for (int i = 0; i < n; i += 16) {
            __mmask16 k = ds_lanes(i, n);
            __m512 g = _mm512_mul_ps(ds_load16(k, yr + i), _mm512_sub_ps(ds_load16(k, dyr + i), d));
            ds_store16(dxr + i, k, _mm512_add_ps(ds_load16(k, dxr + i), g));
        }
    }
}
