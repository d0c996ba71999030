/* The Part-B hybrid (src/hybrid/README.md): parameter DiT + RWKV-7 with per-sequence fused time-mix
 * weights, forward and backward of a micro-batch. See include/dreamstate/hybrid.h for the model.
 *
 * A micro-batch of B sequences is done at once: one DiT call on the B x 2 |targets| samples (per
 * sequence its generation rows first, then its diffusion-loss rows), the fusion per sequence, then one
 * RWKV-7 forward and backward on the B sequences with the fused matrices as its per-sequence W_r, W_k,
 * W_v (ds_rwkv7.seq_weights, src/rwkv7/README.md §3.5: each sequence's T rows times its own matrix,
 * the gradient into that sequence's slice of G; every other product over the B T rows), then one DiT
 * backward. With frozen static weights the RWKV-7 runs frozen (no weight-gradient products).
 *
 * Shapes: B sequences of T tokens, C RWKV-7 channels (n_embd), nT targeted layers, n_mat generated
 * matrices per layer (of r, k, v), CC = C C floats of one matrix, r the rank of A2, n_img = n_mat CC
 * (A1) or n_mat C r (A2) floats of one DiT sample, viewed as n_img / 4096 channels of 64 x 64 (TILE);
 * a DiT batch [B, S1, n_img] holds per sequence its nT generation rows, then in training its nT
 * diffusion-loss rows (S1 = 2 nT, else and with the direct generator nT); P the prefix; k = j n_mat + mi indexes (targeted layer j,
 * matrix mi); the fused matrices and their gradients are [n_targets n_mat, B, C, C], so that matrix k
 * of every sequence is one [B, C, C] block as the RWKV-7 takes it. */
#include "dreamstate/hybrid.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define TILE 64                              /* DiT images are [channels, 64, 64] */
#define TILE_FLOATS (TILE * TILE)
#define PARALLEL_MIN ((int64_t)1 << 15)
enum { DRAW_T, DRAW_DROP, DRAW_EPS, DRAW_EPS_STAR };  /* the four random streams of a (sample, layer) */
#define ATTN_INIT_STREAM 0x41545450ULL       /* q, K, V initialisation: streams +0, +1, +2 */

typedef struct {
    float **static_w, **static_g; /* [n_targets n_mat]: the model's own pointers of the targeted matrices */
    double *mu, *sd;              /* [n_targets n_mat]: A1 mean and std of theta_static; A2 sd = sigma_V */
    float *x0;                    /* [n_targets, n_img]: normalise(theta_static) (A1), zeros (A2) */
    float *eval_eps;              /* [n_targets, n_img]: eps* of evaluation (drawn once; DIRECT: zeros throughout) */
    int have_eval_eps;
    ds_rwkv7_seq_weight *seq;     /* [L, 3]: the RWKV-7's per-sequence matrices, attached during a call */
    float *x0_hat;                /* [n_targets, n_img] of one sequence */
    int *static_slot;             /* [n_static]: 3 layer + matrix of each restricted static weight */
    float *lowrank;               /* A2: [C, r] scratch for V */
    double *row_dot;              /* [C] partial sums of the alpha gradient */
    /* attn_prefix: u = K^T q (score_t = <u, h_t> / sqrt(C), the same for every sequence), and the
     * backward's scratch of one sequence */
    float *attn_u;                /* [C] */
    float *attn_dp, *attn_ds;     /* [P] dL/dp, dL/dscore */
    float *attn_dh, *attn_du;     /* [C] dL/dhbar, dL/du */
    float *de;                    /* [C] dL/de */
    /* a micro-batch of up to cap_B sequences (reserve_batch) */
    int cap_B;
    float *e;                     /* [B, C] condition vectors */
    float *attn_h;                /* [B, P, C] the prefixes' embedding rows h_t */
    float *attn_p;                /* [B, P] scores, then their softmax */
    float *attn_hbar;             /* [B, C] sum_t p_t h_t, so e = V hbar */
    int32_t *prefix_tokens;       /* ln_out_prefix: [B, P] the prefixes, contiguous for the RWKV-7 */
    float *noise;                 /* [B, S1, n_img]: eps* (generation rows), then eps */
    float *x_in, *eps_hat, *d_eps;/* [B, S1, n_img] the DiT batch */
    int32_t *t, *labels;          /* [B S1] */
    float *vec, *d_vec;           /* [B S1, C]: the samples' condition vectors; their gradient (attn_prefix) */
    uint8_t *vec_null;            /* [B S1] */
    float *gen, *fused, *G;       /* [n_targets n_mat, B, C, C] */
    int32_t *targets;             /* [cap_BT] targets with positions < prefix unscored */
    int64_t cap_BT;
} work_buffers;

/* Where the model's pointer to matrix mat (0 r, 1 k, 2 v) of layer l lives in a pointer table. */
static float **matrix_slot(ds_rwkv7_weights *w, int l, int mat) {
    ds_rwkv7_layer *p = &w->layers[l];
    return mat == 0 ? &p->Wr : mat == 1 ? &p->Wk : &p->Wv;
}

/* A1 layout (src/hybrid/README.md §1.2): element (row, col) of a C x C matrix is pixel (i, j) = (row % 64, col % 64) of
 * channel (row / 64) (C / 64) + col / 64. */
static inline int64_t tile_index(int C, int row, int col) {
    return ((int64_t)(row / TILE) * (C / TILE) + col / TILE) * TILE_FLOATS + (row % TILE) * TILE + col % TILE;
}

/* N(0, 1) noise x[n] of (seed, stream), not the numbers of ds_fill_normal: Box-Muller in float on the
 * two 24-bit halves of one ds_rng_u64 per pair of outputs, keeping both (cos, sin); about 5x cheaper
 * than ds_rng_normal per value, which matters at millions of values per sequence. Tails end at 5.8
 * sigma (u1 >= 2^-24). */
static void fill_normal_fast(float *x, int64_t n, uint64_t seed, uint64_t stream) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t p = 0; p < (n + 1) / 2; p++) {
        uint64_t r = ds_rng_u64(seed, stream, (uint64_t)p);
        float u1 = (float)((r >> 40) + 1) * 0x1.0p-24f, u2 = (float)((r >> 8) & 0xFFFFFF) * 0x1.0p-24f;
        float radius = sqrtf(-2.0f * logf(u1)), angle = 6.28318530717958647692f * u2;
        x[2 * p] = radius * cosf(angle);
        if (2 * p + 1 < n) x[2 * p + 1] = radius * sinf(angle);
    }
}

/* Columns of Q [rows, cols] (row-major, double) made orthonormal: modified Gram-Schmidt, twice
 * ("twice is enough" for full working precision). */
