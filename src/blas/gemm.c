#include "bf16.h"

#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <blis.h>
#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

static int blas_threads = 1;

const char *ds_blas_init(int threads) {
    /* BLIS reads BLIS_ARCH_TYPE once, at its first call: set it before anything touches BLIS. */
    if (!getenv("BLIS_ARCH_TYPE") && ds_cpu_has_avx512()) setenv("BLIS_ARCH_TYPE", "skx", 1);
    if (threads <= 0) {
        const char *env = getenv("BLIS_NUM_THREADS");
        if (!env) env = getenv("OMP_NUM_THREADS");
        threads = env ? atoi(env) : ds_affinity_cores();
        if (threads <= 0) threads = 1;
    }
    blas_threads = threads;
    bli_thread_set_num_threads(threads);
    omp_set_num_threads(threads);  /* the kernels' OpenMP loops use the same budget */
    return bli_arch_string(bli_arch_query_id());
}

int ds_blas_threads(void) { return blas_threads; }

static ds_precision precision = DS_PRECISION_FP32;

const char *ds_blas_set_precision(ds_precision p) {
    precision = p;
    return p == DS_PRECISION_BF16 ? bf16_backend_init() : "fp32, BLIS sgemm";
}

ds_precision ds_blas_precision(void) { return precision; }

ds_blas_seconds blas_seconds;

ds_blas_seconds ds_blas_time(void) { return blas_seconds; }

void blis_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc) {
    /* BLIS takes general strides, so row-major needs no copies: row stride = ld, column stride = 1. */
    double t0 = ds_now_seconds();
    bli_sgemm(transA ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, transB ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              M, N, K, &alpha, (float *)A, lda, 1, (float *)B, ldb, 1, &beta, C, ldc, 1);
    blas_seconds.products += ds_now_seconds() - t0;
}

void ds_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    if (precision == DS_PRECISION_FP32) {
        blis_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const void *a = bf16_prepare(0, transA ? K : M, transA ? M : K, A, lda);
    const void *b = bf16_prepare(1, transB ? N : K, transB ? K : N, B, ldb);
    bf16_product(transA, transB, M, N, K, alpha, a, b, beta, C, ldc);
}

void ds_dgemm(int transA, int transB, int M, int N, int K, double alpha, const double *A, int lda,
              const double *B, int ldb, double beta, double *C, int ldc) {
    bli_dgemm(transA ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, transB ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              M, N, K, &alpha, (double *)A, lda, 1, (double *)B, ldb, 1, &beta, C, ldc, 1);
}

void ds_dtrsm_right_upper(int M, int N, const double *R, double *B) {
    double one = 1.0;
    bli_dtrsm(BLIS_RIGHT, BLIS_UPPER, BLIS_NO_TRANSPOSE, BLIS_NONUNIT_DIAG, M, N, &one, (double *)R, N, 1, B, N, 1);
}
