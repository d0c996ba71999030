/* The Part-B hybrid (src/hybrid/README.md): parameter DiT + RWKV-7 with per-sequence fused time-mix
 * weights, forward and backward of a micro-batch. See include/dreamstate/hybrid.h for the model.
 *
 * Work is done one sequence at a time: one DiT call on the 2 x |targets| samples of the sequence
 * (generation path first, then the diffusion-loss path), then the RWKV-7 on that sequence with the
 * fused matrices, then one DiT backward. The RWKV-7 runs with its weight pointers of the targeted
 * matrices swapped to the sequence's fused matrices, and its gradient pointers to per-sequence
 * buffers G (the static weights and their gradient slots stay where they are and are restored after
 * every call), so its forward and backward are used unchanged.
 *
 * Shapes: B sequences of T tokens, C RWKV-7 channels (n_embd), nT targeted layers, n_mat generated
 * matrices per layer (of r, k, v), CC = C C floats of one matrix, r the rank of A2, n_img = n_mat CC
 * (A1) or n_mat C r (A2) floats of one DiT sample, viewed as n_img / 4096 channels of 64 x 64 (TILE);
 * a DiT batch [S, n_img] holds the nT generation rows, then in training the nT diffusion-loss rows;
 * P the prefix, D the DiT's hidden width; k = j n_mat + mi indexes (targeted layer j, matrix mi). */
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
    float *eval_eps;              /* [n_targets, n_img]: eps* of evaluation (drawn once) */
    int have_eval_eps;
    /* one sequence */
    float *e;                     /* [C] condition vector */
    /* attn_prefix, kept from the condition's forward for its backward */
    float *attn_h;                /* [P, C] the prefix's embedding rows h_t */
    float *attn_p;                /* [P] scores, then their softmax */
    float *attn_u;                /* [C] K^T q: score_t = <u, h_t> / sqrt(C) */
    float *attn_hbar;             /* [C] sum_t p_t h_t, so e = V hbar */
    float *attn_dp, *attn_ds;     /* [P] dL/dp, dL/dscore */
    float *attn_dh, *attn_du;     /* [C] dL/dhbar, dL/du */
    float *de, *cond_b_keep;      /* [C] dL/de; [DiT hidden] the DiT's c_embedder bias gradient so far */
    float *noise;                 /* [2 n_targets, n_img]: eps* (generation rows), then eps */
    float *x_in, *eps_hat, *d_eps;/* [2 n_targets, n_img] DiT batch */
    float *x0_hat;                /* [n_targets, n_img] */
    int32_t *t, *labels;          /* [2 n_targets] */
    float *vec;                   /* [2 n_targets, C] */
    uint8_t *vec_null;            /* [2 n_targets] */
    float *gen, *fused, *G;       /* [n_targets, n_mat, C, C] */
    float *lowrank;               /* A2: [C, r] scratch for V */
    double *row_dot;              /* [C] partial sums of the alpha gradient */
    int32_t *targets;             /* [T] targets with positions < prefix unscored */
    int cap_T;
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
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: prefix %d (mean_prefix and attn_prefix need at least 1)", d->prefix);
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

/* The trainable set's table: [DiT | alpha logits | attention pool (attn_prefix) | RWKV-7 (train_static)];
 * *at_model: where the RWKV-7 starts. */
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
    if (d->train_static) {
        ds_rwkv7_param_table(&sub, &d->model);
        ds_param_append(t, "rwkv7.", sub.n, sub.tensors);
        ds_param_table_free(&sub);
    }
}

/* Floats of create's buffers for one sequence besides the models (work_buffers; the + 1s keep empty
 * ones allocatable). */
