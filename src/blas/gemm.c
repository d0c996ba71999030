#include "bf16.h"

#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <blis.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
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

/* BLIS's own threads for one call: BLIS splits only the output's rows and columns among them, never
 * the reduction, so the result is the same for any count (tests/test_rwkv7.c checks the init that relies on it). */
static rntm_t blis_threads(int threads) {
    rntm_t r = BLIS_RNTM_INITIALIZER;
    bli_rntm_set_num_threads(threads > 0 ? threads : blas_threads, &r);
    return r;
}

void ds_dgram_upper(int M, int N, const double *W, double *G, int threads) {
    double one = 1.0, zero = 0.0;
    rntm_t r = blis_threads(threads);
    bli_dsyrk_ex(BLIS_UPPER, BLIS_TRANSPOSE, N, M, &one, (double *)W, N, 1, &zero, G, N, 1, NULL, &r);
}

#define CHOLESKY_BLOCK 96

/* Right-looking blocked Cholesky: per block of rows, the diagonal block by the scalar algorithm, the
 * block row to its right by a triangular solve, the trailing upper triangle by a rank-k update (BLIS
 * does nearly all the work). */
int ds_dcholesky_upper(int N, double *A, int threads) {
    rntm_t r = blis_threads(threads);
    for (int k0 = 0; k0 < N; k0 += CHOLESKY_BLOCK) {
        int kb = N - k0 < CHOLESKY_BLOCK ? N - k0 : CHOLESKY_BLOCK, rest = N - k0 - kb;
        double *D = A + (int64_t)k0 * N + k0;
        for (int k = 0; k < kb; k++) {
            double *rk = D + (int64_t)k * N;
            if (!(rk[k] > 0)) return k0 + k + 1;
            double d = sqrt(rk[k]);
            for (int j = k; j < kb; j++) rk[j] /= d;
            for (int i = k + 1; i < kb; i++) {
                double *ri = D + (int64_t)i * N, f = rk[i];
                for (int j = i; j < kb; j++) ri[j] -= f * rk[j];
            }
        }
        if (rest == 0) break;
        double one = 1.0, minus_one = -1.0;
        double *P = D + kb, *S = D + (int64_t)kb * N + kb;  /* block row right of D, trailing block */
        bli_dtrsm_ex(BLIS_LEFT, BLIS_UPPER, BLIS_TRANSPOSE, BLIS_NONUNIT_DIAG, kb, rest, &one, D, N, 1, P, N, 1, NULL, &r);
        bli_dsyrk_ex(BLIS_UPPER, BLIS_TRANSPOSE, rest, kb, &minus_one, P, N, 1, &one, S, N, 1, NULL, &r);
    }
    for (int64_t i = 1; i < N; i++) memset(A + i * N, 0, sizeof(double) * i);
    return 0;
}

void ds_dtrsm_right_upper(int M, int N, const double *R, double *B, int threads) {
    double one = 1.0;
    rntm_t r = blis_threads(threads);
    bli_dtrsm_ex(BLIS_RIGHT, BLIS_UPPER, BLIS_NO_TRANSPOSE, BLIS_NONUNIT_DIAG, M, N, &one, (double *)R, N, 1, B, N, 1,
                 NULL, &r);
}
