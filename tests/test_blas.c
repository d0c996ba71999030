/* Matrix products in bf16 (blas.h, ds_blas_set_precision), for each backend this CPU can run (oneDNN
 * where it has AVX512_BF16 or AMX-BF16; the reference always):
 *  - ds_gemm over every transpose pair, alpha, beta (0, 1, other), row strides wider than the rows,
 *    odd sizes and K = 0, against float64 products of the bf16-rounded operands: fp32-accumulation
 *    error only; and against the unrounded operands: the bf16 rounding must show (else bf16 is not on);
 *  - ds_linear / ds_linear_backward (bias, dW and db accumulation, dx overwritten or accumulated);
 *  - oneDNN and the reference agree; repeated products are bit-identical; fp32 afterwards is BLIS again;
 *  - a bad DS_BF16_BACKEND is refused (exit 2). */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "test.h"

#include <math.h>
#include <string.h>

static float *random_matrix(int64_t n, uint64_t stream) {
    float *x = ds_alloc(sizeof(float) * (n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = (float)ds_rng_normal(5, stream, (uint64_t)i);
    return x;
}

/* x rounded to bf16 and widened back, in a new array */
static float *rounded(const float *x, int64_t n) {
    uint16_t *h = ds_alloc(sizeof(uint16_t) * (n > 0 ? n : 1));
    float *r = ds_alloc(sizeof(float) * (n > 0 ? n : 1));
    ds_k.f32_to_bf16(n, x, h);
    ds_k.bf16_to_f32(n, h, r);
    ds_free(h);
    return r;
}

/* C = alpha op(A) op(B) + beta C in double, from the operands rounded to bf16 (round = 1) or not. */
static void gemm_f64(int ta, int tb, int M, int N, int K, double alpha, const float *A, int lda, const float *B,
                     int ldb, double beta, const float *C0, int ldc, int round, double *out) {
    if (round) {
        float *Ar = rounded(A, (int64_t)(ta ? K : M) * lda), *Br = rounded(B, (int64_t)(tb ? N : K) * ldb);
        gemm_f64(ta, tb, M, N, K, alpha, Ar, lda, Br, ldb, beta, C0, ldc, 0, out);
        ds_free(Ar), ds_free(Br);
        return;
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k];
                float b = tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j];
                s += (double)a * b;
            }
            out[(int64_t)i * N + j] = alpha * s + beta * C0[(int64_t)i * ldc + j];
        }
}

/* max |c - want| / max |want| over the M x N block of C (row stride ldc); untouched padding checked. */
static double block_err(const float *C, int ldc, const double *want, int M, int N) {
    double num = 0, den = 1e-30;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double d = fabs(C[(int64_t)i * ldc + j] - want[(int64_t)i * N + j]);
            if (!(d <= num)) num = isnan(d) ? INFINITY : d;
            if (fabs(want[(int64_t)i * N + j]) > den) den = fabs(want[(int64_t)i * N + j]);
        }
    return num / den;
}

