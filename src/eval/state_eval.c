/* `dreamstate eval-states` (A2, A3: src/eval/README.md §2, §3): the numbers of DREAMSTATE part A for a trained
 * state DiT (its EMA weights).
 *  (1) denoising: epsilon-MSE at the fixed steps (ds_state_dit_eps_mse) on the held-out records, and
 *      on as many train records spread over the train set (the overfitting check);
 *  (2) label recovery: a cosine kNN classifier (k = 1, 5) fitted on the real train states in the
 *      model's feature space (normalised modelled WKV channels, ds_state_dit_encode) labels the real
 *      held-out states (the reference) and N DDIM samples per label (condition = label); memorisation
 *      check: mean distance of generated and of held-out states to their nearest train state;
 *      Fréchet distance per modelled layer, in the PCA space of the train states: generated vs
 *      held-out, beside the floor of an equally sized subset of train states vs held-out;
 *  (3) continuation loss: teacher-forced CE of the tokens after the part of each held-out context its
 *      state was extracted from, from six initial states (zero; class mean; generated of its label and
 *      of a wrong label; the true state reduced to the modelled WKV, as src/dit/README.md §3.7 injects; the
 *      full true state, i.e. prompting) and, with --tuned, a seventh: the state tuned for its label
 *      (run.task state_tuning), per label and pooled (token-weighted), with 95% bootstrap CIs of the
 *      paired difference to the zero state.
 * Work split: generated samples, kNN queries and continuation contexts are dealt out over the ranks;
 * every per-item result lands in an array that is zero elsewhere and is summed over ranks (exact), and
 * rank 0 reduces in a fixed order, so any rank count prints the same numbers (the epsilon-MSE sums
 * excepted: equal to rounding). Rank 0 prints the table and writes the JSON (state_eval_report.c). */
#include "state_eval.h"

#include "dreamstate/analysis.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/eval.h"
#include "dreamstate/kernels.h"
#include "dreamstate/progress.h"
#include "dreamstate/state_dit_file.h"
#include "dreamstate/weights.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define EPS_BATCH 8               /* records per DiT forward of the epsilon-MSE */
#define FD_DEFAULT_COMPONENTS 32  /* PCA components of the Fréchet distances */
#define RNG_STREAM_GENERATE 0x47454e53  /* "GENS": sampler seed of generated sample g */

const int eval_states_knn_ks[N_KS] = {1, 5};

/* A state dataset must hold states of the model's RWKV-7, in its shape, with its label list. */
static void check_dataset(const char *path, const ds_states_info *info, const ds_state_dit *sd, const char *rwkv_model,
                          const char *model_path) {
    if (strcmp(info->model, rwkv_model) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: states of '%s', but %s was trained on states of '%s'", path, info->model,
               model_path, rwkv_model);
    const ds_state_shape *a = &info->shape, *b = &sd->shape;
    if (a->n_layer != b->n_layer || a->n_embd != b->n_embd || a->n_head != b->n_head || a->cond_dim != b->cond_dim ||
        a->flags != b->flags)
        ds_die(DS_EXIT_BAD_INPUT, "%s: state shape L=%d C=%d cond_dim=%d flags=%u, the model's is L=%d C=%d cond_dim=%d "
               "flags=%u", path, a->n_layer, a->n_embd, a->cond_dim, a->flags, b->n_layer, b->n_embd, b->cond_dim, b->flags);
    if (info->n_labels != sd->n_labels)
        ds_die(DS_EXIT_BAD_INPUT, "%s: %d labels, the model has %d (extract held-out states with --labels-from)", path,
               info->n_labels, sd->n_labels);
    for (int i = 0; i < info->n_labels; i++)
        if (strcmp(info->labels[i], sd->labels[i]) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: label %d is '%s', the model's is '%s' (extract held-out states with "
                   "--labels-from)", path, i, info->labels[i], sd->labels[i]);
}

