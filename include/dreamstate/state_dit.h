/* The state-diffusion model of DREAMSTATE part A (src/dit/README.md §3): a conditional DiT over the
 * WKV states of chosen RWKV-7 layers, with the per-(layer, head) normalisation statistics and the EMA
 * weights that belong to it, and the samplers built on it (DDPM / DDIM with classifier-free guidance,
 * SDEdit from a partly noised state, DDIM inversion, mixtures of conditions for interpolation).
 *
 * Geometry (src/dit/README.md §3.2): the WKV states of the n chosen layers, H heads each, form an "image" of n*H channels
 * of 64 x 64 (channel c = layer slot c / H, head c % H; image row = value index i, column = key j).
 * Normalisation (src/dit/README.md §3.3): x = (S - mean) / std per channel or per element, statistics over the train split.
 * Condition (src/dit/README.md §3.4): a label (DiT label table, null row K), or a C-float vector from the state dataset's
 * condition (first-token or mean-token embedding) through the DiT's c_embedder.
 * A state is rebuilt from x with the modelled WKV parts de-normalised and everything else zero
 * (other layers, token-shift vectors), the injection protocol of src/dit/README.md §3.7.
 * Knows nothing about MPI or files; src/checkpoint/state_dit_file.c stores it. */
#ifndef DREAMSTATE_STATE_DIT_H
#define DREAMSTATE_STATE_DIT_H

#include "dreamstate/diffusion.h"
#include "dreamstate/dit.h"
#include "dreamstate/progress.h"
#include "dreamstate/state_record.h"

#define DS_STATE_DIT_MAX_LAYERS 256

typedef enum { DS_STATE_COND_LABEL, DS_STATE_COND_FIRST_TOKEN, DS_STATE_COND_MEAN_TOKEN } ds_state_cond_kind;

typedef struct ds_state_dit {
    ds_state_shape shape;        /* of the RWKV-7 state records (the dataset's) */
    int n_layers, layers[DS_STATE_DIT_MAX_LAYERS];
    int channels;                /* n_layers * H */
    int64_t x_floats;            /* channels * 64 * 64 */
    ds_state_cond_kind cond_kind;
    int cond_offset;             /* floats into a record's condition where the chosen vector starts */
    int n_labels;
    char **labels;               /* [n_labels], owned copies */
    ds_schedule schedule;
    ds_diffusion process;        /* the 1000-step base process */
    int v_prediction;            /* 0: the DiT predicts eps (the paper); 1: v = sqrt(ab) eps - sqrt(1-ab) x0 */
    int per_element;             /* 0: statistics per channel (layer, head); 1: per element */
    int64_t n_stats;             /* channels or x_floats */
    float *mean, *std;           /* [n_stats] */
    ds_dit dit;                  /* the trained weights live in dit.params */
    float *ema;                  /* [dit.n_params] EMA of dit.params */
} ds_state_dit;

/* arch: hidden, depth, heads, patch_size, mlp_ratio (the rest is derived). Dies (exit 2) with a
 * reason if the condition kind needs a part the dataset's records lack, or a layer is out of range. */
void ds_state_dit_create(ds_state_dit *s, const ds_state_shape *shape, const int *layers, int n_layers,
                         ds_state_cond_kind kind, int n_labels, char *const *labels, const ds_dit_dims *arch,
                         ds_schedule schedule);
void ds_state_dit_destroy(ds_state_dit *s);
/* The DiT that ds_state_dit_create builds for these inputs (arch completed: channels, 64 x 64 input,
 * label table or condition vector), with the same checks, without allocating anything. */
ds_dit_dims ds_state_dit_dims(const ds_state_shape *shape, const int *layers, int n_layers, ds_state_cond_kind kind,
                              int n_labels, const ds_dit_dims *arch);
ds_state_cond_kind ds_state_cond_kind_parse(const char *name);  /* "label", "first_token", "mean_token" */
const char *ds_state_cond_kind_name(ds_state_cond_kind kind);

/* Normalisation (src/dit/README.md §3.3): per channel (the default of create) or, with per_element, per entry of the
 * 64 x 64 matrices (the ablation of src/dit/README.md §3.3: every entry then has mean 0 and variance 1 over the train
 * set, so a DiT that has learnt little decodes to the mean state rather than to noise around the
 * channel means). Call before the statistics are accumulated. */
void ds_state_dit_set_normalisation(ds_state_dit *s, int per_element);
/* Normalisation statistics: add one record's state into sums [2 * n_stats] (sum and sum of squares
 * of each statistic, float64), then (after summing over all records) set mean and std; every std is
 * floored at 1e-3 of its channel's root-mean-square std. */
