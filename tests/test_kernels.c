/* Tests of the compute kernels other than WKV-7 (norm, shift_mix, act, softmax_xent, softmax,
 * modulate, gated_residual, attention, adamw, sum_squares, scale, axpy, fp32 <-> bf16, box_muller). For each kernel:
 *  (a) the scalar reference against an independent float64 computation written here,
 *  (b) backward kernels against central finite differences of the float64 forward,
 *  (c) the AVX-512 twin against the reference (odd sizes, so the masked tails run),
 *  (d) accumulation into pre-filled gradient buffers, and thread-count independence of reductions,
 *  (e) kernel-specific cases: ignored targets, L2Wrap, ties, the whole float range, NaN, bad input;
 *      bf16 rounding bit for bit on every edge (ties, denormals, overflow, NaN payloads); Gaussian draws
 *      bit for bit, on hashed counters and chosen hard arguments (the twin must return libm's doubles).
 * Also prints ref vs AVX-512 timings (not asserted). */
#include "../src/kernels/impl.h"
#include "dreamstate/common.h"
#include "test.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int have_avx512, default_threads;

/* ---------------------------------------------------------------- helpers */

static float *randn(int64_t n, uint64_t stream, float sd, float offset) {
    float *x = ds_alloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = offset + sd * (float)ds_rng_normal(42, stream, (uint64_t)i);
    return x;
}

static float *copy_of(const float *x, int64_t n) {
    float *y = ds_alloc((size_t)n * sizeof(float));
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}

static double *to_f64(const float *x, int64_t n) {
    double *y = ds_alloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

/* Max-norm relative error of float results against float64 values. */
static double rel_err_f64(const float *a, const double *b, int64_t n) {
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= num)) num = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

/* Element-wise relative error max_i |a - b| / max(|b|, floor); NaN must match NaN. */
static double elem_rel_err(const float *a, const double *b, int64_t n, double floor) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) {
            if (!(isnan(a[i]) && isnan(b[i]))) return INFINITY;
            continue;
        }
        if (a[i] == b[i]) continue; /* also covers equal infinities */
        double e = fabs(a[i] - b[i]) / fmax(fabs(b[i]), floor);
        if (e > worst) worst = e;
    }
    return worst;
}

/* a == p + g (the accumulate semantics), up to float rounding of the sum. */
static double accumulate_err(const float *a, const float *p, const float *g, int64_t n) {
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double want = (double)p[i] + g[i];
        num = fmax(num, fabs(a[i] - want));
        den = fmax(den, fabs(want));
    }
    return num / den;
}

/* Best of 7 runs on one thread (the test machine is small and shared; one thread times the kernel,
 * not the scheduler). */
#define BEST_TIME(secs, stmt)                                                                      \
    do {                                                                                           \
        secs = 1e30;                                                                               \
        omp_set_num_threads(1);                                                                    \
        for (int rep_ = 0; rep_ < 7; rep_++) {                                                     \
            double t0_ = ds_now_seconds();                                                         \
            stmt;                                                                                  \
            double t_ = ds_now_seconds() - t0_;                                                    \
            if (t_ < secs) secs = t_;                                                              \
        }                                                                                          \
        omp_set_num_threads(default_threads);                                                      \
    } while (0)

static void print_timing(const char *name, double t_ref, double t_avx) {
    printf("timing %-26s ref %9.3f ms   avx512 %9.3f ms   speed-up %6.2fx\n", name, t_ref * 1e3,
           t_avx * 1e3, t_ref / t_avx);
}

/* ---------------------------------------------------------------- norm */

static void norm_f64(int rows, int C, int G, double eps, const double *x, const double *gamma,
                     const double *beta, double *y, double *mean, double *rstd) {
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < C / G; g++) {
            const double *xg = x + (int64_t)r * C + g * G;
            double mu = 0, var = 0;
            for (int j = 0; j < G; j++) mu += xg[j];
            mu /= G;
            for (int j = 0; j < G; j++) var += (xg[j] - mu) * (xg[j] - mu);
            double rs = 1.0 / sqrt(var / G + eps);
            for (int j = 0; j < G; j++)
                y[(int64_t)r * C + g * G + j] =
                    (xg[j] - mu) * rs * gamma[g * G + j] + beta[g * G + j];
            if (mean) mean[r * (C / G) + g] = mu;
            if (rstd) rstd[r * (C / G) + g] = rs;
        }
}

/* L = sum w * y over `rows` rows. */
static double norm_loss_f64(int rows, int C, int G, double eps, const double *x,
                            const double *gamma, const double *beta, const float *w) {
    double *y = ds_alloc((size_t)rows * C * sizeof(double)), L = 0;
    norm_f64(rows, C, G, eps, x, gamma, beta, y, NULL, NULL);
    for (int64_t i = 0; i < (int64_t)rows * C; i++) L += w[i] * y[i];
    ds_free(y);
    return L;
}

/* Reference vs float64 forward, finite differences, accumulation, and the AVX-512 twin. */
static void test_norm_case(int rows, int C, int G, float eps, float offset) {
    int64_t n = (int64_t)rows * C;
    int ng = rows * (C / G);
    float *x = randn(n, 1, 1.5f, offset), *gamma = randn(C, 2, 0.3f, 1.0f),
          *beta = randn(C, 3, 0.2f, 0);
    float *dy = randn(n, 4, 1.0f, 0);
    float *y = ds_alloc(n * 4), *mean = ds_alloc(ng * 4), *rstd = ds_alloc(ng * 4);
    double *xd = to_f64(x, n), *gd = to_f64(gamma, C), *bd = to_f64(beta, C);
    double *y64 = ds_alloc(n * 8), *mean64 = ds_alloc(ng * 8), *rstd64 = ds_alloc(ng * 8);

    norm_forward_ref(rows, C, G, eps, x, gamma, beta, y, mean, rstd);
    norm_f64(rows, C, G, eps, xd, gd, bd, y64, mean64, rstd64);
    double ey = rel_err_f64(y, y64, n), em = rel_err_f64(mean, mean64, ng),
           er = rel_err_f64(rstd, rstd64, ng);
    CHECK(ey < 2e-6 && em < 1e-6 && er < 2e-6,
          "norm_forward_ref rows=%d C=%d G=%d offset=%g: y %.2e mean %.2e rstd %.2e", rows, C, G,
          offset, ey, em, er);

    /* Backward into zeroed buffers vs central differences of L = sum dy * y in float64. */
    float *dx = ds_alloc(n * 4), *dg = ds_alloc(C * 4), *db = ds_alloc(C * 4);
    norm_backward_ref(rows, C, G, dy, x, mean, rstd, gamma, dx, dg, db);
    double *fd_dx = ds_alloc(n * 8), *fd_dg = ds_alloc(C * 8), *fd_db = ds_alloc(C * 8);
    const double h = 1e-4;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) {
            double *xr = xd + (int64_t)r * C, keep = xr[c];
            xr[c] = keep + h;
            double lp = norm_loss_f64(1, C, G, eps, xr, gd, bd, dy + (int64_t)r * C);
            xr[c] = keep - h;
            double lm = norm_loss_f64(1, C, G, eps, xr, gd, bd, dy + (int64_t)r * C);
            xr[c] = keep;
            fd_dx[(int64_t)r * C + c] = (lp - lm) / (2 * h);
        }
    for (int c = 0; c < C; c++) {
        double keep = gd[c];
        gd[c] = keep + h;
        double lp = norm_loss_f64(rows, C, G, eps, xd, gd, bd, dy);
        gd[c] = keep - h;
        double lm = norm_loss_f64(rows, C, G, eps, xd, gd, bd, dy);
        gd[c] = keep;
        fd_dg[c] = (lp - lm) / (2 * h);
        keep = bd[c];
        bd[c] = keep + h;
        lp = norm_loss_f64(rows, C, G, eps, xd, gd, bd, dy);
        bd[c] = keep - h;
        lm = norm_loss_f64(rows, C, G, eps, xd, gd, bd, dy);
        bd[c] = keep;
        fd_db[c] = (lp - lm) / (2 * h);
    }
    double edx = rel_err_f64(dx, fd_dx, n), edg = rel_err_f64(dg, fd_dg, C),
           edb = rel_err_f64(db, fd_db, C);
    CHECK(
        edx < 2e-5 && edg < 1e-5 && edb < 1e-5,
        "norm_backward_ref vs finite differences rows=%d C=%d G=%d: dx %.2e dgamma %.2e dbeta %.2e",
        rows, C, G, edx, edg, edb);

    /* Accumulation: pre-filled gradients receive exactly the same increment. */
    float *pdx = randn(n, 5, 1, 0), *pdg = randn(C, 6, 1, 0), *pdb = randn(C, 7, 1, 0);
    float *adx = copy_of(pdx, n), *adg = copy_of(pdg, C), *adb = copy_of(pdb, C);
    norm_backward_ref(rows, C, G, dy, x, mean, rstd, gamma, adx, adg, adb);
    CHECK(accumulate_err(adx, pdx, dx, n) < 1e-6 && accumulate_err(adg, pdg, dg, C) < 1e-6 &&
              accumulate_err(adb, pdb, db, C) < 1e-6,
          "norm_backward_ref accumulates into dx, dgamma, dbeta");

    if (have_avx512) {
        float *y2 = ds_alloc(n * 4), *mean2 = ds_alloc(ng * 4), *rstd2 = ds_alloc(ng * 4);
        norm_forward_avx512(rows, C, G, eps, x, gamma, beta, y2, mean2, rstd2);
        double e1 = test_rel_err(y2, y, n), e2 = test_rel_err(mean2, mean, ng),
               e3 = test_rel_err(rstd2, rstd, ng);
        CHECK(e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5,
              "norm_forward_avx512 vs ref rows=%d C=%d G=%d: %.2e %.2e %.2e", rows, C, G, e1, e2,
              e3);
        float *bdx = copy_of(pdx, n), *bdg = copy_of(pdg, C), *bdb = copy_of(pdb, C);
        norm_backward_avx512(rows, C, G, dy, x, mean, rstd, gamma, bdx, bdg, bdb);
        e1 = test_rel_err(bdx, adx, n), e2 = test_rel_err(bdg, adg, C),
        e3 = test_rel_err(bdb, adb, C);
        CHECK(e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5,
              "norm_backward_avx512 vs ref (accumulating) rows=%d C=%d G=%d: %.2e %.2e %.2e", rows,
              C, G, e1, e2, e3);
        ds_free(y2), ds_free(mean2), ds_free(rstd2), ds_free(bdx), ds_free(bdg), ds_free(bdb);
    }
    float *bufs[] = {x, gamma, beta, dy, y, mean, rstd, dx, dg, db, pdx, pdg, pdb, adx, adg, adb};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
    double *dbufs[] = {xd, gd, bd, y64, mean64, rstd64, fd_dx, fd_dg, fd_db};
    for (size_t i = 0; i < sizeof dbufs / sizeof *dbufs; i++) ds_free(dbufs[i]);
}

