/* `dreamstate eval-states` (dreamstate.md 6.1 A2, A3): the numbers of DREAMSTATE part A for a trained
 * state DiT (its EMA weights).
 *  (1) denoising: epsilon-MSE at the fixed steps (ds_state_dit_eps_mse) on the held-out records, and
 *      on as many train records spread over the train set (the overfitting check);
 *  (2) label recovery: a cosine kNN classifier (k = 1, 5) fitted on the real train states in the
 *      model's feature space (normalised modelled WKV channels, ds_state_dit_encode) labels the real
 *      held-out states (the reference) and N DDIM samples per label (condition = label); memorisation
 *      check: mean distance of generated and of held-out states to their nearest train state;
 *  (3) continuation loss: teacher-forced CE of the tokens after the part of each held-out context its
 *      state was extracted from, from six initial states (zero; class mean; generated of its label and
 *      of a wrong label; the true state reduced to the modelled WKV, as 2.7 injects; the full true
 *      state, i.e. prompting), per label and pooled (token-weighted), with 95% bootstrap CIs of the
 *      paired difference to the zero state.
 * Work split: generated samples, kNN queries and continuation contexts are dealt out over the ranks;
 * every per-item result lands in an array that is zero elsewhere and is summed over ranks (exact), and
 * rank 0 reduces in a fixed order, so any rank count prints the same numbers (the epsilon-MSE sums
 * excepted: equal to rounding). Rank 0 prints the table and writes the JSON. */
#include "dreamstate/analysis.h"
#include "dreamstate/args.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/kernels.h"
#include "dreamstate/progress.h"
#include "dreamstate/state_diffusion.h"
#include "dreamstate/weights.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CONTINUATION 16       /* tokens after the extracted part that make a context scorable */
#define BOOTSTRAP_RESAMPLES 1000
#define EPS_BATCH 8               /* records per DiT forward of the epsilon-MSE */
enum { N_KS = 2 };
static const int knn_ks[N_KS] = {1, 5};

enum {
    RNG_STREAM_GENERATE = 0x47454e53,  /* "GENS": sampler seed of generated sample g */
    RNG_STREAM_BOOTSTRAP = 0x424f4f54, /* "BOOT" + group: the resampled contexts */
};

/* The initial states of the continuation loss, in their batch order. */
enum { INIT_ZERO, INIT_MEAN, INIT_GEN, INIT_GEN_WRONG, INIT_TRUE, INIT_FULL, N_INITS };
static const char *const init_names[N_INITS] = {"zero", "class_mean", "generated", "generated_wrong_label",
                                                "true_modelled", "true_full"};
enum { CE_STRIDE = N_INITS + 1 };  /* per context: CE sums of each initial state, then the token count */

typedef struct eval_opts {
    const char *model, *train, *held, *checkpoint, *vocab;
    char out[DS_PATH_MAX + 32];
    int samples, steps, cont_tokens, threads;
    double guidance, clip, temperature;
    uint64_t seed;
} eval_opts;

