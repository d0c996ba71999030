/* `dreamstate analyze-states` (A1, src/eval/README.md §1): how much of a context's label can be read
 * from its RWKV-7 state? For each chosen layer, and for all layers concatenated, the WKV states are
 * normalised per head (mean and std over the train records, float64), reduced by a distributed PCA,
 * and scored on the PCA coordinates: cosine kNN accuracy, silhouette and a linear probe, the same with
 * shuffled labels (the chance level), and a t-SNE map drawn by src/tools/plot_scatter.py. The
 * bag-of-tokens control scores the records' condition vectors (input-token embeddings) the same way.
 *
 * Work split: every rank maps the datasets and builds the features of a contiguous block of rows; the
 * PCA is collective. Task j (a feature set or a control) then belongs to rank j mod R, which gathers
 * its coordinates and runs the metrics and t-SNE (both deterministic, so only the PCA's rounding
 * depends on the rank count); rank 0 collects the results, writes DIR/analysis.json and the plots
 * (analyze_report.c). */
#include "analyze.h"

#include "dreamstate/analysis.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/dist.h"
#include "dreamstate/progress.h"
#include "dreamstate/states.h"

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_COMPONENTS 50
#define FEATURE_CHUNK 64       /* test / extra rows built and projected at a time */

static int64_t block_start(int64_t n, int r, int ranks) { return n * r / ranks; }

/* MPI counts and displacements of every rank's block of n rows of `width` elements. */
static void block_counts(int64_t n, int width, int *counts, int *displs) {
    int R = ds_dist_size();
    for (int r = 0; r < R; r++) {
        displs[r] = (int)(block_start(n, r, R) * width);
        counts[r] = (int)(block_start(n, r + 1, R) * width) - displs[r];
    }
}

static void set_block(view *v) {
    int r = ds_dist_rank(), R = ds_dist_size();
    v->lo = block_start(v->n, r, R), v->hi = block_start(v->n, r + 1, R);
}

/* ---- datasets ---- */

static int count_distinct(const int *labels, int64_t n, int n_labels) {
    char *seen = calloc((size_t)n_labels + 1, 1);
    int count = 0;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= 0 && !seen[labels[i]]) seen[labels[i]] = 1, count++;
    free(seen);
    return count;
}

/* Opens a dataset as this rank's view. `train` (NULL for the train set itself) gives the shape it must
 * have. extra = 0: every record labelled, with the train label list as is (the test set); extra = 1:
 * labels matched to the train list by name, unlabelled records allowed (they are only drawn). */
static view open_view(const char *path, const char *role, const view *train, int extra) {
    view v = {.path = path};
    v.s = ds_states_open(path);
    v.info = ds_states_get_info(v.s);
    v.n = v.info->n_records;
    if (v.n < 1) ds_die(DS_EXIT_BAD_INPUT, "%s: the %s set has no records", path, role);
    if (train) {
        const ds_state_shape *a = &train->info->shape, *b = &v.info->shape;
        if (a->n_layer != b->n_layer || a->n_embd != b->n_embd || a->n_head != b->n_head || a->head_size != b->head_size)
            ds_die(DS_EXIT_BAD_INPUT, "%s: the %s states have L=%d C=%d H=%d, the train states L=%d C=%d H=%d", path,
                   role, b->n_layer, b->n_embd, b->n_head, a->n_layer, a->n_embd, a->n_head);
        if (strcmp(train->info->model, v.info->model) != 0)
            ds_log("analyze-states: note: the %s states come from model %s, the train states from %s", role,
                   v.info->model, train->info->model);
    }
    int *to_train = ds_alloc(sizeof(int) * ((size_t)v.info->n_labels + 1));
    for (int c = 0; c < v.info->n_labels; c++) {
        if (extra) {
            to_train[c] = ds_label_lookup(path, v.info->labels[c], train->info->n_labels, train->info->labels);
            continue;
        }
        to_train[c] = c;
        if (train && (c >= train->info->n_labels || strcmp(v.info->labels[c], train->info->labels[c]) != 0))
            ds_die(DS_EXIT_BAD_INPUT, "%s: the %s set's label %d is '%s', the train set's '%s' (extract it with "
                   "--labels-from the train index)", path, role, c, v.info->labels[c],
                   c < train->info->n_labels ? train->info->labels[c] : "(none)");
    }
    if (train && !extra && v.info->n_labels != train->info->n_labels)
        ds_die(DS_EXIT_BAD_INPUT, "%s: the %s set has %d labels, the train set %d (extract it with --labels-from "
               "the train index)", path, role, v.info->n_labels, train->info->n_labels);
    v.labels = ds_alloc(sizeof(int) * (size_t)v.n);
    for (int64_t i = 0; i < v.n; i++) {
        int32_t label = ds_states_record(v.s, i).label;
        if (label < 0 && !extra)
            ds_die(DS_EXIT_BAD_INPUT, "%s: record %lld has no label; the %s set must be labelled", path, (long long)i, role);
        v.labels[i] = label < 0 ? -1 : to_train[label];
    }
    ds_free(to_train);
    set_block(&v);
    return v;
}