/* Many rows (several reduction blocks): twin agreement and bitwise thread-count independence. */
static void test_norm_large(int C, int G, int timing) {
    int rows = timing ? 4096 : 201;
    int64_t n = (int64_t)rows * C;
    int ng = rows * (C / G);
    float *x = randn(n, 11, 1, 0.5f), *gamma = randn(C, 12, 0.3f, 1), *beta = randn(C, 13, 0.2f, 0);
    float *dy = randn(n, 14, 1, 0), *y = ds_alloc(n * 4), *mean = ds_alloc(ng * 4),
          *rstd = ds_alloc(ng * 4);
    float *dx[2], *dg[2], *db[2];
    for (int k = 0; k < 2; k++)
        dx[k] = ds_alloc(n * 4), dg[k] = ds_alloc(C * 4), db[k] = ds_alloc(C * 4);
    norm_forward_ref(rows, C, G, 1e-5f, x, gamma, beta, y, mean, rstd);
    if (!timing) {
        for (int avx = 0; avx <= have_avx512; avx++) {
            for (int k = 0; k < 2; k++) {
                omp_set_num_threads(k == 0 ? 1 : 3);
                memset(dx[k], 0, n * 4), memset(dg[k], 0, C * 4), memset(db[k], 0, C * 4);
                (avx ? norm_backward_avx512 : norm_backward_ref)(rows, C, G, dy, x, mean, rstd,
                                                                 gamma, dx[k], dg[k], db[k]);
            }
            CHECK(!memcmp(dx[0], dx[1], n * 4) && !memcmp(dg[0], dg[1], C * 4) &&
                      !memcmp(db[0], db[1], C * 4),
                  "norm_backward_%s: 1 and 3 threads give bitwise equal results (C=%d G=%d)",
                  avx ? "avx512" : "ref", C, G);
        }
        omp_set_num_threads(default_threads);
    }
    if (have_avx512 && !timing) {
        float *y2 = ds_alloc(n * 4), *mean2 = ds_alloc(ng * 4), *rstd2 = ds_alloc(ng * 4);
        norm_forward_avx512(rows, C, G, 1e-5f, x, gamma, beta, y2, mean2, rstd2);
        CHECK(test_rel_err(y2, y, n) < 1e-5 && test_rel_err(rstd2, rstd, ng) < 1e-5,
              "norm_forward_avx512 vs ref, %d rows C=%d G=%d", rows, C, G);
        memset(dx[0], 0, n * 4), memset(dg[0], 0, C * 4), memset(db[0], 0, C * 4);
        norm_backward_ref(rows, C, G, dy, x, mean, rstd, gamma, dx[0], dg[0], db[0]);
        double e1 = test_rel_err(dx[1], dx[0], n), e2 = test_rel_err(dg[1], dg[0], C),
               e3 = test_rel_err(db[1], db[0], C);
        CHECK(e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5,
              "norm_backward_avx512 vs ref, %d rows C=%d G=%d: %.2e %.2e %.2e", rows, C, G, e1, e2,
              e3);
        ds_free(y2), ds_free(mean2), ds_free(rstd2);
    }
    if (have_avx512 && timing) {
        char name[64];
        double tr, ta;
        BEST_TIME(tr, norm_forward_ref(rows, C, G, 1e-5f, x, gamma, beta, y, mean, rstd));
        BEST_TIME(ta, norm_forward_avx512(rows, C, G, 1e-5f, x, gamma, beta, y, mean, rstd));
        snprintf(name, sizeof name, "norm_forward %dx%d G=%d", rows, C, G);
        print_timing(name, tr, ta);
        BEST_TIME(tr, norm_backward_ref(rows, C, G, dy, x, mean, rstd, gamma, dx[0], dg[0], db[0]));
        BEST_TIME(ta,
                  norm_backward_avx512(rows, C, G, dy, x, mean, rstd, gamma, dx[0], dg[0], db[0]));
        snprintf(name, sizeof name, "norm_backward %dx%d G=%d", rows, C, G);
        print_timing(name, tr, ta);
    }
    float *bufs[] = {x, gamma, beta, dy, y, mean, rstd, dx[0], dg[0], db[0], dx[1], dg[1], db[1]};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
}

static void test_norm(void) {
    test_norm_case(3, 64, 64, 64e-5f, 0);
    test_norm_case(3, 128, 64, 64e-5f, 2);
    test_norm_case(3, 768, 64, 64e-5f, 0);
    test_norm_case(3, 768, 768, 1e-5f, 5); /* LayerNorm; a mean offset tests the centred variance */
    test_norm_case(5, 120, 40, 1e-5f, 0);  /* G not a multiple of 16 */
    test_norm_case(1, 37, 37, 1e-5f, 0);
    test_norm_large(768, 64, 0);
    test_norm_large(768, 768, 0);
    test_norm_large(768, 64, 1);
    test_norm_large(768, 768, 1);
}

/* ---------------------------------------------------------------- shift_mix */

static double shift_mix_loss_f64(int B, int T, int C, const double *x, const double *prev,
                                 const double *mu, const float *w, double *out) {
    double L = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                int64_t i = ((int64_t)b * T + t) * C + c;
                double xp = t > 0 ? x[i - C] : prev ? prev[b * C + c] : 0.0;
                double o = x[i] + (xp - x[i]) * mu[c];
                if (out) out[i] = o;
                L += w[i] * o;
            }
    return L;
}

/* Central difference of the float64 loss in v[i]. */
#define FD(v, i, loss_expr)                                                                        \
    ({                                                                                             \
        double keep_ = (v)[i], h_ = 1e-3;                                                          \
        (v)[i] = keep_ + h_;                                                                       \
        double lp_ = (loss_expr);                                                                  \
        (v)[i] = keep_ - h_;                                                                       \
        double lm_ = (loss_expr);                                                                  \
        (v)[i] = keep_;                                                                            \
        (lp_ - lm_) / (2 * h_);                                                                    \
    })

static void test_shift_mix_case(int B, int T, int C, int with_prev) {
    int64_t n = (int64_t)B * T * C;
    float *x = randn(n, 21, 1, 0), *prev = with_prev ? randn(B * C, 22, 1, 0) : NULL;
    float *mu = randn(C, 23, 0.4f, 0.5f), *dout = randn(n, 24, 1, 0), *out = ds_alloc(n * 4);
    double *xd = to_f64(x, n), *pd = prev ? to_f64(prev, B * C) : NULL, *mud = to_f64(mu, C);
    double *out64 = ds_alloc(n * 8);

    shift_mix_forward_ref(B, T, C, x, prev, mu, out);
    shift_mix_loss_f64(B, T, C, xd, pd, mud, dout, out64);
    double e = rel_err_f64(out, out64, n);
    CHECK(e < 1e-6, "shift_mix_forward_ref B=%d T=%d C=%d prev=%d: %.2e", B, T, C, with_prev, e);

    float *dx = ds_alloc(n * 4), *dprev = ds_alloc(B * C * 4), *dmu = ds_alloc(C * 4);
    shift_mix_backward_ref(B, T, C, x, prev, mu, dout, dx, with_prev ? dprev : NULL, dmu);
    double *fdx = ds_alloc(n * 8), *fdp = ds_alloc(B * C * 8), *fdmu = ds_alloc(C * 8);
    for (int64_t i = 0; i < n; i++)
        fdx[i] = FD(xd, i, shift_mix_loss_f64(B, T, C, xd, pd, mud, dout, NULL));
    for (int c = 0; c < C; c++)
        fdmu[c] = FD(mud, c, shift_mix_loss_f64(B, T, C, xd, pd, mud, dout, NULL));
    for (int i = 0; pd && i < B * C; i++)
        fdp[i] = FD(pd, i, shift_mix_loss_f64(B, T, C, xd, pd, mud, dout, NULL));
    double e1 = rel_err_f64(dx, fdx, n), e2 = rel_err_f64(dmu, fdmu, C),
           e3 = pd ? rel_err_f64(dprev, fdp, B * C) : 0;
    CHECK(e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5,
          "shift_mix_backward_ref vs finite differences B=%d T=%d C=%d prev=%d: dx %.2e dmu %.2e "
          "dprev %.2e",
          B, T, C, with_prev, e1, e2, e3);

    float *pdx = randn(n, 25, 1, 0), *pdp = randn(B * C, 26, 1, 0), *pdmu = randn(C, 27, 1, 0);
    float *adx = copy_of(pdx, n), *adp = copy_of(pdp, B * C), *admu = copy_of(pdmu, C);
    shift_mix_backward_ref(B, T, C, x, prev, mu, dout, adx, with_prev ? adp : NULL, admu);
    CHECK(accumulate_err(adx, pdx, dx, n) < 1e-6 && accumulate_err(admu, pdmu, dmu, C) < 1e-6 &&
              accumulate_err(adp, pdp, dprev, B * C) < 1e-6,
          "shift_mix_backward_ref accumulates (prev=%d)", with_prev);
    if (with_prev) { /* dprev = NULL: no gradient wanted, the others unchanged */
        float *cdx = ds_alloc(n * 4), *cmu = ds_alloc(C * 4);
        shift_mix_backward_ref(B, T, C, x, prev, mu, dout, cdx, NULL, cmu);
        CHECK(!memcmp(cdx, dx, n * 4) && !memcmp(cmu, dmu, C * 4),
              "shift_mix_backward_ref with dprev = NULL");
        ds_free(cdx), ds_free(cmu);
    }

    if (have_avx512) {
        float *out2 = ds_alloc(n * 4);
        shift_mix_forward_avx512(B, T, C, x, prev, mu, out2);
        e = test_rel_err(out2, out, n);
        CHECK(e < 1e-6, "shift_mix_forward_avx512 vs ref B=%d T=%d C=%d prev=%d: %.2e", B, T, C,
              with_prev, e);
        float *bdx = copy_of(pdx, n), *bdp = copy_of(pdp, B * C), *bdmu = copy_of(pdmu, C);
        shift_mix_backward_avx512(B, T, C, x, prev, mu, dout, bdx, with_prev ? bdp : NULL, bdmu);
        e1 = test_rel_err(bdx, adx, n), e2 = test_rel_err(bdmu, admu, C),
        e3 = test_rel_err(bdp, adp, B * C);
        CHECK(
            e1 < 1e-6 && e2 < 1e-5 && e3 < 1e-6,
            "shift_mix_backward_avx512 vs ref B=%d T=%d C=%d prev=%d: dx %.2e dmu %.2e dprev %.2e",
            B, T, C, with_prev, e1, e2, e3);
        ds_free(out2), ds_free(bdx), ds_free(bdp), ds_free(bdmu);
    }
    float *bufs[] = {x, prev, mu, dout, out, dx, dprev, dmu, pdx, pdp, pdmu, adx, adp, admu};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
    double *dbufs[] = {xd, pd, mud, out64, fdx, fdp, fdmu};
    for (size_t i = 0; i < sizeof dbufs / sizeof *dbufs; i++) ds_free(dbufs[i]);
}