static const char *help_text =
    "usage: dreamstate eval-states MODEL.ckpt --states TRAIN_INDEX --held-out HELD_INDEX\n"
    "                              [--checkpoint RWKV_WEIGHTS] [--vocab FILE] [--samples-per-label N]\n"
    "                              [--steps K] [--guidance W] [--seed S] [--continuation-tokens N]\n"
    "                              [--threads N] [--out FILE.json]\n"
    "The numbers of DREAMSTATE part A (dreamstate.md 6.1 A2, A3) for a state-diffusion checkpoint (EMA\n"
    "weights) and the state datasets of its RWKV-7, under mpirun or alone:\n"
    " (1) epsilon-MSE at t = 49, 249, 499, 749, 949 (one fixed noise draw per record) on the held-out\n"
    "     records and on as many train records spread over the train set;\n"
    " (2) cosine kNN (k = 1, 5) fitted on the train states (the model's normalised modelled WKV channels):\n"
    "     accuracy on the held-out states and on N DDIM samples per label (condition = label); the\n"
    "     memorisation check: mean distance to the nearest train state, generated vs held-out;\n"
    " (3) teacher-forced CE of the next up to N tokens after each held-out context's first max_tokens\n"
    "     tokens (the part its state came from; contexts with at least 16 more tokens) from the zero\n"
    "     state, the class-mean state, a generated state of its label and of label + 1, the true state\n"
    "     (modelled WKV only, as injected) and the full true state (= prompting), per label and pooled,\n"
    "     with 95% bootstrap CIs (1000 resamples over contexts) of the paired difference to zero.\n"
    "  --checkpoint FILE         RWKV-7 weights (default: the model's rwkv_checkpoint=)\n"
    "  --vocab FILE              vocabulary file of the world tokenizer\n"
    "  --samples-per-label N     generated states per label (default 8)\n"
    "  --steps K                 DDIM steps (default 50)\n"
    "  --guidance W              classifier-free guidance (default 1: off)\n"
    "  --clip C                  clip the sampler's predicted x0 to [-C, C] (default 0: off)\n"
    "  --temperature T           scale of the sampler's initial noise (default 1)\n"
    "  --seed S                  noise of (1) (the trainer's run.seed reproduces its val_eps_mse), the\n"
    "                            samples and the bootstrap (default 1234)\n"
    "  --continuation-tokens N   default 128 (at least 16)\n"
    "  --threads N               threads per rank (default: cores / ranks on the node)\n"
    "  --out FILE.json           every number (default: MODEL without .ckpt + .eval-states.json)\n";

static void parse_args(int argc, char **argv, eval_opts *o) {
    static const char *const flags[] = {"--states", "--held-out", "--checkpoint", "--vocab", "--samples-per-label",
                                        "--steps", "--guidance", "--seed", "--continuation-tokens", "--threads",
                                        "--out", "--clip", "--temperature"};
    enum { N_FLAGS = sizeof flags / sizeof flags[0] };
    const char *v[N_FLAGS] = {0}, *pos[1];
    const char *cmd = "eval-states";
    if (ds_args_scan(cmd, argc, argv, N_FLAGS, flags, v, 1, pos, NULL, NULL) != 1 || !v[0] || !v[1])
        ds_die(DS_EXIT_BAD_INPUT, "eval-states: needs MODEL.ckpt, --states and --held-out (see --help)");
    *o = (eval_opts){.model = pos[0], .train = v[0], .held = v[1], .checkpoint = v[2], .vocab = v[3], .samples = 8,
                     .steps = 50, .cont_tokens = 128, .guidance = 1.0, .temperature = 1.0, .seed = 1234};
    if (v[4]) o->samples = (int)ds_arg_int(cmd, "--samples-per-label", v[4], 1, 4096);
    if (v[5]) o->steps = (int)ds_arg_int(cmd, "--steps", v[5], 2, DS_DIFFUSION_STEPS);
    if (v[6]) o->guidance = ds_arg_number(cmd, "--guidance", v[6], -100, 100);
    if (v[11]) o->clip = ds_arg_number(cmd, "--clip", v[11], 0, 1e6);
    if (v[12]) o->temperature = ds_arg_number(cmd, "--temperature", v[12], 0, 1e6);
    if (v[7]) o->seed = ds_arg_seed(cmd, "--seed", v[7]);
    if (v[8]) o->cont_tokens = (int)ds_arg_int(cmd, "--continuation-tokens", v[8], MIN_CONTINUATION, 1 << 20);
    if (v[9]) o->threads = (int)ds_arg_int(cmd, "--threads", v[9], 1, 4096);
    if (v[10]) snprintf(o->out, sizeof o->out, "%s", v[10]);
    else {
        size_t n = strlen(o->model);
        if (n >= 5 && strcmp(o->model + n - 5, ".ckpt") == 0) n -= 5;
        snprintf(o->out, sizeof o->out, "%.*s.eval-states.json", (int)n, o->model);
    }
}

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

/* A record state reduced to the modelled layers' WKV, everything else zero (the injection of 2.7). */
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

/* ---- continuation summaries ---- */