/* The tuned state of every label of the model (a state dataset of run.task state_tuning: one record per
 * label, matched by name) into r->tuned. */
static void load_tuned(eval_run *r) {
    const char *path = r->o.tuned;
    ds_states *t = ds_states_open(path);
    const ds_states_info *info = ds_states_get_info(t);
    if (strcmp(info->model, r->rwkv_model) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: tuned states of '%s', but %s was trained on states of '%s'", path, info->model,
               r->o.model, r->rwkv_model);
    int64_t SF = ds_state_floats(&r->sd.shape);
    r->tuned = ds_alloc(sizeof(float) * r->K * SF);
    for (int k = 0; k < r->K; k++) {
        int64_t i = 0;
        while (i < info->n_records && strcmp(info->labels[ds_states_record(t, i).label], r->sd.labels[k]) != 0) i++;
        if (i == info->n_records)
            ds_die(DS_EXIT_BAD_INPUT, "%s: no tuned state of label '%s' (tune on contexts of the same labels)", path,
                   r->sd.labels[k]);
        memcpy(r->tuned + k * SF, ds_states_record(t, i).state, sizeof(float) * SF);
    }
    ds_states_close(t);
}

/* A record state reduced to the modelled layers' WKV, everything else zero (the injection of src/dit/README.md §3.7). */
static void modelled_only(const ds_state_dit *s, const float *state, float *out) {
    memset(out, 0, sizeof(float) * ds_state_floats(&s->shape));
    int64_t w = (int64_t)s->shape.n_head * s->shape.head_size * s->shape.head_size;
    for (int i = 0; i < s->n_layers; i++)
        memcpy((float *)ds_state_wkv(&s->shape, out, s->layers[i]), ds_state_wkv(&s->shape, state, s->layers[i]),
               sizeof(float) * w);
}

/* Sums n floats over ranks through float64; exact where one rank holds the value and the rest zero. */
static void sum_floats(float *x, int64_t n) {
    enum { CHUNK = 1 << 20 };
    double *buf = ds_alloc(sizeof(double) * (n < CHUNK ? n : CHUNK));
    for (int64_t i = 0; i < n; i += CHUNK) {
        int m = (int)(n - i < CHUNK ? n - i : CHUNK);
        for (int j = 0; j < m; j++) buf[j] = x[i + j];
        ds_dist_sum_doubles(buf, m);
        for (int j = 0; j < m; j++) x[i + j] = (float)buf[j];
    }
    ds_free(buf);
}

/* ---- the run ---- */

static void denoising(eval_run *r) {
    double t0 = ds_now_seconds(), sums[2 * (DS_STATE_DIT_EVAL_STEPS + 1)] = {0};
    r->n_eps_train = r->n_train < r->n_held ? r->n_train : r->n_held;
    ds_log("eval-states: (1) epsilon-MSE over %lld held-out and %lld train records", (long long)r->n_held,
           (long long)r->n_eps_train);
    ds_state_dit_eps_mse(&r->sd, r->held, r->n_held, r->o.seed, r->rank, r->ranks, EPS_BATCH, sums);
    ds_state_dit_eps_mse(&r->sd, r->train, r->n_eps_train, r->o.seed, r->rank, r->ranks, EPS_BATCH,
                         sums + DS_STATE_DIT_EVAL_STEPS + 1);
    ds_dist_sum_doubles(sums, 2 * (DS_STATE_DIT_EVAL_STEPS + 1));
    for (int set = 0; set < 2; set++) {
        double *s = sums + set * (DS_STATE_DIT_EVAL_STEPS + 1), *out = set ? r->eps_train : r->eps_held, mean = 0;
        for (int k = 0; k < DS_STATE_DIT_EVAL_STEPS; k++) mean += (out[k] = s[k] / s[DS_STATE_DIT_EVAL_STEPS]);
        out[DS_STATE_DIT_EVAL_STEPS] = mean / DS_STATE_DIT_EVAL_STEPS;
    }
    r->seconds[0] = ds_now_seconds() - t0;
}