static double work_floats(const ds_hybrid_dims *d, int n_mat, int64_t n_img) {
    int64_t C = d->model.n_embd, nT = d->n_targets, nm = nT * n_mat, img = nT * n_img, mats = nm * C * C;
    double f = 2.0 * (img + 1)         /* x0, eval_eps */
             + 4.0 * (2 * img + 1)     /* noise, x_in, eps_hat, d_eps */
             + (img + 1)               /* x0_hat */
             + 3.0 * (mats + 1)        /* gen, fused, G */
             + (2 * nT + 1) * (C + 3)  /* vec, t, labels, vec_null */
             + 3.0 * C;                /* e, row_dot (double) */
    if (nT > 0 && d->condition == DS_HYBRID_ATTN_PREFIX) f += (double)d->prefix * (C + 3) + 5.0 * C + d->dit.hidden;
    if (nT > 0 && d->param == DS_HYBRID_LOWRANK) f += (double)(nm + 1) * C * d->rank;  /* U0, lowrank */
    return f;
}

ds_hybrid_sizes ds_hybrid_sizes_of(const ds_hybrid_dims *d, int T) {
    check_dims(d);
    int mats[3], n_mat = generated_matrices(d, mats), C = d->model.n_embd;
    int64_t n_img = image_floats(d, n_mat), at_model;
    ds_dit_dims dd = dit_dims(d, n_img);
    ds_param_table t = {0};
    trainable_table(d, n_mat, &dd, &t, &at_model);
    ds_hybrid_sizes z = {.n_params = t.n_floats, .rwkv7_batch = 1,
                         .flops_per_sequence = ds_rwkv7_flops_per_token(&d->model, T) * T};
    ds_param_table_free(&t);
    if (!d->train_static) {
        ds_rwkv7_param_table(&t, &d->model);
        z.model_floats = 2 * t.n_floats;  /* parameters and their gradient slots */
        ds_param_table_free(&t);
    }
    z.work_floats = work_floats(d, n_mat, n_img);
    if (d->n_targets > 0) {
        int G = dd.input_size / dd.patch_size;
        /* the DiT's position table and its copy of the batch's condition */
        z.work_floats += (double)G * G * dd.hidden + 2.0 * d->n_targets * C;
        z.dit_activation_floats = ds_dit_activation_floats(&dd, 2 * d->n_targets);
        /* about 3x the forward of its 2 samples per targeted layer */
        z.flops_per_sequence += 3.0 * 2 * d->n_targets * ds_dit_forward_flops(&dd);
    }
    return z;
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
    int attn = nT > 0 && d->condition == DS_HYBRID_ATTN_PREFIX;
    ds_param_arrays(&t, NULL, NULL, &h->params, &h->grads);
    ds_param_bind(&t, h->params, &h->w, 0, 0);
    ds_param_bind(&t, h->grads, &h->g, 0, 0);
    h->tensors = ds_param_take(&t, &h->n_tensors, &h->n_params);
    if (nT > 0) ds_dit_create_in(&h->dit, &dd, h->params, h->grads);  /* the DiT's tensors come first */
    if (d->train_static) ds_rwkv7_create_in(&h->model, &d->model, h->params + at_model, h->grads + at_model);
    else ds_rwkv7_create(&h->model, &d->model);
    ds_diffusion_create(&h->sched, d->schedule, DS_DIFFUSION_STEPS);

    work_buffers *w = ds_alloc(sizeof *w);
    h->work = w;
    int64_t nm = (int64_t)nT * h->n_mat, mats = nm * C * C, img = (int64_t)nT * h->n_img;
    w->static_w = ds_alloc(sizeof(float *) * (nm + 1));
    w->static_g = ds_alloc(sizeof(float *) * (nm + 1));
    for (int j = 0; j < nT; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            w->static_w[j * h->n_mat + mi] = *matrix_slot(&h->model.w, d->targets[j], h->mats[mi]);
            w->static_g[j * h->n_mat + mi] = *matrix_slot(&h->model.g, d->targets[j], h->mats[mi]);
        }
    w->mu = ds_alloc(sizeof(double) * (nm + 1));
    w->sd = ds_alloc(sizeof(double) * (nm + 1));
    w->x0 = ds_alloc(sizeof(float) * (img + 1));
    w->eval_eps = ds_alloc(sizeof(float) * (img + 1));
    w->e = ds_alloc(sizeof(float) * C);
    if (attn) {
        int P = d->prefix;
        w->attn_h = ds_alloc(sizeof(float) * P * C);
        w->attn_p = ds_alloc(sizeof(float) * P);
        w->attn_dp = ds_alloc(sizeof(float) * P);
        w->attn_ds = ds_alloc(sizeof(float) * P);
        w->attn_u = ds_alloc(sizeof(float) * C);
        w->attn_hbar = ds_alloc(sizeof(float) * C);
        w->attn_dh = ds_alloc(sizeof(float) * C);
        w->attn_du = ds_alloc(sizeof(float) * C);
        w->de = ds_alloc(sizeof(float) * C);
        w->cond_b_keep = ds_alloc(sizeof(float) * d->dit.hidden);
    }
    w->row_dot = ds_alloc(sizeof(double) * C);
    w->noise = ds_alloc(sizeof(float) * (2 * img + 1));
    w->x_in = ds_alloc(sizeof(float) * (2 * img + 1));
    w->eps_hat = ds_alloc(sizeof(float) * (2 * img + 1));
    w->d_eps = ds_alloc(sizeof(float) * (2 * img + 1));
    w->x0_hat = ds_alloc(sizeof(float) * (img + 1));
    w->t = ds_alloc(sizeof(int32_t) * (2 * nT + 1));
    w->labels = ds_alloc(sizeof(int32_t) * (2 * nT + 1));
    w->vec = ds_alloc(sizeof(float) * (2 * nT + 1) * C);
    w->vec_null = ds_alloc((size_t)(2 * nT + 1));
    w->gen = ds_alloc(sizeof(float) * (mats + 1));
    w->fused = ds_alloc(sizeof(float) * (mats + 1));
    w->G = ds_alloc(sizeof(float) * (mats + 1));
    if (nT > 0 && d->param == DS_HYBRID_LOWRANK) {
        w->lowrank = ds_alloc(sizeof(float) * C * d->rank);
        h->u0 = ds_alloc(sizeof(float) * nm * C * d->rank);
        make_u0(h);
    }
    if (nT > 0) ds_dit_reserve(&h->dit, 2 * nT);
}