static void test_gemm_shapes(const char *backend) {
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 96, 128}, {130, 3, 257}, {5, 9, 0}};
    static const float alphas[] = {1.0f, 0.37f}, betas[] = {0.0f, 1.0f, -0.5f};
    int bad = 0, bad_rounding = 0, cases = 0;
    double worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta <= 1; ta++)
            for (int tb = 0; tb <= 1; tb++)
                for (int ai = 0; ai < 2; ai++)
                    for (int bi = 0; bi < 3; bi++) {
                        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                        int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                        float *A = random_matrix((int64_t)(ta ? K : M) * lda, 1 + s);
                        float *B = random_matrix((int64_t)(tb ? N : K) * ldb, 11 + s);
                        float *C = random_matrix((int64_t)M * ldc, 21 + s), *C0 = ds_alloc(sizeof(float) * M * ldc);
                        memcpy(C0, C, sizeof(float) * M * ldc);
                        double *want = ds_alloc(sizeof(double) * M * N), *exact = ds_alloc(sizeof(double) * M * N);
                        ds_gemm(ta, tb, M, N, K, alphas[ai], A, lda, B, ldb, betas[bi], C, ldc);
                        gemm_f64(ta, tb, M, N, K, alphas[ai], A, lda, B, ldb, betas[bi], C0, ldc, 1, want);
                        gemm_f64(ta, tb, M, N, K, alphas[ai], A, lda, B, ldb, betas[bi], C0, ldc, 0, exact);
                        double e = block_err(C, ldc, want, M, N);
                        int pad_kept = 1;
                        for (int i = 0; i < M; i++)
                            for (int j = N; j < ldc; j++) pad_kept &= C[(int64_t)i * ldc + j] == C0[(int64_t)i * ldc + j];
                        cases++;
                        worst = e > worst ? e : worst;
                        if (!(e <= 1e-5) || !pad_kept) {
                            bad++;
                            fprintf(stderr, "  %s: M%d N%d K%d trans %d%d alpha %g beta %g: rel err %.3g%s\n", backend, M,
                                    N, K, ta, tb, alphas[ai], betas[bi], e, pad_kept ? "" : ", wrote past N");
                        }
                        /* rounding visible: bf16 operands carry 8 bits, so the product of unrounded inputs
                         * differs by ~1e-3 relative (K >= 3; with beta C only, K = 0, there is none) */
                        if (K >= 3 && block_err(C, ldc, exact, M, N) < 1e-4) bad_rounding++;
                        ds_free(A), ds_free(B), ds_free(C), ds_free(C0), ds_free(want), ds_free(exact);
                    }
    CHECK(bad == 0, "%s ds_gemm: %d of %d cases off the float64 product of bf16-rounded operands (worst %.3g)", backend,
          bad, cases, worst);
    CHECK(bad_rounding == 0, "%s ds_gemm: %d cases match the unrounded operands to 1e-4: no bf16 rounding?", backend,
          bad_rounding);
    printf("%s ds_gemm: %d cases, worst rel err %.3g against float64 on bf16-rounded operands\n", backend, cases, worst);
}

static void test_linear(const char *backend) {
    const int rows = 37, in = 70, out = 45;
    float *x = random_matrix(rows * in, 31), *W = random_matrix(out * in, 32), *b = random_matrix(out, 33);
    float *dy = random_matrix(rows * out, 34), *dW = random_matrix(out * in, 35), *db = random_matrix(out, 36);
    float *dx = random_matrix(rows * in, 37), *y = ds_alloc(sizeof(float) * rows * out);
    float *dW0 = ds_alloc(sizeof(float) * out * in), *db0 = ds_alloc(sizeof(float) * out), *dx0 = ds_alloc(sizeof(float) * rows * in);
    memcpy(dW0, dW, sizeof(float) * out * in), memcpy(db0, db, sizeof(float) * out), memcpy(dx0, dx, sizeof(float) * rows * in);
    double *want = ds_alloc(sizeof(double) * rows * in * 2);
    ds_linear(rows, in, out, x, W, b, y);
    float *bias_rows = ds_alloc(sizeof(float) * rows * out);
    for (int r = 0; r < rows; r++) memcpy(bias_rows + r * out, b, sizeof(float) * out);
    gemm_f64(0, 1, rows, out, in, 1, x, in, W, in, 1, bias_rows, out, 1, want);
    CHECK(block_err(y, out, want, rows, out) < 1e-5, "%s ds_linear: y = x W^T + b (rel err %.3g)", backend,
          block_err(y, out, want, rows, out));
    for (int accumulate = 0; accumulate <= 1; accumulate++) {
        memcpy(dW, dW0, sizeof(float) * out * in), memcpy(db, db0, sizeof(float) * out), memcpy(dx, dx0, sizeof(float) * rows * in);
        ds_linear_backward(rows, in, out, x, W, dy, dW, db, dx, accumulate);
        gemm_f64(1, 0, out, in, rows, 1, dy, out, x, in, 1, dW0, in, 1, want);
        CHECK(block_err(dW, in, want, out, in) < 1e-5, "%s ds_linear_backward: dW += dy^T x", backend);
        gemm_f64(0, 0, rows, in, out, 1, dy, out, W, in, accumulate, dx0, in, 1, want);
        CHECK(block_err(dx, in, want, rows, in) < 1e-5, "%s ds_linear_backward: dx %s dy W (rel err %.3g)", backend,
              accumulate ? "+=" : "=", block_err(dx, in, want, rows, in));
        int db_ok = 1;  /* db: fp32 column sums of the unrounded dy (not a product) */
        for (int c = 0; c < out; c++) {
            double s = db0[c];
            for (int r = 0; r < rows; r++) s += dy[r * out + c];
            db_ok &= fabs(db[c] - s) <= 1e-5 * (1 + fabs(s));
        }
        CHECK(db_ok, "%s ds_linear_backward: db += column sums of dy", backend);
    }
    ds_free(x), ds_free(W), ds_free(b), ds_free(dy), ds_free(dW), ds_free(db), ds_free(dx), ds_free(y);
    ds_free(dW0), ds_free(db0), ds_free(dx0), ds_free(want), ds_free(bias_rows);
}