/* Train features and class means: every rank, all records in a fixed order (cheap next to the DiT). */
static void features(eval_run *r) {
    double t0 = ds_now_seconds();
    int64_t X = r->sd.x_floats, SF = ds_state_floats(&r->sd.shape);
    int64_t wkv = (int64_t)r->sd.shape.n_head * r->sd.shape.head_size * r->sd.shape.head_size;
    r->train_x = ds_alloc(sizeof(float) * r->n_train * X);
    r->train_labels = ds_alloc(sizeof(int) * r->n_train);
    double *acc = ds_alloc(sizeof(double) * r->K * X);  /* modelled WKV blocks in layer-slot order */
    int64_t *count = ds_alloc(sizeof(int64_t) * r->K);
    for (int64_t i = 0; i < r->n_train; i++) {
        ds_state_record rec = ds_states_record(r->train, i);
        ds_state_dit_encode(&r->sd, rec.state, r->train_x + i * X);
        r->train_labels[i] = rec.label;
        if (rec.label < 0 || rec.label >= r->K)
            ds_die(DS_EXIT_BAD_INPUT, "%s: record %lld has no label", r->o.states, (long long)i);
        double *a = acc + (int64_t)rec.label * X;
        for (int l = 0; l < r->sd.n_layers; l++) {
            const float *w = ds_state_wkv(&r->sd.shape, rec.state, r->sd.layers[l]);
            for (int64_t j = 0; j < wkv; j++) a[l * wkv + j] += w[j];
        }
        count[rec.label]++;
    }
    r->class_mean = ds_alloc(sizeof(float) * r->K * SF);
    for (int k = 0; k < r->K; k++) {
        float *st = r->class_mean + k * SF;
        for (int l = 0; l < r->sd.n_layers; l++) {
            float *w = (float *)ds_state_wkv(&r->sd.shape, st, r->sd.layers[l]);
            for (int64_t j = 0; j < wkv; j++) w[j] = count[k] ? (float)(acc[(int64_t)k * X + l * wkv + j] / count[k]) : 0;
        }
        if (!count[k]) ds_log("eval-states: warning: no train record of label '%s': its class mean is zero", r->sd.labels[k]);
    }
    r->held_labels = ds_alloc(sizeof(int) * r->n_held);
    for (int64_t i = 0; i < r->n_held; i++) r->held_labels[i] = ds_states_record(r->held, i).label;
    ds_free(acc); ds_free(count);
    r->seconds[1] = ds_now_seconds() - t0;
}

/* Sample g (label g / N) from its own seed, so that it does not depend on the rank that draws it. */
static void generate_one(eval_run *r, int64_t g, float *x) {
    int32_t label = (int32_t)(g / r->o.samples_per_label), null = r->sd.n_labels;
    ds_state_cond_term terms[2] = {{.labels = &label, .weight = r->o.guidance},
                                   {.labels = &null, .weight = 1 - r->o.guidance}};
    ds_state_sampler sampler = {.steps = r->o.steps, .seed = ds_rng_u64(r->o.seed, RNG_STREAM_GENERATE, (uint64_t)g),
                                .clip_x0 = r->o.clip, .temperature = r->o.temperature};
    ds_state_dit_sample(&r->sd, 1, &sampler, r->o.steps - 1, 1, r->o.guidance != 1.0 ? 2 : 1, terms, x);
}

static void generation(eval_run *r) {
    double t0 = ds_now_seconds();
    int64_t X = r->sd.x_floats;
    r->gen_x = ds_alloc(sizeof(float) * r->n_gen * X);
    ds_progress prog;
    ds_progress_begin(&prog, "eval-states generation", "samples (rank 0's share)", (r->n_gen + r->ranks - 1) / r->ranks);
    int64_t done = 0;
    for (int64_t g = r->rank; g < r->n_gen; g += r->ranks) {
        generate_one(r, g, r->gen_x + g * X);
        ds_progress_update(&prog, ++done);
    }
    ds_progress_end(&prog);
    sum_floats(r->gen_x, r->n_gen * X);
    r->seconds[2] = ds_now_seconds() - t0;
}