static void orthonormalise(double *Q, int rows, int cols) {
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < cols; k++) {
            for (int j = 0; j < k; j++) {
                double dot = 0;
                for (int i = 0; i < rows; i++) dot += Q[(int64_t)i * cols + j] * Q[(int64_t)i * cols + k];
                for (int i = 0; i < rows; i++) Q[(int64_t)i * cols + k] -= dot * Q[(int64_t)i * cols + j];
            }
            double ss = 0;
            for (int i = 0; i < rows; i++) ss += Q[(int64_t)i * cols + k] * Q[(int64_t)i * cols + k];
            double inv = 1.0 / sqrt(ss);
            for (int i = 0; i < rows; i++) Q[(int64_t)i * cols + k] *= inv;
        }
}

/* ---------------------------------------------------------------- creation */

/* The restricted static weights (n_static_layers > 0): train_static, valid layers and matrices, and with
 * targeted layers exactly the generated matrices (their static part is what the fusion reads). */
static void check_static_layers(const ds_hybrid_dims *d) {
    int n = d->n_static_layers;
    if (n == 0) return;
    if (n < 0 || n > DS_HYBRID_MAX_TARGETS || !d->train_static || d->static_matrices < 1 || d->static_matrices > 7)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: %d restricted static layers, matrices mask %d, train_static %d (need 1..%d "
               "layers, a non-empty subset of r, k, v, train_static 1)", n, d->static_matrices, d->train_static,
               DS_HYBRID_MAX_TARGETS);
    for (int j = 0; j < n; j++)
        if (d->static_layers[j] < 0 || d->static_layers[j] >= d->model.n_layer ||
            (j > 0 && d->static_layers[j] <= d->static_layers[j - 1]))
            ds_die(DS_EXIT_BAD_INPUT, "hybrid: restricted static layer %d: need ascending distinct layers below %d",
                   d->static_layers[j], d->model.n_layer);
    if (d->n_targets > 0 && (n != d->n_targets || d->static_matrices != d->matrices ||
                             memcmp(d->static_layers, d->targets, sizeof(int) * n) != 0))
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: with generated matrices the restricted static weights must be those matrices");
}

static void check_dims(const ds_hybrid_dims *d) {
    const ds_rwkv7_dims *m = &d->model;
    int C = m->n_embd;
    if (m->n_layer < 1 || m->n_layer > 1024 || C < TILE || C % TILE)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: model of %d layers and width %d (need 1..1024 layers, width a multiple of 64)",
               m->n_layer, C);
    if (d->n_targets < 0 || d->n_targets > DS_HYBRID_MAX_TARGETS)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: %d targeted layers (at most %d)", d->n_targets, DS_HYBRID_MAX_TARGETS);
    for (int j = 0; j < d->n_targets; j++)
        if (d->targets[j] < 0 || d->targets[j] >= m->n_layer || (j > 0 && d->targets[j] <= d->targets[j - 1]))
            ds_die(DS_EXIT_BAD_INPUT, "hybrid: targeted layer %d: need ascending distinct layers below %d", d->targets[j],
                   m->n_layer);
    if (d->n_targets == 0 && !d->train_static)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: no targeted layers and frozen static weights: nothing to train");
    if (d->n_targets > 0 && (d->matrices < 1 || d->matrices > 7))
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: matrices mask %d (need a non-empty subset of r, k, v)", d->matrices);
    if (d->n_targets > 0 && d->param == DS_HYBRID_LOWRANK &&
        (d->rank < 1 || d->rank > C || ((int64_t)C * d->rank) % TILE_FLOATS))
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: rank %d of width %d: need 1 <= r <= C and C r a multiple of 4096 (64 x 64 "
               "DiT channels)", d->rank, C);
    if (d->prefix < 0 || (d->condition != DS_HYBRID_FIRST_TOKEN && d->prefix < 1))
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: prefix %d (mean_prefix, attn_prefix and ln_out_prefix need at least 1)",
               d->prefix);
    if (d->generator == DS_HYBRID_DIRECT && d->lambda_pd != 0)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: the direct generator has no diffusion loss: lambda_pd must be 0, got %g",
               d->lambda_pd);
    check_static_layers(d);
    if (!(d->alpha_init > 0 && d->alpha_init < 1))
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: alpha_init %g outside (0, 1)", d->alpha_init);
    if (d->t_star < 0 || d->t_star >= DS_DIFFUSION_STEPS || !(d->p_uncond >= 0 && d->p_uncond < 1) ||
        !(d->lambda_lm >= 0) || !(d->lambda_pd >= 0) || !(d->alpha_lr_scale >= 0))
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: t* %d, p_uncond %g, lambda %g / %g, alpha lr scale %g out of range",
               d->t_star, d->p_uncond, d->lambda_lm, d->lambda_pd, d->alpha_lr_scale);
}

static void make_u0(ds_hybrid *h) {
    int C = h->d.model.n_embd, r = h->d.rank;
    double *Q = ds_alloc(sizeof(double) * C * r);
    for (int j = 0; j < h->d.n_targets; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            uint64_t stream = 4 * (uint64_t)h->d.targets[j] + (uint64_t)h->mats[mi];
            for (int64_t i = 0; i < (int64_t)C * r; i++) Q[i] = ds_rng_normal(h->d.u0_seed, stream, (uint64_t)i);
            orthonormalise(Q, C, r);
            float *U = h->u0 + ((int64_t)j * h->n_mat + mi) * C * r;
            for (int64_t i = 0; i < (int64_t)C * r; i++) U[i] = (float)Q[i];
        }
    ds_free(Q);
}

#define GLOBAL(field) -1, offsetof(ds_hybrid_weights, field)

/* The generated matrices of d as 0 = r, 1 = k, 2 = v into mats; returns their number. */
static int generated_matrices(const ds_hybrid_dims *d, int *mats) {
    int n = 0;
    for (int mat = 0; mat < 3; mat++)
        if (d->matrices & (1 << mat)) mats[n++] = mat;
    return n;
}

/* Floats of one DiT sample: n_mat C^2 (A1) or n_mat C r (A2). */
static int64_t image_floats(const ds_hybrid_dims *d, int n_mat) {
    return (int64_t)n_mat * d->model.n_embd * (d->param == DS_HYBRID_FULL ? d->model.n_embd : d->rank);
}

/* The DiT of d: the hybrid's hidden, depth, heads, patch size and MLP ratio over n_img / 4096 channels
 * of 64 x 64, the targeted layer as its label and the condition vector of width C. */
static ds_dit_dims dit_dims(const ds_hybrid_dims *d, int64_t n_img) {
    ds_dit_dims dd = d->dit;
    dd.in_channels = (int)(n_img / TILE_FLOATS);
    dd.input_size = TILE;
    dd.num_classes = d->n_targets;
    dd.cond_dim = d->model.n_embd;
    return dd;
}

static const char *const matrix_names[3] = {"receptance", "key", "value"};

static int restricted_static(const ds_hybrid_dims *d) { return d->train_static && d->n_static_layers > 0; }

