/* Internal to src/blas: the bf16 products behind ds_gemm / ds_linear (bf16.c), and the BLIS sgemm they
 * fall back on (gemm.c). */
#ifndef DREAMSTATE_BLAS_BF16_H
#define DREAMSTATE_BLAS_BF16_H

#include "dreamstate/blas.h"

/* Scratch slots for converted operands: a product takes its A from one slot and its B from another. */
#define BF16_SLOTS 2

/* Picks the backend (oneDNN or the reference, see blas.h) once; returns its description. */
const char *bf16_backend_init(void);
/* Converts the stored matrix x [rows, cols] (row stride ld) into slot's dense buffer, as the backend takes
 * it (bf16, or bf16-rounded fp32 for the reference); valid until the slot is prepared again. */
const void *bf16_prepare(int slot, int rows, int cols, const float *x, int ld);
/* C [M, N] (row stride ldc) = alpha op(A) op(B) + beta C for prepared dense operands: op(A) [M, K] stored
 * [M, K] or (transA) [K, M]; op(B) [K, N] stored [K, N] or (transB) [N, K]. */
void bf16_product(int transA, int transB, int M, int N, int K, float alpha, const void *A, const void *B, float beta,
                  float *C, int ldc);

/* Seconds spent so far (ds_blas_time), added to by gemm.c and bf16.c. */
extern ds_blas_seconds blas_seconds;

/* Row-major BLIS sgemm (gemm.c), as ds_gemm in fp32. */
void blis_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc);

#endif
