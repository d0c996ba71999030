/* Hybrid (src/hybrid/README.md §1, §7.2, §7.3) tests: the loss terms and every gradient of a micro-batch against
 * the independent PyTorch float64 reference tests/ref/hybrid_torch.py (A1 first-token, A2 low-rank,
 * A1 mean-prefix, fixed alpha with frozen static weights, and A1 attention-pooled prefix), central
 * differences of the float32 loss, the causality guard of both prefix conditions, batch-split
 * invariance (to fp32 rounding), determinism, frozen static weights, evaluation against a hand-fused
 * model, the static baseline against the plain RWKV-7, the trainable-set table, the config mapping
 * and bad input. With `--bench C L T B HIDDEN DEPTH PATCH TARGETS` it times one micro-batch instead. */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/hybrid.h"
#include "dreamstate/kernels.h"
#include "dreamstate/weights.h"
#include "test.h"

#include <libgen.h>
#include <omp.h>
#include <string.h>

enum { B = 2, T = 16 };
static char ref_script[1024];

typedef struct {
    const char *tag;
    ds_hybrid_param param;
    ds_hybrid_condition condition;
    int prefix, matrices, n_targets, first_target, learn_alpha, train_static;
    float loss_scale;
    ds_hybrid_generator generator;  /* DIRECT: lambda_pd 0 */
    int restricted;                 /* train_static only for the generated matrices (n_static_layers) */
    int shuffled;                   /* the comparison reads sequence b's condition from sequence b + 1 */
} test_case;

static const test_case cases[] = {
    {"A1 first_token rkv", DS_HYBRID_FULL, DS_HYBRID_FIRST_TOKEN, 3, 7, 2, 0, 1, 1, 1.0f, DS_HYBRID_DIFFUSION, 0, 0},
    {"A2 rank 32 kv", DS_HYBRID_LOWRANK, DS_HYBRID_FIRST_TOKEN, 2, 6, 2, 0, 1, 1, 0.5f, DS_HYBRID_DIFFUSION, 0, 0},
    {"A1 mean_prefix rv", DS_HYBRID_FULL, DS_HYBRID_MEAN_PREFIX, 5, 5, 2, 0, 1, 1, 1.0f, DS_HYBRID_DIFFUSION, 0, 0},
    {"A1 k, fixed alpha, frozen static", DS_HYBRID_FULL, DS_HYBRID_FIRST_TOKEN, 1, 2, 1, 1, 0, 0, 1.0f,
     DS_HYBRID_DIFFUSION, 0, 0},
    {"A1 attn_prefix rk", DS_HYBRID_FULL, DS_HYBRID_ATTN_PREFIX, 6, 3, 2, 0, 1, 1, 0.5f, DS_HYBRID_DIFFUSION, 0, 0},
    {"A1 direct rkv", DS_HYBRID_FULL, DS_HYBRID_FIRST_TOKEN, 3, 7, 2, 0, 1, 1, 1.0f, DS_HYBRID_DIRECT, 0, 0},
    {"A1 ln_out_prefix kv, shuffled condition", DS_HYBRID_FULL, DS_HYBRID_LN_OUT_PREFIX, 5, 6, 2, 0, 1, 1, 0.5f,
     DS_HYBRID_DIFFUSION, 0, 1},
    {"A2 direct ln_out_prefix rv, restricted static", DS_HYBRID_LOWRANK, DS_HYBRID_LN_OUT_PREFIX, 4, 5, 1, 1, 1, 1, 1.0f,
     DS_HYBRID_DIRECT, 1, 0},
};
enum { CASE_MEAN_PREFIX = 2, CASE_ATTN_PREFIX = 4, CASE_DIRECT = 5, CASE_LN_OUT = 6, CASE_RESTRICTED = 7 };
enum { N_CASES = sizeof cases / sizeof cases[0] };

static const ds_param_tensor *find(const ds_hybrid *h, const char *name) {
    return ds_param_find(h->n_tensors, h->tensors, name);
}

static ds_hybrid_dims small_dims(const test_case *tc) {
    ds_hybrid_dims d = {.model = {.n_layer = 2, .n_embd = 128, .vocab_size = 256}, .n_targets = tc->n_targets,
                        .matrices = tc->matrices, .param = tc->param, .rank = 32, .u0_seed = DS_HYBRID_U0_SEED,
                        .condition = tc->condition, .prefix = tc->prefix, .learn_alpha = tc->learn_alpha,
                        .alpha_init = 0.9, .alpha_lr_scale = 10, .lambda_lm = 1,
                        .lambda_pd = tc->generator == DS_HYBRID_DIRECT ? 0 : 0.1, .t_star = 199,
                        .p_uncond = 0.5, .schedule = DS_SCHEDULE_LINEAR, .train_static = tc->train_static,
                        .l2wrap = 1e-4f, .generator = tc->generator,
                        .dit = {.hidden = 32, .depth = 1, .heads = 2, .patch_size = 16, .mlp_ratio = 4}};
    ds_rwkv7_default_ranks(&d.model, "released");
    for (int j = 0; j < tc->n_targets; j++) d.targets[j] = tc->first_target + j;
    if (tc->restricted) {
        d.n_static_layers = tc->n_targets;
        memcpy(d.static_layers, d.targets, sizeof(int) * tc->n_targets);
        d.static_matrices = tc->matrices;
    }
    return d;
}

/* The DiT and RWKV-7 initialisations (src/dit/README.md §1.5, src/rwkv7/README.md §4.1), then every weight moved by noise so that no gradient path is zero
 * (adaLN-Zero, att.output, ffn.value, LoRA halves) and the alpha logits differ per (layer, matrix); the
 * attention query grows to about 30 per entry, so that the pool's scores spread over a few units and
 * its softmax is far from uniform (with the 0.02 init it would be almost exactly the mean). */
static void make_hybrid(ds_hybrid *h, const ds_hybrid_dims *d, uint64_t seed) {
    ds_hybrid_create(h, d);
    ds_rwkv7_init_weights(&h->model, seed);
    for (int64_t i = 0; i < h->model.n_params; i++) h->model.params[i] += 0.05f * (float)ds_rng_normal(seed, 903, i);
    ds_hybrid_init_weights(h, seed);  /* after the RWKV-7: restricted static weights are copied from it */
    if (d->n_targets > 0) {
        for (int64_t i = 0; i < h->dit.n_params; i++) h->dit.params[i] += 0.05f * (float)ds_rng_normal(seed, 901, i);
        for (int k = 0; k < d->n_targets * h->n_mat; k++) h->w.alpha_logit[k] += 0.3f * (float)ds_rng_normal(seed, 902, k);
    }
    if (h->w.attn_q)
        for (int c = 0; c < d->model.n_embd; c++) h->w.attn_q[c] += 30.0f * (float)ds_rng_normal(seed, 904, c);
}