void ds_hybrid_destroy(ds_hybrid *h) {
    work_buffers *w = h->work;
    ds_free(w->static_w); ds_free(w->static_g); ds_free(w->mu); ds_free(w->sd); ds_free(w->x0);
    ds_free(w->eval_eps); ds_free(w->e); ds_free(w->row_dot); ds_free(w->noise); ds_free(w->x_in); ds_free(w->eps_hat);
    ds_free(w->d_eps); ds_free(w->x0_hat); ds_free(w->t); ds_free(w->labels); ds_free(w->vec);
    ds_free(w->vec_null); ds_free(w->gen); ds_free(w->fused); ds_free(w->G); ds_free(w->lowrank);
    ds_free(w->targets); ds_free(w->attn_h); ds_free(w->attn_p); ds_free(w->attn_dp); ds_free(w->attn_ds);
    ds_free(w->attn_u); ds_free(w->attn_hbar); ds_free(w->attn_dh); ds_free(w->attn_du); ds_free(w->de);
    ds_free(w->cond_b_keep); ds_free(w);
    if (h->d.n_targets > 0) ds_dit_destroy(&h->dit);
    ds_rwkv7_destroy(&h->model);
    ds_diffusion_destroy(&h->sched);
    ds_free(h->tensors); ds_free(h->params); ds_free(h->grads); ds_free(h->u0);
    memset(h, 0, sizeof *h);
}