static void close_view(view *v) {
    if (!v->s) return;
    ds_free(v->labels);
    ds_states_close(v->s);
}

/* ---- features ---- */

/* Mean and std of each (layer, head) block of WKV entries over all records of v, for the layers with
 * need[l] set: [L][H] each, float64. Each rank sums its records one by one, and every rank adds those
 * per-record sums in record order, so the statistics (and the features) are the same bits whatever
 * the rank count. A head without variance gets std 1. */
static void head_statistics(const view *v, const int *need, double *mean, double *stdev) {
    const ds_state_shape *sh = &v->info->shape;
    int L = sh->n_layer, H = sh->n_head, LH = L * H, R = ds_dist_size();
    int64_t NN = (int64_t)sh->head_size * sh->head_size, nl = v->hi - v->lo;
    double *part = ds_alloc(sizeof(double) * (size_t)(nl > 0 ? nl : 1) * LH);
    double *all = ds_alloc(sizeof(double) * (size_t)v->n * LH);
    int *counts = ds_alloc(sizeof(int) * R), *displs = ds_alloc(sizeof(int) * R);
    block_counts(v->n, LH, counts, displs);
    for (int pass = 0; pass < 2; pass++) {   /* sums, then squared deviations from the mean */
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < nl; i++) {
            const float *state = ds_states_record(v->s, v->lo + i).state;
            for (int l = 0; l < L; l++)
                for (int h = 0; h < H; h++) {
                    double acc = 0, m = pass ? mean[l * H + h] : 0;
                    if (need[l]) {
                        const float *w = ds_state_wkv(sh, state, l) + h * NN;
                        for (int64_t e = 0; e < NN; e++) acc += pass ? (w[e] - m) * (w[e] - m) : w[e];
                    }
                    part[i * LH + l * H + h] = acc;
                }
        }
        MPI_Allgatherv(part, counts[ds_dist_rank()], MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, MPI_COMM_WORLD);
        for (int lh = 0; lh < LH; lh++) {
            double acc = 0;
            for (int64_t i = 0; i < v->n; i++) acc += all[i * LH + lh];
            acc /= (double)v->n * (double)NN;
            if (pass == 0) mean[lh] = acc;
            else stdev[lh] = acc > 0 ? sqrt(acc) : 1;
        }
    }
    ds_free(part), ds_free(all), ds_free(counts), ds_free(displs);
}

/* Records [i0, i0 + count) of v as task t's features: per layer of t, per head, the 64 x 64 block
 * (S - mean) / std with the train statistics. */
