/* The report of `dreamstate analyze-states` (rank 0): analysis.json with the scatter panels for
 * src/tools/plot_scatter.py, the table, and the plots. */
#include "analyze.h"

#include "dreamstate/common.h"
#include "dreamstate/dist.h"

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void json_knn(FILE *f, const int *ks, int n_ks, const double *acc) {
    fputc('{', f);
    for (int s = 0; s < n_ks; s++) {
        fprintf(f, "%s\"%d\": ", s ? ", " : "", ks[s]);
        ds_json_number(f, acc[s]);
    }
    fputc('}', f);
}

static void json_metrics(FILE *f, const ds_analyze_options *o, const task *t) {
    fputs("\"knn\": ", f);
    json_knn(f, o->ks, o->n_ks, t->r.real.knn_accuracy);
    fputs(", \"silhouette\": ", f), ds_json_number(f, t->r.real.silhouette);
    fputs(", \"probe\": ", f), ds_json_number(f, t->r.real.probe_accuracy);
    fputs(",\n     \"shuffled\": {\"knn\": ", f);
    json_knn(f, o->ks, o->n_ks, t->r.shuffled.knn_accuracy);
    fputs(", \"silhouette\": ", f), ds_json_number(f, t->r.shuffled.silhouette);
    fputs(", \"probe\": ", f), ds_json_number(f, t->r.shuffled.probe_accuracy);
    fputs("}", f);
}

/* The share of the variance the task's K components explain (0 for a condition control). */
static double explained(const task *t) {
    double evr = 0;
    for (int k = 0; !t->cond && k < t->dim; k++) evr += t->eigenvalues[k] / t->total_variance;
    return evr;
}

/* A feature set's PCA: "features" (input columns) .. "eigenvalues", then ",\n     ". */
static void json_pca(FILE *f, const task *t) {
    fprintf(f, "\"features\": %lld, \"route\": \"%s\", \"components\": %d, \"total_variance\": ", (long long)t->d,
            t->route == DS_PCA_GRAM ? "gram" : "covariance", t->dim);
    ds_json_number(f, t->total_variance);
    fputs(",\n     \"explained_variance_ratio\": [", f);
    for (int k = 0; k < t->dim; k++) fputs(k ? ", " : "", f), ds_json_number(f, t->eigenvalues[k] / t->total_variance);
    fputs("],\n     \"explained_variance\": ", f), ds_json_number(f, explained(t));
    fputs(",\n     \"eigenvalues\": ", f), ds_json_numbers(f, t->eigenvalues, t->dim);
    fputs(",\n     ", f);
}

static const char *metric_name(ds_metric m) { return m == DS_METRIC_COSINE ? "cosine" : "euclidean"; }

static void json_tsne_run(FILE *f, const ds_tsne_info *info, double trust) {
    fprintf(f, "\"method\": \"%s\", \"kl\": ", info->method == DS_TSNE_EXACT ? "exact" : "barnes-hut");
    ds_json_number(f, info->kl);
    fprintf(f, ", \"iterations\": %d, \"trustworthiness\": ", info->iters_run);
    ds_json_number(f, trust);
}

static void json_dataset(FILE *f, const char *key, const view *v, const char *name) {
    fprintf(f, "  \"%s\": ", key);
    if (!v->s) { fputs("null,\n", f); return; }
    fputs("{\"index\": ", f), ds_json_string(f, v->path);
    fprintf(f, ", \"records\": %lld, \"model\": ", (long long)v->n), ds_json_string(f, v->info->model);
    fputs(", \"checkpoint\": ", f), ds_json_string(f, v->info->checkpoint);
    fputs(", \"contexts\": ", f), ds_json_string(f, v->info->contexts);
    if (name) fputs(", \"name\": ", f), ds_json_string(f, name);
    fputs("},\n", f);
}

