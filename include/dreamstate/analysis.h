/* Analysis of a labelled set of states (A1, src/eval/README.md §1): distributed PCA (ScaLAPACK),
 * t-SNE (exact and Barnes-Hut), and label-structure metrics (kNN accuracy, silhouette, linear probe,
 * shuffled-label control). `dreamstate analyze-states` chains them per layer.
 *
 * Conventions: feature matrices are fp32, row-major, one row per item; labels are ints >= 0. All
 * arithmetic is in float64 (except ds_pca_transform's fp32 product). The metrics and t-SNE are
 * deterministic and independent of the OpenMP thread count (per-row work in parallel, sums over rows
 * in a fixed order). Bad arguments die with DS_EXIT_BAD_INPUT and a one-line reason. */
#ifndef DREAMSTATE_ANALYSIS_H
#define DREAMSTATE_ANALYSIS_H

#include <mpi.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------------
 * PCA over ranks (src/eval/pca.c)
 *
 * Every rank of `comm` holds a contiguous block of rows (n_local x d, its own count, possibly 0);
 * the global row order is rank order. The fit centres with the allreduced column means, puts the
 * centred data in float64 as a block-cyclic d x n matrix (X^T) on a near-square BLACS grid of the
 * ranks (pdgemr2d from each rank's block), and solves the smaller of the two symmetric problems:
 *   DS_PCA_COVARIANCE: C = X^T X / (n-1), d x d (pdsyrk), top k eigenpairs with pdsyevr.
 *   DS_PCA_GRAM:       G = X X^T, n x n (pdsyrk), top k eigenpairs (lambda, u) with pdsyevr; the
 *                      components are X^T u / |X^T u| (pdgemm) and the variances lambda / (n-1).
 *                      Never forms a d x d matrix: 2000 states of 12x64x64 need a 2000 x 2000 Gram.
 *   DS_PCA_AUTO:       GRAM when n < d, else COVARIANCE.
 * Memory per rank: about 8 n d / P bytes for X^T plus two m x m float64 matrices / P (m = n or d)
 * and the gathered d x k components in float64. Results are identical on every rank. Collective over
 * comm; every rank passes the same d, k, route. */
typedef enum ds_pca_route { DS_PCA_AUTO = 0, DS_PCA_COVARIANCE, DS_PCA_GRAM } ds_pca_route;

typedef struct ds_pca {
    int d, k;
    int64_t n;               /* rows over all ranks */
    ds_pca_route route;      /* the route taken */
    double total_variance;   /* trace of the covariance: eigenvalues / total = explained-variance ratio */
    double *mean;            /* [d] */
    double *eigenvalues;     /* [k] descending: variance along each component (divisor n - 1, as numpy/sklearn) */
    float *components;       /* [k][d] orthonormal rows; sign fixed so that the largest-|x| entry is > 0 */
    double seconds[4];       /* wall time: redistribution, Gram/covariance product, eigensolver, components */
} ds_pca;

/* Requires 1 <= k <= min(n - 1, d) and k <= the numerical rank of the centred data. */
void ds_pca_fit(ds_pca *pca, MPI_Comm comm, int64_t n_local, int d, const float *rows_local, int k,
                ds_pca_route route);
/* Local, no communication: coords[i][c] = (rows[i] - mean) . components[c], for n_rows rows
 * (centred in float64, then an fp32 GEMM: ~1e-6 relative at d = 49152). */
void ds_pca_transform(const ds_pca *pca, int64_t n_rows, const float *rows, float *coords);
void ds_pca_free(ds_pca *pca);

/* ------------------------------------------------------------------------------------------------
 * Distances (src/eval/metrics.c), shared by the metrics and t-SNE.
 * EUCLIDEAN: |a - b|. COSINE: 1 - a.b / (|a| |b|), with zero rows left at zero (as sklearn), clipped to
 * [0, 2]. out[i * nb + j] = dist(a_i, b_j), computed directly from the differences in float64. */
typedef enum ds_metric { DS_METRIC_EUCLIDEAN = 0, DS_METRIC_COSINE } ds_metric;

void ds_pairwise_distances(const float *a, int64_t na, const float *b, int64_t nb, int dim, ds_metric metric,
                           double *out);

/* For each query row the k nearest reference rows, output in (distance, reference index) order.
 * Which rows tie for the k-th place are chosen as scikit-learn's brute-force search chooses them (a
 * bounded max-heap fed the reference rows in index order: identical whenever sklearn runs that search
 * as one pass, e.g. up to 256 reference rows; for COSINE sklearn uses argpartition instead, so exact
 * ties may resolve differently). exclude_self: query and reference are the same rows and row i is not
 * its own neighbour, as sklearn's kneighbors(X=None): k + 1 neighbours including i, then i dropped
 * (if more than k exact duplicates crowd i out, the nearest is dropped instead). idx [n_query][k];
 * dist [n_query][k] may be NULL. Needs 1 <= k <= n_ref (- 1 with exclude_self). */
void ds_nearest_neighbours(const float *query, int64_t n_query, const float *ref, int64_t n_ref, int dim,
                           ds_metric metric, int k, int exclude_self, int64_t *idx, double *dist);

/* ------------------------------------------------------------------------------------------------
 * Label metrics (src/eval/metrics.c), the same definitions as scikit-learn 1.2.
 *
 * kNN: each query row is labelled by a majority vote of its k nearest training rows (sklearn
 * KNeighborsClassifier, weights="uniform", algorithm="brute"; neighbours and their ties as
 * ds_nearest_neighbours); a tied vote goes to the smallest label. ds_knn_predict writes pred[i][s],
 * the vote with k = ks[s]; accuracy[s] is the fraction of queries whose vote equals their label.
 * query / test == NULL: leave-one-out on the training rows (ds_nearest_neighbours' exclude_self).
 * Needs 1 <= ks[s] <= n_train (n_train - 1 leaving one out). */
void ds_knn_predict(const float *train, const int *train_labels, int64_t n_train, const float *query,
                    int64_t n_query, int dim, ds_metric metric, const int *ks, int n_ks, int *pred /* [n_query][n_ks] */);
void ds_knn_accuracy(const float *train, const int *train_labels, int64_t n_train, const float *test,
                     const int *test_labels, int64_t n_test, int dim, ds_metric metric, const int *ks, int n_ks,
                     double *accuracy);

/* Mean silhouette coefficient (sklearn.metrics.silhouette_score on all rows): s_i = (b_i - a_i) /
 * max(a_i, b_i), a_i = mean distance to the other rows of i's label, b_i = the smallest mean distance
 * to the rows of another label; s_i = 0 for a label with one row. Needs 2 <= #labels <= n - 1. */
double ds_silhouette_score(const float *x, const int *labels, int64_t n, int dim, ds_metric metric);

/* Linear probe: multinomial logistic regression on standardised features (mean / population std of
 * the training rows; constant features get scale 1), minimising
 *     sum_i -log softmax(W z_i + b)[y_i] + (l2 / 2) |W|^2      (b not penalised)
 * from zero with L-BFGS until max |gradient| <= 1e-9 n (or no further decrease): the objective of
 * sklearn's LogisticRegression(C = 1 / l2, multi_class="multinomial") after StandardScaler. Classes
 * are the labels present in the training rows. */
typedef struct ds_probe {
    int dim, n_classes;
    int *classes;         /* [n_classes] label of each output, ascending */
    double *mean, *scale; /* [dim] standardisation */
    double *W, *b;        /* [n_classes][dim], [n_classes] */
    double objective;     /* at the solution */
    int iterations;
} ds_probe;

void ds_probe_fit(ds_probe *p, const float *x, const int *labels, int64_t n, int dim, double l2);
void ds_probe_predict_proba(const ds_probe *p, const float *x, int64_t n, double *proba /* [n][n_classes] */);
/* Predicted labels (argmax, first on ties); returns the accuracy against `labels` if non-NULL, else 0. */
double ds_probe_predict(const ds_probe *p, const float *x, int64_t n, const int *labels, int *pred);
void ds_probe_free(ds_probe *p);

/* A seeded uniform permutation of labels (Fisher-Yates over ds_rng), for the shuffled-label control. */
void ds_shuffle_labels(const int *labels, int64_t n, uint64_t seed, int *out);

/* The A1 bundle for one feature set: kNN accuracy train -> test for each k, silhouette of the test
 * rows grouped by label, and held-out probe accuracy. test == NULL: leave-one-out kNN on the train
 * rows, their silhouette, and the probe accuracy by 5-fold cross-validation (fold f holds the rows i
 * with i mod 5 = f). shuffled != 0 gives the control: train and test labels are each permuted (seeds
 * `seed` and `seed + 1`) before everything, which keeps the class frequencies and removes any link
 * between features and labels. */
#define DS_MAX_KNN_K 8
typedef struct ds_label_metrics {
    int n_k, k[DS_MAX_KNN_K];
    double knn_accuracy[DS_MAX_KNN_K];
    double silhouette;
    double probe_accuracy;
} ds_label_metrics;

void ds_label_metrics_compute(const float *train, const int *train_labels, int64_t n_train, const float *test,
                              const int *test_labels, int64_t n_test, int dim, ds_metric metric, const int *ks,
                              int n_ks, double probe_l2, int shuffled, uint64_t seed, ds_label_metrics *out);

/* Trustworthiness of a 2-D embedding y [n][2] of x (sklearn.manifold.trustworthiness(x, y, n_neighbors=k,
 * metric)): 1 - 2 / (n k (2n - 3k - 1)) sum_i sum_{j in N_k^y(i)} max(0, r(i, j) - k), where N_k^y(i) are
 * i's k nearest neighbours in the embedding (Euclidean) and r(i, j) the rank of j among i's neighbours
 * in the input space under `metric` (1 = nearest; exact ties ranked by index, where sklearn's unstable
 * argsort may order them otherwise). 1: every embedded neighbourhood is an input neighbourhood.
 * Needs 1 <= k < n / 2. O(n^2 dim). */
double ds_trustworthiness(const float *x, int64_t n, int dim, ds_metric metric, const double *y, int k);

/* Mean [dim] and covariance [dim][dim] (divisor n - 1, as numpy.cov) of n >= 2 rows, in float64. */
void ds_mean_covariance(const float *x, int64_t n, int dim, double *mean, double *cov);
/* Fréchet distance between N(mu1, S1) and N(mu2, S2) (symmetric positive semi-definite dim x dim):
 *     |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
 * in float64 by two symmetric eigendecompositions (LAPACK dsyev): S1^1/2 from S1's, the trace of the
 * square root from the eigenvalues of S1^1/2 S2 S1^1/2; eigenvalues below zero (rounding) count as 0.
 * ds_frechet_rows: the same between the Gaussians fitted (ds_mean_covariance) to two sets of rows. */
double ds_frechet_distance(const double *mu1, const double *S1, const double *mu2, const double *S2, int dim);
double ds_frechet_rows(const float *a, int64_t na, const float *b, int64_t nb, int dim);

/* ------------------------------------------------------------------------------------------------
 * t-SNE to 2-D (src/eval/tsne.c), as van der Maaten (2008, 2014) and sklearn.manifold.TSNE 1.2:
 * conditional P by a binary search on each row's precision to the target perplexity over squared
 * distances (squared Euclidean, or squared cosine distances for COSINE: sklearn 1.2's metric="cosine",
 * both methods), P = (P + P^T) / sum; Student-t
 * (1 dof) Q; gradient descent with momentum 0.5 -> 0.8, per-coordinate gains (+0.2 / x0.8, min 0.01),
 * early exaggeration for the first iterations; stops early when |grad| <= 1e-7 at a 50-iteration check.
 * EXACT: all pairs, O(n^2) per iteration. BARNES_HUT: P over the floor(3 perplexity + 1) nearest
 * neighbours, repulsion from a quadtree with opening angle theta. AUTO: exact up to 1000 rows.
 * Initialisation: N(0, 1e-4^2) from ds_rng(seed). */
typedef enum ds_tsne_method { DS_TSNE_AUTO = 0, DS_TSNE_EXACT, DS_TSNE_BARNES_HUT } ds_tsne_method;

typedef struct ds_tsne_opts {
    double perplexity;          /* 30 */
    double early_exaggeration;  /* 12 */
    int exaggeration_iters;     /* 250 */
    int iters;                  /* 1000, including the exaggeration phase */
    double learning_rate;       /* <= 0: "auto" = max(n / early_exaggeration / 4, 50) */
    double theta;               /* 0.5 (Barnes-Hut only) */
    ds_metric metric;           /* EUCLIDEAN */
    ds_tsne_method method;      /* AUTO */
    uint64_t seed;              /* 0 */
} ds_tsne_opts;

#define DS_TSNE_MAX_TRACE 64
typedef struct ds_tsne_info {
    ds_tsne_method method;      /* EXACT or BARNES_HUT */
    int iters_run;
    /* KL(P || Q) with the unexaggerated P (Barnes-Hut: over the sparse P, Q normalised by the tree's
     * estimate of sum q), at iterations 50, 100, ... and the last one, each computed for the
     * embedding before that iteration's update (as sklearn reports it). */
    int n_trace, trace_iter[DS_TSNE_MAX_TRACE];
    double trace_kl[DS_TSNE_MAX_TRACE];
    double kl;                  /* at the last check */
} ds_tsne_info;

ds_tsne_opts ds_tsne_defaults(void);
/* x [n][dim] -> y [n][2]; info may be NULL. Needs n >= 2 and 0 < perplexity < n (as sklearn). */
void ds_tsne(const float *x, int64_t n, int dim, const ds_tsne_opts *opts, double *y, ds_tsne_info *info);
/* KL(P || Q) of a given embedding y [n][2], with P built from x as ds_tsne builds it for opts (the
 * method decides exact or sparse P, and an exact or tree-estimated normaliser of Q). */
double ds_tsne_kl_divergence(const float *x, int64_t n, int dim, const ds_tsne_opts *opts, const double *y);

/* The scatter JSON that src/tools/plot_scatter.py draws (one panel per entry of "panels"):
 *   {"label_names": ["code", ...],                                     (optional)
 *    "panels": [{"title": "layer 11", "x": [...], "y": [...], "label": [int, ...],
 *                "kind": [int, ...], "kind_names": ["real", "generated"],   (optional: marker shape)
 *                "metrics": {"name": number, ...}}]}                      (optional: under the title)
 * Other keys are ignored, so the full analysis JSON can carry this as its "panels" member. */

/* ------------------------------------------------------------------------------------------------
 * `dreamstate analyze-states` (src/eval/analyze.c): the per-layer A1 analysis above over a state
 * dataset, on every rank of MPI_COMM_WORLD (ds_dist_init first; also alone). Per chosen layer, and
 * for all layers concatenated: WKV state normalised per head (train statistics) -> PCA to K
 * components -> cosine kNN accuracy, silhouette and linear-probe accuracy, with real and with
 * shuffled labels; the same on the condition vectors (bag-of-tokens, first-token and, where stored,
 * last-hidden controls) and, per layer set, on the states of other datasets of the same records
 * (--control, e.g. a randomly initialised network's); t-SNE maps per layer and seed, each with its
 * trustworthiness. Writes OUT/analysis.json (the scatter schema's "panels" included) and
 * OUT/tsne-layer<L>[-seed<S>].png, prints a table; returns the exit code (bad input exits 2 with one
 * line). */
#define DS_MAX_TSNE_SEEDS 8
#define DS_MAX_STATE_CONTROLS 8
#define DS_TRUST_K 5          /* neighbours of the maps' trustworthiness (sklearn's default) */
typedef struct ds_state_control {
    const char *name;          /* row name: 1-31 characters of [A-Za-z0-9._+-] */
    const char *train, *test;  /* state-dataset indexes of the same records as the train (and test) set:
                                * the same contexts file, contexts and labels, in any order */
} ds_state_control;
typedef struct ds_analyze_options {
    const char *train;         /* state-dataset index */
    const char *test;          /* NULL, or held-out states of the same shape and label list: kNN train ->
                                * test; else leave-one-out (ds_label_metrics_compute) */
    const char *extra;         /* NULL, or more states (e.g. generated) projected with the same PCA, drawn
                                * in the same t-SNE map and scored by the train kNN (labels by name) */
    const char *extra_name;    /* their legend name (default "extra") */
    const char *out_dir;       /* NULL (default): the train index's directory /analysis */
    const char *layers;        /* "all" (default: every layer and their concatenation), "last", "0,2" */
    int components;            /* PCA components; 0 (default): min(50, records - 1, features) */
    ds_tsne_method tsne_method;
    ds_metric tsne_metric;     /* t-SNE input distances (default EUCLIDEAN) */
    double perplexity;         /* t-SNE, default 30 (capped at (points - 1) / 3) */
    uint64_t seed;             /* label shuffle, and t-SNE initialisation without tsne_seeds (default 0) */
    uint64_t tsne_seeds[DS_MAX_TSNE_SEEDS];
    int n_tsne_seeds;          /* 0 (default): one map, seeded with `seed` */
    ds_state_control controls[DS_MAX_STATE_CONTROLS];
    int n_controls;
    int ks[DS_MAX_KNN_K], n_ks;  /* kNN neighbour counts (default 1, 5, 10) */
    double probe_l2;           /* default 1 */
    int threads;               /* per rank; 0 (default): cores / ranks on the node */
    int plots;                 /* draw the PNGs (default 1) */
} ds_analyze_options;

ds_analyze_options ds_analyze_defaults(void);
int ds_analyze_states(const ds_analyze_options *o);

#endif