static void build_features(const view *v, const task *t, const double *mean, const double *stdev, int64_t i0,
                           int64_t count, float *out) {
    const ds_state_shape *sh = &v->info->shape;
    int H = sh->n_head;
    int64_t NN = (int64_t)sh->head_size * sh->head_size;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) {
        const float *state = ds_states_record(v->s, i0 + i).state;
        float *row = out + i * t->d;
        for (int j = 0; j < t->n_layers; j++) {
            int l = t->first_layer + j;
            for (int h = 0; h < H; h++) {
                const float *w = ds_state_wkv(sh, state, l) + h * NN;
                float *o = row + ((int64_t)j * H + h) * NN;
                double m = mean[l * H + h], s = stdev[l * H + h];
                for (int64_t e = 0; e < NN; e++) o[e] = (float)((w[e] - m) / s);
            }
        }
    }
}

/* Every rank's block of rows (width floats each) on `root`, in rank order; NULL on the other ranks. */
static float *gather_rows(const float *local, int64_t n, int width, int root) {
    int R = ds_dist_size(), me = ds_dist_rank();
    int *counts = ds_alloc(sizeof(int) * R), *displs = ds_alloc(sizeof(int) * R);
    block_counts(n, width, counts, displs);
    float *all = me == root ? ds_alloc(sizeof(float) * (size_t)n * width) : NULL;
    MPI_Gatherv(local, counts[me], MPI_FLOAT, all, counts, displs, MPI_FLOAT, root, MPI_COMM_WORLD);
    ds_free(counts), ds_free(displs);
    return all;
}

/* v's records projected with the train PCA, on t's owner (built FEATURE_CHUNK rows at a time, so a
 * large concatenated feature set never needs all of this rank's test rows at once). */
static float *project_view(const view *v, const task *t, const ds_pca *pca, const double *mean, const double *stdev) {
    int64_t nl = v->hi - v->lo;
    float *coords = ds_alloc(sizeof(float) * (size_t)(nl > 0 ? nl : 1) * pca->k);
    float *feat = ds_alloc(sizeof(float) * (size_t)FEATURE_CHUNK * t->d);
    for (int64_t i = 0; i < nl; i += FEATURE_CHUNK) {
        int64_t count = nl - i < FEATURE_CHUNK ? nl - i : FEATURE_CHUNK;
        build_features(v, t, mean, stdev, v->lo + i, count, feat);
        ds_pca_transform(pca, count, feat, coords + i * pca->k);
    }
    ds_free(feat);
    float *all = gather_rows(coords, v->n, pca->k, t->owner);
    ds_free(coords);
    return all;
}

/* A control's part of cond for v's records, on t's owner. */
static float *gather_condition(const view *v, const task *t) {
    int64_t nl = v->hi - v->lo;
    float *local = ds_alloc(sizeof(float) * (size_t)(nl > 0 ? nl : 1) * t->dim);
    for (int64_t i = 0; i < nl; i++)
        memcpy(local + i * t->dim, ds_states_record(v->s, v->lo + i).cond + t->cond_offset, sizeof(float) * t->dim);
    float *all = gather_rows(local, v->n, t->dim, t->owner);
    ds_free(local);
    return all;
}

/* ---- metrics and t-SNE (on a task's owner) ---- */