/* The scatter panel of task t's map for seed `seed` (src/tools/plot_scatter.py's schema). */
static void json_panel(FILE *f, const run_ctx *c, const task *t, int seed, int first) {
    const ds_analyze_options *o = c->o;
    const view *tr = c->train, *ex = c->extra;
    int mid = o->n_ks / 2, k_mid = o->ks[mid];
    int64_t n = tr->n, ne = ex->s ? ex->n : 0;
    const double *y = t->y + 2 * (n + ne) * seed;
    char title[160], file[96];
    snprintf(title, sizeof title, "%s", t->title);
    snprintf(file, sizeof file, "%s", t->name);   /* the first seed's map keeps the plain name */
    if (c->n_seeds > 1) snprintf(title, sizeof title, "%s, t-SNE seed %llu", t->title, (unsigned long long)c->seeds[seed]);
    if (seed > 0) snprintf(file, sizeof file, "%s-seed%llu", t->name, (unsigned long long)c->seeds[seed]);
    fprintf(f, "%s    {\"title\": \"%s\", \"file\": \"%s\", \"seed\": %llu,\n     \"metrics\": {\"kNN@%d\": ",
            first ? "" : ",\n", title, file, (unsigned long long)c->seeds[seed], k_mid);
    ds_json_number(f, t->r.real.knn_accuracy[mid]);
    fprintf(f, ", \"shuffled kNN@%d\": ", k_mid), ds_json_number(f, t->r.shuffled.knn_accuracy[mid]);
    fputs(", \"silhouette\": ", f), ds_json_number(f, t->r.real.silhouette);
    if (ne > 0) fprintf(f, ", \"%s kNN@%d\": ", o->extra_name, k_mid), ds_json_number(f, t->r.extra_knn[mid]);
    fprintf(f, ", \"trustworthiness@%d\": ", DS_TRUST_K), ds_json_number(f, t->r.trustworthiness[seed]);
    fputs("},\n     \"x\": [", f);
    for (int64_t r = 0; r < n + ne; r++) fprintf(f, "%s%.6g", r ? "," : "", y[2 * r]);
    fputs("],\n     \"y\": [", f);
    for (int64_t r = 0; r < n + ne; r++) fprintf(f, "%s%.6g", r ? "," : "", y[2 * r + 1]);
    fputs("],\n     \"label\": [", f);
    for (int64_t r = 0; r < n + ne; r++) fprintf(f, "%s%d", r ? "," : "", r < n ? tr->labels[r] : ex->labels[r - n]);
    fputs("]", f);
    if (ne > 0) {
        fputs(",\n     \"kind\": [", f);
        for (int64_t r = 0; r < n + ne; r++) fprintf(f, "%s%d", r ? "," : "", r >= n);
        fputs("], \"kind_names\": [\"train\", ", f), ds_json_string(f, o->extra_name), fputs("]", f);
    }
    fputs("}", f);
}

