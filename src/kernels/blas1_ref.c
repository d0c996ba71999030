/* BLAS-1 helpers, scalar reference (kernels.h): sum of squares in double, scale, axpy. */
#include "impl.h"

#include "dreamstate/common.h"
#include "simd_math.h"

/* Sum of squares in double over fixed blocks of DS_SUMSQ_BLOCK elements, the block sums added in
 * block order: the same result for any thread count. */
double sum_squares_ref(int64_t n, const float *x) {
    int64_t nblocks = (n + DS_SUMSQ_BLOCK - 1) / DS_SUMSQ_BLOCK;
    double *part = ds_alloc((size_t)nblocks * sizeof(double));
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t end = (b + 1) * DS_SUMSQ_BLOCK < n ? (b + 1) * DS_SUMSQ_BLOCK : n;
        double s = 0;
        for (int64_t i = b * DS_SUMSQ_BLOCK; i < end; i++) s += (double)x[i] * x[i];
        part[b] = s;
    }
    double total = 0;
    for (int64_t b = 0; b < nblocks; b++) total += part[b];
    ds_free(part);
    return total;
}

void scale_ref(int64_t n, float *x, float s) {
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

void axpy_ref(int64_t n, float a, const float *x, float *y) {
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}
