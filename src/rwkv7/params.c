/* RWKV-7 parameter table (official key names and shapes, src/rwkv7/README.md §5), pointer binding, LoRA ranks,
 * and the official initialisation (src/rwkv7/README.md §4.1).
 *
 * Shapes: C channels (n_embd), H heads = C / N, N head size (64), V vocabulary, L layers; Dw, Da, Dv,
 * Dg the LoRA ranks. Projections are [out, in] as in torch.nn.Linear (applied as x W^T), LoRA halves
 * [in, out] (x A), token-shift mixes and the other per-channel vectors [1, 1, C] or [C]. */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/rwkv7.h"

#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int round32(double x) {
    int r = 32 * (int)nearbyint(x / 32.0);  /* nearbyint rounds half to even, like Python's round */
    return r < 32 ? 32 : r;
}

void ds_rwkv7_default_ranks(ds_rwkv7_dims *d, const char *formula) {
    double C = d->n_embd, s = sqrt(C);
    int current = formula && strcmp(formula, "current") == 0;
    if (d->dim_w <= 0) d->dim_w = round32((current ? 2.5 : 1.8) * s);
    if (d->dim_a <= 0) d->dim_a = round32((current ? 2.5 : 1.8) * s);
    if (d->dim_v <= 0) d->dim_v = round32((current ? 1.7 : 1.3) * s);
    if (d->dim_g <= 0) d->dim_g = round32(current ? 5.0 * s : 0.6 * pow(C, 0.8));
}

#define GLOBAL(field) -1, offsetof(ds_rwkv7_weights, field)
#define LAYER(field) l, offsetof(ds_rwkv7_layer, field)

void ds_rwkv7_param_table(ds_param_table *t, const ds_rwkv7_dims *d) {
    int64_t C = d->n_embd, H = C / DS_HEAD_SIZE, V = d->vocab_size;
    ds_param_add(t, GLOBAL(emb), 2, (int64_t[]){V, C}, "emb.weight");
    ds_param_add(t, GLOBAL(ln0_w), 1, &C, "blocks.0.ln0.weight");
    ds_param_add(t, GLOBAL(ln0_b), 1, &C, "blocks.0.ln0.bias");
    for (int l = 0; l < d->n_layer; l++) {
#define VEC(field, key) ds_param_add(t, LAYER(field), 1, &C, "blocks.%d." key, l)
#define MIX(field, key) ds_param_add(t, LAYER(field), 3, (int64_t[]){1, 1, C}, "blocks.%d." key, l)
#define MAT(field, key, r, c) ds_param_add(t, LAYER(field), 2, (int64_t[]){r, c}, "blocks.%d." key, l)
        VEC(ln1_w, "ln1.weight"); VEC(ln1_b, "ln1.bias");
        VEC(ln2_w, "ln2.weight"); VEC(ln2_b, "ln2.bias");
        MIX(x_r, "att.x_r"); MIX(x_w, "att.x_w"); MIX(x_k, "att.x_k");
        MIX(x_v, "att.x_v"); MIX(x_a, "att.x_a"); MIX(x_g, "att.x_g");
        MIX(w0, "att.w0")->lr_scale = 2.0f; MAT(w1, "att.w1", C, d->dim_w); MAT(w2, "att.w2", d->dim_w, C);
        MIX(a0, "att.a0"); MAT(a1, "att.a1", C, d->dim_a); MAT(a2, "att.a2", d->dim_a, C);
        MIX(v0, "att.v0"); MAT(v1, "att.v1", C, d->dim_v); MAT(v2, "att.v2", d->dim_v, C);
        MAT(g1, "att.g1", C, d->dim_g); MAT(g2, "att.g2", d->dim_g, C);
        MIX(k_k, "att.k_k"); MIX(k_a, "att.k_a"); MAT(r_k, "att.r_k", H, DS_HEAD_SIZE);
        MAT(Wr, "att.receptance.weight", C, C); MAT(Wk, "att.key.weight", C, C);
        MAT(Wv, "att.value.weight", C, C); MAT(Wo, "att.output.weight", C, C);
        VEC(lnx_w, "att.ln_x.weight"); VEC(lnx_b, "att.ln_x.bias");
        MIX(ffn_x_k, "ffn.x_k"); MAT(Kf, "ffn.key.weight", 4 * C, C); MAT(Vf, "ffn.value.weight", C, 4 * C);
#undef VEC
#undef MIX
#undef MAT
    }
    ds_param_add(t, GLOBAL(ln_out_w), 1, &C, "ln_out.weight");
    ds_param_add(t, GLOBAL(ln_out_b), 1, &C, "ln_out.bias");
    ds_param_add(t, GLOBAL(head), 2, (int64_t[]){V, C}, "head.weight");
}

