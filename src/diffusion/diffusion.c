/* Diffusion math (src/diffusion/README.md): schedules, forward process, epsilon loss, DDPM / DDIM steps,
 * DDIM inversion, respacing, classifier-free guidance and the sampling loops. Schedule arrays are
 * float64 (src/diffusion/README.md §1); the element-wise updates evaluate in double and round once to float.
 *
 * Shapes: T schedule steps (1000 for training), K respaced steps, i a step index (0 = least noise);
 * B samples of n floats each, x [B, n]; schedule arrays [T]. */
#include "dreamstate/diffusion.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <math.h>
#include <string.h>

/* Element-wise loops start OpenMP threads only above this size. */
#define PARALLEL_MIN ((int64_t)1 << 15)

static void allocate(ds_diffusion *s, int T) {
    s->T = T;
    s->betas = ds_alloc(sizeof(double) * T);
    s->alphas_cumprod = ds_alloc(sizeof(double) * T);
    s->timesteps = ds_alloc(sizeof(int32_t) * T);
}

/* squaredcos_cap_v2's f(u) = cos^2(((u + 0.008) / 1.008) pi / 2). */
static double cosine_f(double u) {
    double c = cos((u + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

void ds_diffusion_create(ds_diffusion *s, ds_schedule kind, int T) {
    if (T < 1) ds_die(DS_EXIT_BAD_INPUT, "diffusion: %d steps (need at least 1)", T);
    allocate(s, T);
    double scale = 1000.0 / T, prod = 1.0;
    for (int i = 0; i < T; i++) {
        double beta;
        if (kind == DS_SCHEDULE_LINEAR)
            beta = scale * 1e-4 + (T > 1 ? scale * (0.02 - 1e-4) * i / (T - 1) : 0.0);
        else
            beta = fmin(1.0 - cosine_f((double)(i + 1) / T) / cosine_f((double)i / T), 0.999);
        prod *= 1.0 - beta;
        s->betas[i] = beta;
        s->alphas_cumprod[i] = prod;
        s->timesteps[i] = i;
    }
}

void ds_diffusion_respace(ds_diffusion *out, const ds_diffusion *base, int K) {
    if (K < 2 || K > base->T)
        ds_die(DS_EXIT_BAD_INPUT, "diffusion: cannot respace %d steps to %d (need 2 <= K <= %d)", base->T, K,
               base->T);
    allocate(out, K);
    /* DiT's space_timesteps: a running index advanced by the fractional stride, rounded half to even
     * (nearbyint in the default rounding mode, like Python's round) */
    double stride = (double)(base->T - 1) / (K - 1), cur = 0.0, prev = 1.0;
    for (int i = 0; i < K; i++) {
        int tau = (int)nearbyint(cur);
        cur += stride;
        double ab = base->alphas_cumprod[tau];
        out->timesteps[i] = base->timesteps[tau];
        out->alphas_cumprod[i] = ab;
        out->betas[i] = 1.0 - ab / prev;
        prev = ab;
    }
}

void ds_diffusion_destroy(ds_diffusion *s) {
    ds_free(s->betas);
    ds_free(s->alphas_cumprod);
    ds_free(s->timesteps);
    memset(s, 0, sizeof *s);
}

double ds_alpha_bar(const ds_diffusion *s, int i) { return i < 0 ? 1.0 : s->alphas_cumprod[i]; }

static void check_step(const ds_diffusion *s, int i) {
    if (i < 0 || i >= s->T) ds_die(DS_EXIT_BAD_INPUT, "diffusion: step %d outside [0, %d)", i, s->T);
}

void ds_q_sample(const ds_diffusion *s, int B, int64_t n, const int32_t *steps, const float *x0,
                 const float *noise, float *x_t) {
    for (int b = 0; b < B; b++) {
        check_step(s, steps[b]);
        double ab = s->alphas_cumprod[steps[b]], cx = sqrt(ab), ce = sqrt(1.0 - ab);
        int64_t off = (int64_t)b * n;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (int64_t j = off; j < off + n; j++) x_t[j] = (float)(cx * x0[j] + ce * noise[j]);
    }
}

double ds_eps_mse(int64_t n, const float *eps_hat, const float *eps, float *d_eps_hat) {
    double sum = 0, g = 2.0 / (double)n;
    for (int64_t j = 0; j < n; j++) {
        double d = (double)eps_hat[j] - eps[j];
        sum += d * d;
        if (d_eps_hat) d_eps_hat[j] = (float)(g * d);
    }
    return sum / (double)n;
}

void ds_predict_x0(const ds_diffusion *s, int i, int64_t n, const float *x, const float *eps, float *x0) {
    check_step(s, i);
    double ab = s->alphas_cumprod[i], cx = 1.0 / sqrt(ab), ce = sqrt(1.0 / ab - 1.0);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) x0[j] = (float)(cx * x[j] - ce * eps[j]);
}

ds_posterior ds_ddpm_posterior(const ds_diffusion *s, int i) {
    check_step(s, i);
    double ab = s->alphas_cumprod[i], ab_prev = ds_alpha_bar(s, i - 1), beta = s->betas[i];
    ds_posterior p;
    p.coef_x0 = beta * sqrt(ab_prev) / (1.0 - ab);
    p.coef_xt = (1.0 - ab_prev) * sqrt(1.0 - beta) / (1.0 - ab);
    p.variance = beta * (1.0 - ab_prev) / (1.0 - ab);
    return p;
}

void ds_ddpm_step(const ds_diffusion *s, int i, ds_ddpm_variance var, int64_t n, const float *x,
                  const float *eps, const float *z, float *x_prev) {
    ds_posterior p = ds_ddpm_posterior(s, i);
    double ab = s->alphas_cumprod[i], cx = 1.0 / sqrt(ab), ce = sqrt(1.0 / ab - 1.0);
    /* no noise at the last step */
    double sigma = i == 0 ? 0.0 : sqrt(var == DS_VARIANCE_SMALL ? p.variance : s->betas[i]);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) {
        double x0 = cx * x[j] - ce * eps[j];
        double mean = p.coef_x0 * x0 + p.coef_xt * x[j];
        x_prev[j] = (float)(sigma > 0 ? mean + sigma * z[j] : mean);
    }
}

void ds_ddim_step(const ds_diffusion *s, int i, double eta, int64_t n, const float *x, const float *eps,
                  const float *z, float *x_prev) {
    check_step(s, i);
    double ab = s->alphas_cumprod[i], ap = ds_alpha_bar(s, i - 1);
    double sigma = eta * sqrt((1.0 - ap) / (1.0 - ab)) * sqrt(1.0 - ab / ap);
    double cx = 1.0 / sqrt(ab), ce = sqrt(1.0 / ab - 1.0);
    double c0 = sqrt(ap), cd = sqrt(fmax(0.0, 1.0 - ap - sigma * sigma));
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) {
        double x0 = cx * x[j] - ce * eps[j];
        double v = c0 * x0 + cd * eps[j];
        x_prev[j] = (float)(sigma > 0 ? v + sigma * z[j] : v);
    }
}