static void make_batch(int32_t *tok, int32_t *tgt, int V, uint64_t seed, int hole) {
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int32_t)(ds_rng_u64(seed, 1, i) % V);
        tgt[i] = (int32_t)(ds_rng_u64(seed, 2, i) % V);
    }
    if (hole) tgt[T - 2] = -1;  /* an ignored position inside the scored range */
}

/* What most tests start from: the hybrid of case tc made with `seed` (dims into *d) and a batch made
 * with seed + 1. */
static void setup(ds_hybrid *h, ds_hybrid_dims *d, const test_case *tc, uint64_t seed, int32_t *tok, int32_t *tgt,
                  int hole) {
    *d = small_dims(tc);
    make_hybrid(h, d, seed);
    make_batch(tok, tgt, d->model.vocab_size, seed + 1, hole);
}

/* Targets [B, T] of the positions < prefix set to -1 (ignored), as the hybrid scores them. */
static void unscore_prefix(int32_t *tgt, int prefix) {
    for (int i = 0; i < B * T; i++)
        if (i % T < prefix) tgt[i] = -1;
}

/* cond [B, T]: sequence b's condition read from sequence b + 1 (mod B), as hybrid.shuffle_condition does. */
static void shifted_tokens(const int32_t *tok, int32_t *cond) {
    for (int b = 0; b < B; b++) memcpy(cond + b * T, tok + ((b + 1) % B) * T, sizeof(int32_t) * T);
}

/* ---------------------------------------------------------------- PyTorch comparison */

static void dump_f32(FILE *f, const char *name, int ndim, const int64_t *shape, const float *x) {
    test_dump_tensor(f, name, ndim, shape, 0, x);
}

static void write_dump(const char *path, ds_hybrid *h, const test_case *tc, const int32_t *tok, const int32_t *tgt,
                       const int32_t *cond, uint64_t seed, const ds_hybrid_losses *L) {
    const ds_hybrid_dims *d = &h->d;
    FILE *f = fopen(path, "wb");
    fwrite("DSDUMP01", 1, 8, f);
    int32_t config[24] = {d->model.n_layer, d->model.n_embd, d->model.vocab_size, d->model.dim_w, d->model.dim_a,
                          d->model.dim_v, d->model.dim_g, d->n_targets, d->matrices, d->param == DS_HYBRID_LOWRANK,
                          d->rank, (int32_t)d->condition, d->prefix, d->learn_alpha, d->train_static,
                          d->t_star, d->dit.hidden, d->dit.depth, d->dit.heads, d->dit.patch_size, d->dit.mlp_ratio,
                          B, T, d->generator == DS_HYBRID_DIRECT};
    float fconfig[5] = {(float)d->lambda_lm, (float)d->lambda_pd, d->l2wrap, tc->loss_scale, (float)d->alpha_init};
    float loss[3] = {(float)L->total, (float)L->lm, (float)L->pd};
    int64_t s24[1] = {24}, s5[1] = {5}, s3[1] = {3}, snT[1] = {d->n_targets}, sBT[2] = {B, T}, sBn[2] = {B, d->n_targets};
    int64_t sE[3] = {B, d->n_targets, h->n_img}, sU[4] = {d->n_targets, h->n_mat, d->model.n_embd, d->rank};
    test_dump_tensor(f, "config", 1, s24, 1, config);
    dump_f32(f, "fconfig", 1, s5, fconfig);
    dump_f32(f, "loss", 1, s3, loss);
    test_dump_tensor(f, "targets_layers", 1, snT, 1, d->targets);
    test_dump_tensor(f, "tokens", 2, sBT, 1, tok);
    test_dump_tensor(f, "targets", 2, sBT, 1, tgt);
    test_dump_tensor(f, "cond_tokens", 2, sBT, 1, cond);
    int32_t *t = ds_alloc(sizeof(int32_t) * B * d->n_targets), *drop = ds_alloc(sizeof(int32_t) * B * d->n_targets);
    float *eps = ds_alloc(sizeof(float) * B * d->n_targets * h->n_img), *eps_star = ds_alloc(sizeof(float) * B * d->n_targets * h->n_img);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < d->n_targets; j++) {
            int k = b * d->n_targets + j, dr;
            ds_hybrid_draw(h, seed, (uint64_t)b, j, &t[k], &dr, eps + k * h->n_img, eps_star + k * h->n_img);
            drop[k] = dr;
        }
    test_dump_tensor(f, "draw_t", 2, sBn, 1, t);
    test_dump_tensor(f, "draw_drop", 2, sBn, 1, drop);
    dump_f32(f, "eps", 3, sE, eps);
    dump_f32(f, "eps_star", 3, sE, eps_star);
    if (d->param == DS_HYBRID_LOWRANK) dump_f32(f, "u0", 4, sU, h->u0);
    char name[128];
    for (int i = 0; i < h->model.n_tensors; i++) {
        const ds_param_tensor *mt = &h->model.tensors[i];
        snprintf(name, sizeof name, "rwkv7.%s", mt->name);
        dump_f32(f, name, mt->ndim, mt->shape, h->model.params + mt->offset);
    }
    for (int i = 0; i < h->n_tensors; i++) {
        const ds_param_tensor *ht = &h->tensors[i];
        if (strncmp(ht->name, "rwkv7.", 6) != 0) dump_f32(f, ht->name, ht->ndim, ht->shape, h->params + ht->offset);
        snprintf(name, sizeof name, "grad.%s", ht->name);
        dump_f32(f, name, ht->ndim, ht->shape, h->grads + ht->offset);
    }
    uint32_t end = 0;
    fwrite(&end, 4, 1, f);
    fclose(f);
    ds_free(t), ds_free(drop), ds_free(eps), ds_free(eps_star);
}

