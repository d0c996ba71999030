/* Diffusion math tests (src/diffusion/README.md, §10.1-10.4): schedules against the fixtures of src/diffusion/README.md §1 and their
 * closed forms, respacing against the index list of src/diffusion/README.md §3, q_sample statistics, the DDPM posterior against
 * Bayes' rule, DDIM eta = 1 against DDPM, DDIM determinism and inversion, exact recovery with a
 * perfect epsilon oracle, DDIM sampling of Gaussian data with its exact epsilon, and CFG. */
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/diffusion.h"
#include "test.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Relative agreement with a value printed to 7 significant digits (half a unit in the last place). */
static int matches_printed(double value, double printed) {
    return fabs(value - printed) <= 5.0000001e-7 * fabs(printed);
}

static void test_schedule_fixtures(void) {
    /* src/diffusion/README.md §1 table: t, linear beta, linear alpha_bar, sqrt(ab), sqrt(1-ab), cosine ab */
    static const double table[7][6] = {
        {0, 1.000000e-4, 9.999000e-1, 0.999950, 0.010000, 9.999587e-1},
        {49, 1.076076e-3, 9.710157e-1, 0.985401, 0.170248, 9.920073e-1},
        {99, 2.072072e-3, 8.970181e-1, 0.947110, 0.320908, 9.720927e-1},
        {199, 4.064064e-3, 6.590385e-1, 0.811812, 0.583919, 8.987059e-1},
        {499, 1.004004e-2, 7.858724e-2, 0.280334, 0.959902, 4.938436e-1},
        {749, 1.502002e-2, 3.350550e-3, 0.057884, 0.998323, 1.442721e-1},
        {999, 2.000000e-2, 4.035830e-5, 0.006353, 0.999980, 2.428767e-9},
    };
    ds_diffusion lin, cosine;
    ds_diffusion_create(&lin, DS_SCHEDULE_LINEAR, DS_DIFFUSION_STEPS);
    ds_diffusion_create(&cosine, DS_SCHEDULE_COSINE, DS_DIFFUSION_STEPS);
    for (int r = 0; r < 7; r++) {
        int t = (int)table[r][0];
        double ab = lin.alphas_cumprod[t];
        CHECK(matches_printed(lin.betas[t], table[r][1]) && matches_printed(ab, table[r][2]),
              "linear t=%d: beta %.7e alpha_bar %.7e vs table %.7e %.7e", t, lin.betas[t], ab, table[r][1],
              table[r][2]);
        CHECK(fabs(sqrt(ab) - table[r][3]) <= 5e-7 && fabs(sqrt(1 - ab) - table[r][4]) <= 5e-7,
              "linear t=%d: sqrt(ab) %.6f sqrt(1-ab) %.6f", t, sqrt(ab), sqrt(1 - ab));
        CHECK(matches_printed(cosine.alphas_cumprod[t], table[r][5]), "cosine t=%d: alpha_bar %.7e vs %.7e", t,
              cosine.alphas_cumprod[t], table[r][5]);
        CHECK(lin.timesteps[t] == t, "base process calls the network with t = i");
    }

    /* Closed forms. Linear: beta_t = 1e-4 + (0.02 - 1e-4) t / 999 and alpha_bar the product, in long
     * double. Cosine: the product telescopes, alpha_bar_t = f((t+1)/T) / f(0), until the 0.999 cap
     * (only the last step, where f(1) = 0). */
    long double prod = 1;
    double worst_lin_beta = 0, worst_lin_ab = 0, worst_cos_ab = 0;
    for (int t = 0; t < DS_DIFFUSION_STEPS; t++) {
        long double beta = 1e-4L + (0.02L - 1e-4L) * t / 999.0L;
        prod *= 1 - beta;
        worst_lin_beta = fmax(worst_lin_beta, fabs((double)(lin.betas[t] - beta) / (double)beta));
        worst_lin_ab = fmax(worst_lin_ab, fabs((double)((lin.alphas_cumprod[t] - prod) / prod)));
        if (t < DS_DIFFUSION_STEPS - 1) {
            double c0 = cos(0.008 / 1.008 * M_PI / 2), c = cos(((t + 1) / 1000.0 + 0.008) / 1.008 * M_PI / 2);
            double want = (c * c) / (c0 * c0);
            worst_cos_ab = fmax(worst_cos_ab, fabs(cosine.alphas_cumprod[t] - want) / want);
        }
    }
    CHECK(worst_lin_beta < 1e-14 && worst_lin_ab < 1e-12,
          "linear schedule vs closed form: beta %.2e, alpha_bar %.2e (relative)", worst_lin_beta, worst_lin_ab);
    CHECK(worst_cos_ab < 1e-12, "cosine alpha_bar vs telescoped f((t+1)/T)/f(0): %.2e", worst_cos_ab);
    CHECK(cosine.betas[999] == 0.999 && cosine.betas[998] < 0.999, "cosine beta capped at 0.999 (last step only)");

    /* T != 1000 scales both endpoints of the linear schedule by 1000 / T */
    ds_diffusion half;
    ds_diffusion_create(&half, DS_SCHEDULE_LINEAR, 500);
    CHECK(fabs(half.betas[0] - 2e-4) < 1e-18 && fabs(half.betas[499] - 0.04) < 1e-16,
          "linear T=500: beta from %.3g to %.3g", half.betas[0], half.betas[499]);
    ds_diffusion_destroy(&half);
    ds_diffusion_destroy(&lin);
    ds_diffusion_destroy(&cosine);
}