typedef struct ce_group {
    int64_t contexts;
    double tokens;
    double ce[N_INITS], delta[N_INITS], lo[N_INITS], hi[N_INITS];  /* nats/token; delta = ce - ce[zero] */
} ce_group;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of sorted v[n] with linear interpolation (numpy's default). */
static double quantile(const double *v, int n, double q) {
    double pos = q * (n - 1);
    int i = (int)pos;
    return i + 1 < n ? v[i] + (pos - i) * (v[i + 1] - v[i]) : v[n - 1];
}

/* Token-weighted CEs of the contexts items[0..n) and, per initial state, the paired difference to
 * the zero state with its 95% percentile interval over BOOTSTRAP_RESAMPLES resamples of the contexts
 * (the same resamples for every initial state). */
static void ce_summary(const double *ce, const int64_t *items, int64_t n, uint64_t seed, uint64_t stream, ce_group *g) {
    memset(g, 0, sizeof *g);
    g->contexts = n;
    double sums[N_INITS] = {0};
    for (int64_t i = 0; i < n; i++) {
        for (int s = 0; s < N_INITS; s++) sums[s] += ce[items[i] * CE_STRIDE + s];
        g->tokens += ce[items[i] * CE_STRIDE + N_INITS];
    }
    for (int s = 0; s < N_INITS; s++) {
        g->ce[s] = n ? sums[s] / g->tokens : NAN;
        g->delta[s] = n ? (sums[s] - sums[INIT_ZERO]) / g->tokens : NAN;
        g->lo[s] = g->hi[s] = NAN;
    }
    if (n == 0) return;
    double *deltas = ds_alloc(sizeof(double) * N_INITS * BOOTSTRAP_RESAMPLES);
    for (int b = 0; b < BOOTSTRAP_RESAMPLES; b++) {
        double d[N_INITS] = {0}, tokens = 0;
        for (int64_t j = 0; j < n; j++) {
            const double *row = ce + items[ds_rng_u64(seed, stream, (uint64_t)b * n + j) % (uint64_t)n] * CE_STRIDE;
            for (int s = 0; s < N_INITS; s++) d[s] += row[s] - row[INIT_ZERO];
            tokens += row[N_INITS];
        }
        for (int s = 0; s < N_INITS; s++) deltas[s * BOOTSTRAP_RESAMPLES + b] = d[s] / tokens;
    }
    for (int s = 0; s < N_INITS; s++) {
        double *v = deltas + s * BOOTSTRAP_RESAMPLES;
        qsort(v, BOOTSTRAP_RESAMPLES, sizeof(double), cmp_double);
        g->lo[s] = quantile(v, BOOTSTRAP_RESAMPLES, 0.025);
        g->hi[s] = quantile(v, BOOTSTRAP_RESAMPLES, 0.975);
    }
    ds_free(deltas);
}

/* ---- the run ---- */

typedef struct eval_run {
    eval_opts o;
    ds_state_dit sd;
    char rwkv_model[256], rwkv_checkpoint[DS_PATH_MAX], tokenizer[16];
    const char *weights;
    ds_states *train, *held;
    const ds_states_info *ti, *hi;
    int K, rank, ranks;
    int64_t n_train, n_held, n_gen, n_eps_train;
    float *train_x;      /* [n_train][x_floats] kNN features */
    int *train_labels, *held_labels;
    float *gen_x;        /* [n_gen][x_floats] generated samples (normalised), on every rank */
    float *class_mean;   /* [K][state floats] mean train state of each label, modelled WKV only */
    double eps_held[DS_STATE_DIT_EVAL_STEPS + 1], eps_train[DS_STATE_DIT_EVAL_STEPS + 1];  /* per step, mean */
    double *knn;         /* [n_held + n_gen][N_KS + 1]: the k-votes, distance to the nearest train state */
    double *ce;          /* [n_held][CE_STRIDE] */
    double seconds[5];   /* denoising, features, generation, kNN, continuation */
} eval_run;

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
            ds_die(DS_EXIT_BAD_INPUT, "%s: record %lld has no label", r->o.train, (long long)i);
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
    int32_t label = (int32_t)(g / r->o.samples), null = r->sd.n_labels;
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
        ds_knn_predict(r->train_x, r->train_labels, r->n_train, q, n, (int)X, DS_METRIC_COSINE, knn_ks, N_KS, pred);
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

/* Per held-out record (rank r's share: records r, r + R, ...): the CE sums of the continuation from
 * each initial state, one forward of the N_INITS states as a batch over the same tokens. */
static void continuation(eval_run *r, ds_rwkv7 *m, const ds_tokenizer *tok, const ds_contexts *ctx) {
    double t0 = ds_now_seconds();
    int max_tokens = r->hi->max_tokens, T = r->o.cont_tokens - 1, V = m->d.vocab_size;
    int64_t X = r->sd.x_floats, SF = ds_state_floats(&r->sd.shape), N = r->o.samples;
    size_t longest = 1;
    for (int64_t i = r->rank; i < r->n_held; i += r->ranks) {
        size_t len = ctx->items[ds_states_record(r->held, i).context].len;
        longest = len > longest ? len : longest;
    }
    int32_t *ids = ds_alloc(sizeof(int32_t) * longest), *tokens = ds_alloc(sizeof(int32_t) * N_INITS * T);
    int32_t *targets = ds_alloc(sizeof(int32_t) * N_INITS * T);
    float *logits = ds_alloc(sizeof(float) * N_INITS * T * V), *losses = ds_alloc(sizeof(float) * N_INITS * T);
    float *state = ds_alloc(sizeof(float) * SF);
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &m->d, N_INITS);
    r->ce = ds_alloc(sizeof(double) * r->n_held * CE_STRIDE);
    ds_progress prog;
    ds_progress_begin(&prog, "eval-states continuation", "contexts (rank 0's share)",
                      (r->n_held + r->ranks - 1) / r->ranks);
    int64_t done = 0;
    for (int64_t i = r->rank; i < r->n_held; i += r->ranks, ds_progress_update(&prog, ++done)) {
        ds_state_record rec = ds_states_record(r->held, i);
        const ds_context *c = &ctx->items[rec.context];
        int64_t n_ids = (int64_t)ds_tokenizer_encode(tok, c->text, c->len, ids) - max_tokens;
        if (n_ids < MIN_CONTINUATION) continue;
        int n = (int)(n_ids < r->o.cont_tokens ? n_ids : r->o.cont_tokens) - 1;  /* inputs = targets */
        const int32_t *cont = ids + max_tokens;
        for (int b = 0; b < N_INITS; b++)
            for (int t = 0; t < n; t++) {
                tokens[b * n + t] = cont[t];
                targets[b * n + t] = cont[t + 1];
            }
        int label = rec.label, wrong = (label + 1) % r->K;
        for (int b = 0; b < N_INITS; b++) {
            const float *src = state;
            switch (b) {
            case INIT_ZERO: memset(state, 0, sizeof(float) * SF); break;
            case INIT_MEAN: src = r->class_mean + label * SF; break;
            case INIT_GEN: ds_state_dit_decode(&r->sd, r->gen_x + (label * N + i % N) * X, state); break;
            case INIT_GEN_WRONG: ds_state_dit_decode(&r->sd, r->gen_x + (wrong * N + i % N) * X, state); break;
            case INIT_TRUE: modelled_only(&r->sd, rec.state, state); break;
            default: src = rec.state; break;  /* INIT_FULL */
            }
            ds_state_unpack(&r->sd.shape, src, &st, b);
        }
        ds_rwkv7_forward(m, N_INITS, n, tokens, NULL, 1.0f, 0.0f, &st, NULL, logits);
        ds_k.softmax_xent(N_INITS * n, V, logits, targets, 1.0f, 0.0f, losses);
        double *row = r->ce + i * CE_STRIDE;
        for (int b = 0; b < N_INITS; b++)
            for (int t = 0; t < n; t++) row[b] += losses[b * n + t];
        row[N_INITS] = n;
    }
    ds_progress_end(&prog);
    ds_dist_sum_doubles(r->ce, (int)(r->n_held * CE_STRIDE));
    ds_rwkv7_state_destroy(&st);
    ds_free(ids); ds_free(tokens); ds_free(targets); ds_free(logits); ds_free(losses); ds_free(state);
    r->seconds[4] = ds_now_seconds() - t0;
}

