/* The report of `dreamstate eval-states` (rank 0): kNN accuracies per set and label, the continuation
 * CE with bootstrap confidence intervals, the JSON file and the table. */
#include "state_eval.h"

#include "dreamstate/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BOOTSTRAP_RESAMPLES 1000
#define RNG_STREAM_BOOTSTRAP 0x424f4f54  /* "BOOT" + group: the resampled contexts */

static const char *const init_names[N_INITS] = {"zero", "class_mean", "generated", "generated_wrong_label",
                                                "true_modelled", "true_full", "tuned"};

/* ---- kNN ---- */

typedef struct knn_group {
    int64_t n;
    double accuracy[N_KS], nn_distance;   /* mean distance to the nearest train state */
} knn_group;

/* Held-out (generated = 0) or generated queries, of one label or all (label < 0). */
static knn_group knn_summary(const eval_run *r, int generated, int label) {
    knn_group g = {0};
    int64_t first = generated ? r->n_held : 0, end = generated ? r->n_held + r->n_gen : r->n_held;
    for (int64_t q = first; q < end; q++) {
        int truth = generated ? (int)((q - r->n_held) / r->o.samples_per_label) : r->held_labels[q];
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

/* ---- continuation ---- */

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

/* ---- output ---- */

static void json_knn(FILE *f, const knn_group *g) {
    fprintf(f, "{\"n\": %lld, \"accuracy\": ", (long long)g->n);
    ds_json_numbers(f, g->accuracy, N_KS);
    fputs(", \"nearest_train_distance\": ", f), ds_json_number(f, g->nn_distance);
    fputc('}', f);
}

static void json_ce(FILE *f, const ce_group *g, int n_inits) {
    fprintf(f, "{\"contexts\": %lld, \"tokens\": %.0f", (long long)g->contexts, g->tokens);
    for (int s = 0; s < n_inits; s++) {
        fprintf(f, ",\n        \"%s\": {\"ce\": ", init_names[s]), ds_json_number(f, g->ce[s]);
        fputs(", \"delta_vs_zero\": ", f), ds_json_number(f, g->delta[s]);
        fputs(", \"ci95\": [", f), ds_json_number(f, g->lo[s]), fputs(", ", f), ds_json_number(f, g->hi[s]), fputs("]}", f);
    }
    fputc('}', f);
}

static void json_frechet(FILE *f, const eval_run *r) {
    fprintf(f, "  \"frechet\": {\"space\": \"PCA of the train states of each modelled layer (normalised modelled WKV "
               "channels)\", \"components\": %d, \"covariance\": \"divisor n - 1\",\n    \"floor\": \"train rows "
               "i * n_train / m vs held-out (per label: the label's train rows, m = samples per label)\", "
               "\"generated\": %lld, \"held_out\": %lld, \"train_subset\": %lld,\n    \"layers\": [",
            r->fd_components, (long long)r->n_gen, (long long)r->n_held, (long long)r->fd_subset);
    for (int l = 0; l < r->sd.n_layers; l++) {
        const fd_layer *d = &r->fd[l];
        fprintf(f, "%s\n      {\"layer\": %d, \"explained_variance\": ", l ? "," : "", d->layer);
        ds_json_number(f, d->explained);
        fputs(", \"generated\": ", f), ds_json_number(f, d->generated);
        fputs(", \"train_floor\": ", f), ds_json_number(f, d->floor);
        fputs(", \"ratio\": ", f), ds_json_number(f, d->generated / d->floor);
        fputs(",\n       \"per_label\": [", f);
        for (int k = 0; k < r->K; k++) {
            fputs(k ? ", " : "", f);
            fputs("{\"label\": ", f), ds_json_string(f, r->sd.labels[k]);
            fputs(", \"generated\": ", f), ds_json_number(f, d->label_generated[k]);
            fputs(", \"train_floor\": ", f), ds_json_number(f, d->label_floor[k]);
            fprintf(f, ", \"train_subset\": %lld}", (long long)d->label_subset[k]);
        }
        fputs("]}", f);
    }
    fputs("]},\n", f);
}

static void write_json(const eval_run *r, const knn_group *kn, const ce_group *cg, double seconds) {
    const char *path = r->out;
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) ds_die(DS_EXIT_FAIL, "eval-states: cannot write %s", path);
    FILE *f = af.fp;
    char sig[512];
    ds_state_dit_signature(&r->sd, sig, sizeof sig);
    fputs("{\n  \"version\": 1,\n  \"model\": ", f), ds_json_string(f, r->o.model);
    fputs(", \"signature\": ", f), ds_json_string(f, sig);
    fputs(",\n  \"rwkv_model\": ", f), ds_json_string(f, r->rwkv_model);
    fputs(", \"rwkv_weights\": ", f), ds_json_string(f, r->weights);
    fputs(",\n  \"tuned_states\": ", f);
    if (r->o.tuned) ds_json_string(f, r->o.tuned);
    else fputs("null", f);
    fputs(", \"tokenizer\": ", f), ds_json_string(f, r->tokenizer);
    fputs(",\n  \"train\": {\"index\": ", f), ds_json_string(f, r->o.states);
    fprintf(f, ", \"records\": %lld, \"max_tokens\": %d},\n  \"held_out\": {\"index\": ", (long long)r->n_train,
            r->ti->max_tokens);
    ds_json_string(f, r->o.held_out);
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
    fprintf(f, ", \"samples_per_label\": %d},\n", r->o.samples_per_label);
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
            eval_states_knn_ks[0], eval_states_knn_ks[1]);
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
    json_frechet(f, r);
    /* (3) */
    fprintf(f, "  \"continuation\": {\"max_tokens\": %d, \"min_tokens\": %d, \"after_tokens\": %d, "
               "\"bootstrap_resamples\": %d, \"initial_states\": [", r->o.continuation_tokens, DS_EVAL_STATES_MIN_CONTINUATION,
            r->hi->max_tokens, BOOTSTRAP_RESAMPLES);
    for (int s = 0; s < r->n_inits; s++) fprintf(f, "%s\"%s\"", s ? ", " : "", init_names[s]);
    fprintf(f, "],\n    \"skipped\": %lld,\n    \"pooled\": ", (long long)(r->n_held - cg[0].contexts));
    json_ce(f, &cg[0], r->n_inits);
    fputs(",\n    \"per_label\": [", f);
    for (int k = 0; k < r->K; k++) {
        fputs(k ? ",\n      {\"label\": " : "\n      {\"label\": ", f), ds_json_string(f, r->sd.labels[k]);
        fputs(", \"ce\": ", f), json_ce(f, &cg[1 + k], r->n_inits), fputc('}', f);
    }
    fputs("],\n    \"per_context\": [", f);
    int first = 1;
    for (int64_t i = 0; i < r->n_held; i++) {
        const double *row = r->ce + i * CE_STRIDE;
        if (row[N_INITS] <= 0) continue;
        fprintf(f, "%s\n      {\"record\": %lld, \"context\": %d, \"label\": %d, \"tokens\": %.0f, \"ce\": [",
                first ? "" : ",", (long long)i, ds_states_record(r->held, i).context, r->held_labels[i], row[N_INITS]);
        first = 0;
        for (int s = 0; s < r->n_inits; s++) fputs(s ? ", " : "", f), ds_json_number(f, row[s] / row[N_INITS]);
        fputs("]}", f);
    }
    fputs("]},\n  \"seconds\": {\"denoising\": ", f);
    const char *names[] = {"features", "generation", "knn", "continuation", "frechet"};
    ds_json_number(f, r->seconds[0]);
    for (int i = 0; i < 5; i++) fprintf(f, ", \"%s\": ", names[i]), ds_json_number(f, r->seconds[i + 1]);
    fputs(", \"total\": ", f), ds_json_number(f, seconds);
    fputs("}\n}\n", f);
    if (ds_atomic_commit(&af) != 0) ds_die(DS_EXIT_FAIL, "eval-states: cannot write %s", path);
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
        if (set) snprintf(what, sizeof what, "generated (%d/label, DDIM %d, w=%g)", r->o.samples_per_label, r->o.steps, r->o.guidance);
        else snprintf(what, sizeof what, "held-out real (%lld)", (long long)r->n_held);
        printf("    %-58s  %-6.3f  %-6.3f  %.5f\n", what, kn[set].accuracy[0], kn[set].accuracy[1], kn[set].nn_distance);
    }
    for (int k = 0; k < r->K; k++)
        printf("      %-20s held-out k=1 %.3f k=5 %.3f | generated k=1 %.3f k=5 %.3f\n", r->sd.labels[k],
               kn[2 + 2 * k].accuracy[0], kn[2 + 2 * k].accuracy[1], kn[3 + 2 * k].accuracy[0], kn[3 + 2 * k].accuracy[1]);
    printf("    memorisation: nearest-train distance generated / held-out = %.5f / %.5f = %.3f\n", kn[1].nn_distance,
           kn[0].nn_distance, kn[1].nn_distance / kn[0].nn_distance);
    char floor[48];
    snprintf(floor, sizeof floor, "floor (%lld train)", (long long)r->fd_subset);
    printf("    Fréchet distance to the held-out states, %d-component PCA of the train states per modelled layer:\n"
           "      layer  EVR     generated   %-18s  ratio   | per label: generated / floor\n", r->fd_components, floor);
    for (int l = 0; l < r->sd.n_layers; l++) {
        const fd_layer *d = &r->fd[l];
        printf("      %-5d  %-6.3f  %-10.4g  %-18.4g  %-6.3f  |", d->layer, d->explained, d->generated, d->floor,
               d->generated / d->floor);
        for (int k = 0; k < r->K; k++) printf(" %s %.4g / %.4g", r->sd.labels[k], d->label_generated[k], d->label_floor[k]);
        printf("\n");
    }
    printf("(3) continuation CE (nats/token): %lld contexts (%lld skipped), %.0f tokens, up to %d after the first %d\n",
           (long long)cg[0].contexts, (long long)(r->n_held - cg[0].contexts), cg[0].tokens, r->o.continuation_tokens,
           r->hi->max_tokens);
    printf("    %-22s  pooled   dCE vs zero [95%% CI]      ", "initial state");
    for (int k = 0; k < r->K; k++) printf("  %10.10s", r->sd.labels[k]);
    printf("\n");
    for (int s = 0; s < r->n_inits; s++) {
        printf("    %-22s  %-7.4f  %+.4f [%+.4f, %+.4f]", init_names[s], cg[0].ce[s], cg[0].delta[s], cg[0].lo[s],
               cg[0].hi[s]);
        for (int k = 0; k < r->K; k++) printf("  %10.4f", cg[1 + k].ce[s]);
        printf("\n");
    }
    fflush(stdout);
}

void eval_states_report(const eval_run *r, double seconds) {
    knn_group *kn = ds_alloc(sizeof(knn_group) * (2 + 2 * r->K));  /* [held, generated], then per label */
    for (int set = 0; set < 2; set++) {
        kn[set] = knn_summary(r, set, -1);
        for (int k = 0; k < r->K; k++) kn[2 + 2 * k + set] = knn_summary(r, set, k);
    }
    ce_group *cg = ce_groups(r);
    write_json(r, kn, cg, seconds);
    print_table(r, kn, cg);
    ds_free(kn);
    ds_free(cg);
}