static void test_respacing(void) {
    static const int want50[50] = {0,   20,  41,  61,  82,  102, 122, 143, 163, 183, 204, 224, 245,
                                   265, 285, 306, 326, 347, 367, 387, 408, 428, 449, 469, 489, 510,
                                   530, 550, 571, 591, 612, 632, 652, 673, 693, 714, 734, 754, 775,
                                   795, 816, 836, 856, 877, 897, 917, 938, 958, 979, 999};
    ds_diffusion base, sp;
    ds_diffusion_create(&base, DS_SCHEDULE_LINEAR, DS_DIFFUSION_STEPS);
    ds_diffusion_respace(&sp, &base, 50);
    int same = sp.T == 50;
    for (int i = 0; i < 50; i++) same &= sp.timesteps[i] == want50[i];
    CHECK(same, "K=50 respaced indices equal the list of src/diffusion/README.md §3");
    CHECK(fabs(sp.betas[0] - 1.0e-4) < 5e-9 && fabs(sp.betas[1] - 6.165e-3) < 5e-7 &&
              fabs(sp.betas[2] - 1.496e-2) < 5e-6,
          "K=50 first betas %.4g %.4g %.4g (want 1.0e-4 6.165e-3 1.496e-2)", sp.betas[0], sp.betas[1], sp.betas[2]);
    /* the respaced process has the original alpha_bar at its steps, and its betas multiply back to it */
    double prod = 1, worst = 0;
    for (int i = 0; i < 50; i++) {
        prod *= 1 - sp.betas[i];
        worst = fmax(worst, fabs(prod - base.alphas_cumprod[want50[i]]) / base.alphas_cumprod[want50[i]]);
        worst = fmax(worst, fabs(sp.alphas_cumprod[i] - base.alphas_cumprod[want50[i]]));
    }
    CHECK(worst < 1e-12, "respaced betas reproduce the original alpha_bar: %.2e", worst);
    ds_diffusion_destroy(&sp);

    /* ties round half to even as in Python: K=5 over 1000 steps hits 499.5 -> 500; over 6 steps,
     * K=3 hits 2.5 -> 2 */
    ds_diffusion_respace(&sp, &base, 5);
    CHECK(sp.timesteps[0] == 0 && sp.timesteps[1] == 250 && sp.timesteps[2] == 500 && sp.timesteps[3] == 749 &&
              sp.timesteps[4] == 999,
          "K=5: %d %d %d %d %d", sp.timesteps[0], sp.timesteps[1], sp.timesteps[2], sp.timesteps[3], sp.timesteps[4]);
    ds_diffusion_destroy(&sp);
    ds_diffusion six;
    ds_diffusion_create(&six, DS_SCHEDULE_LINEAR, 6);
    ds_diffusion_respace(&sp, &six, 3);
    CHECK(sp.timesteps[0] == 0 && sp.timesteps[1] == 2 && sp.timesteps[2] == 5, "T=6 K=3: 0 %d %d (round(2.5) = 2)",
          sp.timesteps[1], sp.timesteps[2]);
    ds_diffusion_destroy(&sp);
    ds_diffusion_destroy(&six);
    /* K = T keeps every step and the betas */
    ds_diffusion_respace(&sp, &base, 1000);
    worst = 0;
    same = 1;
    for (int i = 0; i < 1000; i++) {
        same &= sp.timesteps[i] == i;
        worst = fmax(worst, fabs(sp.betas[i] - base.betas[i]) / base.betas[i]);
    }
    CHECK(same && worst < 1e-12, "K = T is the identity (betas %.2e)", worst);
    ds_diffusion_destroy(&sp);
    ds_diffusion_destroy(&base);
}