static void test_against_pytorch(void) {
    char dir[] = "/tmp/ds_test_hybrid_XXXXXX", cmd[8192], paths[N_CASES][128];
    CHECK(mkdtemp(dir) != NULL, "temporary directory");
    int expected[N_CASES], drops = 0, kept = 0;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s", ref_script);
    for (int c = 0; c < N_CASES; c++) {
        const test_case *tc = &cases[c];
        ds_hybrid_dims d = small_dims(tc);
        ds_hybrid h;
        make_hybrid(&h, &d, 10 + c);
        int32_t tok[B * T], tgt[B * T], cond[B * T];
        make_batch(tok, tgt, d.model.vocab_size, 20 + c, 1);
        if (tc->shuffled) shifted_tokens(tok, cond);
        else memcpy(cond, tok, sizeof cond);
        uint64_t seed = 30 + c;
        ds_hybrid_losses L;
        ds_hybrid_zero_grad(&h);
        ds_hybrid_forward_backward(&h, B, T, tok, tgt, tc->shuffled ? cond : NULL, seed, 0, tc->loss_scale, &L);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < d.n_targets; j++) {
                int drop;
                ds_hybrid_draw(&h, seed, b, j, NULL, &drop, NULL, NULL);
                drops += drop, kept += !drop;
            }
        snprintf(paths[c], sizeof paths[c], "%s/case%d.bin", dir, c);
        write_dump(paths[c], &h, tc, tok, tgt, cond, seed, &L);
        expected[c] = 3 + h.n_tensors;
        size_t len = strlen(cmd);
        snprintf(cmd + len, sizeof cmd - len, " %s", paths[c]);
        ds_hybrid_destroy(&h);
    }
    CHECK(drops > 0 && kept > 0, "the draws drop some conditions (%d) and keep others (%d)", drops, kept);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    int seen[N_CASES] = {0}, bad = 0;
    double worst[N_CASES] = {0};
    char worst_name[N_CASES][256] = {{0}}, line[512], name[256];
    while (p && fgets(line, sizeof line, p)) {
        int c;
        double err;
        if (sscanf(line, "%d %255s %lf", &c, name, &err) != 3 || c < 0 || c >= N_CASES) {
            fprintf(stderr, "reference: %s", line);
            bad++;
            continue;
        }
        seen[c]++;
        if (!(err <= 1e-4)) fprintf(stderr, "FAIL case %d (%s): %s rel err %.3g\n", c, cases[c].tag, name, err);
        if (!(err <= worst[c])) worst[c] = err, snprintf(worst_name[c], sizeof worst_name[c], "%s", name);
    }
    int rc = p ? pclose(p) : -1;
    CHECK(rc == 0 && bad == 0, "the PyTorch reference ran (%s)", ref_script);
    for (int c = 0; c < N_CASES; c++) {
        printf("vs PyTorch, %s: %d terms and gradients, worst %s rel err %.3g\n", cases[c].tag, seen[c], worst_name[c],
               worst[c]);
        CHECK(seen[c] == expected[c] && worst[c] <= 1e-4,
              "%s: %d of %d loss terms and gradients compared, worst %s rel err %.3g (tolerance 1e-4)", cases[c].tag,
              seen[c], expected[c], worst_name[c], worst[c]);
        remove(paths[c]);
    }
    rmdir(dir);
}

/* ---------------------------------------------------------------- central differences */

/* <grad, v> of a tensor along a random +-1 direction v (or one element: index >= 0) against the central
 * difference of the float32 total loss; grads is the gradient of the unperturbed call (the perturbed
 * calls accumulate into h->grads). The error is relative to the l1 norm of the gradient. */
static double fd_error(ds_hybrid *h, const int32_t *tok, const int32_t *tgt, const float *grads,
                       const ds_param_tensor *t, int64_t index, double step) {
    float *base = h->params + t->offset;
    const float *grad = grads + t->offset;
    int64_t lo = index >= 0 ? index : 0, hi = index >= 0 ? index + 1 : t->numel;
    double analytic = 0, gnorm = 0, L[2];
    for (int64_t j = lo; j < hi; j++) {
        double v = index >= 0 || (ds_rng_u64(77, t->offset, j) & 1) ? 1.0 : -1.0;
        analytic += v * grad[j];
        gnorm += fabs(grad[j]);
    }
    float *keep = ds_alloc(sizeof(float) * t->numel);
    memcpy(keep, base, sizeof(float) * t->numel);
    for (int s = 0; s < 2; s++) {
        for (int64_t j = lo; j < hi; j++) {
            double v = index >= 0 || (ds_rng_u64(77, t->offset, j) & 1) ? 1.0 : -1.0;
            base[j] = keep[j] + (float)((s ? -step : step) * v);
        }
        L[s] = ds_hybrid_forward_backward(h, B, T, tok, tgt, NULL, 5, 0, 1.0f, NULL);
    }
    memcpy(base, keep, sizeof(float) * t->numel);
    ds_free(keep);
    return fabs((L[0] - L[1]) / (2 * step) - analytic) / gnorm;
}

/* src/hybrid/README.md §7.2: the alpha logit, the condition projection W_c, the layer (label) table, DiT ops and a targeted
 * static matrix against central differences of the float32 loss (a coarse check that needs no Python). */
static void test_finite_differences(void) {
    ds_hybrid h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T];
    setup(&h, &d, &cases[0], 41, tok, tgt, 1);
    ds_hybrid_zero_grad(&h);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 5, 0, 1.0f, NULL);
    float *grads = ds_alloc(sizeof(float) * h.n_params);
    memcpy(grads, h.grads, sizeof(float) * h.n_params);
    struct { const char *name; int64_t index; double step; } probes[] = {
        {"alpha.logit", 4, 2e-2},
        {"dit.c_embedder.proj.weight", -1, 1e-2},
        {"dit.y_embedder.embedding_table.weight", -1, 1e-2},
        {"dit.blocks.0.attn.qkv.weight", -1, 1e-2},
        {"dit.blocks.0.mlp.fc1.weight", -1, 1e-2},
        {"dit.final_layer.linear.weight", -1, 1e-4},
        {"rwkv7.blocks.1.att.output.weight", -1, 1e-4},
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        const ds_param_tensor *t = find(&h, probes[i].name);
        CHECK(t != NULL, "tensor %s exists", probes[i].name);
        if (!t) continue;
        double e = fd_error(&h, tok, tgt, grads, t, probes[i].index, probes[i].step);
        printf("central difference, %s%s: rel err %.2e\n", probes[i].name, probes[i].index >= 0 ? "[4]" : " (direction)", e);
        CHECK(e < 1e-2, "%s: analytic vs central-difference derivative of the float32 loss, rel err %.2e",
              probes[i].name, e);
    }
    ds_free(grads);
    ds_hybrid_destroy(&h);
}

/* ---------------------------------------------------------------- behaviour */