static void run_task(const run_ctx *c, task *t) {
    const ds_analyze_options *o = c->o;
    const source *src = &c->sources[t->source];
    int64_t n = src->train.n, nt = src->test.s ? src->test.n : 0, ne = c->extra->s && !t->control ? c->extra->n : 0;
    double t0 = ds_now_seconds();
    for (int shuffled = 0; shuffled < 2; shuffled++)
        ds_label_metrics_compute(t->train, src->train.labels, n, t->test, src->test.labels, nt, t->dim, DS_METRIC_COSINE,
                                 o->ks, o->n_ks, o->probe_l2, shuffled, o->seed, shuffled ? &t->r.shuffled : &t->r.real);
    if (ne > 0) {   /* extra rows with a label: does the train set's kNN give them that label? */
        float *x = ds_alloc(sizeof(float) * (size_t)ne * t->dim);
        int *y = ds_alloc(sizeof(int) * (size_t)ne);
        int64_t m = 0;
        for (int64_t i = 0; i < ne; i++)
            if (c->extra->labels[i] >= 0) {
                memcpy(x + m * t->dim, t->extra + i * t->dim, sizeof(float) * t->dim);
                y[m++] = c->extra->labels[i];
            }
        if (m > 0)
            ds_knn_accuracy(t->train, src->train.labels, n, x, y, m, t->dim, DS_METRIC_COSINE, o->ks, o->n_ks,
                            t->r.extra_knn);
        else
            for (int s = 0; s < o->n_ks; s++) t->r.extra_knn[s] = NAN;   /* nothing to score: null in the JSON */
        ds_free(x), ds_free(y);
    }
    double t1 = ds_now_seconds();
    t->r.metrics_seconds = t1 - t0;
    if (t->control) return;
    /* t-SNE of train and extra together, so that both live in one map; one map per seed */
    float *x = ds_alloc(sizeof(float) * (size_t)(n + ne) * t->dim);
    memcpy(x, t->train, sizeof(float) * (size_t)n * t->dim);
    if (ne > 0) memcpy(x + n * t->dim, t->extra, sizeof(float) * (size_t)ne * t->dim);
    t->y = ds_alloc(sizeof(double) * 2 * (size_t)(n + ne) * c->n_seeds);
    for (int s = 0; s < c->n_seeds; s++) {
        ds_tsne_opts opts = c->tsne;
        opts.seed = c->seeds[s];
        double *y = t->y + 2 * (n + ne) * s;
        ds_tsne(x, n + ne, t->dim, &opts, y, &t->r.tsne[s]);
        t->r.trustworthiness[s] = n + ne > 2 * DS_TRUST_K ? ds_trustworthiness(x, n + ne, t->dim, opts.metric, y, DS_TRUST_K)
                                                          : NAN;   /* too few points: null in the JSON */
    }
    ds_free(x);
    t->r.tsne_seconds = ds_now_seconds() - t1;
}

/* ---- the command ---- */

/* Every record of a state control's set `v` is a record of `ref` (the same contexts file, context and
 * label; any order, e.g. extracted on another rank count), and there are as many. */
static void check_same_records(const view *ref, const view *v, const char *name) {
    if (strcmp(ref->info->contexts, v->info->contexts) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: control '%s' holds states of the contexts in %s, the %s set those in %s: extract it "
               "from the same contexts file", v->path, name, v->info->contexts, ref->path, ref->info->contexts);
    if (v->n != ref->n || v->info->max_tokens != ref->info->max_tokens)
        ds_die(DS_EXIT_BAD_INPUT, "%s: control '%s' has %lld records of up to %d tokens, %s has %lld of up to %d: extract "
               "it from the same contexts with the same --max-tokens", v->path, name, (long long)v->n, v->info->max_tokens,
               ref->path, (long long)ref->n, ref->info->max_tokens);
    int32_t max_context = 0;
    for (int64_t i = 0; i < ref->n; i++) {
        int32_t cx = ds_states_record(ref->s, i).context;
        max_context = cx > max_context ? cx : max_context;
    }
    int *label_of = ds_alloc(sizeof(int) * ((size_t)max_context + 1));
    for (int32_t cx = 0; cx <= max_context; cx++) label_of[cx] = -2;   /* -2: not a record of ref */
    for (int64_t i = 0; i < ref->n; i++) label_of[ds_states_record(ref->s, i).context] = ref->labels[i];
    for (int64_t i = 0; i < v->n; i++) {
        int32_t cx = ds_states_record(v->s, i).context;
        if (cx < 0 || cx > max_context || label_of[cx] == -2)
            ds_die(DS_EXIT_BAD_INPUT, "%s: control '%s': record %lld is context %d, which %s does not hold (or holds twice): "
                   "extract the control from the same contexts", v->path, name, (long long)i, cx, ref->path);
        if (label_of[cx] != v->labels[i])
            ds_die(DS_EXIT_BAD_INPUT, "%s: control '%s': context %d has label '%s', in %s '%s'", v->path, name, cx,
                   ref->info->labels[v->labels[i]], ref->path, ref->info->labels[label_of[cx]]);
        label_of[cx] = -2;
    }
    ds_free(label_of);
}