/* The trainable set's table: [DiT | alpha logits | attention pool (attn_prefix) | RWKV-7 (train_static; restricted:
 * its listed W_r, W_k, W_v)]; *at_model: where the whole RWKV-7 starts. */
static void trainable_table(const ds_hybrid_dims *d, int n_mat, const ds_dit_dims *dd, ds_param_table *t,
                            int64_t *at_model) {
    int C = d->model.n_embd, nT = d->n_targets;
    ds_param_table sub = {0};
    if (nT > 0) {
        ds_dit_param_table(&sub, dd);
        ds_param_append(t, "dit.", sub.n, sub.tensors);
        ds_param_table_free(&sub);
        ds_param_tensor *alpha = ds_param_add(t, GLOBAL(alpha_logit), 2, (int64_t[]){nT, n_mat}, "alpha.logit");
        alpha->lr_scale = d->learn_alpha ? (float)d->alpha_lr_scale : 0.0f;
    }
    if (nT > 0 && d->condition == DS_HYBRID_ATTN_PREFIX) {
        ds_param_add(t, GLOBAL(attn_q), 1, (int64_t[]){C}, "cond.attn.q");
        ds_param_add(t, GLOBAL(attn_k), 2, (int64_t[]){C, C}, "cond.attn.key.weight");
        ds_param_add(t, GLOBAL(attn_v), 2, (int64_t[]){C, C}, "cond.attn.value.weight");
    }
    *at_model = t->n_floats;
    if (restricted_static(d)) {
        for (int j = 0; j < d->n_static_layers; j++)
            for (int mat = 0; mat < 3; mat++)
                if (d->static_matrices & (1 << mat))
                    ds_param_add(t, DS_PARAM_UNBOUND, 0, 2, (int64_t[]){C, C}, "rwkv7.blocks.%d.att.%s.weight",
                                 d->static_layers[j], matrix_names[mat]);
    } else if (d->train_static) {
        ds_rwkv7_param_table(&sub, &d->model);
        ds_param_append(t, "rwkv7.", sub.n, sub.tensors);
        ds_param_table_free(&sub);
    }
}

/* DiT samples per sequence of a training call: the generation rows, then the diffusion-loss rows (none with
 * the direct generator). */
static int training_rows(const ds_hybrid_dims *d) { return (d->generator == DS_HYBRID_DIRECT ? 1 : 2) * d->n_targets; }

/* Floats of the hybrid's buffers besides the models (work_buffers) for micro-batches of B sequences of T
 * tokens (the + 1s keep empty ones allocatable). */
static double work_floats(const ds_hybrid_dims *d, int n_mat, int64_t n_img, int B, int T) {
    int64_t C = d->model.n_embd, nT = d->n_targets, nm = nT * n_mat, img = nT * n_img, mats = nm * C * C;
    int64_t S = (int64_t)training_rows(d) * B, P = d->prefix;
    double f = 3.0 * (img + 1)                    /* x0, eval_eps, x0_hat */
             + 4.0 * (nm + 1)                     /* mu, sd (double) */
             + 2.0 * C                            /* row_dot (double) */
             + (double)B * C                      /* e */
             + 4.0 * ((double)S * n_img + 1)      /* noise, x_in, eps_hat, d_eps */
             + (double)(S + 1) * (C + 3)          /* vec, t, labels, vec_null */
             + 3.0 * ((double)B * mats + 1)       /* gen, fused, G */
             + (double)B * T;                     /* targets */
    if (nT > 0 && d->condition == DS_HYBRID_ATTN_PREFIX)
        f += 4.0 * C + 2.0 * P + (double)B * (P * C + P + C) + (double)(S + 1) * C;
    if (nT > 0 && d->condition == DS_HYBRID_LN_OUT_PREFIX) f += (double)B * P;  /* prefix_tokens */
    if (nT > 0 && d->param == DS_HYBRID_LOWRANK) f += (double)(nm + 1) * C * d->rank;  /* U0, lowrank */
    return f;
}

ds_hybrid_sizes ds_hybrid_sizes_of(const ds_hybrid_dims *d, int B, int T) {
    check_dims(d);
    int mats[3], n_mat = generated_matrices(d, mats), C = d->model.n_embd;
    int64_t n_img = image_floats(d, n_mat), at_model;
    ds_dit_dims dd = dit_dims(d, n_img);
    ds_param_table t = {0};
    trainable_table(d, n_mat, &dd, &t, &at_model);
    /* frozen or restricted: the forward and the input-gradient products, plus the weight gradients of the
     * generated or restricted matrices */
    int restricted = restricted_static(d), graded = d->n_targets > 0 ? d->n_targets * n_mat : 0;
    if (d->n_targets == 0 && restricted) graded = d->n_static_layers * __builtin_popcount((unsigned)d->static_matrices);
    double rwkv7_flops = d->train_static && !restricted
                             ? ds_rwkv7_flops_per_token(&d->model, T)
                             : ds_rwkv7_frozen_flops_per_token(&d->model) + 2.0 * graded * C * C;
    ds_hybrid_sizes z = {.n_params = t.n_floats, .flops_per_sequence = rwkv7_flops * T};
    ds_param_table_free(&t);
    if (!d->train_static || restricted) {
        ds_rwkv7_param_table(&t, &d->model);
        z.model_floats = 2 * t.n_floats;  /* parameters and their gradient slots */
        ds_param_table_free(&t);
    }
    z.work_floats = work_floats(d, n_mat, n_img, B, T);
    if (d->n_targets > 0) {
        int G = dd.input_size / dd.patch_size;
        /* the DiT's position table and its copy of the batch's condition */
        z.work_floats += (double)G * G * dd.hidden + (double)training_rows(d) * B * C;
        z.dit_activation_floats = ds_dit_activation_floats(&dd, training_rows(d) * B);
        /* about 3x the forward of its 2 samples per targeted layer (direct: 1) */
        z.flops_per_sequence += 3.0 * training_rows(d) * ds_dit_forward_flops(&dd);
        /* ln_out_prefix: the RWKV-7's blocks forward over the prefix (what a recomputation costs per token) */
        if (d->condition == DS_HYBRID_LN_OUT_PREFIX)
            z.flops_per_sequence += d->prefix * ds_rwkv7_recompute_flops_per_token(&d->model);
    }
    return z;
}

/* The restricted static weights' slices of params and grads, and their places in the RWKV-7's
 * per-sequence table (layers ascending, matrices in r, k, v order: the trainable set's order). */