/* kNN votes and nearest-train distances of the held-out states and the generated ones (queries
 * n_held + g), each rank a contiguous block of queries. */
static void knn(eval_run *r) {
    double t0 = ds_now_seconds();
    int64_t X = r->sd.x_floats, Q = r->n_held + r->n_gen;
    int64_t lo = Q * r->rank / r->ranks, hi = Q * (r->rank + 1) / r->ranks, n = hi - lo;
    r->knn = ds_alloc(sizeof(double) * Q * (N_KS + 1));
    if (n > 0) {
        float *q = ds_alloc(sizeof(float) * n * X);
        for (int64_t i = lo; i < hi; i++) {
            if (i < r->n_held) ds_state_dit_encode(&r->sd, ds_states_record(r->held, i).state, q + (i - lo) * X);
            else memcpy(q + (i - lo) * X, r->gen_x + (i - r->n_held) * X, sizeof(float) * X);
        }
        int *pred = ds_alloc(sizeof(int) * n * N_KS);
        int64_t *idx = ds_alloc(sizeof(int64_t) * n);
        double *dist = ds_alloc(sizeof(double) * n);
        ds_knn_predict(r->train_x, r->train_labels, r->n_train, q, n, (int)X, DS_METRIC_COSINE, eval_states_knn_ks, N_KS,
                       pred);
        ds_nearest_neighbours(q, n, r->train_x, r->n_train, (int)X, DS_METRIC_COSINE, 1, 0, idx, dist);
        for (int64_t i = 0; i < n; i++) {
            double *row = r->knn + (lo + i) * (N_KS + 1);
            for (int s = 0; s < N_KS; s++) row[s] = pred[i * N_KS + s];
            row[N_KS] = dist[i];
        }
        ds_free(q); ds_free(pred); ds_free(idx); ds_free(dist);
    }
    ds_dist_sum_doubles(r->knn, (int)(Q * (N_KS + 1)));
    r->seconds[3] = ds_now_seconds() - t0;
}

/* Columns [first, first + d) of rows [n][X] (rows sel[i], or i when sel is NULL) as a contiguous [n][d]. */
static float *slice_rows(const float *x, int64_t X, const int64_t *sel, int64_t n, int64_t first, int64_t d) {
    float *out = ds_alloc(sizeof(float) * (size_t)(n > 0 ? n : 1) * d);
    for (int64_t i = 0; i < n; i++) memcpy(out + i * d, x + (sel ? sel[i] : i) * X + first, sizeof(float) * d);
    return out;
}

/* m of n indices (of `from`, or 0..n-1 when from is NULL) spread evenly: from[j n / m]. Deterministic,
 * no random numbers (the RNG streams of the other measures stay as they are). */
static int64_t spread_subset(const int64_t *from, int64_t n, int64_t m, int64_t *out) {
    for (int64_t j = 0; j < m; j++) out[j] = from ? from[j * n / m] : j * n / m;
    return m;
}

/* The Fréchet distance of rows a[sel_a] and b[sel_b] (PCA coordinates, K columns), or NaN with fewer
 * than 2 rows in either. */
static double frechet_of(const float *a, const int64_t *sel_a, int64_t na, const float *b, const int64_t *sel_b,
                         int64_t nb, int K) {
    if (na < 2 || nb < 2) return NAN;
    float *x = slice_rows(a, K, sel_a, na, 0, K), *y = slice_rows(b, K, sel_b, nb, 0, K);
    double fd = ds_frechet_rows(x, na, y, nb, K);
    ds_free(x), ds_free(y);
    return fd;
}