static void test_shift_mix_large(int B, int T, int C, int timing) {
    int64_t n = (int64_t)B * T * C;
    float *x = randn(n, 31, 1, 0), *prev = randn(B * C, 32, 1, 0), *mu = randn(C, 33, 0.4f, 0.5f);
    float *dout = randn(n, 34, 1, 0), *out = ds_alloc(n * 4);
    float *dx = ds_alloc(n * 4), *dprev = ds_alloc(B * C * 4),
          *dmu[2] = {ds_alloc(C * 4), ds_alloc(C * 4)};
    if (!timing) {
        for (int avx = 0; avx <= have_avx512; avx++) {
            for (int k = 0; k < 2; k++) {
                omp_set_num_threads(k == 0 ? 1 : 3);
                (avx ? shift_mix_backward_avx512 : shift_mix_backward_ref)(B, T, C, x, prev, mu,
                                                                           dout, dx, dprev, dmu[k]);
            }
            CHECK(!memcmp(dmu[0], dmu[1], C * 4),
                  "shift_mix_backward_%s: dmu bitwise equal with 1 and 3 threads",
                  avx ? "avx512" : "ref");
            memset(dmu[0], 0, C * 4), memset(dmu[1], 0, C * 4);
        }
        omp_set_num_threads(default_threads);
    } else if (have_avx512) {
        double tr, ta;
        BEST_TIME(tr, shift_mix_forward_ref(B, T, C, x, prev, mu, out));
        BEST_TIME(ta, shift_mix_forward_avx512(B, T, C, x, prev, mu, out));
        print_timing("shift_mix_forward 8x512x768", tr, ta);
        BEST_TIME(tr, shift_mix_backward_ref(B, T, C, x, prev, mu, dout, dx, dprev, dmu[0]));
        BEST_TIME(ta, shift_mix_backward_avx512(B, T, C, x, prev, mu, dout, dx, dprev, dmu[0]));
        print_timing("shift_mix_backward 8x512x768", tr, ta);
    }
    float *bufs[] = {x, prev, mu, dout, out, dx, dprev, dmu[0], dmu[1]};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
}

static void test_shift_mix(void) {
    test_shift_mix_case(2, 5, 37, 1);
    test_shift_mix_case(2, 5, 37, 0);
    test_shift_mix_case(3, 1, 20, 1); /* T = 1: every row reads prev */
    test_shift_mix_case(3, 7, 64, 1);
    test_shift_mix_case(1, 3, 768, 1);
    test_shift_mix_large(3, 67, 768, 0);
    test_shift_mix_large(8, 512, 768, 1);
}

/* ---------------------------------------------------------------- act */

static double act_f64(ds_activation act, double x) {
    switch (act) {
    case DS_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case DS_ACT_TANH: return tanh(x);
    case DS_ACT_SILU: return x / (1.0 + exp(-x));
    case DS_ACT_GELU_TANH: /* 1/2 (1 + tanh u) = 1 / (1 + e^{-2u}); the tanh form cancels for x < -9 */
        return x / (1.0 + exp(-2.0 * 0.7978845608028654 * (x + 0.044715 * x * x * x)));
    default: return x > 0 ? x * x : x < 0 ? 0.0 : x * x; /* x*x keeps NaN */
    }
}

#define N_ACT 5
static const char *act_name[N_ACT] = {"sigmoid", "tanh", "relu_sq", "silu", "gelu_tanh"};

/* Element-wise relative tolerance against float64. silu: near x = -88 sigmoid(x) is denormal (few
 * significant bits) while x sigmoid(x) is still normal. gelu_tanh: sigmoid(2u) has condition number
 * |2u| in its argument, and 2u = 2 k0 (x + k1 x^3) carries a few float roundings; for x near -7
 * (|2u| ~ 36..87) that is ~1e-5 relative in the output. Both are inherent to float evaluation. */
static double act_elem_tol(ds_activation act) {
    return act == DS_ACT_GELU_TANH ? 3e-5 : act == DS_ACT_SILU ? 1e-5 : 1e-6;
}

/* Inputs covering the float range: magnitudes 1e-38 .. 1e38 (both signs), a dense grid on
 * [-100, 100], and 0, +-inf, +-FLT_MAX, a denormal. */
static int64_t whole_range_inputs(float *x) {
    int64_t n = 0;
    for (int k = 0; k <= 4000; k++) {
        float m = (float)pow(10.0, -38.0 + 76.0 * k / 4000);
        x[n++] = m, x[n++] = -m;
    }
    for (int k = -10000; k <= 10000; k++) x[n++] = k * 0.01f + 0.003f;
    float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, 1e-40f, -1e-40f};
    for (size_t k = 0; k < sizeof special / sizeof *special; k++) x[n++] = special[k];
    return n;
}

static void test_act(void) {
    const int64_t n = 1003;
    float *x = randn(n, 41, 3, 0), *dy = randn(n, 42, 1, 0), *pre = randn(n, 43, 1, 0);
    float *y = ds_alloc(n * 4), *dx = ds_alloc(n * 4), *adx = ds_alloc(n * 4),
          *y2 = ds_alloc(n * 4);
    double *want = ds_alloc(n * 8), *fd = ds_alloc(n * 8);
    float *wx = ds_alloc(30000 * 4), *wy = ds_alloc(30000 * 4);
    double *wwant = ds_alloc(30000 * 8);
    int64_t wn = whole_range_inputs(wx);

    for (int a = 0; a < N_ACT; a++) {
        ds_activation act = (ds_activation)a;
        /* (a) forward vs float64 on N(0, 9) inputs and on the whole float range */
        act_forward_ref(act, n, x, y);
        for (int64_t i = 0; i < n; i++) want[i] = act_f64(act, x[i]);
        double e = elem_rel_err(y, want, n, FLT_MIN);
        CHECK(e < act_elem_tol(act), "act_forward_ref %s vs float64: %.2e", act_name[a], e);
        act_forward_ref(act, wn, wx, wy);
        for (int64_t i = 0; i < wn; i++) wwant[i] = (float)act_f64(act, wx[i]);
        e = elem_rel_err(wy, wwant, wn, FLT_MIN);
        CHECK(e < act_elem_tol(act), "act_forward_ref %s over the float range: %.2e", act_name[a], e);

        /* (b) backward vs central differences, (d) accumulating */
        memset(dx, 0, n * 4);
        act_backward_ref(act, n, x, dy, dx);
        for (int64_t i = 0; i < n; i++) {
            double h = 1e-5;
            fd[i] =
                dy[i] * (act_f64(act, (double)x[i] + h) - act_f64(act, (double)x[i] - h)) / (2 * h);
        }
        e = rel_err_f64(dx, fd, n);
        CHECK(e < 1e-5, "act_backward_ref %s vs finite differences: %.2e", act_name[a], e);
        memcpy(adx, pre, n * 4);
        act_backward_ref(act, n, x, dy, adx);
        CHECK(accumulate_err(adx, pre, dx, n) < 1e-6, "act_backward_ref %s accumulates",
              act_name[a]);

        float nan_in = NAN, nan_out = 0;
        act_forward_ref(act, 1, &nan_in, &nan_out);
        CHECK(isnan(nan_out), "act_forward_ref %s propagates NaN", act_name[a]);

        if (!have_avx512) continue;
        /* (c) twin: forward element-wise against libm in float64, backward against the reference */
        act_forward_avx512(act, n, x, y2);
        e = elem_rel_err(y2, want, n, FLT_MIN);
        CHECK(e < act_elem_tol(act), "act_forward_avx512 %s vs float64: %.2e", act_name[a], e);
        act_forward_avx512(act, wn, wx, wy);
        e = elem_rel_err(wy, wwant, wn, FLT_MIN);
        CHECK(e < act_elem_tol(act),
              "act_forward_avx512 %s over the float range (incl. +-inf, huge, denormal): %.2e",
              act_name[a], e);
        printf("act_forward_avx512 %-7s max relative error vs float64 over the float range: %.2e\n",
               act_name[a], e);
        memcpy(y2, pre, n * 4);
        act_backward_avx512(act, n, x, dy, y2);
        e = test_rel_err(y2, adx, n);
        CHECK(e < 1e-6, "act_backward_avx512 %s vs ref (accumulating): %.2e", act_name[a], e);
        float nan16[19], out16[19];
        for (int i = 0; i < 19; i++) nan16[i] = i == 17 ? NAN : 0.5f;
        act_forward_avx512(act, 19, nan16, out16);
        CHECK(isnan(out16[17]) && !isnan(out16[16]), "act_forward_avx512 %s propagates NaN",
              act_name[a]);
    }

    if (have_avx512) {
        const int64_t big = 1 << 22;
        float *bx = randn(big, 44, 3, 0), *by = ds_alloc(big * 4), *bd = ds_alloc(big * 4);
        for (int a = 0; a < N_ACT; a++) {
            double tr, ta;
            char name[64];
            BEST_TIME(tr, act_forward_ref((ds_activation)a, big, bx, by));
            BEST_TIME(ta, act_forward_avx512((ds_activation)a, big, bx, by));
            snprintf(name, sizeof name, "act_forward %s 4M", act_name[a]);
            print_timing(name, tr, ta);
            BEST_TIME(tr, act_backward_ref((ds_activation)a, big, bx, by, bd));
            BEST_TIME(ta, act_backward_avx512((ds_activation)a, big, bx, by, bd));
            snprintf(name, sizeof name, "act_backward %s 4M", act_name[a]);
            print_timing(name, tr, ta);
        }
        ds_free(bx), ds_free(by), ds_free(bd);
    }
    float *bufs[] = {x, dy, pre, y, dx, adx, y2, wx, wy};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
    ds_free(want), ds_free(fd), ds_free(wwant);
}

/* ---------------------------------------------------------------- softmax_xent */

/* Cross-entropy of one row in float64. */
static double xent_loss_f64(int V, const double *x, int target) {
    double m = x[0], s = 0;
    for (int i = 1; i < V; i++) m = fmax(m, x[i]);
    for (int i = 0; i < V; i++) s += exp(x[i] - m);
    return m + log(s) - x[target];
}

/* Logits for the softmax tests: row r is N(0, 9) shifted by 20 r (large offsets test stability);
 * row 1 has a tie for the maximum (the first index must win). */
static float *xent_logits(int rows, int V, uint64_t stream) {
    float *x = randn((int64_t)rows * V, stream, 3, 0);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < V; i++) x[(int64_t)r * V + i] += 20.0f * r;
    if (rows > 1 && V > 4) x[V + V / 3] = x[V + V / 2] = 20.0f + 30.0f;
    return x;
}