void ds_rwkv7_create_in(ds_rwkv7 *m, const ds_rwkv7_dims *d, float *params, float *grads) {
    memset(m, 0, sizeof *m);
    m->d = *d;
    ds_param_table t = {0};
    ds_rwkv7_param_table(&t, d);
    m->external = ds_param_arrays(&t, params, grads, &m->params, &m->grads);
    m->w.layers = ds_param_bind(&t, m->params, &m->w, d->n_layer, sizeof(ds_rwkv7_layer));
    m->g.layers = ds_param_bind(&t, m->grads, &m->g, d->n_layer, sizeof(ds_rwkv7_layer));
    m->tensors = ds_param_take(&t, &m->n_tensors, &m->n_params);
    /* layer l's tensors run from its ln1.weight to the next layer's; ln_out and the head follow */
    m->layer_begin = ds_alloc(sizeof(int64_t) * (d->n_layer + 1));
    char name[64];
    for (int l = 0; l < d->n_layer; l++) {
        snprintf(name, sizeof name, "blocks.%d.ln1.weight", l);
        m->layer_begin[l] = ds_param_find(m->n_tensors, m->tensors, name)->offset;
    }
    m->layer_begin[d->n_layer] = ds_param_find(m->n_tensors, m->tensors, "ln_out.weight")->offset;
}

void ds_rwkv7_create(ds_rwkv7 *m, const ds_rwkv7_dims *d) { ds_rwkv7_create_in(m, d, NULL, NULL); }

void ds_rwkv7_zero_grad(ds_rwkv7 *m) { ds_zero_floats(m->grads, m->n_params); }

/* ---- initialisation ---- */

/* Orthogonal init with PyTorch orthogonal_ semantics up to the random draw: the smaller dimension is
 * orthonormal, times gain. Gaussian fill, then CholeskyQR in double precision: W <- W R^-1 with
 * W^T W = R^T R, which leaves |W^T W - I| ~ cond(W)^2 x 1e-16. A square Gaussian matrix can have
 * condition number ~1e4, so it takes a second round (CholeskyQR2; fp32 could not hold its square); one
 * with at least 4x more rows than columns has cond <= ~3 (Marchenko-Pastur), so one round is already
 * orthonormal far below fp32's resolution (the same Q, the QR factor with positive diagonal R, to
 * double rounding). All of it is blocked on BLIS (Gram by SYRK, Cholesky, TRSM). */
typedef struct {
    float *W;
    int rows, cols;  /* of W */
    float gain;
    uint64_t stream;
} orthogonal_matrix;

/* Q is r x c with orthonormal columns: W's taller side */
static int64_t q_rows(const orthogonal_matrix *o) { return o->rows >= o->cols ? o->rows : o->cols; }
static int64_t q_cols(const orthogonal_matrix *o) { return o->rows >= o->cols ? o->cols : o->rows; }
static int cholesky_qr_rounds(const orthogonal_matrix *o) { return q_rows(o) >= 4 * q_cols(o) ? 1 : 2; }

static double orthogonal_flops(const orthogonal_matrix *o) {
    double r = (double)q_rows(o), c = (double)q_cols(o);
    return cholesky_qr_rounds(o) * (2 * r * c * c + c * c * c / 3);  /* SYRK + TRSM + Cholesky */
}

/* Element loops start OpenMP threads only above this size. */
#define PARALLEL_MIN ((int64_t)1 << 15)

