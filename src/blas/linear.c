/* Linear layers on ds_gemm, as torch.nn.Linear: y = x W^T + b with W [out, in]; rows are tokens. */
#include "bf16.h"

#include "dreamstate/blas.h"

#include <string.h>

void ds_linear(int64_t rows, int in, int out, const float *x, const float *W, const float *b, float *y) {
    if (b)
        for (int64_t r = 0; r < rows; r++) memcpy(y + r * out, b, sizeof(float) * out);
    ds_gemm(0, 1, (int)rows, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f, y, out);
}

void ds_linear_backward(int64_t rows, int in, int out, const float *x, const float *W, const float *dy, float *dW,
                        float *db, float *dx, int accumulate) {
    if (ds_blas_precision() == DS_PRECISION_BF16) {  /* dy converted once for both products */
        const void *dy16 = bf16_prepare(0, (int)rows, out, dy, out);
        if (dW) bf16_product(1, 0, out, in, (int)rows, 1.0f, dy16, bf16_prepare(1, (int)rows, in, x, in), 1.0f, dW, in);
        if (db) ds_sum_rows(rows, out, dy, db);
        if (dx) bf16_product(0, 0, (int)rows, in, out, 1.0f, dy16, bf16_prepare(1, out, in, W, in), accumulate ? 1.0f : 0.0f,
                             dx, in);
        return;
    }
    if (dW) ds_gemm(1, 0, out, in, (int)rows, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) ds_sum_rows(rows, out, dy, db);
    if (dx) ds_gemm(0, 0, (int)rows, in, out, 1.0f, dy, out, W, in, accumulate ? 1.0f : 0.0f, dx, in);
}

/* One thread per block of columns, each summing its rows in order into double partial sums (rows are
 * read contiguously within a block). */
#define SUM_COLS 64
void ds_sum_rows(int64_t rows, int C, const float *x, float *acc) {
#pragma omp parallel for schedule(static) if (rows * C >= 32768)
    for (int c0 = 0; c0 < C; c0 += SUM_COLS) {
        int w = C - c0 < SUM_COLS ? C - c0 : SUM_COLS;
        double s[SUM_COLS] = {0};
        for (int64_t r = 0; r < rows; r++)
            for (int c = 0; c < w; c++) s[c] += x[r * C + c0 + c];
        for (int c = 0; c < w; c++) acc[c0 + c] += (float)s[c];
    }
}