/* ---- summaries and output (rank 0) ---- */

typedef struct knn_group {
    int64_t n;
    double accuracy[N_KS], nn_distance;   /* mean distance to the nearest train state */
} knn_group;

/* Held-out (generated = 0) or generated queries, of one label or all (label < 0). */
static knn_group knn_summary(const eval_run *r, int generated, int label) {
    knn_group g = {0};
    int64_t first = generated ? r->n_held : 0, end = generated ? r->n_held + r->n_gen : r->n_held;
    for (int64_t q = first; q < end; q++) {
        int truth = generated ? (int)((q - r->n_held) / r->o.samples) : r->held_labels[q];
        if (label >= 0 && truth != label) continue;
        const double *row = r->knn + q * (N_KS + 1);
        for (int s = 0; s < N_KS; s++) g.accuracy[s] += (int)row[s] == truth;
        g.nn_distance += row[N_KS];
        g.n++;
    }
    for (int s = 0; s < N_KS; s++) g.accuracy[s] = g.n ? g.accuracy[s] / g.n : NAN;
    g.nn_distance = g.n ? g.nn_distance / g.n : NAN;
    return g;
}

/* Continuation groups: [0] pooled, [1 + k] label k. */
static ce_group *ce_groups(const eval_run *r) {
    ce_group *g = ds_alloc(sizeof(ce_group) * (r->K + 1));
    int64_t *items = ds_alloc(sizeof(int64_t) * (r->n_held > 0 ? r->n_held : 1));
    for (int k = -1; k < r->K; k++) {
        int64_t n = 0;
        for (int64_t i = 0; i < r->n_held; i++)
            if (r->ce[i * CE_STRIDE + N_INITS] > 0 && (k < 0 || r->held_labels[i] == k)) items[n++] = i;
        ce_summary(r->ce, items, n, r->o.seed, RNG_STREAM_BOOTSTRAP + (uint64_t)(k + 1), &g[k + 1]);
    }
    ds_free(items);
    return g;
}