/* One product of a 0.1B-model shape (x W^T, 512 x 768 x 768), for comparing backends. */
static float *model_shape_product(void) {
    const int M = 512, N = 768, K = 768;
    float *x = random_matrix(M * K, 41), *W = random_matrix(N * K, 42), *y = ds_alloc(sizeof(float) * M * N);
    ds_gemm(0, 1, M, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
    ds_free(x), ds_free(W);
    return y;
}

static void bad_backend(void *arg) {
    (void)arg;
    setenv("DS_BF16_BACKEND", "fast", 1);
    ds_blas_set_precision(DS_PRECISION_BF16);
}

int main(void) {
    ds_blas_init(0);
    ds_kernels_init();
    const int n = 512 * 768;
    float *fp32_before = NULL, *products[2] = {NULL, NULL};
    fp32_before = model_shape_product();
    int hw = ds_cpu_has_avx512_bf16();
    for (int use_reference = hw ? 0 : 1; use_reference <= 1; use_reference++) {
        if (use_reference) setenv("DS_BF16_BACKEND", "reference", 1);
        const char *name = ds_blas_set_precision(DS_PRECISION_BF16);
        printf("backend: %s\n", name);
        const char *label = use_reference ? "reference" : "oneDNN";
        CHECK(strstr(name, use_reference ? "reference" : "oneDNN") != NULL, "backend %s is %s", label, name);
        test_gemm_shapes(label);
        test_linear(label);
        products[use_reference] = model_shape_product();
        float *again = model_shape_product();
        CHECK(memcmp(again, products[use_reference], sizeof(float) * n) == 0, "%s: a repeated product is bit-identical",
              label);
        ds_free(again);
    }
    if (products[0]) {
        double e = test_rel_err(products[0], products[1], n);
        CHECK(e < 1e-5, "oneDNN and the reference agree on a 512x768x768 product (rel err %.3g)", e);
    } else {
        printf("note: no AVX512_BF16 on this CPU; only the reference bf16 backend tested\n");
    }
    unsetenv("DS_BF16_BACKEND");
    CHECK(strstr(ds_blas_set_precision(DS_PRECISION_FP32), "BLIS") != NULL, "fp32 is BLIS");
    float *fp32_after = model_shape_product();
    CHECK(memcmp(fp32_before, fp32_after, sizeof(float) * n) == 0, "fp32 after bf16: the same BLIS product, bit for bit");
    CHECK(test_rel_err(products[1], fp32_after, n) > 1e-4, "bf16 and fp32 products differ by the bf16 rounding");
    test_expect_bad_input(bad_backend, NULL, "DS_BF16_BACKEND=fast", "unknown DS_BF16_BACKEND");
    ds_free(fp32_before), ds_free(fp32_after), ds_free(products[0]), ds_free(products[1]);
    return test_summary("test_blas");
}