/* src/hybrid/README.md §7.3: with mean_prefix, attn_prefix or ln_out_prefix, tokens at positions >= P do not
 * touch theta_gen (bit-identical), a token below P does. */
static void check_causality(const test_case *tc, const char *name) {
    ds_hybrid h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T], other[T];
    setup(&h, &d, tc, 51, tok, tgt, 0);
    int64_t n = (int64_t)d.n_targets * h.n_mat * 128 * 128;
    float *g1 = ds_alloc(sizeof(float) * n), *g2 = ds_alloc(sizeof(float) * n);
    ds_hybrid_generate(&h, T, tok, DS_HYBRID_EVAL_SEED, 0, g1);
    memcpy(other, tok, sizeof other);
    for (int t = d.prefix; t < T; t++) other[t] = (other[t] + 1 + t) % d.model.vocab_size;
    ds_hybrid_generate(&h, T, other, DS_HYBRID_EVAL_SEED, 0, g2);
    CHECK(!memcmp(g1, g2, sizeof(float) * n), "%s: changing tokens >= P leaves theta_gen bit-identical", name);
    other[d.prefix - 1] = (other[d.prefix - 1] + 1) % d.model.vocab_size;
    ds_hybrid_generate(&h, T, other, DS_HYBRID_EVAL_SEED, 0, g2);
    CHECK(memcmp(g1, g2, sizeof(float) * n) != 0, "%s: changing token P-1 changes theta_gen", name);
    ds_free(g1), ds_free(g2);
    ds_hybrid_destroy(&h);
}

static void test_causality(void) {
    check_causality(&cases[CASE_MEAN_PREFIX], "mean_prefix");
    check_causality(&cases[CASE_ATTN_PREFIX], "attn_prefix");
    check_causality(&cases[CASE_LN_OUT], "ln_out_prefix");
}

/* One call on B sequences (one DiT and one RWKV-7 call for the batch) equals B calls on one sequence
 * each (samples first_sample + b, loss scale 1/B): the same loss terms, gradients to fp32 rounding; a
 * repeated call gives the same bits. */
static void test_split_and_determinism(void) {
    ds_hybrid h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T];
    setup(&h, &d, &cases[1], 61, tok, tgt, 0);
    float *g = ds_alloc(sizeof(float) * h.n_params);
    ds_hybrid_losses whole, part;
    ds_hybrid_zero_grad(&h);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 7, 100, 1.0f, &whole);
    memcpy(g, h.grads, sizeof(float) * h.n_params);
    ds_hybrid_zero_grad(&h);
    double lm_sum = 0, pd_sum = 0;
    for (int b = 0; b < B; b++) {
        ds_hybrid_forward_backward(&h, 1, T, tok + b * T, tgt + b * T, NULL, 7, 100 + b, 1.0f / B, &part);
        lm_sum += part.lm_sum, pd_sum += part.pd_sum;
    }
    /* the loss sums add the same per-sample terms grouped differently: equal up to double rounding; the
     * gradients sum the sequences' products in another order (over 2 T rows at once) */
    double eg = test_rel_err(h.grads, g, h.n_params);
    CHECK(eg < 1e-5 && fabs(lm_sum - whole.lm_sum) < 1e-9 * whole.lm_sum && fabs(pd_sum - whole.pd_sum) < 1e-12 * whole.pd_sum,
          "one call on 2 sequences equals 2 calls on one each (gradients rel err %.1e)", eg);
    ds_hybrid_zero_grad(&h);
    ds_hybrid_losses again;
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 7, 100, 1.0f, &again);
    CHECK(!memcmp(g, h.grads, sizeof(float) * h.n_params) && again.total == whole.total, "repeat call bit-identical");
    ds_hybrid_zero_grad(&h);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 8, 100, 1.0f, &again);
    CHECK(again.pd != whole.pd, "another step seed draws other noise");
    ds_free(g);
    ds_hybrid_destroy(&h);
}

/* Frozen static weights: the RWKV-7 runs frozen, so no weight gradient of its own is computed (its head's
 * stays unwritten), while the generated matrices' gradient still reaches the DiT and alpha. */
static void test_frozen_static(void) {
    ds_hybrid h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T];
    setup(&h, &d, &cases[3], 65, tok, tgt, 0);
    ds_hybrid_zero_grad(&h);
    memset(h.model.grads, 0, sizeof(float) * h.model.n_params);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 9, 0, 1.0f, NULL);
    int64_t head = 0, dit = 0, n_head = (int64_t)d.model.vocab_size * d.model.n_embd;
    for (int64_t i = 0; i < n_head; i++) head += h.model.g.head[i] != 0;
    const ds_param_tensor *qkv = find(&h, "dit.blocks.0.attn.qkv.weight");
    for (int64_t i = 0; i < qkv->numel; i++) dit += h.grads[qkv->offset + i] != 0;
    CHECK(h.model.frozen && head == 0 && dit > qkv->numel / 2,
          "frozen static weights: the RWKV-7 computes no weight gradient (head: %lld non-zero), the DiT gets its own "
          "(%lld of %lld non-zero)", (long long)head, (long long)dit, (long long)qkv->numel);
    ds_hybrid_destroy(&h);
}

/* Evaluation equals a hand-made model: theta_gen of the eval noise (direct: none), fused with alpha, in a
 * plain RWKV-7, scored on positions >= P; L_pd is the eps-MSE of that DiT call (direct: none). With
 * `shuffled`, sequence b's condition comes from sequence b + 1; restricted static weights are moved away
 * from the RWKV-7's own first, so the fusion (and the ln_out condition) must read the trainable copies. */