/* Rank 0, per modelled layer (src/eval/README.md §2): a PCA of the normalised train states (this layer's
 * channels of ds_state_dit_encode), the generated, held-out and train rows projected on its K
 * components, and the Fréchet distances: generated vs held-out and, as the floor that sampling noise
 * alone gives, an evenly spread subset of as many train rows vs held-out; pooled and per label. */
static void frechet(eval_run *r) {
    double t0 = ds_now_seconds();
    int K = r->fd_components, L = r->sd.n_layers, NL = r->K;
    int64_t X = r->sd.x_floats, d = X / L, N = r->o.samples_per_label;
    r->fd = ds_alloc(sizeof(fd_layer) * L);
    ds_log("eval-states: Fréchet distances in a %d-component PCA per modelled layer (%lld generated, %lld held-out, "
           "floor: %lld train states)", K, (long long)r->n_gen, (long long)r->n_held, (long long)r->fd_subset);
    float *held_x = ds_alloc(sizeof(float) * (size_t)r->n_held * X);
    for (int64_t i = 0; i < r->n_held; i++) ds_state_dit_encode(&r->sd, ds_states_record(r->held, i).state, held_x + i * X);
    int64_t *sub = ds_alloc(sizeof(int64_t) * (size_t)r->n_train), *lab = ds_alloc(sizeof(int64_t) * (size_t)r->n_train);
    int64_t *held_lab = ds_alloc(sizeof(int64_t) * (size_t)(r->n_held > 0 ? r->n_held : 1)), *gen_lab = ds_alloc(sizeof(int64_t) * N);
    float *pt = ds_alloc(sizeof(float) * (size_t)r->n_train * K), *pg = ds_alloc(sizeof(float) * (size_t)r->n_gen * K);
    float *ph = ds_alloc(sizeof(float) * (size_t)r->n_held * K);
    for (int l = 0; l < L; l++) {
        fd_layer *f = &r->fd[l];
        f->layer = r->sd.layers[l];
        float *rows = slice_rows(r->train_x, X, NULL, r->n_train, l * d, d);
        ds_pca pca;
        ds_pca_fit(&pca, MPI_COMM_SELF, r->n_train, (int)d, rows, K, DS_PCA_AUTO);
        ds_pca_transform(&pca, r->n_train, rows, pt);
        ds_free(rows);
        rows = slice_rows(r->gen_x, X, NULL, r->n_gen, l * d, d);
        ds_pca_transform(&pca, r->n_gen, rows, pg);
        ds_free(rows);
        rows = slice_rows(held_x, X, NULL, r->n_held, l * d, d);
        ds_pca_transform(&pca, r->n_held, rows, ph);
        ds_free(rows);
        f->explained = 0;
        for (int k = 0; k < K; k++) f->explained += pca.eigenvalues[k] / pca.total_variance;
        ds_pca_free(&pca);
        spread_subset(NULL, r->n_train, r->fd_subset, sub);
        f->generated = frechet_of(pg, NULL, r->n_gen, ph, NULL, r->n_held, K);
        f->floor = frechet_of(pt, sub, r->fd_subset, ph, NULL, r->n_held, K);
        f->label_generated = ds_alloc(sizeof(double) * NL);
        f->label_floor = ds_alloc(sizeof(double) * NL);
        f->label_subset = ds_alloc(sizeof(int64_t) * NL);
        for (int k = 0; k < NL; k++) {
            int64_t nh = 0, nt = 0;
            for (int64_t i = 0; i < r->n_held; i++)
                if (r->held_labels[i] == k) held_lab[nh++] = i;
            for (int64_t i = 0; i < r->n_train; i++)
                if (r->train_labels[i] == k) lab[nt++] = i;
            for (int64_t g = 0; g < N; g++) gen_lab[g] = k * N + g;
            int64_t m = spread_subset(lab, nt, nt < N ? nt : N, sub);
            f->label_subset[k] = m;
            f->label_generated[k] = frechet_of(pg, gen_lab, N, ph, held_lab, nh, K);
            f->label_floor[k] = frechet_of(pt, sub, m, ph, held_lab, nh, K);
        }
    }
    ds_free(held_x), ds_free(sub), ds_free(lab), ds_free(held_lab), ds_free(gen_lab), ds_free(pt), ds_free(pg), ds_free(ph);
    r->seconds[5] = ds_now_seconds() - t0;
}

