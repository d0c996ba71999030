/* Matrix products through BLIS (fp32) or a bf16 backend, and the linear layers built on them.
 * ds_blas_init() makes sure an AVX-512 BLIS configuration is active on CPUs that have AVX-512 (Debian's
 * BLIS does not recognise Zen 5 and would use generic kernels), sets the thread count, and reports the
 * configuration. ds_blas_set_precision() chooses fp32 or bf16 products for the whole process. */
#ifndef DREAMSTATE_BLAS_H
#define DREAMSTATE_BLAS_H

#include <stdint.h>

/* threads <= 0: keep BLIS_NUM_THREADS / OMP_NUM_THREADS or use all cores. Sets both BLIS's and
 * OpenMP's thread count. Returns the arch name. */
const char *ds_blas_init(int threads);
int ds_blas_threads(void);

/* Precision of every later ds_gemm / ds_linear / ds_linear_backward of this process (ds_dgemm and
 * ds_dtrsm_right_upper stay double):
 *  - fp32 (the default): BLIS sgemm;
 *  - bf16: both operands rounded to bf16 (ds_k.f32_to_bf16: nearest even), products summed and the
 *    result written in fp32 (C and beta C stay fp32). The backend is chosen from the CPU: oneDNN's
 *    matmul (its AVX512_BF16 or AMX kernels) where the CPU has AVX512_BF16 or AMX-BF16, else the
 *    reference: the rounded operands widened back to fp32 and multiplied by BLIS sgemm (the same
 *    rounding of the inputs at fp32 speed). The environment variable DS_BF16_BACKEND=reference forces
 *    the reference, =onednn insists on oneDNN (exit 2 on a CPU without bf16 instructions).
 * Call after ds_blas_init and ds_kernels_init; the bf16 products are not reentrant (never call them from
 * inside an OpenMP parallel region). Returns a description of the backend for the log. */
typedef enum { DS_PRECISION_FP32, DS_PRECISION_BF16 } ds_precision;
const char *ds_blas_set_precision(ds_precision p);
ds_precision ds_blas_precision(void);

/* Seconds this process has spent in matrix products (BLIS or oneDNN) and in converting their operands to
 * bf16, since the start: where a training step's time goes (tests/bench_train.c). */
typedef struct ds_blas_seconds {
    double products, conversions;
} ds_blas_seconds;
ds_blas_seconds ds_blas_time(void);

/* Row-major C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T per trans flag (0/1).
 * lda/ldb/ldc are the row strides of the stored matrices. */
void ds_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);

/* Double precision, where fp32 would lose too much (the orthogonal init's CholeskyQR), row-major, each
 * on `threads` BLIS threads (<= 0: ds_blas_threads(); 1 from inside a parallel region); the result is
 * bit-identical for any thread count:
 * the upper triangle of G[N,N] = W^T W for W[M,N] (BLIS dsyrk, half a GEMM's work; the strict lower
 * triangle is left as it was); */
void ds_dgram_upper(int M, int N, const double *W, double *G, int threads);
/* in place, A = R^T R for a symmetric positive-definite A[N,N] with R upper triangular (blocked on
 * BLIS): R overwrites the upper triangle, the strict lower one is zeroed. Returns 0, or k > 0 when the
 * leading minor of order k is not positive definite; */
int ds_dcholesky_upper(int N, double *A, int threads);
/* in place B[M,N] <- B R^-1 for an upper-triangular R[N,N]. */
void ds_dtrsm_right_upper(int M, int N, const double *R, double *B, int threads);

/* Linear layer y[rows, out] = x W^T + b, W [out, in] as in torch.nn.Linear; b NULL: no bias. */
void ds_linear(int64_t rows, int in, int out, const float *x, const float *W, const float *b, float *y);
/* Its backward from dy [rows, out]: dW += dy^T x (dW NULL: not wanted, e.g. frozen weights); db += the
 * column sums of dy (db NULL: none); dx = dy W, or dx += dy W with accumulate (dx NULL: not wanted). */
void ds_linear_backward(int64_t rows, int in, int out, const float *x, const float *W, const float *dy, float *dW,
                        float *db, float *dx, int accumulate);
/* Column sums of x [rows, C] added to acc[C]: each column in double, rows in order, so the result does
 * not depend on the thread count. */
void ds_sum_rows(int64_t rows, int C, const float *x, float *acc);

#endif