static int first_argmax(int V, const float *x) {
    int a = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

static void test_xent_reference(void) {
    const int rows = 4, V = 517;
    const float scale = 1.0f / 6, l2wrap = 1e-4f;
    float *logits = xent_logits(rows, V, 51);
    int32_t targets[4] = {7, 516, -1, 0};
    float *g0 = copy_of(logits, rows * V), *g1 = copy_of(logits, rows * V), loss0[4], loss1[4];
    softmax_xent_ref(rows, V, g0, targets, scale, 0.0f, loss0);
    softmax_xent_ref(rows, V, g1, targets, scale, l2wrap, loss1);
    double *xd = to_f64(logits, rows * V), *want = ds_alloc(V * 8), *fd = ds_alloc(V * 8);
    for (int r = 0; r < rows; r++) {
        const float *x = logits + r * V;
        const float *d0 = g0 + r * V, *d1 = g1 + r * V;
        if (targets[r] < 0) {
            int zero = 1;
            for (int i = 0; i < V; i++) zero &= d0[i] == 0 && d1[i] == 0;
            CHECK(zero && loss0[r] == 0 && loss1[r] == 0,
                  "softmax_xent_ref: ignored row %d has zero loss and gradient", r);
            continue;
        }
        /* (a) closed form in float64: loss = lse - x[t], dlogits = scale (softmax - onehot) */
        double *xr = xd + r * V, loss = xent_loss_f64(V, xr, targets[r]),
               m = xr[first_argmax(V, x)], s = 0;
        for (int i = 0; i < V; i++) s += exp(xr[i] - m);
        for (int i = 0; i < V; i++) want[i] = scale * (exp(xr[i] - m) / s - (i == targets[r]));
        CHECK(fabs(loss0[r] - loss) < 1e-6 * fabs(loss) && loss1[r] == loss0[r],
              "softmax_xent_ref row %d loss %.8g vs float64 %.8g", r, loss0[r], loss);
        double e = rel_err_f64(d0, want, V);
        CHECK(e < 1e-6, "softmax_xent_ref row %d dlogits vs closed form: %.2e", r, e);
        /* (b) central differences of the float64 loss; gradients sum to 0 without L2Wrap */
        for (int i = 0; i < V; i++) fd[i] = scale * FD(xr, i, xent_loss_f64(V, xr, targets[r]));
        e = rel_err_f64(d0, fd, V);
        double sum = 0;
        for (int i = 0; i < V; i++) sum += d0[i];
        CHECK(e < 1e-5, "softmax_xent_ref row %d dlogits vs finite differences: %.2e", r, e);
        CHECK(fabs(sum) < 1e-6 * scale, "softmax_xent_ref row %d: dlogits sum to %.2e", r, sum);
        /* L2Wrap adds scale * l2wrap * max at the first argmax and nothing elsewhere */
        int am = first_argmax(V, x), others_equal = 1;
        for (int i = 0; i < V; i++) others_equal &= i == am || d1[i] == d0[i];
        double term = (double)scale * l2wrap * x[am];
        CHECK(others_equal && fabs((d1[am] - d0[am]) - term) < 1e-3 * fabs(term),
              "softmax_xent_ref row %d: L2Wrap term %.6g at argmax %d, want %.6g", r,
              d1[am] - d0[am], am, term);
    }
    CHECK(first_argmax(V, logits + V) == V / 3, "tie set up in row 1");
    ds_free(logits), ds_free(g0), ds_free(g1), ds_free(xd), ds_free(want), ds_free(fd);
}

/* A target >= V is bad input: exit code 2 with a message, not a write outside the row. */
static void test_xent_bad_target(void) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        float x[4] = {0};
        int32_t t = 4;
        float loss;
        softmax_xent_ref(1, 4, x, &t, 1.0f, 0.0f, &loss);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == DS_EXIT_BAD_INPUT,
          "softmax_xent: target >= V exits with 2");
}

static void test_xent_twin(int rows, int V) {
    float *logits = xent_logits(rows, V, 52);
    int32_t *targets = ds_alloc(rows * sizeof(int32_t));
    for (int r = 0; r < rows; r++)
        targets[r] = r == 2 ? -1 : (int32_t)(ds_rng_u64(7, r, 0) % (uint64_t)V);
    float *a = copy_of(logits, (int64_t)rows * V), *b = copy_of(logits, (int64_t)rows * V);
    float *la = ds_alloc(rows * 4), *lb = ds_alloc(rows * 4);
    softmax_xent_ref(rows, V, a, targets, 1.0f / 3, 1e-4f, la);
    softmax_xent_avx512(rows, V, b, targets, 1.0f / 3, 1e-4f, lb);
    double el = test_rel_err(lb, la, rows), worst = 0;
    for (int r = 0; r < rows; r++)
        worst = fmax(worst, test_rel_err(b + (int64_t)r * V, a + (int64_t)r * V, V));
    CHECK(el < 1e-5 && worst < 1e-5,
          "softmax_xent_avx512 vs ref rows=%d V=%d: loss %.2e dlogits %.2e", rows, V, el, worst);
    int zero = lb[2] == 0;
    for (int i = 0; i < V; i++) zero &= b[2 * (int64_t)V + i] == 0;
    CHECK(zero, "softmax_xent_avx512: ignored row is zero (V=%d)", V);
    if (rows > 1 && V > 4) { /* the tie in row 1: L2Wrap lands on the first maximum in both */
        float *c = copy_of(logits, (int64_t)rows * V), *lc = ds_alloc(rows * 4);
        softmax_xent_avx512(rows, V, c, targets, 1.0f / 3, 0.0f, lc);
        float term = (b[V + V / 3] - c[V + V / 3]) / (1.0f / 3 * 1e-4f * 50.0f);
        CHECK(fabsf(term - 1) < 1e-3 && b[V + V / 2] == c[V + V / 2],
              "softmax_xent_avx512: L2Wrap at first tied max");
        ds_free(c), ds_free(lc);
    }
    ds_free(logits), ds_free(targets), ds_free(a), ds_free(b), ds_free(la), ds_free(lb);
}

static void test_xent(void) {
    test_xent_reference();
    test_xent_bad_target();
    if (!have_avx512) return;
    int sizes[] = {5, 17, 517, 50307, 65536};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        test_xent_twin(k == 0 ? 3 : 7, sizes[k]);

    const int rows = 32, V = 65536;
    float *logits = randn((int64_t)rows * V, 53, 3, 0), *work = ds_alloc((int64_t)rows * V * 4),
          loss[32];
    int32_t targets[32];
    for (int r = 0; r < rows; r++) targets[r] = r * 1000;
    double tr, ta;
    BEST_TIME(tr, (memcpy(work, logits, (size_t)rows * V * 4),
                   softmax_xent_ref(rows, V, work, targets, 1.0f / rows, 1e-4f, loss)));
    BEST_TIME(ta, (memcpy(work, logits, (size_t)rows * V * 4),
                   softmax_xent_avx512(rows, V, work, targets, 1.0f / rows, 1e-4f, loss)));
    print_timing("softmax_xent 32x65536 (+copy)", tr, ta);
    ds_free(logits), ds_free(work);
}

/* ---------------------------------------------------------------- softmax */

/* Softmax of one row in float64. */
static void softmax_f64(int n, const double *x, double *y) {
    double m = x[0], s = 0;
    for (int i = 1; i < n; i++) m = fmax(m, x[i]);
    for (int i = 0; i < n; i++) s += (y[i] = exp(x[i] - m));
    for (int i = 0; i < n; i++) y[i] /= s;
}

/* L = sum w * softmax(x) of one row in float64. */
static double softmax_loss_f64(int n, const double *x, const float *w) {
    double *y = ds_alloc((size_t)n * 8), L = 0;
    softmax_f64(n, x, y);
    for (int i = 0; i < n; i++) L += w[i] * y[i];
    ds_free(y);
    return L;
}

/* Rows of N(0, 9) logits, row r shifted by 30 r (large offsets test the max subtraction). */
static float *softmax_logits(int64_t rows, int n, uint64_t stream) {
    float *x = randn(rows * n, stream, 3, 0);
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) x[r * n + i] += 30.0f * (float)r;
    return x;
}

static void test_softmax_case(int64_t rows, int n) {
    int64_t len = rows * n;
    float *x = softmax_logits(rows, n, 91), *dy = randn(len, 92, 1, 0), *y = ds_alloc(len * 4);
    double *xd = to_f64(x, len), *want = ds_alloc(len * 8), *fd = ds_alloc(len * 8);
    /* (a) forward vs float64, rows sum to 1, in place gives the same bits */
    softmax_forward_ref(rows, n, x, y);
    double worst_sum = 0;
    for (int64_t r = 0; r < rows; r++) {
        softmax_f64(n, xd + r * n, want + r * n);
        double s = 0;
        for (int i = 0; i < n; i++) s += y[r * n + i];
        worst_sum = fmax(worst_sum, fabs(s - 1));
    }
    double e = rel_err_f64(y, want, len), ee = elem_rel_err(y, want, len, 1e-30);
    CHECK(e < 1e-6 && ee < 1e-5 && worst_sum < 1e-5,
          "softmax_forward_ref rows=%lld n=%d vs float64: %.2e (element-wise %.2e), |row sum - 1| %.2e",
          (long long)rows, n, e, ee, worst_sum);
    float *inplace = copy_of(x, len);
    softmax_forward_ref(rows, n, inplace, inplace);
    CHECK(!memcmp(inplace, y, len * 4), "softmax_forward_ref in place (x == y)");

    /* (b) backward vs central differences of L = sum dy * softmax(x), (d) accumulating */
    float *dx = ds_alloc(len * 4);
    softmax_backward_ref(rows, n, y, dy, dx);
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < n; i++)
            fd[r * n + i] = FD(xd + r * n, i, softmax_loss_f64(n, xd + r * n, dy + r * n));
    e = rel_err_f64(dx, fd, len);
    CHECK(e < 1e-5, "softmax_backward_ref rows=%lld n=%d vs finite differences: %.2e", (long long)rows, n, e);
    float *pre = randn(len, 93, 1, 0), *adx = copy_of(pre, len);
    softmax_backward_ref(rows, n, y, dy, adx);
    CHECK(accumulate_err(adx, pre, dx, len) < 1e-6, "softmax_backward_ref accumulates");

    if (have_avx512) { /* (c) twin, odd n so the masked tails run */
        float *y2 = ds_alloc(len * 4), *bdx = copy_of(pre, len);
        softmax_forward_avx512(rows, n, x, y2);
        double e1 = test_rel_err(y2, y, len), e2 = elem_rel_err(y2, want, len, 1e-30);
        CHECK(e1 < 1e-6 && e2 < 1e-5, "softmax_forward_avx512 rows=%lld n=%d vs ref %.2e, vs float64 element-wise %.2e",
              (long long)rows, n, e1, e2);
        memcpy(inplace, x, len * 4);
        softmax_forward_avx512(rows, n, inplace, inplace);
        CHECK(!memcmp(inplace, y2, len * 4), "softmax_forward_avx512 in place (x == y)");
        softmax_backward_avx512(rows, n, y, dy, bdx);
        e1 = test_rel_err(bdx, adx, len);
        CHECK(e1 < 1e-6, "softmax_backward_avx512 rows=%lld n=%d vs ref (accumulating): %.2e", (long long)rows, n, e1);
        ds_free(y2), ds_free(bdx);
    }
    float *bufs[] = {x, dy, y, inplace, dx, pre, adx};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
    ds_free(xd), ds_free(want), ds_free(fd);
}

