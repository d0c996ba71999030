/* The DREAMSTATE hybrid of Part B (src/hybrid/README.md): an RWKV-7 whose time-mix W_r, W_k, W_v of chosen
 * layers come from one shared parameter DiT conditioned on the context, fused per sequence as
 * theta = alpha theta_static + (1 - alpha) theta_gen, and trained on lambda_lm L_LM + lambda_pd L_pd.
 * Forward and backward of one micro-batch; the training loop (optimiser, allreduce, checkpoints) works
 * on the flat trainable array this module exposes. Knows nothing about MPI or files.
 *
 * Per sequence b and targeted layer l (src/hybrid/README.md §1.3, §1.4), with x0 = normalise(theta_static) (A1) or 0 (A2):
 *   (a) diffusion-loss path: t ~ U{0..999}, eps ~ N(0, I), the DiT predicts eps from x_t; the condition
 *       vector is dropped to the DiT's null vector with probability p_uncond; L_pd = mean eps-MSE;
 *   (b) generation path: x_{t*} from eps*, x0_hat = (x_{t*} - sqrt(1 - ab) eps_hat) / sqrt(ab), then
 *       theta_gen = sigma x0_hat + mu (A1: the matrix tiled into (C/64)^2 channels of 64 x 64, src/hybrid/README.md §1.2) or
 *       theta_static + U0 (sigma_V x0_hat)^T (A2: x0_hat holds V [C, r]);
 *   (c) theta = alpha theta_static + (1 - alpha) theta_gen, alpha = sigmoid(logit) per (layer, matrix);
 *       the RWKV-7 runs the sequence with theta in layer l; L_LM = mean cross-entropy over the scored
 *       positions t >= prefix (the same positions for every variant, src/hybrid/README.md §1.1).
 * The DiT sample of (b, l) carries the layer as its label (num_classes = targeted layers, never
 * dropped) and the condition vector e_b (cond_dim = C; the DiT's c_embedder is W_c, b_c of src/hybrid/README.md §1.1), from
 * the frozen RWKV-7 embedding rows h_t = emb[tok_t] (before ln0): the row of the first token
 * (first_token), the mean of the rows of the first `prefix` tokens (mean_prefix), or the attention
 * pool over them, e_b = sum_{t<P} softmax_t(q^T K h_t / sqrt(C)) V h_t with learned q, K, V
 * (attn_prefix), or the mean of the RWKV-7's final ln_out rows over the first `prefix` tokens, from the
 * zero state with the static weights (ln_out_prefix). The embedding rows, the ln_out rows, mu, sigma,
 * sigma_V and x0 are constants (no gradient flows into them), so theta_static receives alpha G (A1) or G
 * (A2, where theta_gen contains theta_static) from the LM, G = dL/d(theta); q, K, V receive the gradient
 * of e_b.
 *
 * Randomness (t, eps, eps*, condition drop) is keyed by (seed, global sample index, layer): a batch
 * gives the same result however it is split over ranks and micro-steps. Evaluation uses one fixed eps*
 * per layer (DS_HYBRID_EVAL_SEED, sample 0) for every sequence, no drop, so theta_gen is a
 * deterministic function of the condition. */
#ifndef DREAMSTATE_HYBRID_H
#define DREAMSTATE_HYBRID_H

#include "dreamstate/diffusion.h"
#include "dreamstate/dit.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/tensor.h"

#include <stdint.h>

#define DS_HYBRID_MAX_TARGETS 128
#define DS_HYBRID_EVAL_SEED 0x45564131ULL  /* eps* of evaluation and generation for inference */
#define DS_HYBRID_U0_SEED 0x55304131ULL    /* the fixed orthonormal U0 of A2 */

enum { DS_HYBRID_R = 1, DS_HYBRID_K = 2, DS_HYBRID_V = 4 };  /* matrices mask */
typedef enum { DS_HYBRID_FULL, DS_HYBRID_LOWRANK } ds_hybrid_param;            /* A1, A2 */
typedef enum {
    DS_HYBRID_FIRST_TOKEN, DS_HYBRID_MEAN_PREFIX, DS_HYBRID_ATTN_PREFIX, DS_HYBRID_LN_OUT_PREFIX
} ds_hybrid_condition;
/* DIFFUSION: the parameter DiT of paths (a) and (b); DIRECT: a deterministic hypernetwork, the same DiT run
 * once on x0 at t* without noise (eps* = 0), x0_hat = x0 - sqrt((1 - ab) / ab) DiT(...), no path (a) and no
 * L_pd (src/hybrid/README.md §1.7) */