void ds_ddim_invert_step(const ds_diffusion *s, int i, int64_t n, const float *x_prev, const float *eps,
                         float *x) {
    check_step(s, i);
    double ap = ds_alpha_bar(s, i - 1), ab = s->alphas_cumprod[i];
    double cx = 1.0 / sqrt(ap), ce = sqrt(1.0 / ap - 1.0), c0 = sqrt(ab), cd = sqrt(1.0 - ab);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) {
        double x0 = cx * x_prev[j] - ce * eps[j];
        x[j] = (float)(c0 * x0 + cd * eps[j]);
    }
}

void ds_cfg_combine(int64_t n, float w, const float *eps_cond, const float *eps_uncond, float *out) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) out[j] = eps_uncond[j] + w * (eps_cond[j] - eps_uncond[j]);
}

void ds_ddim_sample(const ds_diffusion *s, int from, double eta, int64_t n, ds_eps_model model, void *ctx,
                    uint64_t seed, float *x) {
    check_step(s, from);
    float *eps = ds_alloc(sizeof(float) * n), *z = eta > 0 ? ds_alloc(sizeof(float) * n) : NULL;
    for (int i = from; i >= 0; i--) {
        model(ctx, s->timesteps[i], x, eps);
        if (z && i > 0) ds_fill_normal(z, n, 1.0, seed, (uint64_t)i);
        ds_ddim_step(s, i, eta, n, x, eps, z, x);
    }
    ds_free(eps);
    ds_free(z);
}

void ds_ddpm_sample(const ds_diffusion *s, int from, ds_ddpm_variance var, int64_t n, ds_eps_model model,
                    void *ctx, uint64_t seed, float *x) {
    check_step(s, from);
    float *eps = ds_alloc(sizeof(float) * n), *z = ds_alloc(sizeof(float) * n);
    for (int i = from; i >= 0; i--) {
        model(ctx, s->timesteps[i], x, eps);
        if (i > 0) ds_fill_normal(z, n, 1.0, seed, (uint64_t)i);
        ds_ddpm_step(s, i, var, n, x, eps, z, x);
    }
    ds_free(eps);
    ds_free(z);
}

void ds_ddim_invert(const ds_diffusion *s, int to, int64_t n, ds_eps_model model, void *ctx, float *x) {
    check_step(s, to);
    float *eps = ds_alloc(sizeof(float) * n);
    for (int i = 0; i <= to; i++) {
        model(ctx, s->timesteps[i], x, eps);
        ds_ddim_invert_step(s, i, n, x, eps, x);
    }
    ds_free(eps);
}