/* Per held-out record (rank r's share: records r, r + R, ...): the CE sums of the continuation from
 * each initial state, one forward of the n_inits states as a batch over the same tokens. */
static void continuation(eval_run *r, ds_rwkv7 *m, const ds_tokenizer *tok, const ds_contexts *ctx) {
    double t0 = ds_now_seconds();
    int max_tokens = r->hi->max_tokens, T = r->o.continuation_tokens - 1, V = m->d.vocab_size;
    int64_t X = r->sd.x_floats, SF = ds_state_floats(&r->sd.shape), N = r->o.samples_per_label;
    size_t longest = 1;
    for (int64_t i = r->rank; i < r->n_held; i += r->ranks) {
        size_t len = ctx->items[ds_states_record(r->held, i).context].len;
        longest = len > longest ? len : longest;
    }
    int I = r->n_inits;
    int32_t *ids = ds_alloc(sizeof(int32_t) * longest), *tokens = ds_alloc(sizeof(int32_t) * N_INITS * T);
    int32_t *targets = ds_alloc(sizeof(int32_t) * N_INITS * T);
    float *logits = ds_alloc(sizeof(float) * N_INITS * T * V), *losses = ds_alloc(sizeof(float) * N_INITS * T);
    float *state = ds_alloc(sizeof(float) * SF);
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &m->d, I);
    r->ce = ds_alloc(sizeof(double) * r->n_held * CE_STRIDE);
    ds_progress prog;
    ds_progress_begin(&prog, "eval-states continuation", "contexts (rank 0's share)",
                      (r->n_held + r->ranks - 1) / r->ranks);
    int64_t done = 0;
    for (int64_t i = r->rank; i < r->n_held; i += r->ranks, ds_progress_update(&prog, ++done)) {
        ds_state_record rec = ds_states_record(r->held, i);
        const ds_context *c = &ctx->items[rec.context];
        int64_t n_ids = (int64_t)ds_tokenizer_encode(tok, c->text, c->len, ids) - max_tokens;
        if (n_ids < DS_EVAL_STATES_MIN_CONTINUATION) continue;
        int n = (int)(n_ids < r->o.continuation_tokens ? n_ids : r->o.continuation_tokens) - 1;  /* inputs = targets */
        const int32_t *cont = ids + max_tokens;
        for (int b = 0; b < I; b++)
            for (int t = 0; t < n; t++) {
                tokens[b * n + t] = cont[t];
                targets[b * n + t] = cont[t + 1];
            }
        int label = rec.label, wrong = (label + 1) % r->K;
        for (int b = 0; b < I; b++) {
            const float *src = state;
            switch (b) {
            case INIT_ZERO: memset(state, 0, sizeof(float) * SF); break;
            case INIT_MEAN: src = r->class_mean + label * SF; break;
            case INIT_GEN: ds_state_dit_decode(&r->sd, r->gen_x + (label * N + i % N) * X, state); break;
            case INIT_GEN_WRONG: ds_state_dit_decode(&r->sd, r->gen_x + (wrong * N + i % N) * X, state); break;
            case INIT_TRUE: modelled_only(&r->sd, rec.state, state); break;
            case INIT_FULL: src = rec.state; break;
            default: src = r->tuned + label * SF; break;  /* INIT_TUNED */
            }
            ds_state_unpack(&r->sd.shape, src, &st, b);
        }
        ds_rwkv7_forward(m, I, n, tokens, NULL, 1.0f, 0.0f, &st, NULL, logits);
        ds_k.softmax_xent(I * n, V, logits, targets, 1.0f, 0.0f, losses);
        double *row = r->ce + i * CE_STRIDE;
        for (int b = 0; b < I; b++)
            for (int t = 0; t < n; t++) row[b] += losses[b * n + t];
        row[N_INITS] = n;
    }
    ds_progress_end(&prog);
    ds_dist_sum_doubles(r->ce, (int)(r->n_held * CE_STRIDE));
    ds_rwkv7_state_destroy(&st);
    ds_free(ids); ds_free(tokens); ds_free(targets); ds_free(logits); ds_free(losses); ds_free(state);
    r->seconds[4] = ds_now_seconds() - t0;
}