static void write_json(const char *path, const run_ctx *c, task *tasks, int n_tasks, double seconds) {
    const ds_analyze_options *o = c->o;
    const view *tr = c->train, *te = c->test, *ex = c->extra;
    const ds_state_shape *sh = &tr->info->shape;
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) ds_die(DS_EXIT_FAIL, "analyze-states: cannot write %s", path);
    FILE *f = af.fp;
    fputs("{\n  \"version\": 1,\n", f);
    json_dataset(f, "train", tr, NULL);
    json_dataset(f, "test", te, NULL);
    json_dataset(f, "extra", ex, o->extra_name);
    fprintf(f, "  \"evaluation\": \"%s\",\n", te->s ? "train -> test" : "leave-one-out (probe: 5-fold cross-validation)");
    fprintf(f, "  \"shape\": {\"n_layer\": %d, \"n_embd\": %d, \"n_head\": %d, \"head_size\": %d},\n", sh->n_layer,
            sh->n_embd, sh->n_head, sh->head_size);
    fprintf(f, "  \"ranks\": %d, \"threads\": %d, \"components\": %d, \"metric\": \"cosine\", \"seed\": %llu, "
               "\"probe_l2\": ", ds_dist_size(), o->threads, c->components, (unsigned long long)o->seed);
    ds_json_number(f, o->probe_l2);
    fputs(",\n  \"knn_k\": [", f);
    for (int s = 0; s < o->n_ks; s++) fprintf(f, "%s%d", s ? ", " : "", o->ks[s]);
    fputs("],\n  \"normalisation\": \"WKV state per (layer, head): mean and std over the train records, float64\",\n", f);
    fprintf(f, "  \"tsne\": {\"perplexity\": %.6g, \"metric\": \"%s\", \"iterations\": %d, \"seed\": %llu, \"seeds\": [",
            c->tsne.perplexity, metric_name(c->tsne.metric), c->tsne.iters, (unsigned long long)c->seeds[0]);
    for (int s = 0; s < c->n_seeds; s++) fprintf(f, "%s%llu", s ? ", " : "", (unsigned long long)c->seeds[s]);
    fprintf(f, "], \"trustworthiness_k\": %d},\n", DS_TRUST_K);
    fputs("  \"label_names\": [", f);
    for (int l = 0; l < tr->info->n_labels; l++) fputs(l ? ", " : "", f), ds_json_string(f, tr->info->labels[l]);
    fputs("],\n  \"layers\": [\n", f);
    int first = 1;
    for (int i = 0; i < n_tasks; i++) {
        task *t = &tasks[i];
        if (t->control) continue;
        fprintf(f, "%s    {\"layer\": \"%s\", \"layers\": [", first ? "" : ",\n", t->name);
        first = 0;
        for (int j = 0; j < t->n_layers; j++) fprintf(f, "%s%d", j ? ", " : "", t->first_layer + j);
        fputs("], ", f);
        json_pca(f, t);
        json_metrics(f, o, t);
        if (ex->s) {
            fputs(",\n     \"extra_knn_accuracy\": ", f);
            json_knn(f, o->ks, o->n_ks, t->r.extra_knn);
        }
        fputs(",\n     \"tsne\": {", f);
        json_tsne_run(f, &t->r.tsne[0], t->r.trustworthiness[0]);
        fputs("},\n     \"tsne_seeds\": [", f);
        for (int s = 0; s < c->n_seeds; s++) {
            fprintf(f, "%s{\"seed\": %llu, ", s ? ", " : "", (unsigned long long)c->seeds[s]);
            json_tsne_run(f, &t->r.tsne[s], t->r.trustworthiness[s]);
            fputc('}', f);
        }
        fprintf(f, "],\n     \"seconds\": {\"features\": %.3f, \"pca_redistribute\": %.3f, "
                   "\"pca_product\": %.3f, \"pca_eigensolver\": %.3f, \"pca_components\": %.3f, \"transform\": %.3f, "
                   "\"metrics\": %.3f, \"tsne\": %.3f}}",
                t->feature_seconds, t->pca_seconds[0], t->pca_seconds[1], t->pca_seconds[2],
                t->pca_seconds[3], t->transform_seconds, t->r.metrics_seconds, t->r.tsne_seconds);
    }
    fputs("\n  ],\n  \"controls\": [\n", f);
    first = 1;
    for (int i = 0; i < n_tasks; i++) {
        task *t = &tasks[i];
        if (!t->control) continue;
        if (t->cond) {
            fprintf(f, "%s    {\"name\": \"%s\", \"features\": \"%s\", \"dim\": %d, ", first ? "" : ",\n", t->name,
                    t->about, t->dim);
        } else {   /* a state control's layer set */
            const source *src = &c->sources[t->source];
            fprintf(f, "%s    {\"name\": ", first ? "" : ",\n"), ds_json_string(f, src->name);
            fprintf(f, ", \"layer\": \"%s\", \"layers\": [", t->layer);
            for (int j = 0; j < t->n_layers; j++) fprintf(f, "%s%d", j ? ", " : "", t->first_layer + j);
            fputs("], \"index\": ", f), ds_json_string(f, src->train.path);
            fputs(", \"test_index\": ", f);
            if (src->test.s) ds_json_string(f, src->test.path);
            else fputs("null", f);
            fputs(", \"checkpoint\": ", f), ds_json_string(f, src->train.info->checkpoint);
            fprintf(f, ",\n     \"about\": \"WKV state, normalised and reduced by the PCA of its own train records\", "
                       "\"dim\": %d, ", t->dim);
            json_pca(f, t);
        }
        first = 0;
        json_metrics(f, o, t);
        fprintf(f, ",\n     \"seconds\": {\"metrics\": %.3f}}", t->r.metrics_seconds);
    }
    fprintf(f, "\n  ],\n  \"seconds\": %.3f,\n", seconds);
    /* the scatter panels for src/tools/plot_scatter.py */
    fputs("  \"panels\": [\n", f);
    first = 1;
    for (int i = 0; i < n_tasks; i++)
        for (int seed = 0; !tasks[i].control && seed < c->n_seeds; seed++, first = 0) json_panel(f, c, &tasks[i], seed, first);
    fputs("\n  ]\n}\n", f);
    if (ds_atomic_commit(&af) != 0) ds_die(DS_EXIT_FAIL, "analyze-states: cannot write %s", path);
}

/* src/tools/plot_scatter.py next to this binary's source tree (bin/dreamstate -> ../src/tools), else
 * relative to the working directory. */
static void find_tool(const char *name, char *out, size_t len) {
    char exe[DS_PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        for (int up = 0; up < 2; up++) {
            char *slash = strrchr(exe, '/');
            if (slash) *slash = 0;
        }
        snprintf(out, len, "%s/src/tools/%s", exe, name);
        if (access(out, R_OK) == 0) return;
    }
    snprintf(out, len, "src/tools/%s", name);
}