static void json_knn(FILE *f, const knn_group *g) {
    fprintf(f, "{\"n\": %lld, \"accuracy\": ", (long long)g->n);
    ds_json_numbers(f, g->accuracy, N_KS);
    fputs(", \"nearest_train_distance\": ", f), ds_json_number(f, g->nn_distance);
    fputc('}', f);
}

static void json_ce(FILE *f, const ce_group *g) {
    fprintf(f, "{\"contexts\": %lld, \"tokens\": %.0f", (long long)g->contexts, g->tokens);
    for (int s = 0; s < N_INITS; s++) {
        fprintf(f, ",\n        \"%s\": {\"ce\": ", init_names[s]), ds_json_number(f, g->ce[s]);
        fputs(", \"delta_vs_zero\": ", f), ds_json_number(f, g->delta[s]);
        fputs(", \"ci95\": [", f), ds_json_number(f, g->lo[s]), fputs(", ", f), ds_json_number(f, g->hi[s]), fputs("]}", f);
    }
    fputc('}', f);
}

static void write_json(const eval_run *r, const knn_group *kn, const ce_group *cg, double seconds) {
    const char *path = r->o.out;
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) ds_die(DS_EXIT_FAIL, "eval-states: cannot write %s", path);
    FILE *f = af.fp;
    char sig[512];
    ds_state_dit_signature(&r->sd, sig, sizeof sig);
    fputs("{\n  \"version\": 1,\n  \"model\": ", f), ds_json_string(f, r->o.model);
    fputs(", \"signature\": ", f), ds_json_string(f, sig);
    fputs(",\n  \"rwkv_model\": ", f), ds_json_string(f, r->rwkv_model);
    fputs(", \"rwkv_weights\": ", f), ds_json_string(f, r->weights);
    fputs(", \"tokenizer\": ", f), ds_json_string(f, r->tokenizer);
    fputs(",\n  \"train\": {\"index\": ", f), ds_json_string(f, r->o.train);
    fprintf(f, ", \"records\": %lld, \"max_tokens\": %d},\n  \"held_out\": {\"index\": ", (long long)r->n_train,
            r->ti->max_tokens);
    ds_json_string(f, r->o.held);
    fprintf(f, ", \"records\": %lld, \"max_tokens\": %d, \"contexts\": ", (long long)r->n_held, r->hi->max_tokens);
    ds_json_string(f, r->hi->contexts);
    fputs("},\n  \"labels\": [", f);
    for (int k = 0; k < r->K; k++) fputs(k ? ", " : "", f), ds_json_string(f, r->sd.labels[k]);
    fprintf(f, "],\n  \"ranks\": %d, \"threads\": %d, \"seed\": %llu,\n", r->ranks, r->o.threads,
            (unsigned long long)r->o.seed);
    fprintf(f, "  \"sampler\": {\"method\": \"ddim\", \"eta\": 0, \"steps\": %d, \"guidance\": ", r->o.steps);
    ds_json_number(f, r->o.guidance);
    fprintf(f, ", \"temperature\": ");
    ds_json_number(f, r->o.temperature);
    fprintf(f, ", \"clip_x0\": ");
    ds_json_number(f, r->o.clip);
    fprintf(f, ", \"samples_per_label\": %d},\n", r->o.samples);
    /* (1) */
    fputs("  \"denoising\": {\"t\": [", f);
    for (int k = 0; k < DS_STATE_DIT_EVAL_STEPS; k++) fprintf(f, "%s%d", k ? ", " : "", ds_state_dit_eval_steps[k]);
    fprintf(f, "],\n    \"held_out\": {\"records\": %lld, \"eps_mse\": ", (long long)r->n_held);
    ds_json_numbers(f, r->eps_held, DS_STATE_DIT_EVAL_STEPS);
    fputs(", \"mean\": ", f), ds_json_number(f, r->eps_held[DS_STATE_DIT_EVAL_STEPS]);
    fprintf(f, "},\n    \"train\": {\"records\": %lld, \"eps_mse\": ", (long long)r->n_eps_train);
    ds_json_numbers(f, r->eps_train, DS_STATE_DIT_EVAL_STEPS);
    fputs(", \"mean\": ", f), ds_json_number(f, r->eps_train[DS_STATE_DIT_EVAL_STEPS]);
    fputs("}},\n", f);
    /* (2) */
    fprintf(f, "  \"knn\": {\"metric\": \"cosine\", \"features\": \"normalised modelled WKV channels\", \"dim\": %lld, "
               "\"train_records\": %lld, \"k\": [%d, %d],\n", (long long)r->sd.x_floats, (long long)r->n_train,
            knn_ks[0], knn_ks[1]);
    fputs("    \"held_out\": ", f), json_knn(f, &kn[0]);
    fputs(",\n    \"generated\": ", f), json_knn(f, &kn[1]);
    fputs(",\n    \"per_label\": [", f);
    for (int k = 0; k < r->K; k++) {
        fputs(k ? ",\n      " : "\n      ", f);
        fputs("{\"label\": ", f), ds_json_string(f, r->sd.labels[k]);
        fputs(", \"held_out\": ", f), json_knn(f, &kn[2 + 2 * k]);
        fputs(", \"generated\": ", f), json_knn(f, &kn[3 + 2 * k]);
        fputc('}', f);
    }
    fputs("],\n    \"memorisation\": {\"generated_nearest_train_distance\": ", f), ds_json_number(f, kn[1].nn_distance);
    fputs(", \"held_out_nearest_train_distance\": ", f), ds_json_number(f, kn[0].nn_distance);
    fputs(", \"ratio\": ", f), ds_json_number(f, kn[1].nn_distance / kn[0].nn_distance);
    fputs("}},\n", f);
    /* (3) */
    fprintf(f, "  \"continuation\": {\"max_tokens\": %d, \"min_tokens\": %d, \"after_tokens\": %d, "
               "\"bootstrap_resamples\": %d, \"initial_states\": [", r->o.cont_tokens, MIN_CONTINUATION,
            r->hi->max_tokens, BOOTSTRAP_RESAMPLES);
    for (int s = 0; s < N_INITS; s++) fprintf(f, "%s\"%s\"", s ? ", " : "", init_names[s]);
    fprintf(f, "],\n    \"skipped\": %lld,\n    \"pooled\": ", (long long)(r->n_held - cg[0].contexts));
    json_ce(f, &cg[0]);
    fputs(",\n    \"per_label\": [", f);
    for (int k = 0; k < r->K; k++) {
        fputs(k ? ",\n      {\"label\": " : "\n      {\"label\": ", f), ds_json_string(f, r->sd.labels[k]);
        fputs(", \"ce\": ", f), json_ce(f, &cg[1 + k]), fputc('}', f);
    }
    fputs("],\n    \"per_context\": [", f);
    int first = 1;
    for (int64_t i = 0; i < r->n_held; i++) {
        const double *row = r->ce + i * CE_STRIDE;
        if (row[N_INITS] <= 0) continue;
        fprintf(f, "%s\n      {\"record\": %lld, \"context\": %d, \"label\": %d, \"tokens\": %.0f, \"ce\": [",
                first ? "" : ",", (long long)i, ds_states_record(r->held, i).context, r->held_labels[i], row[N_INITS]);
        first = 0;
        for (int s = 0; s < N_INITS; s++) fputs(s ? ", " : "", f), ds_json_number(f, row[s] / row[N_INITS]);
        fputs("]}", f);
    }
    fputs("]},\n  \"seconds\": {\"denoising\": ", f);
    const char *names[] = {"features", "generation", "knn", "continuation"};
    ds_json_number(f, r->seconds[0]);
    for (int i = 0; i < 4; i++) fprintf(f, ", \"%s\": ", names[i]), ds_json_number(f, r->seconds[i + 1]);
    fputs(", \"total\": ", f), ds_json_number(f, seconds);
    fputs("}\n}\n", f);
    if (ferror(f) || ds_atomic_commit(&af) != 0) {
        ds_atomic_abort(&af);
        ds_die(DS_EXIT_FAIL, "eval-states: cannot write %s", path);
    }
}