/* Q (r x c doubles) and R (c x c) are scratch; threads: those of the fill and of BLIS (1 when called
 * from inside a parallel region). Every draw is counter-based and BLIS's result does not depend on its
 * threads, so neither does W. */
static void init_orthogonal(const orthogonal_matrix *o, uint64_t seed, double *Q, double *R, int threads) {
    int tall = o->rows >= o->cols, cols = o->cols;
    int64_t r = q_rows(o), c = q_cols(o), n = r * c;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += PARALLEL_MIN)
        ds_rng_normals(Q + i, n - i < PARALLEL_MIN ? n - i : PARALLEL_MIN, seed, o->stream, (uint64_t)i);
    for (int round = 0; round < cholesky_qr_rounds(o); round++) {
        ds_dgram_upper((int)r, (int)c, Q, R, threads);
        if (ds_dcholesky_upper((int)c, R, threads) != 0)
            ds_die(DS_EXIT_FAIL, "orthogonal init: Gram matrix not positive definite");
        ds_dtrsm_right_upper((int)r, (int)c, R, Q, threads);
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && n >= PARALLEL_MIN)
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) {
            float q = (float)(o->gain * Q[i * c + j]);
            if (tall) o->W[i * cols + j] = q;
            else o->W[j * cols + i] = q;
        }
}

static int by_flops_descending(const void *a, const void *b) {
    double fa = orthogonal_flops(a), fb = orthogonal_flops(b);
    return fa < fb ? 1 : fa > fb ? -1 : 0;
}

static int64_t scratch_doubles(const orthogonal_matrix *o) { return q_rows(o) * q_cols(o) + q_cols(o) * q_cols(o); }

/* The matrices are independent: each thread takes whole matrices, largest first, each on one BLIS
 * thread, so no thread waits on another inside BLIS. A matrix larger than an equal share of all the
 * work (the head of a large vocabulary on many cores) would be the critical path: it goes first, on
 * all threads. Each thread's scratch (Q and R of its largest matrix) is a slice of `pool` when the pool
 * holds one per thread, else memory of its own. */
static void init_orthogonal_all(orthogonal_matrix *mats, int n, uint64_t seed, float *pool, int64_t pool_floats) {
    if (n == 0) return;
    qsort(mats, n, sizeof *mats, by_flops_descending);
    int threads = ds_blas_threads(), first = 0;
    double total = 0;
    int64_t slice = 0;
    for (int i = 0; i < n; i++) {
        total += orthogonal_flops(&mats[i]);
        if (scratch_doubles(&mats[i]) > slice) slice = scratch_doubles(&mats[i]);
    }
    slice = (slice + 7) & ~(int64_t)7;  /* 64-byte aligned slices */
    int pooled = pool && (int64_t)threads * slice * 2 <= pool_floats;
    double *scratch = pooled ? (double *)pool : ds_alloc(sizeof(double) * threads * slice);
    if (threads > 1 && orthogonal_flops(&mats[0]) * threads > total) {
        init_orthogonal(&mats[0], seed, scratch, scratch + q_rows(&mats[0]) * q_cols(&mats[0]), threads);
        first = 1;
    }
    int64_t *used = ds_alloc(sizeof(int64_t) * threads);  /* doubles of each slice written */
    used[0] = first ? scratch_doubles(&mats[0]) : 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int i = first; i < n; i++) {
        int t = omp_get_thread_num();
        double *q = scratch + slice * t;
        init_orthogonal(&mats[i], seed, q, q + q_rows(&mats[i]) * q_cols(&mats[i]), 1);
        if (scratch_doubles(&mats[i]) > used[t]) used[t] = scratch_doubles(&mats[i]);
    }
    /* the pool is a gradient buffer: hand it back zeroed (only what was touched: the rest is zero pages) */
    for (int t = 0; pooled && t < threads; t++) ds_zero_floats(pool + 2 * slice * t, 2 * used[t]);
    if (!pooled) ds_free(scratch);
    ds_free(used);
}

