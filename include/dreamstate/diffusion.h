/* Diffusion math of DREAMSTATE part A (src/diffusion/README.md): noise schedules (float64), the forward
 * process q(x_t | x_0), the epsilon-prediction loss, DDPM ancestral and DDIM steps with DDIM
 * inversion on a possibly respaced process, classifier-free guidance, and sampling loops that call
 * the epsilon model through a callback. Knows nothing about the network.
 *
 * A process has T steps i = 0 .. T-1 with alpha_bar_i decreasing; alpha_bar_{-1} = 1 (clean data).
 * The base process has T = 1000 and calls the network with t = i; a respaced one (src/diffusion/README.md §3) keeps K of
 * the base steps and calls the network with the ORIGINAL index timesteps[i]. All steps work
 * element-wise on n floats (a whole batch at one step); the output may alias the input. */
#ifndef DREAMSTATE_DIFFUSION_H
#define DREAMSTATE_DIFFUSION_H

#include <stdint.h>

#define DS_DIFFUSION_STEPS 1000

typedef enum { DS_SCHEDULE_LINEAR, DS_SCHEDULE_COSINE } ds_schedule;
/* DDPM reverse variance: fixed-small beta~_i (our default for states) or fixed-large beta_i. */
typedef enum { DS_VARIANCE_SMALL, DS_VARIANCE_LARGE } ds_ddpm_variance;

typedef struct ds_diffusion {
    int T;                   /* steps of this process */
    double *betas;           /* [T] beta_i = 1 - alpha_bar_i / alpha_bar_{i-1} */
    double *alphas_cumprod;  /* [T] alpha_bar_i */
    int32_t *timesteps;      /* [T] the t the network sees at step i */
} ds_diffusion;

/* Schedules of src/diffusion/README.md §1 over T steps: linear 1e-4 -> 0.02 (endpoints scaled by 1000 / T), or cosine
 * (squaredcos_cap_v2, beta capped at 0.999). Dies with exit 2 for T < 1. */
void ds_diffusion_create(ds_diffusion *s, ds_schedule kind, int T);
/* DiT's "K" respacing (src/diffusion/README.md §3): K evenly spaced steps of base, tau_i = round(i (T-1)/(K-1)) with ties
 * to even; 2 <= K <= base->T (K = T: the same steps). */
void ds_diffusion_respace(ds_diffusion *out, const ds_diffusion *base, int K);
void ds_diffusion_destroy(ds_diffusion *s);
/* alpha_bar_i, and 1 for i < 0. */
double ds_alpha_bar(const ds_diffusion *s, int i);

/* x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise for B samples of n floats each, sample b at
 * step steps[b]. */
void ds_q_sample(const ds_diffusion *s, int B, int64_t n, const int32_t *steps, const float *x0,
                 const float *noise, float *x_t);
/* Epsilon-prediction loss: mean over n of (eps_hat - eps)^2 (accumulated in double); if d_eps_hat is
 * non-NULL it receives (=) the gradient 2 (eps_hat - eps) / n. */
double ds_eps_mse(int64_t n, const float *eps_hat, const float *eps, float *d_eps_hat);
/* x0_hat = (x - sqrt(1 - alpha_bar_i) eps) / sqrt(alpha_bar_i). */
void ds_predict_x0(const ds_diffusion *s, int i, int64_t n, const float *x, const float *eps, float *x0);

/* q(x_{i-1} | x_i, x0) = N(coef_x0 x0 + coef_xt x_i, variance) (src/diffusion/README.md §4); variance = beta~_i. */
typedef struct ds_posterior {
    double coef_x0, coef_xt, variance;
} ds_posterior;
ds_posterior ds_ddpm_posterior(const ds_diffusion *s, int i);

/* DDPM ancestral step i -> i-1 with eps (after guidance): x_prev = mu~(x0_hat, x) + sigma z, z [n]
 * standard normal, not used at i = 0 (may then be NULL). */
void ds_ddpm_step(const ds_diffusion *s, int i, ds_ddpm_variance var, int64_t n, const float *x,
                  const float *eps, const float *z, float *x_prev);
/* DDIM step i -> i-1 (src/diffusion/README.md §5) with eta in [0, 1]; z is used only when sigma > 0 (may be NULL when
 * eta = 0). eta = 1 is DDPM with fixed-small variance. */
void ds_ddim_step(const ds_diffusion *s, int i, double eta, int64_t n, const float *x, const float *eps,
                  const float *z, float *x_prev);
/* The exact inverse of the eta = 0 step i (x_{i-1} -> x_i) for a given eps. DDIM inversion calls the
 * network at (x_{i-1}, timesteps[i]), the only approximation, so a network whose output does not
 * depend on x (e.g. the zero-initialised DiT) inverts exactly. */
void ds_ddim_invert_step(const ds_diffusion *s, int i, int64_t n, const float *x_prev, const float *eps,
                         float *x);

/* Classifier-free guidance (src/diffusion/README.md §6): out = eps_u + w (eps_c - eps_u); w = 1 gives eps_c. */
void ds_cfg_combine(int64_t n, float w, const float *eps_cond, const float *eps_uncond, float *out);

/* The epsilon model as the samplers see it: eps [n] for the whole batch x [n] at network step t
 * (guidance, if any, is the callback's business). */
typedef void (*ds_eps_model)(void *ctx, int t, const float *x, float *eps);

/* Sampling loops over steps from, from-1, ..., 0 of process s, in place on x (in: x at step `from`,
 * e.g. N(0, I) noise with from = T-1; SDEdit: ds_q_sample at a smaller step). Noise z of step i is
 * ds_rng_normal(seed, i, j). */
void ds_ddim_sample(const ds_diffusion *s, int from, double eta, int64_t n, ds_eps_model model, void *ctx,
                    uint64_t seed, float *x);
void ds_ddpm_sample(const ds_diffusion *s, int from, ds_ddpm_variance var, int64_t n, ds_eps_model model,
                    void *ctx, uint64_t seed, float *x);
/* DDIM inversion (eta = 0) in place: x0 in, x at step `to` out (to = T-1 for the full encode). */
void ds_ddim_invert(const ds_diffusion *s, int to, int64_t n, ds_eps_model model, void *ctx, float *x);

#endif