static void take_static_slices(ds_hybrid *h) {
    const ds_hybrid_dims *d = &h->d;
    work_buffers *w = h->work;
    if (!restricted_static(d)) return;
    h->n_static = d->n_static_layers * __builtin_popcount((unsigned)d->static_matrices);
    h->static_params = ds_alloc(sizeof(float *) * h->n_static);
    h->static_grads = ds_alloc(sizeof(float *) * h->n_static);
    w->static_slot = ds_alloc(sizeof(int) * h->n_static);
    int i = 0;
    for (int j = 0; j < d->n_static_layers; j++)
        for (int mat = 0; mat < 3; mat++) {
            if (!(d->static_matrices & (1 << mat))) continue;
            char name[DS_TENSOR_NAME_LEN];
            snprintf(name, sizeof name, "rwkv7.blocks.%d.att.%s.weight", d->static_layers[j], matrix_names[mat]);
            const ds_param_tensor *t = ds_param_find(h->n_tensors, h->tensors, name);
            h->static_params[i] = h->params + t->offset;
            h->static_grads[i] = h->grads + t->offset;
            w->static_slot[i++] = 3 * d->static_layers[j] + mat;
        }
}

void ds_hybrid_create(ds_hybrid *h, const ds_hybrid_dims *d) {
    check_dims(d);
    memset(h, 0, sizeof *h);
    h->d = *d;
    int C = d->model.n_embd, nT = d->n_targets;
    h->n_mat = generated_matrices(d, h->mats);
    h->n_img = image_floats(d, h->n_mat);
    ds_dit_dims dd = dit_dims(d, h->n_img);
    ds_param_table t = {0};
    int64_t at_model;
    trainable_table(d, h->n_mat, &dd, &t, &at_model);
    int attn = nT > 0 && d->condition == DS_HYBRID_ATTN_PREFIX, restricted = restricted_static(d);
    ds_param_arrays(&t, NULL, NULL, &h->params, &h->grads);
    ds_param_bind(&t, h->params, &h->w, 0, 0);
    ds_param_bind(&t, h->grads, &h->g, 0, 0);
    h->tensors = ds_param_take(&t, &h->n_tensors, &h->n_params);
    if (nT > 0) ds_dit_create_in(&h->dit, &dd, h->params, h->grads);  /* the DiT's tensors come first */
    if (d->train_static && !restricted) ds_rwkv7_create_in(&h->model, &d->model, h->params + at_model, h->grads + at_model);
    else ds_rwkv7_create(&h->model, &d->model);
    ds_diffusion_create(&h->sched, d->schedule, DS_DIFFUSION_STEPS);

    /* no weight-gradient products for weights nobody trains; restricted ones get theirs as shared or fused matrices */
    h->model.frozen = !d->train_static || restricted;

    work_buffers *w = ds_alloc(sizeof *w);
    h->work = w;
    take_static_slices(h);
    int64_t nm = (int64_t)nT * h->n_mat, img = (int64_t)nT * h->n_img;
    w->static_w = ds_alloc(sizeof(float *) * (nm + 1));
    w->static_g = ds_alloc(sizeof(float *) * (nm + 1));
    for (int j = 0; j < nT; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            int k = j * h->n_mat + mi;  /* restricted: the same (layer, matrix) order as the slices */
            w->static_w[k] = restricted ? h->static_params[k] : *matrix_slot(&h->model.w, d->targets[j], h->mats[mi]);
            w->static_g[k] = restricted ? h->static_grads[k] : *matrix_slot(&h->model.g, d->targets[j], h->mats[mi]);
        }
    w->mu = ds_alloc(sizeof(double) * (nm + 1));
    w->sd = ds_alloc(sizeof(double) * (nm + 1));
    w->x0 = ds_alloc(sizeof(float) * (img + 1));
    w->eval_eps = ds_alloc(sizeof(float) * (img + 1));
    w->x0_hat = ds_alloc(sizeof(float) * (img + 1));
    w->seq = ds_alloc(sizeof(ds_rwkv7_seq_weight) * 3 * d->model.n_layer);
    w->row_dot = ds_alloc(sizeof(double) * C);
    if (attn) {
        int P = d->prefix;
        w->attn_u = ds_alloc(sizeof(float) * C);
        w->attn_dp = ds_alloc(sizeof(float) * P);
        w->attn_ds = ds_alloc(sizeof(float) * P);
        w->attn_dh = ds_alloc(sizeof(float) * C);
        w->attn_du = ds_alloc(sizeof(float) * C);
        w->de = ds_alloc(sizeof(float) * C);
    }
    if (nT > 0 && d->param == DS_HYBRID_LOWRANK) {
        w->lowrank = ds_alloc(sizeof(float) * C * d->rank);
        h->u0 = ds_alloc(sizeof(float) * nm * C * d->rank);
        make_u0(h);
    }
}

static void free_batch_buffers(work_buffers *w) {
    ds_free(w->e); ds_free(w->attn_h); ds_free(w->attn_p); ds_free(w->attn_hbar); ds_free(w->noise); ds_free(w->x_in);
    ds_free(w->eps_hat); ds_free(w->d_eps); ds_free(w->t); ds_free(w->labels); ds_free(w->vec); ds_free(w->d_vec);
    ds_free(w->vec_null); ds_free(w->gen); ds_free(w->fused); ds_free(w->G); ds_free(w->prefix_tokens);
}

/* The micro-batch buffers for B sequences of T tokens (they only grow). */
static void reserve_batch(ds_hybrid *h, int B, int T) {
    work_buffers *w = h->work;
    if ((int64_t)B * T > w->cap_BT) {
        ds_free(w->targets);
        w->cap_BT = (int64_t)B * T;
        w->targets = ds_alloc(sizeof(int32_t) * w->cap_BT);
    }
    if (B <= w->cap_B) return;
    free_batch_buffers(w);
    int64_t C = h->d.model.n_embd, nT = h->d.n_targets, P = h->d.prefix, S = (int64_t)training_rows(&h->d) * B;
    int64_t rows = S * h->n_img + 1, mats = nT * h->n_mat * B * C * C + 1;
    w->e = ds_alloc(sizeof(float) * B * C);
    if (nT > 0 && h->d.condition == DS_HYBRID_ATTN_PREFIX) {
        w->attn_h = ds_alloc(sizeof(float) * B * P * C);
        w->attn_p = ds_alloc(sizeof(float) * B * P);
        w->attn_hbar = ds_alloc(sizeof(float) * B * C);
        w->d_vec = ds_alloc(sizeof(float) * (S + 1) * C);
    }
    if (nT > 0 && h->d.condition == DS_HYBRID_LN_OUT_PREFIX) w->prefix_tokens = ds_alloc(sizeof(int32_t) * B * P);
    w->noise = ds_alloc(sizeof(float) * rows);
    w->x_in = ds_alloc(sizeof(float) * rows);
    w->eps_hat = ds_alloc(sizeof(float) * rows);
    w->d_eps = ds_alloc(sizeof(float) * rows);
    w->t = ds_alloc(sizeof(int32_t) * (S + 1));
    w->labels = ds_alloc(sizeof(int32_t) * (S + 1));
    w->vec = ds_alloc(sizeof(float) * (S + 1) * C);
    w->vec_null = ds_alloc((size_t)(S + 1));
    w->gen = ds_alloc(sizeof(float) * mats);
    w->fused = ds_alloc(sizeof(float) * mats);
    w->G = ds_alloc(sizeof(float) * mats);
    w->cap_B = B;
}

