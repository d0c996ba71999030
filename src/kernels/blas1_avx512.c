/* BLAS-1 helpers, AVX-512 twin of blas1_ref.c (same blocking for sum_squares). */
#include "impl.h"

#include "dreamstate/common.h"
#include "simd_math.h"

double sum_squares_avx512(int64_t n, const float *x) {
    int64_t nblocks = (n + DS_SUMSQ_BLOCK - 1) / DS_SUMSQ_BLOCK;
    double *part = ds_alloc((size_t)nblocks * sizeof(double));
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t end = (b + 1) * DS_SUMSQ_BLOCK < n ? (b + 1) * DS_SUMSQ_BLOCK : n;
        /* Two double accumulators (lower and upper 8 floats of each vector). */
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        for (int64_t i = b * DS_SUMSQ_BLOCK; i < end; i += 16) {
            __m512 v = ds_load16(ds_lanes(i, end), x + i);
            __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            __m512d c = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
            lo = _mm512_fmadd_pd(a, a, lo);
            hi = _mm512_fmadd_pd(c, c, hi);
        }
        part[b] = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
    }
    double total = 0;
    for (int64_t b = 0; b < nblocks; b++) total += part[b];
    ds_free(part);
    return total;
}

void scale_avx512(int64_t n, float *x, float s) {
    __m512 vs = _mm512_set1_ps(s);
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = ds_lanes(i, n);
        ds_store16(x + i, k, _mm512_mul_ps(ds_load16(k, x + i), vs));
    }
}

void axpy_avx512(int64_t n, float a, const float *x, float *y) {
    __m512 va = _mm512_set1_ps(a);
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = ds_lanes(i, n);
        __m512 r = _mm512_fmadd_ps(va, ds_load16(k, x + i), ds_load16(k, y + i));
        ds_store16(y + i, k, r);
    }
}