static void test_softmax(void) {
    test_softmax_case(3, 1);  /* one column: y = 1, dx = 0 */
    test_softmax_case(5, 7);
    test_softmax_case(4, 16);
    test_softmax_case(3, 37);
    test_softmax_case(2, 256);
    /* a saturated row: one logit far above the rest gives exactly a one-hot row, dx = 0 */
    float x[20], y[20], dy[20], dx[20] = {0};
    for (int i = 0; i < 20; i++) x[i] = (float)i, dy[i] = 1.0f + i;
    x[7] = 1000.0f;
    for (int avx = 0; avx <= have_avx512; avx++) {
        (avx ? softmax_forward_avx512 : softmax_forward_ref)(1, 20, x, y);
        int onehot = 1;
        for (int i = 0; i < 20; i++) onehot &= y[i] == (i == 7 ? 1.0f : 0.0f);
        (avx ? softmax_backward_avx512 : softmax_backward_ref)(1, 20, y, dy, dx);
        int zero = 1;
        for (int i = 0; i < 20; i++) zero &= dx[i] == 0.0f;
        CHECK(onehot && zero, "softmax_%s: saturated row is one-hot with zero gradient", avx ? "avx512" : "ref");
    }
    if (have_avx512) {
        const int64_t rows = 4 * 12 * 256;
        const int n = 256;
        float *bx = softmax_logits(rows, n, 94), *by = ds_alloc(rows * n * 4), *bd = ds_alloc(rows * n * 4);
        double tr, ta;
        BEST_TIME(tr, softmax_forward_ref(rows, n, bx, by));
        BEST_TIME(ta, softmax_forward_avx512(rows, n, bx, by));
        print_timing("softmax_forward 12288x256", tr, ta);
        BEST_TIME(tr, softmax_backward_ref(rows, n, by, bx, bd));
        BEST_TIME(ta, softmax_backward_avx512(rows, n, by, bx, bd));
        print_timing("softmax_backward 12288x256", tr, ta);
        ds_free(bx), ds_free(by), ds_free(bd);
    }
}

/* ---------------------------------------------------------------- adamw */

static void test_adamw(void) {
    const int64_t n = 100003;
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.99f, eps = 1e-18f, wd = 0.1f;
    float *p = randn(n, 61, 1, 0), *m = ds_alloc(n * 4), *v = ds_alloc(n * 4);
    double *pd = to_f64(p, n), *md = ds_alloc(n * 8), *vd = ds_alloc(n * 8);
    float *p2 = copy_of(p, n), *m2 = ds_alloc(n * 4), *v2 = ds_alloc(n * 4);
    int64_t steps[] = {1, 2, 3, 1000};
    for (int k = 0; k < 4; k++) {
        float *g = randn(n, 62 + k, k == 3 ? 1e-3f : 1.0f, 0);
        for (int64_t i = 0; i < n; i += 97)
            g[i] = 0; /* zero gradients: v stays tiny, eps matters */
        adamw_ref(n, p, g, m, v, lr, b1, b2, eps, wd, steps[k]);
        if (have_avx512) adamw_avx512(n, p2, g, m2, v2, lr, b1, b2, eps, wd, steps[k]);
        double bc1 = 1 - pow(b1, steps[k]), bc2 = 1 - pow(b2, steps[k]);
        for (int64_t i = 0; i < n; i++) { /* the kernels.h formula in float64 */
            md[i] = b1 * md[i] + (1 - (double)b1) * g[i];
            vd[i] = b2 * vd[i] + (1 - (double)b2) * g[i] * g[i];
            pd[i] -= lr * (md[i] / bc1) / (sqrt(vd[i] / bc2) + eps) + (double)lr * wd * pd[i];
        }
        double ep = rel_err_f64(p, pd, n), em = rel_err_f64(m, md, n), ev = rel_err_f64(v, vd, n);
        CHECK(ep < 1e-6 && em < 1e-6 && ev < 1e-6,
              "adamw_ref step %lld vs float64: p %.2e m %.2e v %.2e", (long long)steps[k], ep, em,
              ev);
        if (have_avx512) {
            ep = test_rel_err(p2, p, n), em = test_rel_err(m2, m, n), ev = test_rel_err(v2, v, n);
            CHECK(ep < 1e-6 && em < 1e-6 && ev < 1e-6,
                  "adamw_avx512 vs ref step %lld: p %.2e m %.2e v %.2e", (long long)steps[k], ep,
                  em, ev);
        }
        ds_free(g);
    }

    /* Closed form of the first step without decay: m^ = g, v^ = g^2, so p moves by exactly lr
     * sign(g), also for tiny and huge g (this is where eps = 1e-18 and a true sqrt matter); g = 0
     * keeps p. */
    float g1[37], q[37], mz[37] = {0}, vz[37] = {0};
    for (int i = 0; i < 37; i++) {
        g1[i] = (i % 2 ? -1.0f : 1.0f) * powf(10.0f, (float)(i % 12) - 8.0f) *
                (i % 5 == 4 ? 0.0f : 1.0f);
        q[i] = 0.5f + 0.01f * i;
    }
    for (int avx = 0; avx <= have_avx512; avx++) {
        float qq[37], mm[37], vv[37];
        memcpy(qq, q, sizeof q), memcpy(mm, mz, sizeof mz), memcpy(vv, vz, sizeof vz);
        (avx ? adamw_avx512 : adamw_ref)(37, qq, g1, mm, vv, lr, b1, b2, eps, 0.0f, 1);
        double worst = 0;
        for (int i = 0; i < 37; i++) {
            double want = q[i] - (g1[i] > 0 ? lr : g1[i] < 0 ? -lr : 0.0);
            worst = fmax(worst, fabs(qq[i] - want));
        }
        CHECK(worst < 1e-6 * lr + 1e-7,
              "adamw_%s first step moves p by lr*sign(g) for |g| in 1e-8..1e3: err %.2e",
              avx ? "avx512" : "ref", worst);
    }

    if (have_avx512) {
        const int64_t big = 1 << 22;
        float *bp = randn(big, 70, 1, 0), *bg = randn(big, 71, 1, 0), *bm = ds_alloc(big * 4),
              *bv = ds_alloc(big * 4);
        double tr, ta;
        BEST_TIME(tr, adamw_ref(big, bp, bg, bm, bv, lr, b1, b2, eps, wd, 10));
        BEST_TIME(ta, adamw_avx512(big, bp, bg, bm, bv, lr, b1, b2, eps, wd, 10));
        print_timing("adamw 4M", tr, ta);
        ds_free(bp), ds_free(bg), ds_free(bm), ds_free(bv);
    }
    ds_free(p), ds_free(m), ds_free(v), ds_free(pd), ds_free(md), ds_free(vd), ds_free(p2),
        ds_free(m2), ds_free(v2);
}

/* ---------------------------------------------------------------- sum_squares, scale, axpy */

static void test_blas1(void) {
    const int64_t n = 1000003;
    float *x = randn(n, 81, 2, 0.5f), *y = randn(n, 82, 1, 0);
    long double want = 0;
    for (int64_t i = 0; i < n; i++) want += (long double)x[i] * x[i];
    double s_ref = sum_squares_ref(n, x);
    CHECK(fabs(s_ref - (double)want) < 1e-12 * (double)want, "sum_squares_ref vs long double: %.3e",
          fabs(s_ref - (double)want) / (double)want);
    CHECK(sum_squares_ref(0, x) == 0 && sum_squares_ref(3, x) == (double)x[0] * x[0] +
                                                                     (double)x[1] * x[1] +
                                                                     (double)x[2] * x[2],
          "sum_squares_ref small n");
    for (int avx = 0; avx <= have_avx512; avx++) {
        double (*f)(int64_t, const float *) = avx ? sum_squares_avx512 : sum_squares_ref;
        omp_set_num_threads(1);
        double one = f(n, x);
        omp_set_num_threads(3);
        double three = f(n, x);
        omp_set_num_threads(default_threads);
        CHECK(one == three, "sum_squares_%s: bitwise equal with 1 and 3 threads",
              avx ? "avx512" : "ref");
    }

    float *sx = copy_of(x, n), *ay = copy_of(y, n);
    scale_ref(n, sx, 0.37f);
    axpy_ref(n, -1.7f, x, ay);
    double *ws = ds_alloc(n * 8), *wa = ds_alloc(n * 8);
    for (int64_t i = 0; i < n; i++)
        ws[i] = 0.37f * (double)x[i], wa[i] = y[i] + -1.7f * (double)x[i];
    CHECK(elem_rel_err(sx, ws, n, 0) < 1e-7, "scale_ref vs float64");
    CHECK(rel_err_f64(ay, wa, n) < 1e-6, "axpy_ref vs float64");

    if (have_avx512) {
        for (int64_t len = 0; len <= 40; len += 13) { /* short and tail lengths: 0, 13, 26, 39 */
            double a = sum_squares_avx512(len, x), b = sum_squares_ref(len, x);
            CHECK(fabs(a - b) <= 1e-12 * b, "sum_squares_avx512 n=%lld", (long long)len);
        }
        double s_avx = sum_squares_avx512(n, x);
        CHECK(fabs(s_avx - s_ref) < 1e-12 * s_ref, "sum_squares_avx512 vs ref: %.3e",
              fabs(s_avx - s_ref) / s_ref);
        float *sx2 = copy_of(x, n), *ay2 = copy_of(y, n);
        scale_avx512(n, sx2, 0.37f);
        axpy_avx512(n, -1.7f, x, ay2);
        CHECK(test_rel_err(sx2, sx, n) < 1e-6, "scale_avx512 vs ref");
        CHECK(test_rel_err(ay2, ay, n) < 1e-6, "axpy_avx512 vs ref: %.2e",
              test_rel_err(ay2, ay, n));
        float tail[21];
        memcpy(tail, y, sizeof tail);
        axpy_avx512(19, 2.0f, x, tail); /* must not touch past n */
        CHECK(tail[19] == y[19] && tail[20] == y[20] && tail[18] == y[18] + 2.0f * x[18],
              "axpy_avx512 tail");

        double tr, ta;
        BEST_TIME(tr, sum_squares_ref(n, x));
        BEST_TIME(ta, sum_squares_avx512(n, x));
        print_timing("sum_squares 1M", tr, ta);
        BEST_TIME(tr, scale_ref(n, sx, 1.0f));
        BEST_TIME(ta, scale_avx512(n, sx, 1.0f));
        print_timing("scale 1M", tr, ta);
        BEST_TIME(tr, axpy_ref(n, 0.5f, x, ay));
        BEST_TIME(ta, axpy_avx512(n, 0.5f, x, ay));
        print_timing("axpy 1M", tr, ta);
        ds_free(sx2), ds_free(ay2);
    }
    ds_free(x), ds_free(y), ds_free(sx), ds_free(ay), ds_free(ws), ds_free(wa);
}

/* ---------------------------------------------------------------- adaLN modulation */

/* y = LN(x) (1 + scale_b) + shift_b in float64 via norm_f64, sample by sample. */
static void modulate_f64(int B, int T, int C, double eps, const double *x, const double *shift, const double *scale,
                         int64_t stride, double *y, double *mean, double *rstd) {
    double *gamma = ds_alloc((size_t)C * 8);
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < C; c++) gamma[c] = 1 + scale[b * stride + c];
        int64_t r = (int64_t)b * T;
        norm_f64(T, C, C, eps, x + r * C, gamma, shift + b * stride, y + r * C, mean ? mean + r : NULL,
                 rstd ? rstd + r : NULL);
    }
    ds_free(gamma);
}

static double modulate_loss_f64(int B, int T, int C, double eps, const double *x, const double *shift,
                                const double *scale, int64_t stride, const float *w) {
    double *y = ds_alloc((size_t)B * T * C * 8), L = 0;
    modulate_f64(B, T, C, eps, x, shift, scale, stride, y, NULL, NULL);
    for (int64_t i = 0; i < (int64_t)B * T * C; i++) L += w[i] * y[i];
    ds_free(y);
    return L;
}

/* B samples of T rows of C channels; shift and scale are chunks 0 and 1 of rows of 3 C (stride 3 C),
 * as a model's modulation vectors would be. */