typedef enum { DS_HYBRID_DIFFUSION, DS_HYBRID_DIRECT } ds_hybrid_generator;

typedef struct ds_hybrid_dims {
    ds_rwkv7_dims model;
    int n_targets;                        /* targeted layers; 0 = the static baseline (no DiT) */
    int targets[DS_HYBRID_MAX_TARGETS];   /* ascending layer indices */
    int matrices;                         /* mask of DS_HYBRID_R | K | V */
    ds_hybrid_param param;
    ds_hybrid_generator generator;        /* DIRECT needs lambda_pd = 0 */
    int rank;                             /* r of A2; C r must be a multiple of 64 x 64 */
    uint64_t u0_seed;                     /* A2: U0 of (layer, matrix) from stream 4 layer + matrix */
    ds_hybrid_condition condition;
    int prefix;                           /* P: LM scored on positions >= P; the *_prefix conditions pool t < P */
    int learn_alpha;                      /* 0: alpha fixed at alpha_init */
    double alpha_init, alpha_lr_scale;
    double lambda_lm, lambda_pd;          /* read at every call (lm_warmup_steps: set lambda_lm = 0) */
    int t_star;
    double p_uncond;
    ds_schedule schedule;
    int train_static;                     /* 1: the RWKV-7 weights are trainable (in params) */
    /* With train_static, n_static_layers > 0 restricts the trainable RWKV-7 weights to W_r, W_k, W_v of the
     * mask static_matrices in the layers static_layers (ascending): only those are in params (as copies,
     * taken from h->model by ds_hybrid_init_weights), the RWKV-7 runs frozen and its own weights are never
     * written (src/hybrid/README.md §1.8). With targeted layers they must be the generated matrices. */
    int n_static_layers;
    int static_layers[DS_HYBRID_MAX_TARGETS];
    int static_matrices;
    float l2wrap;                         /* RWKV's L2Wrap on the LM loss (gradient only) */
    ds_dit_dims dit;                      /* hidden, depth, heads, patch_size, mlp_ratio; the rest derived */
} ds_hybrid_dims;

/* The tensors of the trainable set (ds_hybrid.tensors): "dit.<DiT name>", "alpha.logit" [n_targets,
 * n_matrices] (rows per layer, matrices in r, k, v order), with attn_prefix "cond.attn.q" [C],
 * "cond.attn.key.weight" and "cond.attn.value.weight" [C, C] (k_t = K h_t, as a Linear), and with
 * train_static "rwkv7.<official name>" (restricted: only the listed W_r, W_k, W_v, layers ascending). lr_scale: the alpha logits alpha_lr_scale (0 if fixed), RWKV-7
 * w0 2, else 1; weight decay: the owning model's flag, alpha 0. */

/* The hybrid's own tensors of the trainable set (the DiT and the RWKV-7 have their own pointer
 * structs): a pointer table into params or grads, NULL where absent. */
typedef struct ds_hybrid_weights {
    float *alpha_logit;                /* [n_targets n_mat] */
    float *attn_q, *attn_k, *attn_v;   /* attn_prefix: q [C], K, V [C, C] */
} ds_hybrid_weights;

/* Loss terms of a call; the sums add over micro-batches and ranks (mean = sum / count). */
typedef struct ds_hybrid_losses {
    double total, lm, pd;    /* lambda_lm lm + lambda_pd pd; mean CE over scored tokens; mean eps-MSE */
    double lm_sum, lm_count; /* CE nats, scored tokens */
    double pd_sum, pd_count; /* eps-MSE summed over (sequence, layer) samples, their number */
} ds_hybrid_losses;

typedef struct ds_hybrid {
    ds_hybrid_dims d;
    int n_mat, mats[3];           /* generated matrices, as 0 = r, 1 = k, 2 = v */
    int64_t n_img;                /* floats of one DiT sample: n_mat C^2 (A1) or n_mat C r (A2) */
    ds_rwkv7 model;               /* the static weights: load them into model.params */
    ds_dit dit;                   /* the parameter DiT (unused when n_targets = 0) */
    ds_diffusion sched;
    int n_tensors;
    ds_param_tensor *tensors;     /* the trainable set's table */
    int64_t n_params;
    float *params, *grads;        /* the trainable set, [n_params] each */
    ds_hybrid_weights w, g;       /* pointer tables into params and grads */
    float *u0;                    /* A2: [n_targets, n_mat, C, r] orthonormal columns */
    int n_static;                 /* restricted static weights: their number, and per one its */
    float **static_params, **static_grads;  /* [n_static] slices of params and grads */
    void *work;                   /* internal buffers */
} ds_hybrid;