/* A feature set's name ("0", "all"), title and layers. */
static void name_layer_set(task *t, const char *prefix, int first_layer, int n_layers) {
    t->first_layer = first_layer, t->n_layers = n_layers;
    if (n_layers == 1) snprintf(t->layer, sizeof t->layer, "%d", first_layer);
    else snprintf(t->layer, sizeof t->layer, "all");
    snprintf(t->name, sizeof t->name, "%s%s%s", prefix, prefix[0] ? ":" : "", t->layer);
    if (n_layers == 1) snprintf(t->title, sizeof t->title, "%s%slayer %d", prefix, prefix[0] ? " " : "", first_layer);
    else snprintf(t->title, sizeof t->title, "%s%sall layers", prefix, prefix[0] ? " " : "");
}

/* The parts of cond that both train and test records carry (the bag-of-tokens control of
 * src/eval/README.md §1 and its kin), as condition controls. */
static void add_condition_controls(task *tasks, int *n, const ds_state_shape *sh, const view *te) {
    static const struct { uint32_t flag; const char *name, *what; } parts[] = {
        {DS_COND_MEAN_TOKEN, "bag-of-tokens", "mean input-token embedding"},
        {DS_COND_FIRST_TOKEN, "first-token", "first input-token embedding"},
        {DS_COND_LAST_HIDDEN, "last-hidden", "ln_out(x) of the last context token"},
    };
    for (int p = 0; p < 3; p++) {
        if (!(sh->flags & parts[p].flag) || (te->s && !(te->info->shape.flags & parts[p].flag))) continue;
        task *t = &tasks[(*n)++];
        t->control = t->cond = 1;
        snprintf(t->name, sizeof t->name, "%s", parts[p].name);
        snprintf(t->title, sizeof t->title, "%s", parts[p].name);
        t->about = parts[p].what;
        t->dim = sh->n_embd;
        t->d = t->dim;
        t->cond_offset = sh->n_embd * __builtin_popcount(sh->flags & (parts[p].flag - 1));   /* parts in bit order */
    }
}

/* Feature sets from --layers ("all" adds the concatenation of every layer), then the condition
 * controls, then the same feature sets of each state control. */
static task *make_tasks(const ds_analyze_options *o, const view *tr, const view *te, int *n_out) {
    const ds_state_shape *sh = &tr->info->shape;
    int L = sh->n_layer, *layers = ds_alloc(sizeof(int) * L);
    char why[256];
    int n_layers = ds_config_parse_layers(o->layers, L, layers, why, sizeof why);
    if (n_layers < 0) ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --layers %s", why);
    int concat = strcmp(o->layers, "all") == 0 && L > 1, n_sets = n_layers + concat;
    task *tasks = calloc((size_t)n_sets * (1 + o->n_controls) + 3, sizeof(task));
    int n = 0;
    int64_t per_layer = (int64_t)sh->n_head * sh->head_size * sh->head_size;
    for (int s = 0; s <= o->n_controls; s++) {
        for (int i = 0; i < n_sets; i++) {
            task *t = &tasks[n++];
            t->source = s;
            t->control = s > 0;
            name_layer_set(t, s ? o->controls[s - 1].name : "", i < n_layers ? layers[i] : 0, i < n_layers ? 1 : L);
            t->d = per_layer * t->n_layers;
            if (t->d > INT_MAX) ds_die(DS_EXIT_BAD_INPUT, "analyze-states: %lld features exceed the PCA's int indexing", (long long)t->d);
        }
        if (s == 0) add_condition_controls(tasks, &n, sh, te);
    }
    ds_free(layers);
    *n_out = n;
    return tasks;
}
ds_analyze_options ds_analyze_defaults(void) {
    return (ds_analyze_options){.extra_name = "extra", .layers = "all", .perplexity = 30, .ks = {1, 5, 10}, .n_ks = 3,
                                .probe_l2 = 1, .plots = 1};
}