void ds_hybrid_destroy(ds_hybrid *h) {
    work_buffers *w = h->work;
    free_batch_buffers(w);
    ds_free(w->static_w); ds_free(w->static_g); ds_free(w->mu); ds_free(w->sd); ds_free(w->x0); ds_free(w->eval_eps);
    ds_free(w->x0_hat); ds_free(w->seq); ds_free(w->row_dot); ds_free(w->lowrank); ds_free(w->targets);
    ds_free(w->attn_u); ds_free(w->attn_dp); ds_free(w->attn_ds); ds_free(w->attn_dh); ds_free(w->attn_du);
    ds_free(w->de); ds_free(w->static_slot); ds_free(w);
    if (h->d.n_targets > 0) ds_dit_destroy(&h->dit);
    ds_rwkv7_destroy(&h->model);
    ds_diffusion_destroy(&h->sched);
    ds_free(h->tensors); ds_free(h->params); ds_free(h->grads); ds_free(h->u0);
    ds_free(h->static_params); ds_free(h->static_grads);
    memset(h, 0, sizeof *h);
}

void ds_hybrid_init_weights(ds_hybrid *h, uint64_t seed) {
    int64_t C = h->d.model.n_embd, CC = C * C;
    for (int i = 0; i < h->n_static; i++) {
        int slot = ((work_buffers *)h->work)->static_slot[i];
        memcpy(h->static_params[i], *matrix_slot(&h->model.w, slot / 3, slot % 3), sizeof(float) * CC);
    }
    if (h->d.n_targets == 0) return;
    ds_dit_init_weights(&h->dit, seed);
    float logit = (float)log(h->d.alpha_init / (1.0 - h->d.alpha_init));
    for (int i = 0; i < h->d.n_targets * h->n_mat; i++) h->w.alpha_logit[i] = logit;
    if (h->w.attn_q) {
        double sd = 1.0 / sqrt((double)C);
        ds_fill_normal(h->w.attn_q, C, 0.02, seed, ATTN_INIT_STREAM);
        ds_fill_normal(h->w.attn_k, CC, sd, seed, ATTN_INIT_STREAM + 1);
        ds_fill_normal(h->w.attn_v, CC, sd, seed, ATTN_INIT_STREAM + 2);
    }
}

void ds_hybrid_zero_grad(ds_hybrid *h) { ds_zero_floats(h->grads, h->n_params); }

static double alpha_of(const ds_hybrid *h, int k) {
    return h->d.learn_alpha ? 1.0 / (1.0 + exp(-(double)h->w.alpha_logit[k])) : h->d.alpha_init;
}

void ds_hybrid_alpha(const ds_hybrid *h, float *alpha) {
    for (int k = 0; k < h->d.n_targets * h->n_mat; k++) alpha[k] = (float)alpha_of(h, k);
}

/* ---------------------------------------------------------------- randomness and constants */

static uint64_t draw_stream(uint64_t sample, int layer, int kind) {
    return (sample << 12) | ((uint64_t)layer << 2) | (uint64_t)kind;
}

void ds_hybrid_draw(const ds_hybrid *h, uint64_t seed, uint64_t sample, int j, int32_t *t, int *drop, float *eps,
                    float *eps_star) {
    int layer = h->d.targets[j];
    if (t) *t = (int32_t)(ds_rng_u64(seed, draw_stream(sample, layer, DRAW_T), 0) % DS_DIFFUSION_STEPS);
    if (drop) *drop = ds_rng_uniform(seed, draw_stream(sample, layer, DRAW_DROP), 0) < h->d.p_uncond;
    if (eps) fill_normal_fast(eps, h->n_img, seed, draw_stream(sample, layer, DRAW_EPS));
    if (eps_star) fill_normal_fast(eps_star, h->n_img, seed, draw_stream(sample, layer, DRAW_EPS_STAR));
}

/* mu, sigma (population std) of each targeted static matrix, and x0 = normalise(theta_static) (A1) or
 * sigma_V = sigma / 2 (A2, x0 = 0). Recomputed at every call, so trained static weights are followed. */
static void prepare_static(ds_hybrid *h) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd;
    int64_t CC = (int64_t)C * C;
    for (int j = 0; j < h->d.n_targets; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            int k = j * h->n_mat + mi;
            const float *W = w->static_w[k];
            double s = 0, ss = 0;
            for (int64_t i = 0; i < CC; i++) s += W[i];
            double mu = s / CC;
            for (int64_t i = 0; i < CC; i++) ss += (W[i] - mu) * (W[i] - mu);
            double sd = sqrt(ss / CC);
            if (!(sd > 0)) sd = 1;  /* a constant matrix: nothing to normalise */
            if (h->d.param == DS_HYBRID_LOWRANK) {
                w->mu[k] = 0;
                w->sd[k] = 0.5 * sd;
                continue;
            }
            w->mu[k] = mu;
            w->sd[k] = sd;
            float *img = w->x0 + (int64_t)j * h->n_img + mi * CC;
            float fmu = (float)mu, inv = (float)(1.0 / sd);
#pragma omp parallel for schedule(static) if (CC >= PARALLEL_MIN)
            for (int row = 0; row < C; row++)
                for (int col = 0; col < C; col++) img[tile_index(C, row, col)] = (W[(int64_t)row * C + col] - fmu) * inv;
        }
}

/* Attention pool over the prefix rows H [P, C] of sequence b: p = softmax(H u / sqrt(C)) with u = K^T q
 * (w->attn_u, set by conditions), hbar = H^T p, e = V hbar (= sum_t p_t V h_t, without forming the P
 * values V h_t). Keeps H, p, hbar of the sequence. */
static void attention_pool(ds_hybrid *h, int b, const int32_t *tokens, float *e) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, P = h->d.prefix;
    float *H = w->attn_h + (int64_t)b * P * C, *p = w->attn_p + (int64_t)b * P, *hbar = w->attn_hbar + (int64_t)b * C;
    for (int t = 0; t < P; t++) memcpy(H + (int64_t)t * C, h->model.w.emb + (int64_t)tokens[t] * C, sizeof(float) * C);
    ds_gemm(0, 1, 1, P, C, (float)(1.0 / sqrt((double)C)), w->attn_u, C, H, C, 0.0f, p, P);
    ds_k.softmax_forward(1, P, p, p);
    ds_gemm(0, 0, 1, C, P, 1.0f, p, P, H, C, 0.0f, hbar, C);
    ds_gemm(0, 1, 1, C, C, 1.0f, hbar, C, h->w.attn_v, C, 0.0f, e, C);
}

/* Backward of attention_pool of sequence b from w->de = dL/de_b: dV += de hbar^T, dhbar = V^T de,
 * dp = H dhbar, dscore = softmax backward, du = H^T dscore / sqrt(C), dK += q du^T, dq += K du. */