static void check_eval(const test_case *tc, int shuffled, uint64_t seed) {
    ds_hybrid h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T], cond[B * T];
    setup(&h, &d, tc, seed, tok, tgt, 1);
    int C = 128, nm = d.n_targets * h.n_mat, direct = d.generator == DS_HYBRID_DIRECT;
    int64_t CC = C * C;
    for (int i = 0; i < h.n_static; i++)
        for (int64_t j = 0; j < CC; j++) h.static_params[i][j] += 0.05f * (float)ds_rng_normal(seed, 905 + i, j);
    if (shuffled) shifted_tokens(tok, cond);
    else memcpy(cond, tok, sizeof cond);
    ds_hybrid_losses L, L2;
    ds_hybrid_eval(&h, B, T, tok, tgt, shuffled ? cond : NULL, &L);
    ds_hybrid_eval(&h, B, T, tok, tgt, shuffled ? cond : NULL, &L2);
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d.model);
    memcpy(m.params, h.model.params, sizeof(float) * m.n_params);
    float *gen = ds_alloc(sizeof(float) * nm * CC), alpha[8];
    ds_hybrid_alpha(&h, alpha);
    double nats = 0, count = 0;
    for (int b = 0; b < B; b++) {
        ds_hybrid_generate(&h, T, cond + b * T, DS_HYBRID_EVAL_SEED, 0, gen);
        for (int j = 0; j < d.n_targets; j++)
            for (int mi = 0; mi < h.n_mat; mi++) {
                int k = j * h.n_mat + mi, mat = h.mats[mi], l = d.targets[j];
                ds_rwkv7_layer *p = &m.w.layers[l], *s = &h.model.w.layers[l];
                float *dst = mat == 0 ? p->Wr : mat == 1 ? p->Wk : p->Wv;
                const float *W = h.n_static ? h.static_params[k] : mat == 0 ? s->Wr : mat == 1 ? s->Wk : s->Wv;
                for (int64_t i = 0; i < CC; i++) dst[i] = alpha[k] * W[i] + (1 - alpha[k]) * gen[k * CC + i];
            }
        int32_t scored[T];
        int cnt = 0;
        for (int t = 0; t < T; t++) scored[t] = t < d.prefix ? -1 : tgt[b * T + t], cnt += scored[t] >= 0;
        nats += ds_rwkv7_forward(&m, 1, T, tok + b * T, scored, 1.0f, 0.0f, NULL, NULL, NULL) * cnt;
        count += cnt;
    }
    double want = nats / count;
    CHECK(fabs(L.lm - want) < 1e-5 * want && L.lm_count == count && L.total == L2.total &&
          (direct ? L.pd == 0 && L.pd_count == 0 : L.pd > 0 && L.pd_count == B * d.n_targets),
          "eval of %s%s: L_LM %.6f vs hand-fused model %.6f over %.0f tokens; L_pd %.4f", tc->tag,
          shuffled ? ", conditions of the next sequence" : "", L.lm, want, count, L.pd);
    ds_free(gen);
    ds_rwkv7_destroy(&m);
    ds_hybrid_destroy(&h);
}

static void test_eval(void) {
    check_eval(&cases[0], 0, 71);
    check_eval(&cases[0], 1, 73);
    check_eval(&cases[CASE_RESTRICTED], 1, 75);
}

/* The direct generator draws nothing: another step seed gives the same bits, there is no L_pd, and the
 * training step's L_LM is evaluation's. */
static void test_direct(void) {
    ds_hybrid h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T];
    setup(&h, &d, &cases[CASE_DIRECT], 77, tok, tgt, 1);
    float *g = ds_alloc(sizeof(float) * h.n_params);
    ds_hybrid_losses a, b, e;
    ds_hybrid_zero_grad(&h);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 7, 0, 1.0f, &a);
    memcpy(g, h.grads, sizeof(float) * h.n_params);
    ds_hybrid_zero_grad(&h);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 8, 100, 1.0f, &b);
    ds_hybrid_eval(&h, B, T, tok, tgt, NULL, &e);
    CHECK(a.total == b.total && !memcmp(g, h.grads, sizeof(float) * h.n_params) && a.pd == 0 && a.pd_count == 0 &&
          a.total == a.lm && e.lm == a.lm,
          "direct generator: step seed and sample numbers change nothing, no L_pd, training L_LM %.7f = eval's %.7f",
          a.lm, e.lm);
    ds_free(g);
    ds_hybrid_destroy(&h);
}

/* The static baseline restricted to W_r, W_k, W_v of layer 1 (src/hybrid/README.md §1.8): the trainable set
 * is those three matrices; loss and their gradients equal the whole-model baseline's bit for bit; after a
 * few SGD steps on the trainable set every RWKV-7 weight is bit-identical to its start while the three
 * copies moved, and evaluation reads the moved copies. */
static void test_restricted_static(void) {
    test_case tc = cases[0];
    tc.n_targets = 0;
    ds_hybrid full, h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T];
    setup(&full, &d, &tc, 83, tok, tgt, 1);
    d.n_static_layers = 1;
    d.static_layers[0] = 1;
    d.static_matrices = DS_HYBRID_R | DS_HYBRID_K | DS_HYBRID_V;
    make_hybrid(&h, &d, 83);
    const char *names[3] = {"rwkv7.blocks.1.att.receptance.weight", "rwkv7.blocks.1.att.key.weight",
                            "rwkv7.blocks.1.att.value.weight"};
    int64_t CC = 128 * 128;
    ds_hybrid_losses Lf, L;
    ds_hybrid_zero_grad(&full);
    ds_hybrid_forward_backward(&full, B, T, tok, tgt, NULL, 1, 0, 1.0f, &Lf);
    ds_hybrid_zero_grad(&h);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 1, 0, 1.0f, &L);
    int table_ok = h.n_tensors == 3 && h.n_static == 3 && h.n_params == 3 * CC && h.model.frozen, same = 1;
    for (int i = 0; i < 3 && table_ok; i++) {
        table_ok = find(&h, names[i]) == &h.tensors[i];
        same &= !memcmp(h.grads + h.tensors[i].offset, full.grads + find(&full, names[i])->offset, sizeof(float) * CC);
    }
    CHECK(table_ok, "restricted static baseline: the trainable set is W_r, W_k, W_v of layer 1 (%lld floats), the "
          "RWKV-7 runs frozen", (long long)h.n_params);
    CHECK(L.total == Lf.total && same, "restricted vs whole-model static baseline: loss %.7f vs %.7f, the three "
          "matrices' gradients bit-identical", L.total, Lf.total);
    float *start = ds_alloc(sizeof(float) * h.model.n_params);
    memcpy(start, h.model.params, sizeof(float) * h.model.n_params);
    ds_hybrid_losses last = L;
    for (int step = 0; step < 3; step++) {
        for (int64_t i = 0; i < h.n_params; i++) h.params[i] -= 0.5f * h.grads[i];
        ds_hybrid_zero_grad(&h);
        ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 1, 0, 1.0f, &last);
    }
    double moved = test_rel_err(h.params + h.tensors[1].offset, start + (h.model.w.layers[1].Wk - h.model.params), CC);
    CHECK(!memcmp(start, h.model.params, sizeof(float) * h.model.n_params) && moved > 1e-4 && last.lm < L.lm,
          "3 SGD steps: every RWKV-7 weight bit-identical to its start, W_k's copy moved (rel %.2e), L_LM %.5f -> %.5f",
          moved, L.lm, last.lm);
    /* evaluation: the RWKV-7 with the moved copies swapped in */
    ds_hybrid_losses E;
    ds_hybrid_eval(&h, B, T, tok, tgt, NULL, &E);
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d.model);
    memcpy(m.params, h.model.params, sizeof(float) * m.n_params);
    float *copies[3] = {m.w.layers[1].Wr, m.w.layers[1].Wk, m.w.layers[1].Wv};
    for (int i = 0; i < 3; i++) memcpy(copies[i], h.static_params[i], sizeof(float) * CC);
    unscore_prefix(tgt, d.prefix);
    double want = ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 0.0f, NULL, NULL, NULL);
    CHECK(E.lm == want, "restricted static eval %.7f = the RWKV-7 with the trained copies %.7f", E.lm, want);
    ds_free(start);
    ds_rwkv7_destroy(&m);
    ds_hybrid_destroy(&h);
    ds_hybrid_destroy(&full);
}