/* Bad input exits with code 2: respacing to one step, a step outside the process. */
static void respace_to_one(void) {
    ds_diffusion base, sp;
    ds_diffusion_create(&base, DS_SCHEDULE_LINEAR, 1000);
    ds_diffusion_respace(&sp, &base, 1);
}
static void step_out_of_range(void) {
    ds_diffusion base;
    ds_diffusion_create(&base, DS_SCHEDULE_LINEAR, 1000);
    int32_t t = 1000;
    float x = 0, y;
    ds_q_sample(&base, 1, 1, &t, &x, &x, &y);
}
static void test_bad_input(void) {
    CHECK(test_exit_code(respace_to_one) == DS_EXIT_BAD_INPUT, "respace to K=1 exits with 2");
    CHECK(test_exit_code(step_out_of_range) == DS_EXIT_BAD_INPUT, "step 1000 of a 1000-step process exits with 2");
}

static float *normal(int64_t n, uint64_t stream) {
    float *x = ds_alloc(sizeof(float) * n);
    for (int64_t j = 0; j < n; j++) x[j] = (float)ds_rng_normal(17, stream, (uint64_t)j);
    return x;
}

/* Mean and variance of x - sqrt(ab) x0 per sample: 0 and 1 - ab within 5 standard errors. */
static void test_q_sample(void) {
    ds_diffusion s;
    ds_diffusion_create(&s, DS_SCHEDULE_LINEAR, DS_DIFFUSION_STEPS);
    const int B = 3;
    const int64_t n = 200000;
    int32_t steps[3] = {0, 499, 999};
    float *x0 = normal(B * n, 1), *noise = normal(B * n, 2), *xt = ds_alloc(sizeof(float) * B * n);
    for (int64_t j = 0; j < B * n; j++) x0[j] = 0.5f + 2.0f * x0[j];
    ds_q_sample(&s, B, n, steps, x0, noise, xt);
    for (int b = 0; b < B; b++) {
        double ab = s.alphas_cumprod[steps[b]], sum = 0, sq = 0, worst = 0;
        for (int64_t j = b * n; j < (b + 1) * n; j++) {
            double r = xt[j] - sqrt(ab) * x0[j];
            sum += r, sq += r * r;
            worst = fmax(worst, fabs(r - sqrt(1 - ab) * noise[j]));
        }
        double mean = sum / n, var = sq / n - mean * mean, want = 1 - ab;
        CHECK(fabs(mean) < 5 * sqrt(want / n) && fabs(var - want) < 5 * want * sqrt(2.0 / n) && worst < 1e-6,
              "q_sample step %d: residual mean %.3g, variance %.6g vs 1 - alpha_bar %.6g", steps[b], mean, var, want);
    }
    ds_free(x0), ds_free(noise), ds_free(xt);
    ds_diffusion_destroy(&s);
}

static void test_eps_mse(void) {
    const int64_t n = 1001;
    float *a = normal(n, 3), *b = normal(n, 4), *g = ds_alloc(sizeof(float) * n);
    double want = 0, worst = 0;
    for (int64_t j = 0; j < n; j++) want += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
    want /= n;
    double loss = ds_eps_mse(n, a, b, g);
    for (int64_t j = 0; j < n; j++) worst = fmax(worst, fabs(g[j] - 2.0 * ((double)a[j] - b[j]) / n));
    CHECK(fabs(loss - want) < 1e-12 * want && worst < 1e-9, "eps_mse: loss %.9g vs %.9g, gradient err %.2e", loss,
          want, worst);
    CHECK(ds_eps_mse(n, a, a, NULL) == 0, "eps_mse of identical inputs is 0");
    ds_free(a), ds_free(b), ds_free(g);
}