static void attention_pool_backward(ds_hybrid *h, int b) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, P = h->d.prefix;
    const float *H = w->attn_h + (int64_t)b * P * C, *p = w->attn_p + (int64_t)b * P;
    const float *hbar = w->attn_hbar + (int64_t)b * C;
    ds_gemm(1, 0, C, C, 1, 1.0f, w->de, C, hbar, C, 1.0f, h->g.attn_v, C);
    ds_gemm(0, 0, 1, C, C, 1.0f, w->de, C, h->w.attn_v, C, 0.0f, w->attn_dh, C);
    ds_gemm(0, 1, 1, P, C, 1.0f, w->attn_dh, C, H, C, 0.0f, w->attn_dp, P);
    memset(w->attn_ds, 0, sizeof(float) * P);  /* softmax_backward accumulates */
    ds_k.softmax_backward(1, P, p, w->attn_dp, w->attn_ds);
    ds_gemm(0, 0, 1, C, P, (float)(1.0 / sqrt((double)C)), w->attn_ds, P, H, C, 0.0f, w->attn_du, C);
    ds_gemm(1, 0, C, C, 1, 1.0f, h->w.attn_q, C, w->attn_du, C, 1.0f, h->g.attn_k, C);
    ds_gemm(0, 1, 1, C, C, 1.0f, w->attn_du, C, h->w.attn_k, C, 1.0f, h->g.attn_q, C);
}

/* The restricted static weights as the RWKV-7's shared W_r, W_k, W_v (src/rwkv7/README.md §3.5): the
 * model computes with them and adds their gradient to grads; its own copies stay as loaded. Without
 * restricted weights the model runs on its own. */
static void attach_static(ds_hybrid *h) {
    work_buffers *w = h->work;
    h->model.seq_weights = NULL;
    if (h->n_static == 0) return;
    memset(w->seq, 0, sizeof(ds_rwkv7_seq_weight) * 3 * h->d.model.n_layer);
    for (int i = 0; i < h->n_static; i++)
        w->seq[w->static_slot[i]] = (ds_rwkv7_seq_weight){h->static_params[i], h->static_grads[i], 1};
    h->model.seq_weights = w->seq;
}

/* ln_out_prefix: e_b = the mean of the RWKV-7's ln_out rows over the first P tokens, one forward of the B
 * prefixes from the zero state with the static weights (no generated matrices) and no backward. */
static void ln_out_conditions(ds_hybrid *h, int B, int T, const int32_t *tokens) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, P = h->d.prefix;
    for (int b = 0; b < B; b++) memcpy(w->prefix_tokens + (int64_t)b * P, tokens + (int64_t)b * T, sizeof(int32_t) * P);
    ds_rwkv7_reserve(&h->model, B, T);  /* the LM forward's size first, so that the prefix's does not shrink it */
    attach_static(h);
    const float *rows = ds_rwkv7_forward_hidden(&h->model, B, P, w->prefix_tokens);
    h->model.seq_weights = NULL;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int t = 0; t < P; t++) s += rows[((int64_t)b * P + t) * C + c];
            w->e[(int64_t)b * C + c] = (float)(s / P);
        }
}

/* The condition vectors e [B, C] of the sequences tokens [B, T]: emb[tok_0] (first_token), the mean of
 * emb[tok_t], t < prefix (mean_prefix), their attention pool (attn_prefix), or the mean of the RWKV-7's
 * ln_out rows over them (ln_out_prefix). */
static void conditions(ds_hybrid *h, int B, int T, const int32_t *tokens) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, V = h->d.model.vocab_size;
    int n = h->d.condition == DS_HYBRID_FIRST_TOKEN ? 1 : h->d.prefix;
    if (n > T) ds_die(DS_EXIT_BAD_INPUT, "hybrid: the condition pools %d tokens of a sequence of %d", n, T);
    if (h->d.condition == DS_HYBRID_LN_OUT_PREFIX) {
        ln_out_conditions(h, B, T, tokens);
        return;
    }
    if (h->d.condition == DS_HYBRID_ATTN_PREFIX) ds_gemm(0, 0, 1, C, C, 1.0f, h->w.attn_q, C, h->w.attn_k, C, 0.0f, w->attn_u, C);
    for (int b = 0; b < B; b++) {
        const int32_t *tok = tokens + (int64_t)b * T;
        float *e = w->e + (int64_t)b * C;
        for (int t = 0; t < n; t++)
            if (tok[t] < 0 || tok[t] >= V) ds_die(DS_EXIT_BAD_INPUT, "token id %d out of range [0, %d)", tok[t], V);
        if (h->d.condition == DS_HYBRID_ATTN_PREFIX) {
            attention_pool(h, b, tok, e);
            continue;
        }
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int t = 0; t < n; t++) s += h->model.w.emb[(int64_t)tok[t] * C + c];
            e[c] = (float)(s / n);
        }
    }
}

/* DiT backward of the batch of the last dit_forward (S1 rows per sequence); with attn_prefix also
 * dL/de_b = the sum of sequence b's rows of the DiT's condition-vector gradient (0 for dropped ones),
 * into each sequence's pool. */
static void dit_backward(ds_hybrid *h, int B, int S1) {
    work_buffers *w = h->work;
    if (h->d.condition != DS_HYBRID_ATTN_PREFIX) {
        ds_dit_backward_from(&h->dit, w->d_eps, NULL, NULL);
        return;
    }
    int C = h->d.model.n_embd;
    ds_dit_backward_from(&h->dit, w->d_eps, NULL, w->d_vec);
    for (int b = 0; b < B; b++) {
        memset(w->de, 0, sizeof(float) * C);
        for (int i = 0; i < S1; i++) ds_k.axpy(C, 1.0f, w->d_vec + ((int64_t)b * S1 + i) * C, w->de);
        attention_pool_backward(h, b);
    }
}

/* ---------------------------------------------------------------- the micro-batch */

/* eps* of every targeted layer shared by all sequences: evaluation's, drawn once (diffusion), or zero
 * (direct: its fixed input is x_{t*} = sqrt(ab) x0). */
static const float *fixed_noise(ds_hybrid *h) {
    work_buffers *w = h->work;
    if (!w->have_eval_eps && h->d.generator == DS_HYBRID_DIFFUSION)
        for (int j = 0; j < h->d.n_targets; j++)
            ds_hybrid_draw(h, DS_HYBRID_EVAL_SEED, 0, j, NULL, NULL, NULL, w->eval_eps + j * h->n_img);
    w->have_eval_eps = 1;
    return w->eval_eps;
}

/* DiT forward of B sequences with conditions w->e, S1 = nT (generation path) or 2 nT (with_diffusion)
 * rows each. Generation row j of sequence b is at t* with eps* of (seed, first_sample + b, j), or
 * shared_eps_star + j n_img for every sequence when given; with_diffusion adds the diffusion-loss rows
 * with the draws of (seed, first_sample + b). The noise goes to the same rows of w->noise. */