/* The estimated training FLOPs (ds_hybrid_sizes.flops_per_sequence) of the new variants against their
 * parts: the direct generator runs half the DiT samples, ln_out_prefix adds the RWKV-7 blocks' forward
 * over P tokens, the restricted static baseline is the frozen RWKV-7 plus the three matrices' gradients. */
static void test_flops(void) {
    ds_hybrid_dims diffusion = small_dims(&cases[0]), direct = diffusion, ln_out = diffusion;
    direct.generator = DS_HYBRID_DIRECT;
    direct.lambda_pd = 0;
    ln_out.condition = DS_HYBRID_LN_OUT_PREFIX;
    ds_hybrid h;
    ds_hybrid_create(&h, &diffusion);
    double dit = ds_dit_forward_flops(&h.dit.d);
    ds_hybrid_destroy(&h);
    double f_diff = ds_hybrid_sizes_of(&diffusion, B, T).flops_per_sequence;
    double f_direct = ds_hybrid_sizes_of(&direct, B, T).flops_per_sequence;
    double f_ln = ds_hybrid_sizes_of(&ln_out, B, T).flops_per_sequence;
    test_case tc = cases[0];
    tc.n_targets = 0;
    ds_hybrid_dims all = small_dims(&tc), restricted = all;
    restricted.n_static_layers = 1;
    restricted.static_layers[0] = 1;
    restricted.static_matrices = DS_HYBRID_R | DS_HYBRID_K | DS_HYBRID_V;
    double f_all = ds_hybrid_sizes_of(&all, B, T).flops_per_sequence;
    double f_restricted = ds_hybrid_sizes_of(&restricted, B, T).flops_per_sequence;
    double want_restricted = (ds_rwkv7_frozen_flops_per_token(&all.model) + 6.0 * 128 * 128) * T;
    CHECK(fabs(f_diff - f_direct - 3.0 * 2 * dit) < 1e-9 * f_diff &&
          fabs(f_ln - f_diff - diffusion.prefix * ds_rwkv7_recompute_flops_per_token(&diffusion.model)) < 1e-9 * f_ln &&
          fabs(f_restricted - want_restricted) < 1e-9 * f_restricted && f_restricted < f_all,
          "FLOPs per sequence: direct %.4g = diffusion %.4g - 3 x 2 DiT forwards; ln_out_prefix %.4g; restricted static "
          "%.4g of the whole model's %.4g", f_direct, f_diff, f_ln, f_restricted, f_all);
}

/* The static baseline (no targeted layers) is the plain RWKV-7 on positions >= P: same loss and
 * gradients as one batched ds_rwkv7 forward/backward. */
static void test_static_baseline(void) {
    test_case tc = cases[0];
    tc.n_targets = 0;
    ds_hybrid h;
    ds_hybrid_dims d;
    int32_t tok[B * T], tgt[B * T];
    setup(&h, &d, &tc, 81, tok, tgt, 1);
    CHECK(h.n_tensors == h.model.n_tensors && h.n_params == h.model.n_params, "baseline: the trainable set is the RWKV-7");
    ds_hybrid_losses L;
    ds_hybrid_zero_grad(&h);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 1, 0, 1.0f, &L);
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d.model);
    memcpy(m.params, h.model.params, sizeof(float) * m.n_params);
    unscore_prefix(tgt, d.prefix);
    ds_rwkv7_zero_grad(&m);
    double loss = ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, d.l2wrap, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    double eg = test_rel_err(h.grads, m.grads, m.n_params);
    CHECK(fabs(L.lm - loss) < 1e-6 * loss && L.pd == 0 && eg < 1e-5,
          "baseline vs plain RWKV-7: loss %.7f vs %.7f, gradients rel err %.2e", L.lm, loss, eg);
    ds_rwkv7_destroy(&m);
    ds_hybrid_destroy(&h);
}

/* The trainable-set table tiles [0, n_params) in 16-float aligned tensors; alpha starts at alpha_init
 * with its lr scale; U0 has orthonormal columns. */
static int table_tiles(const ds_hybrid *h) {
    int64_t next = 0;
    int ok = 1;
    for (int i = 0; i < h->n_tensors; i++) {
        ok &= h->tensors[i].offset >= next && h->tensors[i].offset % 16 == 0;
        next = h->tensors[i].offset + h->tensors[i].numel;
    }
    return ok && next <= h->n_params && h->n_params - next < 16;
}

static double rms(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / n);
}

/* attn_prefix adds q [C], K, V [C, C] to the table (between alpha and the RWKV-7), decay on the
 * matrices only, initialised N(0, 0.02^2) and N(0, 1/C). */