void ds_hybrid_init_weights(ds_hybrid *h, uint64_t seed) {
    if (h->d.n_targets == 0) return;
    ds_dit_init_weights(&h->dit, seed);
    float logit = (float)log(h->d.alpha_init / (1.0 - h->d.alpha_init));
    for (int i = 0; i < h->d.n_targets * h->n_mat; i++) h->w.alpha_logit[i] = logit;
    if (h->w.attn_q) {
        int64_t C = h->d.model.n_embd, CC = C * C;
        double sd = 1.0 / sqrt((double)C);
        ds_fill_normal(h->w.attn_q, C, 0.02, seed, ATTN_INIT_STREAM);
        ds_fill_normal(h->w.attn_k, CC, sd, seed, ATTN_INIT_STREAM + 1);
        ds_fill_normal(h->w.attn_v, CC, sd, seed, ATTN_INIT_STREAM + 2);
    }
}

void ds_hybrid_zero_grad(ds_hybrid *h) { memset(h->grads, 0, sizeof(float) * h->n_params); }

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

/* Attention pool over the prefix rows H [P, C]: u = K^T q, p = softmax(H u / sqrt(C)), hbar = H^T p,
 * e = V hbar (= sum_t p_t V h_t, without forming the P values V h_t). Keeps H, p, u, hbar. */
static void attention_pool(ds_hybrid *h, const int32_t *tokens, float *e) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, P = h->d.prefix;
    for (int t = 0; t < P; t++)
        memcpy(w->attn_h + (int64_t)t * C, h->model.w.emb + (int64_t)tokens[t] * C, sizeof(float) * C);
    ds_gemm(0, 0, 1, C, C, 1.0f, h->w.attn_q, C, h->w.attn_k, C, 0.0f, w->attn_u, C);
    ds_gemm(0, 1, 1, P, C, (float)(1.0 / sqrt((double)C)), w->attn_u, C, w->attn_h, C, 0.0f, w->attn_p, P);
    ds_k.softmax_forward(1, P, w->attn_p, w->attn_p);
    ds_gemm(0, 0, 1, C, P, 1.0f, w->attn_p, P, w->attn_h, C, 0.0f, w->attn_hbar, C);
    ds_gemm(0, 1, 1, C, C, 1.0f, w->attn_hbar, C, h->w.attn_v, C, 0.0f, e, C);
}

/* Backward of attention_pool from w->de = dL/de: dV += de hbar^T, dhbar = V^T de, dp = H dhbar,
 * dscore = softmax backward, du = H^T dscore / sqrt(C), dK += q du^T, dq += K du. */
static void attention_pool_backward(ds_hybrid *h) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, P = h->d.prefix;
    ds_gemm(1, 0, C, C, 1, 1.0f, w->de, C, w->attn_hbar, C, 1.0f, h->g.attn_v, C);
    ds_gemm(0, 0, 1, C, C, 1.0f, w->de, C, h->w.attn_v, C, 0.0f, w->attn_dh, C);
    ds_gemm(0, 1, 1, P, C, 1.0f, w->attn_dh, C, w->attn_h, C, 0.0f, w->attn_dp, P);
    memset(w->attn_ds, 0, sizeof(float) * P);  /* softmax_backward accumulates */
    ds_k.softmax_backward(1, P, w->attn_p, w->attn_dp, w->attn_ds);
    ds_gemm(0, 0, 1, C, P, (float)(1.0 / sqrt((double)C)), w->attn_ds, P, w->attn_h, C, 0.0f, w->attn_du, C);
    ds_gemm(1, 0, C, C, 1, 1.0f, h->w.attn_q, C, w->attn_du, C, 1.0f, h->g.attn_k, C);
    ds_gemm(0, 1, 1, C, C, 1.0f, w->attn_du, C, h->w.attn_k, C, 1.0f, h->g.attn_q, C);
}

/* e = emb[tok_0] (first_token), the mean of emb[tok_t], t < prefix (mean_prefix), or their attention
 * pool (attn_prefix). */