static void dit_forward(ds_hybrid *h, int B, const float *shared_eps_star, int with_diffusion, uint64_t seed,
                        uint64_t first_sample) {
    work_buffers *w = h->work;
    int nT = h->d.n_targets, C = h->d.model.n_embd, S1 = with_diffusion ? 2 * nT : nT;
    int64_t n = h->n_img;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < S1; i++) {
            int64_t s = (int64_t)b * S1 + i;
            int j = i % nT, drop = 0;
            float *noise = w->noise + s * n;
            const float *eps = noise;
            w->t[s] = h->d.t_star;
            if (i >= nT) ds_hybrid_draw(h, seed, first_sample + b, j, &w->t[s], &drop, noise, NULL);
            else if (shared_eps_star) eps = shared_eps_star + j * n;
            else ds_hybrid_draw(h, seed, first_sample + b, j, NULL, NULL, NULL, noise);
            w->labels[s] = j;
            w->vec_null[s] = (uint8_t)drop;
            memcpy(w->vec + s * C, w->e + (int64_t)b * C, sizeof(float) * C);
            ds_q_sample(&h->sched, 1, n, &w->t[s], w->x0 + j * n, eps, w->x_in + s * n);
        }
    ds_dit_cond cond = {w->labels, w->vec, w->vec_null};
    ds_dit_forward(&h->dit, B * S1, w->x_in, w->t, &cond, NULL, w->eps_hat);
}

/* theta_gen of every targeted matrix of every sequence from the generation rows of the last DiT forward
 * (S1 rows per sequence), and the fused theta = alpha theta_static + (1 - alpha) theta_gen. */
static void generate_and_fuse(ds_hybrid *h, int B, int S1) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, r = h->d.rank;
    int64_t n = h->n_img, CC = (int64_t)C * C;
    for (int b = 0; b < B; b++) {
        int64_t first = (int64_t)b * S1 * n;  /* the sequence's generation rows */
        ds_predict_x0(&h->sched, h->d.t_star, h->d.n_targets * n, w->x_in + first, w->eps_hat + first, w->x0_hat);
        for (int j = 0; j < h->d.n_targets; j++)
            for (int mi = 0; mi < h->n_mat; mi++) {
                int k = j * h->n_mat + mi;
                const float *W = w->static_w[k];
                float *gen = w->gen + ((int64_t)k * B + b) * CC, *fused = w->fused + ((int64_t)k * B + b) * CC;
                if (h->d.param == DS_HYBRID_FULL) {
                    const float *img = w->x0_hat + j * n + mi * CC;
                    float mu = (float)w->mu[k], sd = (float)w->sd[k];
#pragma omp parallel for schedule(static) if (CC >= PARALLEL_MIN)
                    for (int row = 0; row < C; row++)
                        for (int col = 0; col < C; col++) gen[(int64_t)row * C + col] = sd * img[tile_index(C, row, col)] + mu;
                } else {
                    /* V = sigma_V x0_hat as [C, r]; theta_gen = theta_static + U0 V^T */
                    const float *x = w->x0_hat + j * n + (int64_t)mi * C * r;
                    for (int64_t i = 0; i < (int64_t)C * r; i++) w->lowrank[i] = (float)w->sd[k] * x[i];
                    memcpy(gen, W, sizeof(float) * CC);
                    ds_gemm(0, 1, C, C, r, 1.0f, h->u0 + (int64_t)k * C * r, r, w->lowrank, r, 1.0f, gen, C);
                }
                float a = (float)alpha_of(h, k), c = 1.0f - a;
#pragma omp parallel for schedule(static) if (CC >= PARALLEL_MIN)
                for (int64_t i = 0; i < CC; i++) fused[i] = a * W[i] + c * gen[i];
            }
    }
}

/* Hands the fused matrices of B sequences to the RWKV-7 as its per-sequence W_r, W_k, W_v of the
 * targeted layers, their gradients going to G (src/rwkv7/README.md §3.5); detach_matrices takes them back. */
static void attach_matrices(ds_hybrid *h, int B) {
    work_buffers *w = h->work;
    int64_t CC = (int64_t)h->d.model.n_embd * h->d.model.n_embd;
    memset(w->seq, 0, sizeof(ds_rwkv7_seq_weight) * 3 * h->d.model.n_layer);
    for (int j = 0; j < h->d.n_targets; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            int64_t k = j * h->n_mat + mi;
            w->seq[3 * h->d.targets[j] + h->mats[mi]] = (ds_rwkv7_seq_weight){w->fused + k * B * CC, w->G + k * B * CC, 0};
        }
    h->model.seq_weights = w->seq;
}

static void detach_matrices(ds_hybrid *h) { h->model.seq_weights = NULL; }

/* From G = dL/d(theta) of every targeted matrix of every sequence: the alpha-logit gradient, the static
 * weights' share (train_static) and dL/d(eps_hat) of the generation rows of the DiT batch (into d_eps;
 * S1 rows per sequence). Sequences in order, so that the sums do not depend on how a batch is split. */
static void generation_backward(ds_hybrid *h, int B, int S1) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, r = h->d.rank;
    int64_t n = h->n_img, CC = (int64_t)C * C;
    double ab = h->sched.alphas_cumprod[h->d.t_star];
    float ce = (float)-sqrt((1.0 - ab) / ab);  /* d x0_hat / d eps_hat */
    for (int b = 0; b < B; b++)
        for (int j = 0; j < h->d.n_targets; j++)
            for (int mi = 0; mi < h->n_mat; mi++) {
                int k = j * h->n_mat + mi;
                const float *W = w->static_w[k], *gen = w->gen + ((int64_t)k * B + b) * CC;
                const float *G = w->G + ((int64_t)k * B + b) * CC;
                /* <G, theta_static - theta_gen> by rows, then over rows in order (thread-count independent) */
#pragma omp parallel for schedule(static) if (CC >= PARALLEL_MIN)
                for (int row = 0; row < C; row++) {
                    double s = 0;
                    for (int64_t i = (int64_t)row * C; i < (int64_t)(row + 1) * C; i++) s += (double)G[i] * (W[i] - gen[i]);
                    w->row_dot[row] = s;
                }
                double a = alpha_of(h, k), dot = 0;
                for (int row = 0; row < C; row++) dot += w->row_dot[row];
                if (h->d.learn_alpha) h->g.alpha_logit[k] += (float)(a * (1 - a) * dot);
                /* A1: theta = alpha theta_static + ...; A2: theta_gen = theta_static + U0 V^T as well */
                if (h->d.train_static) ds_k.axpy(CC, h->d.param == DS_HYBRID_FULL ? (float)a : 1.0f, G, w->static_g[k]);
                float *d = w->d_eps + ((int64_t)b * S1 + j) * n;
                if (h->d.param == DS_HYBRID_FULL) {
                    float s = (float)(w->sd[k] * (1 - a)) * ce;
                    float *img = d + mi * CC;
#pragma omp parallel for schedule(static) if (CC >= PARALLEL_MIN)
                    for (int row = 0; row < C; row++)
                        for (int col = 0; col < C; col++) img[tile_index(C, row, col)] = s * G[(int64_t)row * C + col];
                } else {
                    /* dV = (1 - alpha) G^T U0; V = sigma_V x0_hat */
                    ds_gemm(1, 0, C, r, C, (float)((1 - a) * w->sd[k]) * ce, G, C, h->u0 + (int64_t)k * C * r, r, 0.0f,
                            d + (int64_t)mi * C * r, r);
                }
            }
}