/* The posterior from Bayes' rule: x_{i-1} ~ N(sqrt(ab') x0, 1 - ab'), x_i | x_{i-1} ~
 * N(sqrt(alpha) x_{i-1}, beta): precision 1/(1-ab') + alpha/beta, mean var (sqrt(ab') x0/(1-ab') +
 * sqrt(alpha) x_i / beta). Then the DDPM step with z = 0 must give that mean with x0 = x0_hat, also in
 * the "(x - beta/sqrt(1-ab) eps)/sqrt(alpha)" form, and with z its standard deviation. */
static void test_posterior(void) {
    ds_diffusion base, sp;
    ds_diffusion_create(&base, DS_SCHEDULE_LINEAR, DS_DIFFUSION_STEPS);
    ds_diffusion_respace(&sp, &base, 50);
    const ds_diffusion *procs[2] = {&base, &sp};
    const int64_t n = 257;
    float *x = normal(n, 5), *eps = normal(n, 6), *z = normal(n, 7), *zero = ds_alloc(sizeof(float) * n);
    float *out = ds_alloc(sizeof(float) * n), *out_z = ds_alloc(sizeof(float) * n), *x0 = ds_alloc(sizeof(float) * n);
    for (int k = 0; k < 2; k++) {
        const ds_diffusion *s = procs[k];
        int steps[4] = {1, 7, s->T / 2, s->T - 1};
        double worst_coef = 0, worst_mean = 0, worst_alt = 0, worst_sd = 0, worst_large = 0;
        for (int q = 0; q < 4; q++) {
            int i = steps[q];
            double ab = s->alphas_cumprod[i], abp = s->alphas_cumprod[i - 1], alpha = ab / abp, beta = 1 - alpha;
            double prec = 1 / (1 - abp) + alpha / beta, var = 1 / prec;
            ds_posterior p = ds_ddpm_posterior(s, i);
            worst_coef = fmax(worst_coef, fabs(p.variance - var) / var);
            worst_coef = fmax(worst_coef, fabs(p.coef_x0 - var * sqrt(abp) / (1 - abp)) / p.coef_x0);
            worst_coef = fmax(worst_coef, fabs(p.coef_xt - var * sqrt(alpha) / beta) / p.coef_xt);
            ds_predict_x0(s, i, n, x, eps, x0);
            ds_ddpm_step(s, i, DS_VARIANCE_SMALL, n, x, eps, zero, out);
            ds_ddpm_step(s, i, DS_VARIANCE_SMALL, n, x, eps, z, out_z);
            for (int64_t j = 0; j < n; j++) {
                double x0d = (x[j] - sqrt(1 - ab) * (double)eps[j]) / sqrt(ab);
                double mean = var * (sqrt(abp) * x0d / (1 - abp) + sqrt(alpha) * x[j] / beta);
                double alt = (x[j] - beta / sqrt(1 - ab) * eps[j]) / sqrt(alpha);
                worst_mean = fmax(worst_mean, fabs(out[j] - mean) / fmax(1, fabs(mean)));
                worst_mean = fmax(worst_mean, fabs(x0[j] - x0d) / fmax(1, fabs(x0d)));
                worst_alt = fmax(worst_alt, fabs(mean - alt));
                worst_sd = fmax(worst_sd, fabs(out_z[j] - out[j] - sqrt(var) * z[j]));
            }
            ds_ddpm_step(s, i, DS_VARIANCE_LARGE, n, x, eps, z, out_z);
            for (int64_t j = 0; j < n; j++) worst_large = fmax(worst_large, fabs(out_z[j] - out[j] - sqrt(beta) * z[j]));
        }
        CHECK(worst_coef < 1e-12, "%s: posterior coefficients vs Bayes' rule %.2e", k ? "K=50" : "T=1000", worst_coef);
        CHECK(worst_mean < 1e-6 && worst_alt < 1e-9, "%s: DDPM step mean and x0_hat vs Bayes %.2e, two mean forms %.2e",
              k ? "K=50" : "T=1000", worst_mean, worst_alt);
        CHECK(worst_sd < 1e-5 && worst_large < 1e-5, "%s: DDPM noise scale sqrt(beta~) %.2e, sqrt(beta) %.2e",
              k ? "K=50" : "T=1000", worst_sd, worst_large);
    }
    /* the last step adds no noise and returns x0_hat (its posterior puts all weight on x0) */
    ds_ddpm_step(&base, 0, DS_VARIANCE_LARGE, n, x, eps, z, out);
    ds_predict_x0(&base, 0, n, x, eps, x0);
    CHECK(test_rel_err(out, x0, n) < 1e-6, "DDPM step 0 returns x0_hat without noise");
    float *bufs[] = {x, eps, z, zero, out, out_z, x0};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ds_free(bufs[i]);
    ds_diffusion_destroy(&sp);
    ds_diffusion_destroy(&base);
}