static void condition_vector(ds_hybrid *h, int T, const int32_t *tokens, float *e) {
    int C = h->d.model.n_embd, V = h->d.model.vocab_size;
    int n = h->d.condition == DS_HYBRID_FIRST_TOKEN ? 1 : h->d.prefix;
    if (n > T) ds_die(DS_EXIT_BAD_INPUT, "hybrid: the condition pools %d tokens of a sequence of %d", n, T);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= V) ds_die(DS_EXIT_BAD_INPUT, "token id %d out of range [0, %d)", tokens[t], V);
    if (h->d.condition == DS_HYBRID_ATTN_PREFIX) {
        attention_pool(h, tokens, e);
        return;
    }
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int t = 0; t < n; t++) s += h->model.w.emb[(int64_t)tokens[t] * C + c];
        e[c] = (float)(s / n);
    }
}

/* DiT backward of one sequence; with attn_prefix also dL/de into the pool. The DiT does not return
 * the gradient of its condition vector, but every undropped sample of the call carries the same e,
 * so dL/de = W_c^T sum(dL/dy over those samples) = W_c^T (the c_embedder bias gradient of this call):
 * that gradient is collected alone (the running one set aside and added back). */
static void dit_backward(ds_hybrid *h) {
    work_buffers *w = h->work;
    if (h->d.condition != DS_HYBRID_ATTN_PREFIX) {
        ds_dit_backward_from(&h->dit, w->d_eps, NULL, NULL);
        return;
    }
    int D = h->dit.d.hidden, C = h->d.model.n_embd;
    float *db = h->dit.g.cond_b;
    memcpy(w->cond_b_keep, db, sizeof(float) * D);
    memset(db, 0, sizeof(float) * D);
    ds_dit_backward_from(&h->dit, w->d_eps, NULL, NULL);
    ds_gemm(0, 0, 1, C, D, 1.0f, db, D, h->dit.w.cond_w, C, 0.0f, w->de, C);
    ds_k.axpy(D, 1.0f, w->cond_b_keep, db);
    attention_pool_backward(h);
}

/* ---------------------------------------------------------------- one sequence */

/* DiT forward of one sequence: samples 0..nT-1 are the generation path at t* with eps_star [nT, n_img];
 * with_diffusion adds samples nT..2nT-1, the diffusion-loss path with the draws of (seed, sample),
 * whose eps go to noise rows nT.. . */
static void dit_forward(ds_hybrid *h, const float *e, const float *eps_star, int with_diffusion, uint64_t seed,
                       uint64_t sample) {
    work_buffers *w = h->work;
    int nT = h->d.n_targets, C = h->d.model.n_embd, S = with_diffusion ? 2 * nT : nT;
    int64_t n = h->n_img;
    for (int s = 0; s < S; s++) {
        int j = s % nT, drop = 0;
        w->t[s] = h->d.t_star;
        if (s >= nT) ds_hybrid_draw(h, seed, sample, j, &w->t[s], &drop, w->noise + s * n, NULL);
        w->labels[s] = j;
        w->vec_null[s] = (uint8_t)drop;
        memcpy(w->vec + (int64_t)s * C, e, sizeof(float) * C);
        ds_q_sample(&h->sched, 1, n, &w->t[s], w->x0 + j * n, s < nT ? eps_star + j * n : w->noise + s * n,
                    w->x_in + s * n);
    }
    ds_dit_cond cond = {w->labels, w->vec, w->vec_null};
    ds_dit_forward(&h->dit, S, w->x_in, w->t, &cond, NULL, w->eps_hat);
}

/* theta_gen of every targeted matrix from the generation rows of the last DiT forward, and the fused
 * theta = alpha theta_static + (1 - alpha) theta_gen. */