/* The state controls' datasets, checked against the train (and test) set: sources[1..]. */
static void open_controls(const ds_analyze_options *o, source *sources) {
    const view *tr = &sources[0].train, *te = &sources[0].test;
    for (int s = 0; s < o->n_controls; s++) {
        const ds_state_control *ctl = &o->controls[s];
        source *src = &sources[s + 1];
        src->name = ctl->name;
        if (te->s && !ctl->test)
            ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --control %s needs a held-out set too, as --test is given: "
                   "--control %s=TRAIN_INDEX,TEST_INDEX", ctl->name, ctl->name);
        if (!te->s && ctl->test)
            ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --control %s names a held-out set, but there is no --test", ctl->name);
        for (int r = 0; r < s; r++)
            if (strcmp(o->controls[r].name, ctl->name) == 0)
                ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --control %s given twice", ctl->name);
        src->train = open_view(ctl->train, "control", tr, 0);
        check_same_records(tr, &src->train, ctl->name);
        if (ctl->test) {
            src->test = open_view(ctl->test, "control's held-out", tr, 0);
            check_same_records(te, &src->test, ctl->name);
        }
    }
}

int ds_analyze_states(const ds_analyze_options *options) {
    double start = ds_now_seconds();
    int rank = ds_dist_rank(), ranks = ds_dist_size();
    ds_analyze_options o = *options;
    o.threads = ds_dist_threads(o.threads, "analyze-states: --threads");
    ds_blas_init(o.threads);
    omp_set_num_threads(o.threads);

    /* Every check happens on every rank before any work, so that all ranks stop together. */
    int n_sources = 1 + o.n_controls;
    source *sources = calloc((size_t)n_sources, sizeof *sources);
    view *trp = &sources[0].train, *tep = &sources[0].test, ex = {0};
    *trp = open_view(o.train, "train", NULL, 0);
    const view *tr = trp;
    if (o.test) *tep = open_view(o.test, "test", tr, 0);
    const view *te = tep;
    if (o.extra) ex = open_view(o.extra, "extra", tr, 1);
    open_controls(&o, sources);
    int loo = !te->s, train_labels = count_distinct(tr->labels, tr->n, tr->info->n_labels);
    if (train_labels < 2) ds_die(DS_EXIT_BAD_INPUT, "%s: the train records hold fewer than 2 labels", o.train);
    /* the silhouette's condition, 2 <= labels <= rows - 1, on the rows it is computed over */
    const view *sv = te->s ? te : tr;
    int sv_labels = count_distinct(sv->labels, sv->n, sv->info->n_labels);
    if (sv_labels < 2 || sv_labels > sv->n - 1)
        ds_die(DS_EXIT_BAD_INPUT, "%s: the silhouette needs 2 to records - 1 labels among the %s records (%d labels, "
               "%lld records)", sv->path, te->s ? "test" : "train", sv_labels, (long long)sv->n);
    for (int s = 0; s < o.n_ks; s++)
        if (o.ks[s] > tr->n - loo)
            ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --k %d exceeds the %lld train records%s", o.ks[s],
                   (long long)(tr->n - loo), loo ? " other than the query (leave-one-out)" : "");
    int n_tasks;
    task *tasks = make_tasks(&o, tr, te, &n_tasks);
    int64_t d_min = tasks[0].d;
    for (int i = 0; i < n_tasks; i++) d_min = !tasks[i].cond && tasks[i].d < d_min ? tasks[i].d : d_min;
    int64_t k_max = tr->n - 1 < d_min ? tr->n - 1 : d_min;
    int K = o.components ? o.components : (int)(k_max < DEFAULT_COMPONENTS ? k_max : DEFAULT_COMPONENTS);
    if (K < 1 || K > k_max)
        ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --components %d is out of range: at most %lld (train records - 1 = %lld, "
               "features per layer = %lld)", K, (long long)k_max, (long long)(tr->n - 1), (long long)d_min);

    run_ctx c = {.o = &o, .train = tr, .test = te, .extra = &ex, .sources = sources, .components = K};
    c.tsne = ds_tsne_defaults();
    int64_t n_plot = tr->n + (ex.s ? ex.n : 0);
    c.tsne.perplexity = fmin(o.perplexity, (double)(n_plot - 1) / 3);
    c.tsne.method = o.tsne_method;
    c.tsne.metric = o.tsne_metric;
    c.n_seeds = o.n_tsne_seeds ? o.n_tsne_seeds : 1;
    if (o.n_tsne_seeds) memcpy(c.seeds, o.tsne_seeds, sizeof(uint64_t) * o.n_tsne_seeds);
    else c.seeds[0] = o.seed;
    c.tsne.seed = c.seeds[0];
    if (n_plot < 2) ds_die(DS_EXIT_BAD_INPUT, "%s: t-SNE needs at least 2 records", o.train);
    if (c.tsne.perplexity < o.perplexity)
        ds_log("analyze-states: t-SNE perplexity %g capped at %.3g for %lld points", o.perplexity, c.tsne.perplexity,
               (long long)n_plot);
    for (int i = 0; i < n_tasks; i++) {
        tasks[i].owner = i % ranks;
        if (!tasks[i].cond) tasks[i].dim = K;
    }
    char out_dir[DS_PATH_MAX];
    if (o.out_dir) snprintf(out_dir, sizeof out_dir, "%s", o.out_dir);
    else {
        const char *slash = strrchr(o.train, '/');
        int len = slash ? (int)(slash - o.train) : 1;
        snprintf(out_dir, sizeof out_dir, "%.*s/analysis", len, slash ? o.train : ".");
    }
    if (rank == 0) ds_mkdir_p(out_dir);
    int n_sets = 0, n_pca = 0;
    for (int i = 0; i < n_tasks; i++) n_sets += !tasks[i].control, n_pca += !tasks[i].cond;
    ds_log("analyze-states: %lld train records%s%s, %d labels, %d feature sets + %d controls, K = %d, %d t-SNE seed(s), "
           "%d ranks x %d threads", (long long)tr->n, te->s ? " + test" : "", ex.s ? " + extra" : "", tr->info->n_labels,
           n_sets, n_tasks - n_sets, K, c.n_seeds, ranks, o.threads);

    /* Normalisation statistics over each source's train records, for the layers in use. */
    const ds_state_shape *sh = &tr->info->shape;
    int *need = ds_alloc(sizeof(int) * sh->n_layer);
    for (int s = 0; s < n_sources; s++) {
        memset(need, 0, sizeof(int) * sh->n_layer);
        for (int i = 0; i < n_tasks; i++)
            for (int j = 0; !tasks[i].cond && tasks[i].source == s && j < tasks[i].n_layers; j++)
                need[tasks[i].first_layer + j] = 1;
        sources[s].mean = ds_alloc(sizeof(double) * sh->n_layer * sh->n_head);
        sources[s].stdev = ds_alloc(sizeof(double) * sh->n_layer * sh->n_head);
        head_statistics(&sources[s].train, need, sources[s].mean, sources[s].stdev);
    }

    /* PCA of every feature set (collective); coordinates to the set's owner. */
    ds_progress prog;
    ds_progress_begin(&prog, "analyze-states PCA", "layer sets", n_pca);
    for (int i = 0; i < n_tasks; i++) {
        task *t = &tasks[i];
        const source *src = &sources[t->source];
        if (t->cond) {
            t->train = gather_condition(tr, t);
            if (te->s) t->test = gather_condition(te, t);
            continue;
        }
        double t0 = ds_now_seconds();
        int64_t nl = src->train.hi - src->train.lo;
        float *feat = ds_alloc(sizeof(float) * (size_t)(nl > 0 ? nl : 1) * t->d);
        build_features(&src->train, t, src->mean, src->stdev, src->train.lo, nl, feat);
        double t1 = ds_now_seconds();
        ds_pca pca;
        ds_pca_fit(&pca, MPI_COMM_WORLD, nl, (int)t->d, feat, K, DS_PCA_AUTO);
        double t2 = ds_now_seconds();
        float *coords = ds_alloc(sizeof(float) * (size_t)(nl > 0 ? nl : 1) * K);
        ds_pca_transform(&pca, nl, feat, coords);
        ds_free(feat);
        t->train = gather_rows(coords, src->train.n, K, t->owner);
        ds_free(coords);
        if (src->test.s) t->test = project_view(&src->test, t, &pca, src->mean, src->stdev);
        if (ex.s && !t->control) t->extra = project_view(&ex, t, &pca, src->mean, src->stdev);
        t->feature_seconds = t1 - t0;
        t->transform_seconds = ds_now_seconds() - t2;
        t->route = pca.route;
        t->total_variance = pca.total_variance;
        memcpy(t->pca_seconds, pca.seconds, sizeof pca.seconds);
        t->eigenvalues = ds_alloc(sizeof(double) * K);
        memcpy(t->eigenvalues, pca.eigenvalues, sizeof(double) * K);
        double evr = 0;
        for (int k = 0; k < K; k++) evr += pca.eigenvalues[k] / pca.total_variance;
        ds_log("analyze-states: %s: PCA %lld x %lld -> %d (%s route) explains %.1f%% of the variance, %.2fs",
               t->title, (long long)src->train.n, (long long)t->d, K, pca.route == DS_PCA_GRAM ? "Gram" : "covariance",
               100 * evr, t2 - t1);
        ds_pca_free(&pca);
        ds_progress_update(&prog, prog.done + 1);
    }
    ds_progress_end(&prog);

    /* Metrics and t-SNE, each task on its owner; rank 0 shows progress over its own share. */
    int mine = 0;
    for (int i = 0; i < n_tasks; i++) mine += tasks[i].owner == rank;
    ds_progress_begin(&prog, "analyze-states t-SNE and metrics", "tasks (rank 0's share)", mine);
    for (int i = 0, done = 0; i < n_tasks; i++) {
        if (tasks[i].owner != rank) continue;
        run_task(&c, &tasks[i]);
        ds_progress_update(&prog, ++done);
    }
    ds_progress_end(&prog);
    for (int i = 0; i < n_tasks; i++) {   /* results to rank 0 */
        task *t = &tasks[i];
        if (t->owner == 0) continue;
        int n_y = t->control ? 0 : (int)(2 * n_plot * c.n_seeds);
        if (rank == t->owner) {
            MPI_Send(&t->r, (int)sizeof t->r, MPI_BYTE, 0, 2 * i, MPI_COMM_WORLD);
            if (n_y) MPI_Send(t->y, n_y, MPI_DOUBLE, 0, 2 * i + 1, MPI_COMM_WORLD);
        } else if (rank == 0) {
            MPI_Recv(&t->r, (int)sizeof t->r, MPI_BYTE, t->owner, 2 * i, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (n_y) {
                t->y = ds_alloc(sizeof(double) * n_y);
                MPI_Recv(t->y, n_y, MPI_DOUBLE, t->owner, 2 * i + 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            }
        }
    }

    int rc = rank == 0 ? analyze_report(&c, tasks, n_tasks, out_dir, start) : 0;
    for (int i = 0; i < n_tasks; i++) {
        task *t = &tasks[i];
        ds_free(t->eigenvalues), ds_free(t->train), ds_free(t->test), ds_free(t->extra), ds_free(t->y);
    }
    free(tasks);
    ds_free(need);
    for (int s = 0; s < n_sources; s++) {
        ds_free(sources[s].mean), ds_free(sources[s].stdev);
        close_view(&sources[s].train), close_view(&sources[s].test);
    }
    free(sources);
    close_view(&ex);
    return rc;
}