/* ---- the command ---- */

static void meta_value(const eval_run *r, const char *meta, const char *key, char *out, size_t len) {
    if (!ds_ckpt_meta_value(meta, key, out, len))
        ds_die(DS_EXIT_BAD_INPUT, "%s: no %s= in its metadata", r->o.model, key);
}

ds_eval_states_options ds_eval_states_defaults(void) {
    return (ds_eval_states_options){.samples_per_label = 8, .steps = 50, .guidance = 1.0, .temperature = 1.0,
                                    .seed = 1234, .continuation_tokens = 128};
}

int ds_eval_states(const ds_eval_states_options *options) {
    double start = ds_now_seconds();
    eval_run r;
    memset(&r, 0, sizeof r);
    r.o = *options;
    if (r.o.out) snprintf(r.out, sizeof r.out, "%s", r.o.out);
    else {
        size_t n = strlen(r.o.model);
        if (n >= 5 && strcmp(r.o.model + n - 5, ".ckpt") == 0) n -= 5;
        snprintf(r.out, sizeof r.out, "%.*s.eval-states.json", (int)n, r.o.model);
    }
    r.rank = ds_dist_rank(), r.ranks = ds_dist_size();
    r.o.threads = ds_dist_threads(r.o.threads, "eval-states: --threads");
    ds_blas_init(r.o.threads);
    ds_kernels_init();
    omp_set_num_threads(r.o.threads);

    /* Every input is checked, on every rank, before any work. */
    char *meta;
    ds_state_dit_load(&r.sd, r.o.model, &meta);
    if (r.sd.cond_kind != DS_STATE_COND_LABEL)
        ds_die(DS_EXIT_BAD_INPUT, "eval-states: %s is conditioned on %s vectors; the label recovery needs a label model",
               r.o.model, ds_state_cond_kind_name(r.sd.cond_kind));
    ds_rwkv7_dims dims;
    ds_state_dit_rwkv_dims(r.o.model, meta, &dims);
    meta_value(&r, meta, "rwkv_model", r.rwkv_model, sizeof r.rwkv_model);
    meta_value(&r, meta, "rwkv_checkpoint", r.rwkv_checkpoint, sizeof r.rwkv_checkpoint);
    meta_value(&r, meta, "tokenizer", r.tokenizer, sizeof r.tokenizer);
    free(meta);
    r.K = r.sd.n_labels;
    r.train = ds_states_open(r.o.states);
    r.held = ds_states_open(r.o.held_out);
    r.ti = ds_states_get_info(r.train), r.hi = ds_states_get_info(r.held);
    check_dataset(r.o.states, r.ti, &r.sd, r.rwkv_model, r.o.model);
    check_dataset(r.o.held_out, r.hi, &r.sd, r.rwkv_model, r.o.model);
    r.n_inits = r.o.tuned ? N_INITS : N_INITS - 1;
    if (r.o.tuned) load_tuned(&r);
    r.n_train = r.ti->n_records, r.n_held = r.hi->n_records, r.n_gen = (int64_t)r.K * r.o.samples_per_label;
    if (r.n_train < eval_states_knn_ks[N_KS - 1])
        ds_die(DS_EXIT_BAD_INPUT, "%s: %lld records, the kNN needs at least %d", r.o.states, (long long)r.n_train,
               eval_states_knn_ks[N_KS - 1]);
    if (r.n_held < 1) ds_die(DS_EXIT_BAD_INPUT, "%s: no records", r.o.held_out);
    int64_t fd_max = r.sd.x_floats / r.sd.n_layers < r.n_train - 1 ? r.sd.x_floats / r.sd.n_layers : r.n_train - 1;
    r.fd_components = r.o.fd_components ? r.o.fd_components : (int)(fd_max < FD_DEFAULT_COMPONENTS ? fd_max : FD_DEFAULT_COMPONENTS);
    if (r.fd_components < 1 || r.fd_components > fd_max)
        ds_die(DS_EXIT_BAD_INPUT, "eval-states: --fd-components %d is out of range: at most %lld (train records - 1, "
               "features of a modelled layer)", r.fd_components, (long long)fd_max);
    r.fd_subset = r.n_gen < r.n_train ? r.n_gen : r.n_train;
    if (strcmp(r.hi->tokenizer, r.tokenizer) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: contexts tokenized with '%s', the model's states with '%s'", r.o.held_out,
               r.hi->tokenizer, r.tokenizer);
    ds_contexts *ctx = ds_contexts_load(r.hi->contexts, r.K, r.sd.labels);
    for (int64_t i = 0; i < r.n_held; i++) {
        ds_state_record rec = ds_states_record(r.held, i);
        if (rec.context < 0 || rec.context >= ctx->n || ctx->items[rec.context].label != rec.label)
            ds_die(DS_EXIT_BAD_INPUT, "%s: record %lld (context %d, label %d) does not match %s: was it rewritten?",
                   r.o.held_out, (long long)i, rec.context, rec.label, r.hi->contexts);
    }
    ds_tokenizer *tok = ds_tokenizer_open(r.tokenizer, r.o.vocab);
    if (ds_tokenizer_vocab_size(tok) > (uint32_t)dims.vocab_size)
        ds_die(DS_EXIT_BAD_INPUT, "eval-states: the %s tokenizer has %u ids, the model only %d", r.tokenizer,
               ds_tokenizer_vocab_size(tok), dims.vocab_size);
    r.weights = r.o.checkpoint ? r.o.checkpoint : r.rwkv_checkpoint;
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &dims);
    ds_weights_load(&m, r.weights);  /* refuses weights of another shape than rwkv_model */
    char *real = realpath(r.weights, NULL);
    if (!real || strcmp(real, r.ti->checkpoint) != 0)
        ds_log("eval-states: warning: the train states came from %s, the continuation uses %s", r.ti->checkpoint,
               r.weights);
    free(real);
    ds_log("eval-states: %s (%lld DiT parameters), %d labels, %lld train / %lld held-out records, %d ranks x %d threads",
           r.o.model, (long long)r.sd.dit.n_params, r.K, (long long)r.n_train, (long long)r.n_held, r.ranks, r.o.threads);

    denoising(&r);
    features(&r);
    generation(&r);
    knn(&r);
    if (r.rank == 0) frechet(&r);
    continuation(&r, &m, tok, ctx);

    if (r.rank == 0) {
        eval_states_report(&r, ds_now_seconds() - start);
        ds_log("eval-states: wrote %s in %.1fs", r.out, ds_now_seconds() - start);
    }
    ds_free(r.train_x); ds_free(r.train_labels); ds_free(r.held_labels); ds_free(r.gen_x); ds_free(r.class_mean); ds_free(r.tuned);
    ds_free(r.knn); ds_free(r.ce);
    for (int l = 0; r.fd && l < r.sd.n_layers; l++)
        ds_free(r.fd[l].label_generated), ds_free(r.fd[l].label_floor), ds_free(r.fd[l].label_subset);
    ds_free(r.fd);
    ds_rwkv7_destroy(&m);
    ds_tokenizer_free(tok);
    ds_contexts_free(ctx);
    ds_states_close(r.train);
    ds_states_close(r.held);
    ds_state_dit_destroy(&r.sd);
    return 0;
}