static void generate_and_fuse(ds_hybrid *h) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, r = h->d.rank;
    int64_t n = h->n_img, CC = (int64_t)C * C;
    ds_predict_x0(&h->sched, h->d.t_star, h->d.n_targets * n, w->x_in, w->eps_hat, w->x0_hat);
    for (int j = 0; j < h->d.n_targets; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            int k = j * h->n_mat + mi;
            const float *W = w->static_w[k];
            float *gen = w->gen + k * CC, *fused = w->fused + k * CC;
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
            float a = (float)alpha_of(h, k), b = 1.0f - a;
#pragma omp parallel for schedule(static) if (CC >= PARALLEL_MIN)
            for (int64_t i = 0; i < CC; i++) fused[i] = a * W[i] + b * gen[i];
        }
}

/* Points the model's targeted matrices at the fused ones and their gradients at G (swap = 1), or back
 * at the static weights and their gradient slots (swap = 0). */
static void swap_matrices(ds_hybrid *h, int swap) {
    work_buffers *w = h->work;
    int64_t CC = (int64_t)h->d.model.n_embd * h->d.model.n_embd;
    for (int j = 0; j < h->d.n_targets; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            int k = j * h->n_mat + mi, l = h->d.targets[j], mat = h->mats[mi];
            *matrix_slot(&h->model.w, l, mat) = swap ? w->fused + k * CC : w->static_w[k];
            *matrix_slot(&h->model.g, l, mat) = swap ? w->G + k * CC : w->static_g[k];
        }
}

/* From G = dL/d(theta) of every targeted matrix: the alpha-logit gradient, the static weights' share
 * (train_static) and dL/d(eps_hat) of the generation rows of the DiT batch (into d_eps). */