/* DDIM eta = 1 is the DDPM fixed-small step; eta = 0 ignores z and is repeatable bit for bit. */
static void test_ddim_step(void) {
    ds_diffusion base, sp;
    ds_diffusion_create(&base, DS_SCHEDULE_COSINE, DS_DIFFUSION_STEPS);
    ds_diffusion_respace(&sp, &base, 50);
    const int64_t n = 333;
    float *x = normal(n, 8), *eps = normal(n, 9), *z1 = normal(n, 10), *z2 = normal(n, 11);
    float *a = ds_alloc(sizeof(float) * n), *b = ds_alloc(sizeof(float) * n);
    double worst = 0;
    int det = 1;
    for (int i = 1; i < 50; i += 6) {
        ds_ddim_step(&sp, i, 1.0, n, x, eps, z1, a);
        ds_ddpm_step(&sp, i, DS_VARIANCE_SMALL, n, x, eps, z1, b);
        worst = fmax(worst, test_rel_err(a, b, n));
        ds_ddim_step(&sp, i, 0.0, n, x, eps, z1, a);
        ds_ddim_step(&sp, i, 0.0, n, x, eps, z2, b);
        det &= !memcmp(a, b, sizeof(float) * n);
    }
    CHECK(worst < 1e-5, "DDIM eta=1 equals DDPM with fixed-small variance: %.2e", worst);
    CHECK(det, "DDIM eta=0 ignores z (deterministic)");
    ds_free(x), ds_free(eps), ds_free(z1), ds_free(z2), ds_free(a), ds_free(b);
    ds_diffusion_destroy(&sp);
    ds_diffusion_destroy(&base);
}

/* ---- epsilon oracles ---- */

typedef struct {
    const ds_diffusion *base;  /* alpha_bar by network index t */
    const float *x0;           /* point mass: the one data point */
    double mu, sd;             /* Gaussian data N(mu, sd^2) per element */
    int calls;
} oracle;

/* Zero network (the zero-initialised DiT). */
static void eps_zero(void *ctx, int t, const float *x, float *eps) {
    (void)t, (void)x;
    oracle *o = ctx;
    o->calls++;
    memset(eps, 0, sizeof(float) * 64);
}
/* Depends on t only (not on x): DDIM inversion must be exact. */
static void eps_time_only(void *ctx, int t, const float *x, float *eps) {
    (void)x;
    oracle *o = ctx;
    o->calls++;
    for (int j = 0; j < 64; j++) eps[j] = (float)sin(0.01 * t + j);
}
/* The exact epsilon of a point mass at x0: (x - sqrt(ab) x0) / sqrt(1 - ab). */
static void eps_point(void *ctx, int t, const float *x, float *eps) {
    oracle *o = ctx;
    double ab = o->base->alphas_cumprod[t];
    for (int j = 0; j < 64; j++) eps[j] = (float)((x[j] - sqrt(ab) * o->x0[j]) / sqrt(1 - ab));
}
/* The exact epsilon (posterior mean E[eps | x_t]) of Gaussian data N(mu, sd^2):
 * sqrt(1 - ab) (x - sqrt(ab) mu) / (ab sd^2 + 1 - ab). Works on N_GAUSS elements. */
#define N_GAUSS 20000
static void eps_gauss(void *ctx, int t, const float *x, float *eps) {
    oracle *o = ctx;
    double ab = o->base->alphas_cumprod[t], c = sqrt(1 - ab) / (ab * o->sd * o->sd + 1 - ab);
    for (int j = 0; j < N_GAUSS; j++) eps[j] = (float)(c * (x[j] - sqrt(ab) * o->mu));
}

static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t j = 0; j < n; j++) num += ((double)a[j] - b[j]) * ((double)a[j] - b[j]), den += (double)b[j] * b[j];
    return sqrt(num / den);
}