static void print_table(const eval_run *r, const knn_group *kn, const ce_group *cg) {
    printf("eval-states: %s, %d labels, %lld train / %lld held-out records, %d rank(s)\n", r->o.model, r->K,
           (long long)r->n_train, (long long)r->n_held, r->ranks);
    printf("(1) denoising eps-MSE         ");
    for (int k = 0; k < DS_STATE_DIT_EVAL_STEPS; k++) printf("  t=%-6d", ds_state_dit_eval_steps[k]);
    printf("  mean\n");
    for (int set = 0; set < 2; set++) {
        const double *e = set ? r->eps_train : r->eps_held;
        char what[64];
        snprintf(what, sizeof what, "%s (%lld)", set ? "train" : "held-out", (long long)(set ? r->n_eps_train : r->n_held));
        printf("    %-28s", what);
        for (int k = 0; k <= DS_STATE_DIT_EVAL_STEPS; k++) printf(k < DS_STATE_DIT_EVAL_STEPS ? "%-10.5f" : "%.5f", e[k]);
        printf("\n");
    }
    printf("(2) kNN label accuracy (cosine, fitted on %lld train states)    k=1     k=5     nearest-train distance\n",
           (long long)r->n_train);
    for (int set = 0; set < 2; set++) {
        char what[96];
        if (set) snprintf(what, sizeof what, "generated (%d/label, DDIM %d, w=%g)", r->o.samples, r->o.steps, r->o.guidance);
        else snprintf(what, sizeof what, "held-out real (%lld)", (long long)r->n_held);
        printf("    %-58s  %-6.3f  %-6.3f  %.5f\n", what, kn[set].accuracy[0], kn[set].accuracy[1], kn[set].nn_distance);
    }
    for (int k = 0; k < r->K; k++)
        printf("      %-20s held-out k=1 %.3f k=5 %.3f | generated k=1 %.3f k=5 %.3f\n", r->sd.labels[k],
               kn[2 + 2 * k].accuracy[0], kn[2 + 2 * k].accuracy[1], kn[3 + 2 * k].accuracy[0], kn[3 + 2 * k].accuracy[1]);
    printf("    memorisation: nearest-train distance generated / held-out = %.5f / %.5f = %.3f\n", kn[1].nn_distance,
           kn[0].nn_distance, kn[1].nn_distance / kn[0].nn_distance);
    printf("(3) continuation CE (nats/token): %lld contexts (%lld skipped), %.0f tokens, up to %d after the first %d\n",
           (long long)cg[0].contexts, (long long)(r->n_held - cg[0].contexts), cg[0].tokens, r->o.cont_tokens,
           r->hi->max_tokens);
    printf("    %-22s  pooled   dCE vs zero [95%% CI]      ", "initial state");
    for (int k = 0; k < r->K; k++) printf("  %10.10s", r->sd.labels[k]);
    printf("\n");
    for (int s = 0; s < N_INITS; s++) {
        printf("    %-22s  %-7.4f  %+.4f [%+.4f, %+.4f]", init_names[s], cg[0].ce[s], cg[0].delta[s], cg[0].lo[s],
               cg[0].hi[s]);
        for (int k = 0; k < r->K; k++) printf("  %10.4f", cg[1 + k].ce[s]);
        printf("\n");
    }
    fflush(stdout);
}