static void test_attn_table(void) {
    ds_hybrid_dims d = small_dims(&cases[CASE_ATTN_PREFIX]);
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
    ds_hybrid_init_weights(&h, 3);
    const ds_param_tensor *q = find(&h, "cond.attn.q"), *k = find(&h, "cond.attn.key.weight"),
                          *v = find(&h, "cond.attn.value.weight"), *a = find(&h, "alpha.logit"),
                          *e = find(&h, "rwkv7.emb.weight");
    CHECK(table_tiles(&h) && q && k && v && a && e && q->ndim == 1 && q->shape[0] == 128 && k->ndim == 2 &&
          k->shape[0] == 128 && k->shape[1] == 128 && v->numel == 128 * 128 && a->offset < q->offset &&
          q->offset < k->offset && k->offset < v->offset && v->offset < e->offset &&
          h.w.attn_q == h.params + q->offset && h.g.attn_k == h.grads + k->offset &&
          h.w.attn_v == h.params + v->offset && !q->weight_decay && k->weight_decay && v->weight_decay &&
          q->lr_scale == 1.0f,
          "attn_prefix: cond.attn.q [128], key / value weights [128, 128] between alpha and the RWKV-7, tiled");
    double rq = rms(h.w.attn_q, 128), rk = rms(h.w.attn_k, 128 * 128), rv = rms(h.w.attn_v, 128 * 128);
    CHECK(fabs(rq - 0.02) < 0.004 && fabs(rk * sqrt(128.0) - 1) < 0.03 && fabs(rv * sqrt(128.0) - 1) < 0.03 &&
          memcmp(h.w.attn_k, h.w.attn_v, sizeof(float) * 128) != 0,
          "attn_prefix init: rms q %.4f (0.02), sqrt(C) rms K %.3f, V %.3f (1)", rq, rk * sqrt(128.0),
          rv * sqrt(128.0));
    ds_hybrid_destroy(&h);
}

static void test_table(void) {
    ds_hybrid_dims d = small_dims(&cases[1]);
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
    ds_hybrid_init_weights(&h, 3);
    CHECK(table_tiles(&h) && find(&h, "cond.attn.q") == NULL && h.w.attn_q == NULL,
          "tensor table tiles the %lld trainable floats in order, 64-byte aligned; no attention pool without "
          "attn_prefix", (long long)h.n_params);
    const ds_param_tensor *a = find(&h, "alpha.logit");
    float alpha[8];
    ds_hybrid_alpha(&h, alpha);
    CHECK(a && a->numel == 4 && a->shape[0] == 2 && a->shape[1] == 2 && a->lr_scale == 10.0f && !a->weight_decay &&
          fabs(alpha[3] - 0.9) < 1e-6, "alpha.logit [2 layers, 2 matrices], lr scale 10, alpha starts at 0.9");
    const ds_param_tensor *w0 = find(&h, "rwkv7.blocks.1.att.w0");
    const ds_param_tensor *qkv = find(&h, "dit.blocks.0.attn.qkv.weight");
    CHECK(w0 && w0->lr_scale == 2.0f && qkv && qkv->lr_scale == 1.0f && h.dit.d.in_channels == 2 &&
          h.dit.d.num_classes == 2 && h.dit.d.cond_dim == 128, "RWKV-7 and DiT tensors keep their flags; DiT sees "
          "2 channels (A2 k, v at rank 32), 2 layer labels, a 128-wide condition");
    double worst = 0;
    for (int k = 0; k < 4; k++) {
        const float *U = h.u0 + (int64_t)k * 128 * 32;
        for (int p = 0; p < 32; p++)
            for (int q = 0; q < 32; q++) {
                double s = 0;
                for (int i = 0; i < 128; i++) s += (double)U[i * 32 + p] * U[i * 32 + q];
                worst = fmax(worst, fabs(s - (p == q)));
            }
    }
    CHECK(worst < 1e-6, "U0 columns orthonormal (max |U^T U - I| %.2e)", worst);
    ds_hybrid_destroy(&h);
}

static void test_config(void) {
    ds_config cfg;
    ds_config_defaults(&cfg);
    cfg.model.n_layer = 4;
    ds_hybrid_dims d;
    ds_hybrid_dims_from_config(&d, &cfg);
    CHECK(d.n_targets == 1 && d.targets[0] == 3 && d.matrices == 7 && d.param == DS_HYBRID_FULL &&
          d.condition == DS_HYBRID_FIRST_TOKEN && d.learn_alpha && d.alpha_init == 0.9 && d.lambda_pd == 0.1 &&
          d.t_star == 199 && d.p_uncond == 0.1 && !d.train_static && d.dit.hidden == cfg.dit.hidden &&
          d.model.dim_w == 32, "config defaults: last layer, rkv, A1, first token, learned alpha 0.9, t* 199");
    snprintf(cfg.hybrid.layers, sizeof cfg.hybrid.layers, "0,2");
    snprintf(cfg.hybrid.matrices, sizeof cfg.hybrid.matrices, "kv");
    snprintf(cfg.hybrid.param, sizeof cfg.hybrid.param, "lowrank");
    snprintf(cfg.hybrid.condition, sizeof cfg.hybrid.condition, "mean_prefix");
    snprintf(cfg.hybrid.alpha, sizeof cfg.hybrid.alpha, "fixed");
    snprintf(cfg.diffusion.schedule, sizeof cfg.diffusion.schedule, "cosine");
    ds_hybrid_dims_from_config(&d, &cfg);
    CHECK(d.n_targets == 2 && d.targets[1] == 2 && d.matrices == (DS_HYBRID_K | DS_HYBRID_V) &&
          d.param == DS_HYBRID_LOWRANK && d.condition == DS_HYBRID_MEAN_PREFIX && !d.learn_alpha &&
          d.schedule == DS_SCHEDULE_COSINE, "config: layers 0,2, kv, lowrank, mean_prefix, fixed alpha, cosine");
    snprintf(cfg.hybrid.condition, sizeof cfg.hybrid.condition, "attn_prefix");
    ds_hybrid_dims_from_config(&d, &cfg);
    CHECK(d.condition == DS_HYBRID_ATTN_PREFIX && d.generator == DS_HYBRID_DIFFUSION && d.n_static_layers == 0,
          "config: attn_prefix, diffusion generator, no restricted static weights");
    snprintf(cfg.hybrid.condition, sizeof cfg.hybrid.condition, "ln_out_prefix");
    snprintf(cfg.hybrid.generator, sizeof cfg.hybrid.generator, "direct");
    snprintf(cfg.hybrid.static_scope, sizeof cfg.hybrid.static_scope, "targeted");
    cfg.hybrid.train_static = 1;
    ds_hybrid_dims_from_config(&d, &cfg);
    CHECK(d.condition == DS_HYBRID_LN_OUT_PREFIX && d.generator == DS_HYBRID_DIRECT && d.train_static &&
          d.n_static_layers == 2 && d.static_layers[1] == 2 && d.static_matrices == (DS_HYBRID_K | DS_HYBRID_V),
          "config: ln_out_prefix, direct, static_scope targeted = the generated W_k, W_v of layers 0, 2");
    snprintf(cfg.hybrid.matrices, sizeof cfg.hybrid.matrices, "none");
    ds_hybrid_dims_from_config(&d, &cfg);
    CHECK(d.n_targets == 0 && d.n_static_layers == 2 && d.static_matrices == 7,
          "config: matrices none with static_scope targeted = W_r, W_k, W_v of layers 0, 2");
}