static void test_inversion_and_recovery(void) {
    ds_diffusion base, sp;
    ds_diffusion_create(&base, DS_SCHEDULE_LINEAR, DS_DIFFUSION_STEPS);
    ds_diffusion_respace(&sp, &base, 50);
    float *x0 = normal(64, 12), *x = ds_alloc(sizeof(float) * 64);
    oracle o = {.base = &base, .x0 = x0};
    const ds_diffusion *procs[2] = {&sp, &base};
    for (int k = 0; k < 2; k++) {
        const ds_diffusion *s = procs[k];
        /* src/diffusion/README.md §10.4: with eps = 0 inversion then generation is x0 up to float rounding; the encode is
         * sqrt(ab_{T-1}) x0 */
        memcpy(x, x0, sizeof(float) * 64);
        o.calls = 0;
        ds_ddim_invert(s, s->T - 1, 64, eps_zero, &o, x);
        double ab = s->alphas_cumprod[s->T - 1], enc = 0;
        for (int j = 0; j < 64; j++) enc = fmax(enc, fabs(x[j] - sqrt(ab) * x0[j]) / (sqrt(ab) * fabs(x0[j]) + 1e-30));
        ds_ddim_sample(s, s->T - 1, 0.0, 64, eps_zero, &o, 1, x);
        double e0 = test_rel_err(x, x0, 64);
        CHECK(e0 < 2e-5 && enc < 2e-5 && o.calls == 2 * s->T,
              "K=%d: DDIM inversion + generation with eps = 0: round trip %.2e, encode %.2e, %d network calls", s->T, e0,
              enc, o.calls);
        /* eps depending on t only: inversion is the exact inverse */
        memcpy(x, x0, sizeof(float) * 64);
        ds_ddim_invert(s, s->T - 1, 64, eps_time_only, &o, x);
        double moved = test_rel_err(x, x0, 64);
        ds_ddim_sample(s, s->T - 1, 0.0, 64, eps_time_only, &o, 1, x);
        double e1 = test_rel_err(x, x0, 64);
        CHECK(e1 < 3e-5 && moved > 0.5, "K=%d: DDIM round trip with a t-only eps: %.2e (encode moved x by %.2f)", s->T,
              e1, moved);
        /* perfect epsilon of a point mass: DDIM (eta 0 and 0.7) and DDPM recover x0 from any start,
         * and inversion then sampling returns to x0 */
        for (int trial = 0; trial < 4; trial++) {
            float *start = normal(64, 20 + trial);
            memcpy(x, start, sizeof(float) * 64);
            if (trial < 2) ds_ddim_sample(s, s->T - 1, trial == 0 ? 0.0 : 0.7, 64, eps_point, &o, 3, x);
            if (trial == 2) ds_ddpm_sample(s, s->T - 1, DS_VARIANCE_SMALL, 64, eps_point, &o, 3, x);
            if (trial == 3) {
                memcpy(x, x0, sizeof(float) * 64);
                ds_ddim_invert(s, s->T - 1, 64, eps_point, &o, x);
                ds_ddim_sample(s, s->T - 1, 0.0, 64, eps_point, &o, 3, x);
            }
            static const char *what[4] = {"DDIM eta=0", "DDIM eta=0.7", "DDPM", "DDIM inversion + sampling"};
            double e = test_rel_err(x, x0, 64);
            CHECK(e < 1e-5, "K=%d: %s with the exact epsilon of a point mass recovers x0: %.2e", s->T, what[trial], e);
            ds_free(start);
        }
    }
    ds_free(x0), ds_free(x);
    ds_diffusion_destroy(&sp);
    ds_diffusion_destroy(&base);
}

/* Gaussian data N(mu, sd^2) with its exact epsilon: DDIM-1000 (eta 0) maps N(0, I) noise to samples
 * with mean mu and std sd (the probability-flow ODE, discretised; tolerances are 4 standard errors
 * of 20000 samples); the inversion round trip error shrinks as the step count grows (src/diffusion/README.md §10.4; the round trip of A2, src/eval/README.md §2): evaluating eps at x_{i-1} instead of x_i is a first-order error, ~1/K. */