static void generation_backward(ds_hybrid *h) {
    work_buffers *w = h->work;
    int C = h->d.model.n_embd, r = h->d.rank;
    int64_t n = h->n_img, CC = (int64_t)C * C;
    double ab = h->sched.alphas_cumprod[h->d.t_star];
    float ce = (float)-sqrt((1.0 - ab) / ab);  /* d x0_hat / d eps_hat */
    for (int j = 0; j < h->d.n_targets; j++)
        for (int mi = 0; mi < h->n_mat; mi++) {
            int k = j * h->n_mat + mi;
            const float *W = w->static_w[k], *gen = w->gen + k * CC, *G = w->G + k * CC;
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
            float *d = w->d_eps + j * n;
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

/* targets of one sequence with positions < prefix unscored, into w->targets; returns the count. */
static int64_t scored_targets(ds_hybrid *h, int T, const int32_t *targets) {
    work_buffers *w = h->work;
    if (T > w->cap_T) {
        ds_free(w->targets);
        w->targets = ds_alloc(sizeof(int32_t) * T);
        w->cap_T = T;
    }
    int64_t count = 0;
    for (int t = 0; t < T; t++) {
        w->targets[t] = t < h->d.prefix ? -1 : targets[t];
        count += w->targets[t] >= 0;
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
                                  uint64_t seed, uint64_t first_sample, float loss_scale, ds_hybrid_losses *out) {
    check_batch(h, B, T);
    work_buffers *w = h->work;
    int nT = h->d.n_targets;
    int64_t n = h->n_img, mats = (int64_t)nT * h->n_mat * h->d.model.n_embd * h->d.model.n_embd;
    ds_hybrid_losses L = {0};
    int64_t count = 0;
    for (int b = 0; b < B; b++) count += scored_targets(h, T, targets + (int64_t)b * T);
    if (nT > 0) prepare_static(h);
    /* scales in double: a batch split into micro-batches gives the same per-sequence factors */
    double pd_scale = (double)loss_scale * h->d.lambda_pd / ((double)B * nT);
    for (int b = 0; b < B; b++) {
        const int32_t *tok = tokens + (int64_t)b * T;
        uint64_t sample = first_sample + (uint64_t)b;
        int64_t count_b = scored_targets(h, T, targets + (int64_t)b * T);
        double lm_scale = count > 0 ? (double)loss_scale * h->d.lambda_lm * count_b / count : 0.0;
        if (nT > 0) {
            condition_vector(h, T, tok, w->e);
            for (int j = 0; j < nT; j++) ds_hybrid_draw(h, seed, sample, j, NULL, NULL, NULL, w->noise + j * n);
            dit_forward(h, w->e, w->noise, 1, seed, sample);
            for (int j = 0; j < nT; j++) {
                int64_t s = (int64_t)(nT + j) * n;
                L.pd_sum += ds_eps_mse(n, w->eps_hat + s, w->noise + s, w->d_eps + s);
                ds_k.scale(n, w->d_eps + s, (float)pd_scale);
            }
            L.pd_count += nT;
            generate_and_fuse(h);
            swap_matrices(h, 1);
            memset(w->G, 0, sizeof(float) * mats);
        }
        double lm = ds_rwkv7_forward(&h->model, 1, T, tok, w->targets, (float)lm_scale, h->d.l2wrap, NULL, NULL, NULL);
        L.lm_sum += lm * (double)count_b;
        if (lm_scale != 0) ds_rwkv7_backward(&h->model);
        if (nT > 0) {
            swap_matrices(h, 0);
            generation_backward(h);  /* G = 0 without an LM gradient: the generation rows get 0 */
            dit_backward(h);
        }
    }
    L.lm_count = (double)count;
    finish_losses(h, &L);
    if (out) *out = L;
    return L.total;
}

double ds_hybrid_eval(ds_hybrid *h, int B, int T, const int32_t *tokens, const int32_t *targets,
                      ds_hybrid_losses *out) {
    check_batch(h, B, T);
    work_buffers *w = h->work;
    int nT = h->d.n_targets;
    int64_t n = h->n_img;
    ds_hybrid_losses L = {0};
    if (nT > 0) {
        prepare_static(h);
        if (!w->have_eval_eps)
            for (int j = 0; j < nT; j++) ds_hybrid_draw(h, DS_HYBRID_EVAL_SEED, 0, j, NULL, NULL, NULL, w->eval_eps + j * n);
        w->have_eval_eps = 1;
    }
    for (int b = 0; b < B; b++) {
        const int32_t *tok = tokens + (int64_t)b * T;
        int64_t count_b = scored_targets(h, T, targets + (int64_t)b * T);
        if (nT > 0) {
            condition_vector(h, T, tok, w->e);
            dit_forward(h, w->e, w->eval_eps, 0, 0, 0);
            for (int j = 0; j < nT; j++) L.pd_sum += ds_eps_mse(n, w->eps_hat + j * n, w->eval_eps + j * n, NULL);
            L.pd_count += nT;
            generate_and_fuse(h);
            swap_matrices(h, 1);
        }
        double lm = ds_rwkv7_forward(&h->model, 1, T, tok, w->targets, 1.0f, 0.0f, NULL, NULL, NULL);
        if (nT > 0) swap_matrices(h, 0);
        L.lm_sum += lm * (double)count_b;
        L.lm_count += (double)count_b;
    }
    finish_losses(h, &L);
    if (out) *out = L;
    return L.lm;
}

void ds_hybrid_generate(ds_hybrid *h, int T, const int32_t *tokens, uint64_t seed, uint64_t sample,
                        float *theta_gen) {
    if (h->d.n_targets == 0) return;
    work_buffers *w = h->work;
    int64_t n = h->n_img;
    prepare_static(h);
    condition_vector(h, T, tokens, w->e);
    for (int j = 0; j < h->d.n_targets; j++) ds_hybrid_draw(h, seed, sample, j, NULL, NULL, NULL, w->noise + j * n);
    dit_forward(h, w->e, w->noise, 0, 0, 0);
    generate_and_fuse(h);
    memcpy(theta_gen, w->gen, sizeof(float) * h->d.n_targets * h->n_mat * h->d.model.n_embd * h->d.model.n_embd);
}