static void bad_rank(void) {
    ds_hybrid_dims d = small_dims(&cases[1]);
    d.rank = 20;  /* 128 x 20 is not a whole number of 64 x 64 channels */
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
}
static void nothing_to_train(void) {
    test_case tc = cases[3];
    tc.n_targets = 0;
    ds_hybrid_dims d = small_dims(&tc);
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
}
static void attn_without_prefix(void) {
    ds_hybrid_dims d = small_dims(&cases[CASE_ATTN_PREFIX]);
    d.prefix = 0;
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
}
static void prefix_too_long(void) {
    ds_hybrid_dims d = small_dims(&cases[CASE_MEAN_PREFIX]);
    d.prefix = T;
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
    int32_t tok[B * T], tgt[B * T];
    make_batch(tok, tgt, 256, 1, 0);
    ds_hybrid_forward_backward(&h, B, T, tok, tgt, NULL, 1, 0, 1.0f, NULL);
}
static void direct_with_diffusion_loss(void) {
    test_case tc = cases[CASE_DIRECT];
    ds_hybrid_dims d = small_dims(&tc);
    d.lambda_pd = 0.1;
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
}
static void restricted_other_matrices(void) {
    ds_hybrid_dims d = small_dims(&cases[CASE_RESTRICTED]);
    d.static_matrices = DS_HYBRID_R | DS_HYBRID_K | DS_HYBRID_V;  /* the hybrid generates r, v only */
    ds_hybrid h;
    ds_hybrid_create(&h, &d);
}
static void test_bad_input(void) {
    CHECK(test_exit_code(direct_with_diffusion_loss) == DS_EXIT_BAD_INPUT, "direct generator with lambda_pd 0.1 exits "
          "with 2");
    CHECK(test_exit_code(restricted_other_matrices) == DS_EXIT_BAD_INPUT, "restricted static weights other than the "
          "generated matrices exit with 2");
    CHECK(test_exit_code(bad_rank) == DS_EXIT_BAD_INPUT, "rank 20 at width 128 exits with 2");
    CHECK(test_exit_code(nothing_to_train) == DS_EXIT_BAD_INPUT, "no targets and frozen weights exits with 2");
    CHECK(test_exit_code(prefix_too_long) == DS_EXIT_BAD_INPUT, "prefix >= T exits with 2");
    CHECK(test_exit_code(attn_without_prefix) == DS_EXIT_BAD_INPUT, "attn_prefix with prefix 0 exits with 2");
}

/* ---------------------------------------------------------------- timing */

static int bench_mode(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: test_hybrid --bench C L T B HIDDEN DEPTH PATCH TARGETS\n");
        return 2;
    }
    int C = atoi(argv[2]), L = atoi(argv[3]), TT = atoi(argv[4]), BB = atoi(argv[5]);
    test_case tc = cases[0];
    tc.n_targets = atoi(argv[9]);
    tc.first_target = L - tc.n_targets;
    ds_hybrid_dims d = small_dims(&tc);
    d.model = (ds_rwkv7_dims){.n_layer = L, .n_embd = C, .vocab_size = 256};
    ds_rwkv7_default_ranks(&d.model, "released");
    d.dit = (ds_dit_dims){.hidden = atoi(argv[6]), .depth = atoi(argv[7]), .heads = 2, .patch_size = atoi(argv[8]),
                          .mlp_ratio = 4};
    ds_hybrid h;
    make_hybrid(&h, &d, 1);
    int32_t *tok = ds_alloc(sizeof(int32_t) * BB * TT), *tgt = ds_alloc(sizeof(int32_t) * BB * TT);
    for (int i = 0; i < BB * TT; i++) tok[i] = (int32_t)(ds_rng_u64(2, 1, i) % 256), tgt[i] = (int32_t)(ds_rng_u64(2, 2, i) % 256);
    double best = 1e30, best_eval = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = ds_now_seconds();
        ds_hybrid_forward_backward(&h, BB, TT, tok, tgt, NULL, rep, 0, 1.0f, NULL);
        double t1 = ds_now_seconds();
        ds_hybrid_eval(&h, BB, TT, tok, tgt, NULL, NULL);
        double t2 = ds_now_seconds();
        if (rep > 0) best = fmin(best, t1 - t0), best_eval = fmin(best_eval, t2 - t1);
    }
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d.model);
    memcpy(m.params, h.model.params, sizeof(float) * m.n_params);
    double best_lm = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = ds_now_seconds();
        ds_rwkv7_forward(&m, BB, TT, tok, tgt, 1.0f, 0.0f, NULL, NULL, NULL);
        ds_rwkv7_backward(&m);
        if (rep > 0) best_lm = fmin(best_lm, ds_now_seconds() - t0);
    }
    printf("C=%d L=%d T=%d B=%d, %d targeted layers, DiT d=%d depth %d patch %d (%d channels, %d tokens, %.2fM "
           "params): forward_backward %.1f ms, eval %.1f ms; plain RWKV-7 forward+backward %.1f ms\n",
           C, L, TT, BB, tc.n_targets, d.dit.hidden, d.dit.depth, d.dit.patch_size, h.dit.d.in_channels, h.dit.tokens,
           h.dit.n_params / 1e6, 1e3 * best, 1e3 * best_eval, 1e3 * best_lm);
    ds_rwkv7_destroy(&m);
    ds_free(tok), ds_free(tgt);
    ds_hybrid_destroy(&h);
    return 0;
}

int main(int argc, char **argv) {
    /* one thread: tiny models, and a shared 2-core machine (see test_dit) */
    omp_set_num_threads(1);
    ds_blas_init(1);
    ds_kernels_init();
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return bench_mode(argc, argv);
    char exe[1024];
    snprintf(exe, sizeof exe, "%s", argv[0]);
    snprintf(ref_script, sizeof ref_script, "%s/../../tests/ref/hybrid_torch.py", dirname(exe));
    test_table();
    test_attn_table();
    test_config();
    test_bad_input();
    test_causality();
    test_split_and_determinism();
    test_frozen_static();
    test_eval();
    test_direct();
    test_restricted_static();
    test_flops();
    test_static_baseline();
    test_finite_differences();
    test_against_pytorch();
    return test_summary("test_hybrid");
}