/* ---- the command ---- */

static void meta_value(const eval_run *r, const char *meta, const char *key, char *out, size_t len) {
    if (!ds_weights_meta_value(meta, key, out, len))
        ds_die(DS_EXIT_BAD_INPUT, "%s: no %s= in its metadata", r->o.model, key);
}

int ds_eval_states_main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { fputs(help_text, stdout); return 0; }
    ds_dist_init();
    double start = ds_now_seconds();
    eval_run r;
    memset(&r, 0, sizeof r);
    parse_args(argc, argv, &r.o);
    r.rank = ds_dist_rank(), r.ranks = ds_dist_size();
    if (r.o.threads <= 0) r.o.threads = ds_dist_cores_per_local_rank();
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
    r.train = ds_states_open(r.o.train);
    r.held = ds_states_open(r.o.held);
    r.ti = ds_states_get_info(r.train), r.hi = ds_states_get_info(r.held);
    check_dataset(r.o.train, r.ti, &r.sd, r.rwkv_model, r.o.model);
    check_dataset(r.o.held, r.hi, &r.sd, r.rwkv_model, r.o.model);
    r.n_train = r.ti->n_records, r.n_held = r.hi->n_records, r.n_gen = (int64_t)r.K * r.o.samples;
    if (r.n_train < knn_ks[N_KS - 1])
        ds_die(DS_EXIT_BAD_INPUT, "%s: %lld records, the kNN needs at least %d", r.o.train, (long long)r.n_train,
               knn_ks[N_KS - 1]);
    if (r.n_held < 1) ds_die(DS_EXIT_BAD_INPUT, "%s: no records", r.o.held);
    if (strcmp(r.hi->tokenizer, r.tokenizer) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: contexts tokenized with '%s', the model's states with '%s'", r.o.held,
               r.hi->tokenizer, r.tokenizer);
    ds_contexts *ctx = ds_contexts_load(r.hi->contexts, r.K, r.sd.labels);
    for (int64_t i = 0; i < r.n_held; i++) {
        ds_state_record rec = ds_states_record(r.held, i);
        if (rec.context < 0 || rec.context >= ctx->n || ctx->items[rec.context].label != rec.label)
            ds_die(DS_EXIT_BAD_INPUT, "%s: record %lld (context %d, label %d) does not match %s: was it rewritten?",
                   r.o.held, (long long)i, rec.context, rec.label, r.hi->contexts);
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
    continuation(&r, &m, tok, ctx);

    if (r.rank == 0) {
        knn_group *kn = ds_alloc(sizeof(knn_group) * (2 + 2 * r.K));  /* [held, generated], then per label */
        for (int set = 0; set < 2; set++) {
            kn[set] = knn_summary(&r, set, -1);
            for (int k = 0; k < r.K; k++) kn[2 + 2 * k + set] = knn_summary(&r, set, k);
        }
        ce_group *cg = ce_groups(&r);
        write_json(&r, kn, cg, ds_now_seconds() - start);
        print_table(&r, kn, cg);
        ds_log("eval-states: wrote %s in %.1fs", r.o.out, ds_now_seconds() - start);
        ds_free(kn);
        ds_free(cg);
    }
    ds_free(r.train_x); ds_free(r.train_labels); ds_free(r.held_labels); ds_free(r.gen_x); ds_free(r.class_mean);
    ds_free(r.knn); ds_free(r.ce);
    ds_rwkv7_destroy(&m);
    ds_tokenizer_free(tok);
    ds_contexts_free(ctx);
    ds_states_close(r.train);
    ds_states_close(r.held);
    ds_state_dit_destroy(&r.sd);
    ds_dist_finalize();
    return 0;
}