/* What a hybrid allocates and a training call computes for micro-batches of B sequences of T tokens,
 * from the dims alone (validated as by create; nothing allocated): `dreamstate plan` and the hybrid task
 * size a run by it. */
typedef struct ds_hybrid_sizes {
    int64_t n_params;              /* the trainable set */
    int64_t model_floats;          /* a frozen RWKV-7's parameters and gradient slots (0 with train_static) */
    double work_floats;            /* the hybrid's own buffers for B sequences (DiT batch, fused matrices and their
                                    * gradient, U0, ...) and the DiT's position table */
    int64_t dit_activation_floats; /* ds_dit_reserve of the DiT's 2 n_targets B samples */
    double flops_per_sequence;     /* training: the RWKV-7's ds_rwkv7_flops_per_token x T (frozen or restricted
                                    * static weights: its frozen FLOPs plus the weight gradients of the generated
                                    * or restricted matrices) + about 3x the DiT's forward of its 2 n_targets
                                    * samples (DIRECT: n_targets) + with ln_out_prefix the RWKV-7's forward to
                                    * ln_out over the P prefix tokens */
} ds_hybrid_sizes;
ds_hybrid_sizes ds_hybrid_sizes_of(const ds_hybrid_dims *d, int B, int T);

/* Validates the dims (exit 2 with a reason) and allocates (the buffers of a micro-batch at its first
 * call). The RWKV-7 starts zero: load or initialise h->model's weights before ds_hybrid_init_weights. With
 * frozen or restricted static weights h->model is marked frozen (its backward skips the weight
 * gradients). */
void ds_hybrid_create(ds_hybrid *h, const ds_hybrid_dims *d);
void ds_hybrid_destroy(ds_hybrid *h);
/* DiT initialisation (src/dit/README.md §1.5), alpha logits = logit(alpha_init) and, with attn_prefix,
 * q ~ N(0, 0.02^2), K, V ~ N(0, 1/C) (norm-preserving in expectation, so the pool starts at the scale
 * of the embedding rows); restricted static weights are copied from h->model; the RWKV-7 is untouched. */
void ds_hybrid_init_weights(ds_hybrid *h, uint64_t seed);
void ds_hybrid_zero_grad(ds_hybrid *h);

/* One micro-batch: tokens, targets [B, T] (targets -1 = ignored; positions < prefix are never scored),
 * sequence b is global sample first_sample + b of the step's randomness `seed`. cond_tokens [B, T]: the
 * tokens each sequence's condition is read from (only positions < prefix, or 0), NULL = its own tokens
 * (hybrid.shuffle_condition passes another sequence's). Accumulates the
 * gradient of loss_scale x total into h->grads and returns total (unscaled). out may be NULL. The B
 * sequences run at once (one DiT call, one RWKV-7 call), so a batch split otherwise agrees to fp32
 * rounding; the same split gives the same bits. */
double ds_hybrid_forward_backward(ds_hybrid *h, int B, int T, const int32_t *tokens, const int32_t *targets,
                                  const int32_t *cond_tokens, uint64_t seed, uint64_t first_sample, float loss_scale,
                                  ds_hybrid_losses *out);
/* Evaluation without gradients: the generation path with the fixed eval noise (DIRECT: none); L_pd is the
 * eps-MSE of that path (t = t*, undropped condition), which costs nothing extra (DIRECT: no L_pd, count
 * 0). cond_tokens as in ds_hybrid_forward_backward. Fills out, returns lm. */
double ds_hybrid_eval(ds_hybrid *h, int B, int T, const int32_t *tokens, const int32_t *targets,
                      const int32_t *cond_tokens, ds_hybrid_losses *out);

/* theta_gen [n_targets, n_mat, C, C] of one sequence (tokens [T]; only the condition's tokens are read)
 * with the generation noise of (seed, sample), e.g. (DS_HYBRID_EVAL_SEED, 0) as in evaluation (DIRECT:
 * no noise, seed and sample unused). */
void ds_hybrid_generate(ds_hybrid *h, int T, const int32_t *tokens, uint64_t seed, uint64_t sample,
                        float *theta_gen);
/* The draws of (seed, sample, targeted layer j): timestep t of path (a), the condition drop, eps and
 * eps* [n_img] (each output may be NULL). */
void ds_hybrid_draw(const ds_hybrid *h, uint64_t seed, uint64_t sample, int j, int32_t *t, int *drop, float *eps,
                    float *eps_star);
/* Current alpha values [n_targets n_mat] (for logging). */
void ds_hybrid_alpha(const ds_hybrid *h, float *alpha);

#endif