static void test_modulate_case(int B, int T, int C) {
    const float eps = 1e-6f;
    int64_t n = (int64_t)B * T * C, stride = 3 * C, nm = B * stride;
    float *x = randn(n, 301, 1.5f, 0.7f), *mod = randn(nm, 302, 0.3f, 0), *w = randn(n, 303, 1, 0);
    float *y = ds_alloc(n * 4), *mean = ds_alloc(B * T * 4), *rstd = ds_alloc(B * T * 4);
    double *xd = to_f64(x, n), *modd = to_f64(mod, nm), *yd = ds_alloc(n * 8), *md = ds_alloc(B * T * 8),
           *rd = ds_alloc(B * T * 8);
    modulate_forward_ref(B, T, C, eps, x, mod, mod + C, stride, y, mean, rstd);
    modulate_f64(B, T, C, eps, xd, modd, modd + C, stride, yd, md, rd);
    double e = rel_err_f64(y, yd, n), em = rel_err_f64(mean, md, B * T), er = rel_err_f64(rstd, rd, B * T);
    CHECK(e < 1e-5 && em < 1e-5 && er < 1e-5, "modulate_forward_ref B=%d T=%d C=%d vs float64: y %.2e mean %.2e rstd %.2e",
          B, T, C, e, em, er);
    /* backward vs central differences of L = sum w y, accumulating into pre-filled gradients */
    float *pre_dx = randn(n, 304, 1, 0), *pre_dmod = randn(nm, 305, 1, 0);
    float *dx = copy_of(pre_dx, n), *dmod = copy_of(pre_dmod, nm);
    modulate_backward_ref(B, T, C, w, x, mean, rstd, mod + C, stride, dx, dmod, dmod + C);
    double *fdx = ds_alloc(n * 8), *fdm = ds_alloc(nm * 8);
    float *gx = ds_alloc(n * 4), *gm = ds_alloc(nm * 4);
    for (int64_t i = 0; i < n; i++) {
        fdx[i] = FD(xd, i, modulate_loss_f64(B, T, C, eps, xd, modd, modd + C, stride, w));
        gx[i] = dx[i] - pre_dx[i];
    }
    for (int64_t i = 0; i < nm; i++) {
        fdm[i] = i % stride < 2 * C ? FD(modd, i, modulate_loss_f64(B, T, C, eps, xd, modd, modd + C, stride, w)) : 0;
        gm[i] = dmod[i] - pre_dmod[i];
    }
    double ex = rel_err_f64(gx, fdx, n), ed = rel_err_f64(gm, fdm, nm);
    CHECK(ex < 1e-4 && ed < 1e-4, "modulate_backward_ref B=%d T=%d C=%d vs finite differences: dx %.2e dshift/dscale %.2e "
          "(the gate chunk untouched)", B, T, C, ex, ed);
    if (have_avx512) {
        float *y2 = ds_alloc(n * 4), *mean2 = ds_alloc(B * T * 4), *rstd2 = ds_alloc(B * T * 4);
        float *dx2 = copy_of(pre_dx, n), *dmod2 = copy_of(pre_dmod, nm);
        modulate_forward_avx512(B, T, C, eps, x, mod, mod + C, stride, y2, mean2, rstd2);
        modulate_backward_avx512(B, T, C, w, x, mean, rstd, mod + C, stride, dx2, dmod2, dmod2 + C);
        double e1 = test_rel_err(y2, y, n), e2 = test_rel_err(rstd2, rstd, B * T), e3 = test_rel_err(dx2, dx, n),
               e4 = test_rel_err(dmod2, dmod, nm);
        CHECK(e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-5 && e4 < 1e-5,
              "modulate_avx512 B=%d T=%d C=%d vs ref: y %.2e rstd %.2e dx %.2e dmod %.2e", B, T, C, e1, e2, e3, e4);
        ds_free(y2), ds_free(mean2), ds_free(rstd2), ds_free(dx2), ds_free(dmod2);
    }
    float *bufs[] = {x, mod, w, y, mean, rstd, pre_dx, pre_dmod, dx, dmod, gx, gm};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
    ds_free(xd), ds_free(modd), ds_free(yd), ds_free(md), ds_free(rd), ds_free(fdx), ds_free(fdm);
}

/* ---------------------------------------------------------------- gated residual */

static void test_gated_residual_case(int B, int T, int C) {
    int64_t n = (int64_t)B * T * C, stride = 2 * C, nm = B * stride;
    float *x = randn(n, 311, 1, 0), *f = randn(n, 312, 1, 0), *mod = randn(nm, 313, 1, 0), *dout = randn(n, 314, 1, 0);
    float *out = ds_alloc(n * 4), *pre_df = randn(n, 315, 1, 0), *pre_dmod = randn(nm, 316, 1, 0);
    float *df = copy_of(pre_df, n), *dmod = copy_of(pre_dmod, nm);
    const float *gate = mod + C;
    double *want = ds_alloc(n * 8), *want_df = ds_alloc(n * 8), *want_dmod = to_f64(pre_dmod, nm);
    for (int64_t r = 0; r < (int64_t)B * T; r++)
        for (int c = 0; c < C; c++) {
            int64_t i = r * C + c, g = r / T * stride + C + c;
            want[i] = x[i] + (double)gate[r / T * stride + c] * f[i];
            want_df[i] = pre_df[i] + (double)dout[i] * mod[g];
            want_dmod[g] += (double)dout[i] * f[i];
        }
    gated_residual_forward_ref(B, T, C, x, f, gate, stride, out);
    gated_residual_backward_ref(B, T, C, dout, f, gate, stride, df, dmod + C);
    double e1 = rel_err_f64(out, want, n), e2 = rel_err_f64(df, want_df, n), e3 = rel_err_f64(dmod, want_dmod, nm);
    CHECK(e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-5,
          "gated_residual_ref B=%d T=%d C=%d vs float64: out %.2e df %.2e dgate %.2e (accumulating)", B, T, C, e1, e2, e3);
    if (have_avx512) {
        float *out2 = ds_alloc(n * 4), *df2 = copy_of(pre_df, n), *dmod2 = copy_of(pre_dmod, nm);
        gated_residual_forward_avx512(B, T, C, x, f, gate, stride, out2);
        gated_residual_backward_avx512(B, T, C, dout, f, gate, stride, df2, dmod2 + C);
        e1 = test_rel_err(out2, out, n), e2 = test_rel_err(df2, df, n), e3 = test_rel_err(dmod2, dmod, nm);
        CHECK(e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-6, "gated_residual_avx512 B=%d T=%d C=%d vs ref: out %.2e df %.2e dgate %.2e",
              B, T, C, e1, e2, e3);
        ds_free(out2), ds_free(df2), ds_free(dmod2);
    }
    float *bufs[] = {x, f, mod, dout, out, pre_df, pre_dmod, df, dmod};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
    ds_free(want), ds_free(want_df), ds_free(want_dmod);
}

static void test_adaln(void) {
    test_modulate_case(2, 5, 24);
    test_modulate_case(3, 70, 37);  /* two row blocks per sample, masked channel tail */
    test_gated_residual_case(2, 5, 24);
    test_gated_residual_case(3, 130, 37);
    /* per-sample sums do not depend on the thread count */
    for (int avx = 0; avx <= have_avx512; avx++) {
        int B = 3, T = 200, C = 40;
        int64_t n = (int64_t)B * T * C;
        float *x = randn(n, 321, 1, 0), *mod = randn(B * 3 * C, 322, 0.3f, 0), *dy = randn(n, 323, 1, 0);
        float *mean = ds_alloc(B * T * 4), *rstd = ds_alloc(B * T * 4), *y = ds_alloc(n * 4);
        float *dx[2], *dm[2];
        for (int k = 0; k < 2; k++) {
            dx[k] = ds_alloc(n * 4), dm[k] = ds_alloc(B * 3 * C * 4);
            omp_set_num_threads(k ? 3 : 1);
            (avx ? modulate_forward_avx512 : modulate_forward_ref)(B, T, C, 1e-6f, x, mod, mod + C, 3 * C, y, mean, rstd);
            (avx ? modulate_backward_avx512 : modulate_backward_ref)(B, T, C, dy, x, mean, rstd, mod + C, 3 * C, dx[k],
                                                                     dm[k], dm[k] + C);
            (avx ? gated_residual_backward_avx512 : gated_residual_backward_ref)(B, T, C, dy, x, mod + 2 * C, 3 * C,
                                                                                 dx[k], dm[k] + 2 * C);
        }
        omp_set_num_threads(default_threads);
        CHECK(!memcmp(dx[0], dx[1], n * 4) && !memcmp(dm[0], dm[1], B * 3 * C * 4),
              "modulate / gated_residual backward_%s: bitwise equal with 1 and 3 threads", avx ? "avx512" : "ref");
        ds_free(x), ds_free(mod), ds_free(dy), ds_free(mean), ds_free(rstd), ds_free(y);
        for (int k = 0; k < 2; k++) ds_free(dx[k]), ds_free(dm[k]);
    }
}

/* ---------------------------------------------------------------- attention */

/* One head in float64: q, k, v, dout [T, D] contiguous. Forward: o [T, D], lse [T]. Backward (when dq
 * is given) from the full probability matrix: dV = P^T dO, dS = P (dO V^T - rowsum(P dO V^T)),
 * dQ = dS K / sqrt(D), dK = dS^T Q / sqrt(D). */
static void attention_head_f64(int T, int D, const double *q, const double *k, const double *v, double *o,
                               double *lse, const double *dout, double *dq, double *dk, double *dv) {
    double scale = 1 / sqrt((double)D), *P = ds_alloc((size_t)T * T * 8), *dP = ds_alloc((size_t)T * T * 8);
    for (int i = 0; i < T; i++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < T; j++) {
            double a = 0;
            for (int d = 0; d < D; d++) a += q[i * D + d] * k[j * D + d];
            P[i * T + j] = a * scale;
            m = fmax(m, P[i * T + j]);
        }
        for (int j = 0; j < T; j++) s += (P[i * T + j] = exp(P[i * T + j] - m));
        for (int j = 0; j < T; j++) P[i * T + j] /= s;
        lse[i] = m + log(s);
        for (int d = 0; d < D; d++) {
            double a = 0;
            for (int j = 0; j < T; j++) a += P[i * T + j] * v[j * D + d];
            o[i * D + d] = a;
        }
    }
    if (dq) {
        memset(dq, 0, (size_t)T * D * 8), memset(dk, 0, (size_t)T * D * 8), memset(dv, 0, (size_t)T * D * 8);
        for (int i = 0; i < T; i++) {
            double row = 0;
            for (int j = 0; j < T; j++) {
                double a = 0;
                for (int d = 0; d < D; d++) a += dout[i * D + d] * v[j * D + d];
                dP[i * T + j] = a;
                row += a * P[i * T + j];
            }
            for (int j = 0; j < T; j++) {
                double ds = P[i * T + j] * (dP[i * T + j] - row) * scale;
                for (int d = 0; d < D; d++) {
                    dv[j * D + d] += P[i * T + j] * dout[i * D + d];
                    dq[i * D + d] += ds * k[j * D + d];
                    dk[j * D + d] += ds * q[i * D + d];
                }
            }
        }
    }
    ds_free(P), ds_free(dP);
}

