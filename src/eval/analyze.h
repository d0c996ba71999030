/* `dreamstate analyze-states` inside src/eval: the run (analyze.c) and its report (analyze_report.c). */
#ifndef DREAMSTATE_EVAL_ANALYZE_H
#define DREAMSTATE_EVAL_ANALYZE_H

#include "dreamstate/analysis.h"
#include "dreamstate/states.h"

/* One state dataset as this rank sees it. */
typedef struct view {
    const char *path;
    ds_states *s;
    const ds_states_info *info;
    int64_t n, lo, hi;         /* records; this rank's block [lo, hi) */
    int *labels;               /* [n], ids in the train label list (extra: -1 = none) */
} view;

/* What rank 0 receives from a task's owner (plain data: the ranks run the same binary). */
typedef struct task_result {
    ds_label_metrics real, shuffled;
    double extra_knn[DS_MAX_KNN_K];
    ds_tsne_info tsne[DS_MAX_TSNE_SEEDS];        /* per t-SNE seed */
    double trustworthiness[DS_MAX_TSNE_SEEDS];
    double tsne_seconds, metrics_seconds;
} task_result;

/* The datasets a task reads: source 0 the train / test sets, source s > 0 the state control s - 1. */
typedef struct source {
    const char *name;
    view train, test;
    double *mean, *stdev;      /* per (layer, head) normalisation over its train records */
} source;

/* A feature set (consecutive layers of WKV state, through the PCA), of the train set or of a state
 * control, or a condition control (a part of cond). Controls get no t-SNE. */
typedef struct task {
    char name[48], title[96];
    const char *about;         /* condition control: what its features are */
    int control;               /* a row of the controls: a condition part, or a state control's layer set */
    int cond;                  /* features from cond (no PCA) */
    int source;                /* index into run_ctx.sources */
    char layer[8];             /* feature set: "0", "1", ... or "all" */
    int first_layer, n_layers; /* feature set */
    int cond_offset;           /* condition control: its C floats of cond */
    int64_t d;                 /* input features */
    int dim;                   /* columns the metrics see: K for a feature set, d for a condition control */
    int owner;
    /* PCA, on every rank */
    ds_pca_route route;
    double total_variance, *eigenvalues, pca_seconds[4], feature_seconds, transform_seconds;
    /* inputs, on the owner */
    float *train, *test, *extra;
    /* results, on the owner and then on rank 0 */
    task_result r;
    double *y;                 /* t-SNE maps [seeds][n_train + n_extra][2] */
} task;

typedef struct run_ctx {
    const ds_analyze_options *o;
    const view *train, *test, *extra;
    source *sources;           /* [1 + o->n_controls] */
    ds_tsne_opts tsne;
    uint64_t seeds[DS_MAX_TSNE_SEEDS];
    int n_seeds, components;
} run_ctx;

/* On rank 0 after the run: OUT_DIR/analysis.json, the table on stdout and (with o->plots) the t-SNE
 * PNGs. Returns the exit code: 1 if plotting failed (the JSON is complete). */
int analyze_report(const run_ctx *c, task *tasks, int n_tasks, const char *out_dir, double start);

#endif