void ds_rwkv7_init_weights(ds_rwkv7 *m, uint64_t seed) {
    const ds_rwkv7_dims *d = &m->d;
    int C = d->n_embd, L = d->n_layer, V = d->vocab_size, H = C / DS_HEAD_SIZE;
    ds_zero_floats(m->params, m->n_params);
    uint64_t stream = 0;
    orthogonal_matrix *mats = ds_alloc(sizeof(orthogonal_matrix) * (8 * L + 1));
    int n_mats = 0;
#pragma omp parallel for schedule(static) if ((int64_t)V * C >= PARALLEL_MIN)
    for (int64_t i = 0; i < (int64_t)V * C; i++)
        m->w.emb[i] = (float)(2e-4 * ds_rng_uniform(seed, stream, i) - 1e-4);
    for (int c = 0; c < C; c++) m->w.ln0_w[c] = m->w.ln_out_w[c] = 1.0f;
    for (int l = 0; l < L; l++) {
        ds_rwkv7_layer *p = &m->w.layers[l];
        double r01 = L > 1 ? (double)l / (L - 1) : 0.0, r10 = 1.0 - (double)l / L;
        for (int c = 0; c < C; c++) {
            double ddd = (double)c / C, linear = (double)c / (C - 1) - 0.5;
            double zz = ((c % DS_HEAD_SIZE) - 31.5) / 31.5, zigzag = zz * fabs(zz);
            double www = -6.0 + 6.0 * pow((double)c / (C - 1), 1.0 + pow(r01, 0.3));
            p->x_r[c] = (float)(1.0 - pow(ddd, 0.2 * r10));
            p->x_w[c] = (float)(1.0 - pow(ddd, 0.9 * r10));
            p->x_k[c] = (float)(1.0 - pow(ddd, 0.7 * r10));
            p->x_v[c] = (float)(1.0 - pow(ddd, 0.7 * r10));
            p->x_a[c] = (float)(1.0 - pow(ddd, 0.9 * r10));
            p->x_g[c] = (float)(1.0 - pow(ddd, 0.2 * r10));
            p->w0[c] = (float)(www + 0.5 + 2.5 * zigzag);
            p->a0[c] = (float)(-0.19 + 0.3 * zigzag + 0.4 * linear);
            p->v0[c] = (float)(0.73 - 0.4 * linear);
            p->k_k[c] = (float)(0.71 - 0.1 * linear);
            p->k_a[c] = 1.02f;
            p->lnx_w[c] = (float)pow((1.0 + l) / L, 0.7);
            p->ffn_x_k[c] = (float)(1.0 - pow(ddd, pow(r10, 4)));
            p->ln1_w[c] = p->ln2_w[c] = 1.0f;
        }
        for (int i = 0; i < H * DS_HEAD_SIZE; i++) p->r_k[i] = -0.04f;
        /* w1, a1, v1, g1, att.output, ffn.value stay zero */
        orthogonal_matrix *o = mats + n_mats;
        o[0] = (orthogonal_matrix){p->w2, d->dim_w, C, 0.1f, ++stream};
        o[1] = (orthogonal_matrix){p->a2, d->dim_a, C, 0.1f, ++stream};
        o[2] = (orthogonal_matrix){p->v2, d->dim_v, C, 0.1f, ++stream};
        o[3] = (orthogonal_matrix){p->g2, d->dim_g, C, 0.1f, ++stream};
        o[4] = (orthogonal_matrix){p->Wr, C, C, 1.0f, ++stream};
        o[5] = (orthogonal_matrix){p->Wk, C, C, 0.1f, ++stream};
        o[6] = (orthogonal_matrix){p->Wv, C, C, 1.0f, ++stream};
        o[7] = (orthogonal_matrix){p->Kf, 4 * C, C, 1.0f, ++stream};
        n_mats += 8;
    }
    mats[n_mats++] = (orthogonal_matrix){m->w.head, V, C, V > C ? 0.5f * sqrtf((float)V / C) : 0.5f, ++stream};
    /* a frozen model's gradients are never written: its scratch is memory of its own, given back after */
    init_orthogonal_all(mats, n_mats, seed, m->frozen ? NULL : m->grads, m->n_params);
    ds_free(mats);
}