/* L = sum w o of one head in float64 (for finite differences). */
static double attention_loss_f64(int T, int D, const double *q, const double *k, const double *v, const double *w) {
    double *o = ds_alloc((size_t)T * D * 8), *lse = ds_alloc((size_t)T * 8), L = 0;
    attention_head_f64(T, D, q, k, v, o, lse, NULL, NULL, NULL, NULL);
    for (int64_t i = 0; i < (int64_t)T * D; i++) L += w[i] * o[i];
    ds_free(o), ds_free(lse);
    return L;
}

/* The float64 backward above against central differences of its own forward. */
static void test_attention_f64_gradient(void) {
    int T = 6, D = 5;
    int64_t n = T * D;
    double *x[4], *g[3], *o = ds_alloc(n * 8), *lse = ds_alloc(T * 8), worst = 0;
    for (int a = 0; a < 4; a++) {
        float *r = randn(n, 330 + a, 1, 0);
        x[a] = to_f64(r, n);
        ds_free(r);
    }
    for (int a = 0; a < 3; a++) g[a] = ds_alloc(n * 8);
    attention_head_f64(T, D, x[0], x[1], x[2], o, lse, x[3], g[0], g[1], g[2]);
    for (int a = 0; a < 3; a++)
        for (int64_t i = 0; i < n; i++) {
            double fd = FD(x[a], i, attention_loss_f64(T, D, x[0], x[1], x[2], x[3]));
            worst = fmax(worst, fabs(fd - g[a][i]));
        }
    CHECK(worst < 1e-6, "float64 attention backward of this test vs central differences: %.2e", worst);
    for (int a = 0; a < 4; a++) ds_free(x[a]);
    for (int a = 0; a < 3; a++) ds_free(g[a]);
    ds_free(o), ds_free(lse);
}

typedef void (*attn_fwd_fn)(int, int, int, int, const float *, const float *, const float *, ds_attn_layout, float *,
                            ds_attn_layout, float *);
typedef void (*attn_bwd_fn)(int, int, int, int, const float *, const float *, const float *, ds_attn_layout,
                            const float *, const float *, ds_attn_layout, const float *, float *, float *, float *);

/* B H heads of T tokens of D channels with q, k, v interleaved per token ([B, T, 3, H, D], as a qkv
 * Linear writes them) and o, dout [B, T, H, D]. q is scaled by q_scale (peaked rows), and key j gets
 * ramp j added to every channel, so the row maximum keeps growing from key block to key block for
 * queries with a positive channel sum (the online softmax rescales). */
static void test_attention_case(int B, int H, int T, int D, float q_scale, float ramp) {
    int64_t HD = (int64_t)H * D, nqkv = (int64_t)B * T * 3 * HD, no = (int64_t)B * T * HD, nl = (int64_t)B * H * T;
    ds_attn_layout in = {T * 3 * HD, D, 3 * HD}, out = {T * HD, D, HD};
    float *qkv = randn(nqkv, 341, 1, 0), *dout = randn(no, 342, 1, 0), *pre = randn(nqkv, 343, 1, 0);
    for (int64_t bt = 0; bt < (int64_t)B * T; bt++)
        for (int64_t c = 0; c < HD; c++) {
            qkv[bt * 3 * HD + c] *= q_scale;
            qkv[bt * 3 * HD + HD + c] += ramp * (float)(bt % T);
        }
    /* float64 reference head by head */
    float *want_o = ds_alloc(no * 4), *want_lse = ds_alloc(nl * 4), *want_g = copy_of(pre, nqkv);
    double *h64 = ds_alloc((size_t)T * D * 8 * 11);
    double *hq = h64, *hk = hq + T * D, *hv = hk + T * D, *hdo = hv + T * D, *ho = hdo + T * D, *hl = ho + T * D;
    double *hdq = hl + T * D, *hdk = hdq + T * D, *hdv = hdk + T * D;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                    int64_t i = b * in.batch + h * in.head + t * in.token + d;
                    hq[t * D + d] = qkv[i], hk[t * D + d] = qkv[i + HD], hv[t * D + d] = qkv[i + 2 * HD];
                    hdo[t * D + d] = dout[b * out.batch + h * out.head + t * out.token + d];
                }
            attention_head_f64(T, D, hq, hk, hv, ho, hl, hdo, hdq, hdk, hdv);
            for (int t = 0; t < T; t++) {
                want_lse[((int64_t)b * H + h) * T + t] = (float)hl[t];
                for (int d = 0; d < D; d++) {
                    int64_t i = b * in.batch + h * in.head + t * in.token + d;
                    want_o[b * out.batch + h * out.head + t * out.token + d] = (float)ho[t * D + d];
                    want_g[i] += (float)hdq[t * D + d], want_g[i + HD] += (float)hdk[t * D + d];
                    want_g[i + 2 * HD] += (float)hdv[t * D + d];
                }
            }
        }
    for (int avx = 0; avx <= have_avx512; avx++) {
        attn_fwd_fn fwd = avx ? attention_forward_avx512 : attention_forward_ref;
        attn_bwd_fn bwd = avx ? attention_backward_avx512 : attention_backward_ref;
        float *o = ds_alloc(no * 4), *lse = ds_alloc(nl * 4), *g = copy_of(pre, nqkv);
        fwd(B, H, T, D, qkv, qkv + HD, qkv + 2 * HD, in, o, out, lse);
        bwd(B, H, T, D, qkv, qkv + HD, qkv + 2 * HD, in, o, dout, out, lse, g, g + HD, g + 2 * HD);
        double eo = test_rel_err(o, want_o, no), el = test_rel_err(lse, want_lse, nl);
        /* the accumulated gradients against pre + the float64 gradient, relative to the gradient part */
        double num = 0, den = 1e-30;
        for (int64_t i = 0; i < nqkv; i++) {
            num = fmax(num, fabs(g[i] - want_g[i]));
            den = fmax(den, fabs(want_g[i] - pre[i]));
        }
        CHECK(eo < 5e-6 && el < 5e-6 && num / den < 2e-5,
              "attention_%s B=%d H=%d T=%d D=%d (q x%g, ramp %g) vs float64: o %.2e lse %.2e dq/dk/dv %.2e (accumulating)",
              avx ? "avx512" : "ref", B, H, T, D, q_scale, ramp, eo, el, num / den);
        /* thread-count independence */
        float *o1 = ds_alloc(no * 4), *lse1 = ds_alloc(nl * 4), *g1 = copy_of(pre, nqkv);
        omp_set_num_threads(1);
        fwd(B, H, T, D, qkv, qkv + HD, qkv + 2 * HD, in, o1, out, lse1);
        bwd(B, H, T, D, qkv, qkv + HD, qkv + 2 * HD, in, o1, dout, out, lse1, g1, g1 + HD, g1 + 2 * HD);
        omp_set_num_threads(default_threads);
        CHECK(!memcmp(o, o1, no * 4) && !memcmp(lse, lse1, nl * 4) && !memcmp(g, g1, nqkv * 4),
              "attention_%s B=%d H=%d T=%d D=%d: bitwise equal with 1 and %d threads", avx ? "avx512" : "ref", B, H, T, D,
              default_threads);
        ds_free(o), ds_free(lse), ds_free(g), ds_free(o1), ds_free(lse1), ds_free(g1);
    }
    ds_free(qkv), ds_free(dout), ds_free(pre), ds_free(want_o), ds_free(want_lse), ds_free(want_g), ds_free(h64);
}

static void test_attention(void) {
    test_attention_f64_gradient();
    test_attention_case(1, 1, 1, 16, 1, 0);      /* one token: o = v, gradients of q and k zero */
    test_attention_case(2, 3, 37, 24, 1, 0);     /* masked channel and key tails */
    test_attention_case(1, 2, 150, 64, 1, 0.05f); /* several query and key blocks, growing row maxima */
    test_attention_case(1, 1, 70, 80, 4, 0);     /* D over one 64-wide tile; peaked rows */
    test_attention_case(2, 1, 65, 8, 1, -0.3f);  /* one key past a block; maxima in the first block */
    if (have_avx512) {
        int B = 1, H = 4, T = 256, D = 64;
        int64_t n = (int64_t)B * T * 3 * H * D;
        float *qkv = randn(n, 351, 1, 0), *g = ds_alloc(n * 4), *o = ds_alloc(n / 3 * 4), *lse = ds_alloc(B * H * T * 4);
        ds_attn_layout in = {T * 3 * H * D, D, 3 * H * D}, out = {T * H * D, D, H * D};
        double tr, ta;
        BEST_TIME(tr, attention_forward_ref(B, H, T, D, qkv, qkv + H * D, qkv + 2 * H * D, in, o, out, lse));
        BEST_TIME(ta, attention_forward_avx512(B, H, T, D, qkv, qkv + H * D, qkv + 2 * H * D, in, o, out, lse));
        print_timing("attention_forward H4 T256 D64", tr, ta);
        BEST_TIME(tr, attention_backward_ref(B, H, T, D, qkv, qkv + H * D, qkv + 2 * H * D, in, o, o, out, lse, g,
                                             g + H * D, g + 2 * H * D));
        BEST_TIME(ta, attention_backward_avx512(B, H, T, D, qkv, qkv + H * D, qkv + 2 * H * D, in, o, o, out, lse, g,
                                                g + H * D, g + 2 * H * D));
        print_timing("attention_backward H4 T256 D64", tr, ta);
        ds_free(qkv), ds_free(g), ds_free(o), ds_free(lse);
    }
}

/* ---------------------------------------------------------------- fp32 <-> bf16 */

static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* The bf16 nearest to x, found by comparing the two bf16 neighbours of x in double (ties: the even
 * one), not by the bit trick the kernels use; NaN -> quiet NaN, denormal -> signed zero (kernels.h). */
static uint16_t bf16_nearest(float x) {
    uint32_t u = bits_of(x), sign = u & 0x80000000u;
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40);
    if (fpclassify(x) == FP_SUBNORMAL || x == 0) return (uint16_t)(sign >> 16);
    if (isinf(x)) return (uint16_t)(u >> 16);
    uint32_t down = u & 0xffff0000u, up = down + 0x10000u;  /* |down| <= |x| < |up| */
    double ax = fabs((double)x), dd = ax - fabs((double)float_of(down));
    double du = ((up & 0x7fffffffu) == 0x7f800000u ? ldexp(1.0, 128) : fabs((double)float_of(up))) - ax;
    if (dd < du || (dd == du && ((down >> 16) & 1) == 0)) return (uint16_t)(down >> 16);
    return (uint16_t)(up >> 16);
}