void ds_state_dit_norm_accumulate(const ds_state_dit *s, const float *state, double *sums);
void ds_state_dit_norm_finish(ds_state_dit *s, const double *sums, int64_t n_records);

/* Record state (ds_state_floats) -> normalised x [x_floats], and back (other parts zero). */
void ds_state_dit_encode(const ds_state_dit *s, const float *state, float *x);
void ds_state_dit_decode(const ds_state_dit *s, const float *x, float *state);
/* The DiT condition of a record: its label, or its condition vector part (vec: cond_dim of the DiT). */
void ds_state_dit_record_cond(const ds_state_dit *s, const ds_state_record *r, int32_t *label, float *vec);

/* What the DiT is trained to output (src/diffusion/README.md §2): with v_prediction, turns eps [B, x_floats] in place into
 * v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0 (Salimans & Ho 2022), which asks the network for x0 at high
 * noise and for eps at low noise, instead of an eps that must be exact to 1e-3 for x0 = (x_t -
 * sqrt(1-ab) eps) / sqrt(ab) to survive at t near 999; a no-op for eps prediction. The samplers and
 * ds_state_dit_eps always see eps (eps = sqrt(1-ab) x_t + sqrt(ab) v). */
void ds_state_dit_target(const ds_state_dit *s, int B, const int32_t *t, const float *x0, float *eps);
/* The eps-MSE equivalent of the training loss at step t: ab_t * MSE(v) for v prediction, else the MSE. */
double ds_state_dit_eps_mse_of_loss(const ds_state_dit *s, int t, double loss);

/* Swaps the trained weights and the EMA weights (call twice to restore). */
void ds_state_dit_swap_ema(ds_state_dit *s);
/* ema = decay * ema + (1 - decay) * params. */
void ds_state_dit_update_ema(ds_state_dit *s, double decay);

/* A condition for a batch of B samples plus its weight in a mixture of epsilon predictions. */
typedef struct ds_state_cond_term {
    const int32_t *labels;   /* [B] (label models; DiT null = n_labels) */
    const float *vec;        /* [B, cond_dim] (vector models) */
    const uint8_t *vec_null; /* [B] or NULL */
    double weight;
} ds_state_cond_term;

/* How to run the reverse process. */
typedef struct ds_state_sampler {
    int ddpm;                /* 0: DDIM (default), 1: DDPM ancestral (fixed-small variance) */
    int steps;               /* respaced steps, 2..1000 (DDIM default 50) */
    double eta;              /* DDIM eta */
    uint64_t seed;           /* stream of the initial noise and of the sampler's noise */
    double temperature;      /* scale of the initial noise drawn by ds_state_dit_sample (1: the standard
                              * process; below 1 pulls DDIM samples towards the conditional mean, the
                              * "reduced-temperature" sampling of Glow / DDPM practice) */
    ds_progress *progress;   /* if set, updated with the network evaluations done (one per step) */
    double clip_x0;          /* > 0: the predicted x0 is clipped to [-clip_x0, clip_x0] (normalised units)
                              * and eps made consistent with it, a guard against a sampler that drifts
                              * off the data (src/diffusion/README.md §7); 0: off */
} ds_state_sampler;

/* The epsilon model used by the samplers: eps = sum_i weight_i * DiT(x, t, cond_i), the n_terms
 * forwards batched into one. Classifier-free guidance w: terms {cond, w} and {null, 1 - w};
 * interpolation between conditions a and b: {a, 1 - lambda}, {b, lambda} (and the null term for
 * guidance). Uses the weights currently in dit.params. */
void ds_state_dit_eps(ds_state_dit *s, int B, int t, const float *x, int n_terms, const ds_state_cond_term *terms,
                      float *eps);

/* Reverse process in place on x [B, x_floats]: from respaced index `from` (from = steps - 1: pure
 * noise, which this function draws into x when fill_noise is set; smaller: SDEdit, x must be the
 * noised state at that step, see ds_state_dit_noise_to) down to x0. Returns the fraction of
 * predicted-x0 values that clip_x0 clipped. */
double ds_state_dit_sample(ds_state_dit *s, int B, const ds_state_sampler *opt, int from, int fill_noise, int n_terms,
                           const ds_state_cond_term *terms, float *x);
/* SDEdit start: the respaced index whose base step is closest to base_step, and x0 noised to it with
 * the sampler's seed. Returns the index. */
int ds_state_dit_noise_to(const ds_state_dit *s, int B, const ds_state_sampler *opt, int base_step, float *x);
/* DDIM (eta 0) inversion in place: x0 -> x at the last respaced step, under the given condition. */
void ds_state_dit_invert(ds_state_dit *s, int B, const ds_state_sampler *opt, int n_terms,
                         const ds_state_cond_term *terms, float *x);

#endif