/* targets [B, T] with positions < prefix unscored, into w->targets; returns the scored count. */
static int64_t scored_targets(ds_hybrid *h, int B, int T, const int32_t *targets) {
    work_buffers *w = h->work;
    int64_t count = 0;
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        w->targets[i] = i % T < h->d.prefix ? -1 : targets[i];
        count += w->targets[i] >= 0;
    }
    return count;
}

static void check_batch(const ds_hybrid *h, int B, int T) {
    if (B < 1 || T < 1) ds_die(DS_EXIT_BAD_INPUT, "hybrid: batch of %d x %d tokens", B, T);
    if (h->d.prefix >= T)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: prefix %d leaves no scored position in sequences of %d tokens", h->d.prefix, T);
}

static void finish_losses(const ds_hybrid *h, ds_hybrid_losses *L) {
    L->lm = L->lm_count > 0 ? L->lm_sum / L->lm_count : 0.0;
    L->pd = L->pd_count > 0 ? L->pd_sum / L->pd_count : 0.0;
    L->total = h->d.lambda_lm * L->lm + h->d.lambda_pd * L->pd;
}

/* ---------------------------------------------------------------- public entry points */

double ds_hybrid_forward_backward(ds_hybrid *h, int B, int T, const int32_t *tokens, const int32_t *targets,
                                  const int32_t *cond_tokens, uint64_t seed, uint64_t first_sample, float loss_scale,
                                  ds_hybrid_losses *out) {
    check_batch(h, B, T);
    reserve_batch(h, B, T);
    work_buffers *w = h->work;
    int nT = h->d.n_targets, direct = h->d.generator == DS_HYBRID_DIRECT, S1 = training_rows(&h->d);
    int64_t n = h->n_img, CC = (int64_t)h->d.model.n_embd * h->d.model.n_embd;
    ds_hybrid_losses L = {0};
    int64_t count = scored_targets(h, B, T, targets);
    if (nT > 0) {
        prepare_static(h);
        conditions(h, B, T, cond_tokens ? cond_tokens : tokens);
        if (direct) {
            dit_forward(h, B, fixed_noise(h), 0, 0, 0);  /* the generation rows alone, no draws */
        } else {
            dit_forward(h, B, NULL, 1, seed, first_sample);
            /* in double: a batch split into micro-batches gives the same per-sample factor */
            double pd_scale = (double)loss_scale * h->d.lambda_pd / ((double)B * nT);
            for (int b = 0; b < B; b++)
                for (int j = 0; j < nT; j++) {
                    int64_t s = ((int64_t)b * S1 + nT + j) * n;
                    L.pd_sum += ds_eps_mse(n, w->eps_hat + s, w->noise + s, w->d_eps + s);
                    ds_k.scale(n, w->d_eps + s, (float)pd_scale);
                }
            L.pd_count = (double)B * nT;
        }
        generate_and_fuse(h, B, S1);
        memset(w->G, 0, sizeof(float) * nT * h->n_mat * B * CC);
        attach_matrices(h, B);
    } else {
        attach_static(h);
    }
    /* every scored token of the batch weighs loss_scale lambda_lm / count */
    float lm_scale = count > 0 ? (float)((double)loss_scale * h->d.lambda_lm) : 0.0f;
    double lm = ds_rwkv7_forward(&h->model, B, T, tokens, w->targets, lm_scale, h->d.l2wrap, NULL, NULL, NULL);
    L.lm_sum = lm * (double)count;
    if (lm_scale != 0) ds_rwkv7_backward(&h->model);
    detach_matrices(h);
    if (nT > 0) {
        generation_backward(h, B, S1);  /* G = 0 without an LM gradient: the generation rows get 0 */
        dit_backward(h, B, S1);
    }
    L.lm_count = (double)count;
    finish_losses(h, &L);
    if (out) *out = L;
    return L.total;
}

double ds_hybrid_eval(ds_hybrid *h, int B, int T, const int32_t *tokens, const int32_t *targets,
                      const int32_t *cond_tokens, ds_hybrid_losses *out) {
    check_batch(h, B, T);
    reserve_batch(h, B, T);
    work_buffers *w = h->work;
    int nT = h->d.n_targets;
    int64_t n = h->n_img;
    ds_hybrid_losses L = {0};
    int64_t count = scored_targets(h, B, T, targets);
    if (nT > 0) {
        prepare_static(h);
        conditions(h, B, T, cond_tokens ? cond_tokens : tokens);
        const float *eps_star = fixed_noise(h);
        dit_forward(h, B, eps_star, 0, 0, 0);
        if (h->d.generator == DS_HYBRID_DIFFUSION) {
            for (int b = 0; b < B; b++)
                for (int j = 0; j < nT; j++)
                    L.pd_sum += ds_eps_mse(n, w->eps_hat + ((int64_t)b * nT + j) * n, eps_star + j * n, NULL);
            L.pd_count = (double)B * nT;
        }
        generate_and_fuse(h, B, nT);
        attach_matrices(h, B);
    } else {
        attach_static(h);
    }
    double lm = ds_rwkv7_forward(&h->model, B, T, tokens, w->targets, 1.0f, 0.0f, NULL, NULL, NULL);
    detach_matrices(h);
    L.lm_sum = lm * (double)count;
    L.lm_count = (double)count;
    finish_losses(h, &L);
    if (out) *out = L;
    return L.lm;
}

void ds_hybrid_generate(ds_hybrid *h, int T, const int32_t *tokens, uint64_t seed, uint64_t sample,
                        float *theta_gen) {
    if (h->d.n_targets == 0) return;
    reserve_batch(h, 1, T);
    work_buffers *w = h->work;
    prepare_static(h);
    conditions(h, 1, T, tokens);
    dit_forward(h, 1, h->d.generator == DS_HYBRID_DIRECT ? fixed_noise(h) : NULL, 0, seed, sample);
    generate_and_fuse(h, 1, h->d.n_targets);
    memcpy(theta_gen, w->gen, sizeof(float) * h->d.n_targets * h->n_mat * h->d.model.n_embd * h->d.model.n_embd);
}