static void test_bf16(void) {
    static const uint32_t edges[] = {
        0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x00400000, 0x00800000, 0x80800000, /* 0, denormals, FLT_MIN */
        0x3f808000, 0x3f818000, 0xbf808000, 0xbf818000, 0x3f808001, 0x3f817fff,             /* ties, near-ties */
        0x3f800000, 0x4b7fffff, 0x7f7f7fff, 0x7f7f8000, 0x7f7fffff, 0xff7fffff,             /* overflow to Inf */
        0x7f800000, 0xff800000, 0x7f800001, 0x7fa00000, 0x7fc00000, 0xffc12345, 0x7f80ffff, /* Inf, NaN payloads */
        0x007fffff, 0x00808000, 0x00818000};
    const int n_edges = sizeof edges / sizeof edges[0];
    const int64_t n = 200003;  /* odd: the masked tails run; > DS_PARALLEL_MIN: the threaded path too */
    float *x = ds_alloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = ds_rng_u64(42, 91, (uint64_t)i);
        x[i] = i < n_edges ? float_of(edges[i])
               : i % 3 == 0 ? float_of((uint32_t)r)                                     /* any bit pattern */
               : i % 3 == 1 ? float_of((uint32_t)(r & 0xffff8000u) | 0x8000u)           /* exact ties */
                            : (float)ds_rng_normal(42, 92, (uint64_t)i) * ldexpf(1, (int)(r % 60) - 30);
    }
    uint16_t *want = ds_alloc(n * 2), *got = ds_alloc(n * 2);
    for (int64_t i = 0; i < n; i++) want[i] = bf16_nearest(x[i]);
    int64_t bad = 0, first = -1;
    f32_to_bf16_ref(n, x, got);
    for (int64_t i = 0; i < n; i++) if (got[i] != want[i] && bad++ == 0) first = i;
    CHECK(bad == 0, "f32_to_bf16_ref: %lld of %lld differ from the nearest bf16 (first: %08x -> %04x, want %04x)",
          (long long)bad, (long long)n, first >= 0 ? bits_of(x[first]) : 0, first >= 0 ? got[first] : 0,
          first >= 0 ? want[first] : 0);
    /* bf16 -> fp32: every one of the 65536 patterns, against its value from sign, exponent, mantissa */
    uint16_t all[65536];
    float back[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    bf16_to_f32_ref(65536, all, back);
    int wrong = 0;
    for (int i = 0; i < 65536; i++) {
        int e = (i >> 7) & 0xff, m = i & 0x7f;
        double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
        if (i & 0x8000) v = -v;
        if (isnan(v) ? !isnan(back[i]) || (bits_of(back[i]) >> 16) != (uint32_t)i : (double)back[i] != v ||
                                                                                     !signbit(back[i]) != !signbit(v))
            wrong++;
    }
    CHECK(wrong == 0, "bf16_to_f32_ref: %d of 65536 patterns wrong", wrong);

    if (ds_cpu_has_avx512_bf16()) {
        uint16_t *twin = ds_alloc(n * 2);
        float *wide = ds_alloc(n * sizeof(float)), *wide_ref = ds_alloc(n * sizeof(float));
        for (int64_t len = 0; len <= 70; len += 7) {  /* every tail length class of the 32-wide loop */
            memset(twin, 0xab, 2 * 80);
            f32_to_bf16_avx512(len, x, twin);
            int same = memcmp(twin, want, 2 * len) == 0 && twin[len] == 0xabab;
            CHECK(same, "f32_to_bf16_avx512 n=%lld: bit-exact, nothing written past n", (long long)len);
        }
        f32_to_bf16_avx512(n, x, twin);
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += twin[i] != want[i];
        CHECK(bad == 0, "f32_to_bf16_avx512 = reference bit for bit on %lld values: %lld differ", (long long)n,
              (long long)bad);
        bf16_to_f32_avx512(n, want, wide);
        bf16_to_f32_ref(n, want, wide_ref);
        CHECK(memcmp(wide, wide_ref, n * sizeof(float)) == 0, "bf16_to_f32_avx512 = reference bit for bit");
        double tr, ta;
        BEST_TIME(tr, f32_to_bf16_ref(n, x, got));
        BEST_TIME(ta, f32_to_bf16_avx512(n, x, twin));
        print_timing("f32_to_bf16 200K", tr, ta);
        ds_free(twin), ds_free(wide), ds_free(wide_ref);
    } else {
        printf("note: no AVX512_BF16 on this CPU; the bf16 conversion twins are not compared\n");
    }
    ds_free(x), ds_free(want), ds_free(got);
}

/* ---------------------------------------------------------------- box_muller */

/* splitmix64 is a bijection; its inverse gives the key whose first draw hashes to a chosen value, so the
 * kernels can be handed any u1 or angle. */
static uint64_t inverse_mod_2_64(uint64_t odd) {
    uint64_t x = odd;  /* Newton: each step doubles the correct low bits (3 -> 96) */
    for (int i = 0; i < 5; i++) x *= 2 - odd * x;
    return x;
}
static uint64_t undo_xorshift(uint64_t y, int s) {
    uint64_t x = y;
    for (int k = 0; k < 64; k += s) x = y ^ (x >> s);
    return x;
}
static uint64_t splitmix64_inverse(uint64_t h) {
    uint64_t x = undo_xorshift(h, 31) * inverse_mod_2_64(0x94D049BB133111EBull);
    x = undo_xorshift(x, 27) * inverse_mod_2_64(0xBF58476D1CE4E5B9ull);
    return undo_xorshift(x, 30) - 0x9E3779B97F4A7C15ull;
}

/* n draws of both kernels, compared bit for bit; the first differing index, or -1 */
static int64_t box_muller_first_difference(int64_t n, uint64_t key, uint64_t first, double *a, double *b) {
    box_muller_ref(n, key, first, a);
    b[n] = 12345.0;
    box_muller_avx512(n, key, first, b);
    if (b[n] != 12345.0) return n;  /* wrote past n */
    for (int64_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof(double)) != 0) return i;
    return -1;
}

/* The AVX-512 twin returns libm's doubles (kernels.h): on hashed draws (every tail length, far
 * counters), and on chosen hard arguments: u1 = 1 (log 0), the smallest u1, u1 at the powers of two and
 * around sqrt(1/2) (the log's reduction switches there), angles at and next to the multiples of pi/4
 * (the cos's quadrant switches; near k pi/2 the result nearly cancels). Also the draws' moments. */
static void test_box_muller(void) {
    enum { N = 1 << 20 };
    double *a = ds_alloc((N + 1) * sizeof(double)), *b = ds_alloc((N + 1) * sizeof(double));
    CHECK(ds_splitmix64(splitmix64_inverse(0x0123456789abcdefull)) == 0x0123456789abcdefull, "splitmix64 inverted");
    /* the reference against its definition, libm on the formula */
    uint64_t key = 0x5eed;
    box_muller_ref(1000, key, 77, a);
    int defined = 1;
    for (int i = 0; i < 1000; i++) {
        uint64_t j = 77 + (uint64_t)i, b1 = ds_splitmix64(key ^ (2 * j)) >> 11, b2 = ds_splitmix64(key ^ (2 * j + 1)) >> 11;
        defined &= a[i] == sqrt(-2.0 * log((double)(b1 + 1) * 0x1.0p-53)) * cos(2.0 * M_PI * ((double)b2 * 0x1.0p-53));
    }
    CHECK(defined, "box_muller_ref = sqrt(-2 log u1) cos(2 pi u2) with libm");
    double sum = 0, sum2 = 0, sum4 = 0;
    box_muller_ref(N, 99, 0, a);
    for (int i = 0; i < N; i++) sum += a[i], sum2 += a[i] * a[i], sum4 += a[i] * a[i] * a[i] * a[i];
    CHECK(fabs(sum / N) < 5.0 / sqrt(N) && fabs(sum2 / N - 1) < 5 * sqrt(2.0 / N) && fabs(sum4 / N - 3) < 5 * sqrt(96.0 / N),
          "2^20 draws: mean %.4f, variance %.4f, fourth moment %.3f (N(0, 1): 0, 1, 3)", sum / N, sum2 / N, sum4 / N);
    if (!have_avx512) {
        ds_free(a), ds_free(b);
        return;
    }
    int64_t bad = -1;
    for (int64_t n = 0; n <= 80 && bad < 0; n++) bad = box_muller_first_difference(n, 7, 1000 - n, a, b);
    CHECK(bad < 0, "box_muller_avx512 = reference for every n <= 80 (first difference at %lld)", (long long)bad);
    static const uint64_t firsts[] = {0, 12345, (uint64_t)1 << 40, UINT64_MAX / 2 - N};
    for (int k = 0; k < 4; k++) {
        bad = box_muller_first_difference(N + 3, ds_splitmix64(k), firsts[k], a, b);
        CHECK(bad < 0, "box_muller_avx512 = reference on 2^20 + 3 draws from counter %llu (first difference at %lld)",
              (unsigned long long)firsts[k], (long long)bad);
    }
    /* chosen arguments: 53-bit u1 and angle counters */
    const uint64_t top = ((uint64_t)1 << 53) - 1, half_sqrt2 = (uint64_t)(0x1.6a09e667f3bcdp-1 * 0x1p53) - 1;
    uint64_t radius_bits[160], angle_bits[160];
    int n_radius = 0, n_angle = 0;
    for (int p = 0; p <= 53; p++) radius_bits[n_radius++] = ((uint64_t)1 << p) - 1;  /* u1 = 2^(p-53), 1 at p = 53 */
    for (int d = -3; d <= 3; d++) {
        radius_bits[n_radius++] = top - 4 + (uint64_t)(d + 3);
        radius_bits[n_radius++] = half_sqrt2 + (uint64_t)d;
        radius_bits[n_radius++] = (half_sqrt2 >> 1) + (uint64_t)d;  /* the same mantissa, an octave down */
    }
    for (int q = 0; q <= 8; q++)  /* angle = q pi/4 (u2 = q/8) and its neighbours */
        for (int d = -2; d <= 2; d++) {
            uint64_t at = (uint64_t)q << 50;
            if ((d < 0 && at == 0) || at + (uint64_t)(int64_t)d > top) continue;
            angle_bits[n_angle++] = at + (uint64_t)(int64_t)d;
        }
    angle_bits[n_angle++] = top;
    int wrong = 0;
    for (int i = 0; i < n_radius + n_angle; i++) {
        /* the chosen value as the first draw of counter 0: h(key ^ 0) for u1, h(key ^ 1) for the angle */
        uint64_t h = (i < n_radius ? radius_bits[i] : angle_bits[i - n_radius]) << 11 | 0x5a5;
        uint64_t chosen_key = splitmix64_inverse(h) ^ (i < n_radius ? 0 : 1);
        if (box_muller_first_difference(1, chosen_key, 0, a, b) >= 0 && wrong++ < 3)
            printf("  differs: %s bits %llx: ref %a, avx512 %a\n", i < n_radius ? "u1" : "angle",
                   (unsigned long long)(h >> 11), a[0], b[0]);
    }
    CHECK(wrong == 0, "box_muller_avx512 = reference on %d chosen u1 and %d chosen angles (%d differ)", n_radius, n_angle, wrong);
    double tr, ta;
    BEST_TIME(tr, box_muller_ref(N, 3, 0, a));
    BEST_TIME(ta, box_muller_avx512(N, 3, 0, b));
    print_timing("box_muller 1M", tr, ta);
    ds_free(a), ds_free(b);
}

int main(void) {
    have_avx512 = ds_cpu_has_avx512();
    if (!have_avx512)
        printf("note: no AVX-512 on this CPU; AVX-512 twin comparisons and timings skipped\n");
    default_threads = omp_get_max_threads();
    test_norm();
    test_shift_mix();
    test_act();
    test_xent();
    test_softmax();
    test_adaln();
    test_attention();
    test_adamw();
    test_blas1();
    test_bf16();
    test_box_muller();
    return test_summary("test_kernels");
}