static void test_gaussian_data(void) {
    ds_diffusion base;
    ds_diffusion_create(&base, DS_SCHEDULE_LINEAR, DS_DIFFUSION_STEPS);
    oracle o = {.base = &base, .mu = 0.8, .sd = 0.5};
    float *x = normal(N_GAUSS, 30);
    ds_ddim_sample(&base, 999, 0.0, N_GAUSS, eps_gauss, &o, 1, x);
    double sum = 0, sq = 0;
    for (int j = 0; j < N_GAUSS; j++) sum += x[j], sq += (double)x[j] * x[j];
    double mean = sum / N_GAUSS, sd = sqrt(sq / N_GAUSS - mean * mean);
    CHECK(fabs(mean - o.mu) < 0.015 && fabs(sd / o.sd - 1) < 0.02, "DDIM-1000 on Gaussian data: mean %.4f (0.8), std %.4f (0.5)",
          mean, sd);
    /* DDPM-1000 ancestral as well (fixed-small variance is not the exact reverse variance here, but
     * close at 1000 steps) */
    float *y = normal(N_GAUSS, 31);
    ds_ddpm_sample(&base, 999, DS_VARIANCE_SMALL, N_GAUSS, eps_gauss, &o, 5, y);
    sum = sq = 0;
    for (int j = 0; j < N_GAUSS; j++) sum += y[j], sq += (double)y[j] * y[j];
    double mean2 = sum / N_GAUSS, sd2 = sqrt(sq / N_GAUSS - mean2 * mean2);
    CHECK(fabs(mean2 - o.mu) < 0.015 && fabs(sd2 / o.sd - 1) < 0.03, "DDPM-1000 on Gaussian data: mean %.4f, std %.4f",
          mean2, sd2);

    float *x0 = normal(N_GAUSS, 32);
    for (int j = 0; j < N_GAUSS; j++) x0[j] = (float)(o.mu + o.sd * x0[j]);
    double err[3];
    int Ks[3] = {50, 250, 1000};
    for (int k = 0; k < 3; k++) {
        ds_diffusion sp;
        ds_diffusion_respace(&sp, &base, Ks[k]);
        o.base = &base;  /* the oracle is indexed by the original t */
        memcpy(x, x0, sizeof(float) * N_GAUSS);
        ds_ddim_invert(&sp, sp.T - 1, N_GAUSS, eps_gauss, &o, x);
        ds_ddim_sample(&sp, sp.T - 1, 0.0, N_GAUSS, eps_gauss, &o, 1, x);
        err[k] = rel_l2(x, x0, N_GAUSS);
        ds_diffusion_destroy(&sp);
    }
    printf("DDIM inversion round trip, Gaussian data, exact eps: rel L2 error K=50 %.3e, K=250 %.3e, K=1000 %.3e\n",
           err[0], err[1], err[2]);
    CHECK(err[1] < 0.3 * err[0] && err[2] < 0.3 * err[1] && err[2] < 5e-3,
          "round trip error shrinks with the step count: %.2e > %.2e > %.2e", err[0], err[1], err[2]);
    ds_free(x), ds_free(y), ds_free(x0);
    ds_diffusion_destroy(&base);
}

static void test_cfg(void) {
    const int64_t n = 99;
    float *c = normal(n, 40), *u = normal(n, 41), *out = ds_alloc(sizeof(float) * n);
    ds_cfg_combine(n, 1.0f, c, u, out);
    CHECK(test_rel_err(out, c, n) < 1e-7, "CFG w=1 gives eps_cond");
    ds_cfg_combine(n, 0.0f, c, u, out);
    CHECK(!memcmp(out, u, sizeof(float) * n), "CFG w=0 gives eps_uncond");
    ds_cfg_combine(n, 4.0f, c, u, out);
    double worst = 0;
    for (int64_t j = 0; j < n; j++) worst = fmax(worst, fabs(out[j] - (4.0 * c[j] - 3.0 * u[j])));
    CHECK(worst < 1e-5, "CFG w=4: 4 eps_c - 3 eps_u, err %.2e", worst);
    ds_free(c), ds_free(u), ds_free(out);
}

int main(void) {
    test_schedule_fixtures();
    test_respacing();
    test_bad_input();
    test_q_sample();
    test_eps_mse();
    test_posterior();
    test_ddim_step();
    test_inversion_and_recovery();
    test_gaussian_data();
    test_cfg();
    return test_summary("test_diffusion");
}