/* One PNG per feature set: DIR/tsne-layer<name>.png. Returns 0 on success. */
static int draw_plots(const char *json_path, const char *out_dir) {
    char tool[DS_PATH_MAX + 64], pattern[DS_PATH_MAX + 64];
    find_tool("plot_scatter.py", tool, sizeof tool);
    snprintf(pattern, sizeof pattern, "%s/tsne-layer{}.png", out_dir);
    char *args[] = {"/usr/bin/python3", tool, (char *)json_path, pattern, "--each", NULL};
    pid_t pid;
    int status;
    fflush(stdout), fflush(stderr);
    if (posix_spawn(&pid, args[0], NULL, NULL, args, environ) != 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void print_table(const run_ctx *c, const task *tasks, int n_tasks) {
    const ds_analyze_options *o = c->o;
    printf("%lld train records, %lld test, %d labels, PCA to %d components, cosine kNN %s\n", (long long)c->train->n,
           (long long)(c->test->s ? c->test->n : 0), c->train->info->n_labels, c->components,
           c->test->s ? "train -> test" : "leave-one-out, probe 5-fold cross-validated");
    int w = 14;
    for (int i = 0; i < n_tasks; i++) w = (int)strlen(tasks[i].title) > w ? (int)strlen(tasks[i].title) : w;
    printf("%-*s %8s %6s", w, "features", "dim", "EVR");
    for (int s = 0; s < o->n_ks; s++) printf(" %5s%-2d", "kNN@", o->ks[s]);
    printf(" %6s %6s |", "silh", "probe");
    for (int s = 0; s < o->n_ks; s++) printf(" %5s%-2d", "kNN@", o->ks[s]);
    printf(" %6s %6s (shuffled)", "silh", "probe");
    if (c->extra->s) printf(" | %s kNN@%d", o->extra_name, o->ks[o->n_ks / 2]);
    printf("\n");
    for (int i = 0; i < n_tasks; i++) {
        const task *t = &tasks[i];
        printf("%-*s %8lld ", w, t->title, (long long)t->d);
        if (t->cond) printf("%6s", "-");
        else printf("%6.3f", explained(t));
        for (int s = 0; s < o->n_ks; s++) printf(" %7.3f", t->r.real.knn_accuracy[s]);
        printf(" %6.3f %6.3f |", t->r.real.silhouette, t->r.real.probe_accuracy);
        for (int s = 0; s < o->n_ks; s++) printf(" %7.3f", t->r.shuffled.knn_accuracy[s]);
        printf(" %6.3f %6.3f", t->r.shuffled.silhouette, t->r.shuffled.probe_accuracy);
        if (c->extra->s && !t->control) printf(" | %.3f", t->r.extra_knn[o->n_ks / 2]);
        printf("\n");
    }
    printf("t-SNE maps (%s, perplexity %.3g): trustworthiness (k = %d) / KL per seed\n%-*s", metric_name(c->tsne.metric),
           c->tsne.perplexity, DS_TRUST_K, w, "features");
    for (int s = 0; s < c->n_seeds; s++) printf("   seed %-10llu", (unsigned long long)c->seeds[s]);
    printf("\n");
    for (int i = 0; i < n_tasks; i++) {
        const task *t = &tasks[i];
        if (t->control) continue;
        printf("%-*s", w, t->title);
        for (int s = 0; s < c->n_seeds; s++) printf("   %.3f / %-7.4f", t->r.trustworthiness[s], t->r.tsne[s].kl);
        printf("\n");
    }
    fflush(stdout);
}

int analyze_report(const run_ctx *c, task *tasks, int n_tasks, const char *out_dir, double start) {
    int rc = 0;
    char json[DS_PATH_MAX + 32];
    snprintf(json, sizeof json, "%s/analysis.json", out_dir);
    write_json(json, c, tasks, n_tasks, ds_now_seconds() - start);
    print_table(c, tasks, n_tasks);
    if (c->o->plots && draw_plots(json, out_dir) != 0) {
        fprintf(stderr, "dreamstate: analyze-states: plotting failed (src/tools/plot_scatter.py); %s is complete\n", json);
        rc = DS_EXIT_FAIL;
    }
    ds_log("analyze-states: wrote %s in %.1fs", json, ds_now_seconds() - start);
    return rc;
}
