/* Label-structure metrics: distances, kNN accuracy, silhouette, the linear probe (L-BFGS), and the
 * shuffled-label control. Definitions follow scikit-learn 1.2 (analysis.h gives them in full); the
 * Python reference test (tests/ref/test_analysis_sklearn.py) checks each against sklearn. */
#include "dreamstate/analysis.h"

#include "dreamstate/common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Loops with less work than this (multiply-adds) run on one thread: under a loaded machine every
 * team barrier can cost a scheduler time slice, far more than the work itself. */
#define PARALLEL_MIN_WORK (1 << 18)
#define PROBE_FOLDS 5  /* cross-validation of the probe when there is no test set */

/* Rows as float64; for COSINE scaled to unit length (zero rows stay zero, as sklearn's normalize). */
static void prepare_row(const float *x, int dim, ds_metric metric, double *out) {
    double ss = 0;
    for (int j = 0; j < dim; j++) out[j] = x[j], ss += out[j] * out[j];
    if (metric == DS_METRIC_COSINE && ss > 0) {
        double inv = 1 / sqrt(ss);
        for (int j = 0; j < dim; j++) out[j] *= inv;
    }
}

/* Four partial sums break the dependency chain; their order is fixed, so the result is too. */
static double row_distance(const double *a, const double *b, int dim, ds_metric metric) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int j = 0;
    if (metric == DS_METRIC_COSINE) {
        for (; j + 4 <= dim; j += 4)
            s0 += a[j] * b[j], s1 += a[j + 1] * b[j + 1], s2 += a[j + 2] * b[j + 2], s3 += a[j + 3] * b[j + 3];
        for (; j < dim; j++) s0 += a[j] * b[j];
        double dist = 1 - ((s0 + s1) + (s2 + s3));
        return dist < 0 ? 0 : dist > 2 ? 2 : dist;
    }
    for (; j + 4 <= dim; j += 4) {
        double d0 = a[j] - b[j], d1 = a[j + 1] - b[j + 1], d2 = a[j + 2] - b[j + 2], d3 = a[j + 3] - b[j + 3];
        s0 += d0 * d0, s1 += d1 * d1, s2 += d2 * d2, s3 += d3 * d3;
    }
    for (; j < dim; j++) s0 += (a[j] - b[j]) * (a[j] - b[j]);
    return sqrt((s0 + s1) + (s2 + s3));
}

void ds_pairwise_distances(const float *a, int64_t na, const float *b, int64_t nb, int dim, ds_metric metric,
                           double *out) {
    double *bd = ds_alloc((size_t)(nb > 0 ? nb : 1) * dim * sizeof(double));
    int par = (double)na * nb * dim >= PARALLEL_MIN_WORK;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t j = 0; j < nb; j++) prepare_row(b + (size_t)j * dim, dim, metric, bd + (size_t)j * dim);
#pragma omp parallel if (par)
    {
        double *ad = ds_alloc((size_t)dim * sizeof(double));
#pragma omp for schedule(static)
        for (int64_t i = 0; i < na; i++) {
            prepare_row(a + (size_t)i * dim, dim, metric, ad);
            for (int64_t j = 0; j < nb; j++) out[i * nb + j] = row_distance(ad, bd + (size_t)j * dim, dim, metric);
        }
        ds_free(ad);
    }
    ds_free(bd);
}

static int compare_ints(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

/* The distinct labels in ascending order (returned; *n_classes set) and, if index is non-NULL, each
 * row's position among them, so that "smallest class index" means "smallest label". */
static int *dense_labels(const int *labels, int64_t n, int *n_classes, int *index) {
    int *classes = ds_alloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0) ds_die(DS_EXIT_BAD_INPUT, "analysis: label %d of row %lld is negative", labels[i], (long long)i);
        classes[i] = labels[i];
    }
    qsort(classes, (size_t)n, sizeof(int), compare_ints);
    int c = 0;
    for (int64_t i = 0; i < n; i++)
        if (c == 0 || classes[i] != classes[c - 1]) classes[c++] = classes[i];
    for (int64_t i = 0; index && i < n; i++) {
        int lo = 0, hi = c - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (classes[mid] < labels[i]) lo = mid + 1; else hi = mid;
        }
        index[i] = lo;
    }
    *n_classes = c;
    return classes;
}

/* Rows are processed in blocks: one block's distances to all reference rows at a time. */
enum { ROW_BLOCK = 64 };

/* Offers (v, j) to a bounded max-heap of the k smallest values seen (root = the largest kept). A
 * value equal to the root is refused, and the sift-down prefers the left child on equal values:
 * scikit-learn's heap_push exactly, so that ties at the k-th distance resolve as in its brute-force
 * neighbour search (which feeds the training rows in index order). */
static void heap_offer(double *val, int64_t *idx, int k, double v, int64_t j) {
    if (!(v < val[0])) return;
    int at = 0;
    for (;;) {
        int left = 2 * at + 1, right = left + 1, next;
        if (left >= k) break;
        if (right >= k) next = val[left] > v ? left : -1;
        else if (val[left] >= val[right]) next = v < val[left] ? left : -1;
        else next = v < val[right] ? right : -1;
        if (next < 0) break;
        val[at] = val[next], idx[at] = idx[next], at = next;
    }
    val[at] = v, idx[at] = j;
}

/* Sorts n (value, index) pairs by value, then index (insertion sort: n is a neighbour count). */
static void sort_pairs(double *val, int64_t *idx, int n) {
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && (val[b - 1] > val[b] || (val[b - 1] == val[b] && idx[b - 1] > idx[b])); b--) {
            double tv = val[b]; val[b] = val[b - 1], val[b - 1] = tv;
            int64_t ti = idx[b]; idx[b] = idx[b - 1], idx[b - 1] = ti;
        }
}

/* The k nearest of one row of distances to the reference rows, into out_idx[k] (and out_dist[k] if
 * non-NULL) in (distance, index) order. self >= 0: leave that row out as sklearn's
 * kneighbors(X=None) does: k + 1 neighbours including it, then it is dropped (if more than k exact
 * duplicates crowd it out, the nearest is dropped instead). hv, hi: scratch of k + 1. Returns 1 if
 * fewer than k rows had a comparable (non-NaN) distance. */
static int select_neighbours(const double *drow, int64_t n_ref, int k, int64_t self, double *hv, int64_t *hi,
                             int64_t *out_idx, double *out_dist) {
    int kh = k + (self >= 0), drop = 0, bad = 0;
    for (int t = 0; t < kh; t++) hv[t] = INFINITY, hi[t] = -1;
    for (int64_t j = 0; j < n_ref; j++) heap_offer(hv, hi, kh, drow[j], j);
    sort_pairs(hv, hi, kh);
    for (int t = 0; t < kh; t++)
        if (self >= 0 && hi[t] == self) drop = t;
    for (int t = 0, o = 0; t < kh; t++) {
        if (self >= 0 && t == drop) continue;
        bad |= hi[t] < 0;
        out_idx[o] = hi[t];
        if (out_dist) out_dist[o] = hv[t];
        o++;
    }
    return bad;
}

static void check_k(int k, int64_t n_ref, int exclude_self) {
    if (k < 1 || k > n_ref - (exclude_self != 0))
        ds_die(DS_EXIT_BAD_INPUT, "nearest neighbours: k = %d needs 1 <= k <= %lld (the number of %sreference rows)",
               k, (long long)(n_ref - (exclude_self != 0)), exclude_self ? "other " : "");
}

static void die_not_numbers(void) {
    ds_die(DS_EXIT_BAD_INPUT, "nearest neighbours: distances are not numbers (non-finite features?)");
}

void ds_nearest_neighbours(const float *query, int64_t n_query, const float *ref, int64_t n_ref, int dim,
                           ds_metric metric, int k, int exclude_self, int64_t *idx, double *dist) {
    check_k(k, n_ref, exclude_self);
    double *block = ds_alloc((size_t)ROW_BLOCK * n_ref * sizeof(double));
    int bad = 0;
    for (int64_t q0 = 0; q0 < n_query; q0 += ROW_BLOCK) {
        int nb = (int)(n_query - q0 < ROW_BLOCK ? n_query - q0 : ROW_BLOCK);
        ds_pairwise_distances(query + (size_t)q0 * dim, nb, ref, n_ref, dim, metric, block);
#pragma omp parallel if ((double)nb * n_ref * (k + 1) >= PARALLEL_MIN_WORK)
        {
            double *hv = ds_alloc((size_t)(k + 1) * sizeof(double));
            int64_t *hi = ds_alloc((size_t)(k + 1) * sizeof(int64_t));
#pragma omp for schedule(static) reduction(| : bad)
            for (int r = 0; r < nb; r++) {
                int64_t i = q0 + r;
                bad |= select_neighbours(block + (size_t)r * n_ref, n_ref, k, exclude_self ? i : -1, hv, hi,
                                         idx + (size_t)i * k, dist ? dist + (size_t)i * k : NULL);
            }
            ds_free(hv), ds_free(hi);
        }
    }
    ds_free(block);
    if (bad) die_not_numbers();
}

void ds_knn_predict(const float *train, const int *train_labels, int64_t n_train, const float *query,
                    int64_t n_query, int dim, ds_metric metric, const int *ks, int n_ks, int *pred) {
    int loo = query == NULL, kmax = 0;
    if (loo) query = train, n_query = n_train;
    if (n_ks < 1) ds_die(DS_EXIT_BAD_INPUT, "kNN: no values of k");
    for (int s = 0; s < n_ks; s++) check_k(ks[s], n_train, loo), kmax = ks[s] > kmax ? ks[s] : kmax;
    int n_classes, *train_class = ds_alloc((size_t)n_train * sizeof(int));
    int *classes = dense_labels(train_labels, n_train, &n_classes, train_class);
    double *block = ds_alloc((size_t)ROW_BLOCK * n_train * sizeof(double));
    int bad = 0;
    for (int64_t q0 = 0; q0 < n_query; q0 += ROW_BLOCK) {
        int nb = (int)(n_query - q0 < ROW_BLOCK ? n_query - q0 : ROW_BLOCK);
        ds_pairwise_distances(query + (size_t)q0 * dim, nb, train, n_train, dim, metric, block);
#pragma omp parallel if ((double)nb * n_train * n_ks * (kmax + 1) >= PARALLEL_MIN_WORK)
        {
            double *hv = ds_alloc((size_t)(kmax + 1) * sizeof(double));
            int64_t *hi = ds_alloc((size_t)(kmax + 1) * sizeof(int64_t)), *nbr = ds_alloc((size_t)kmax * sizeof(int64_t));
            int *votes = ds_alloc((size_t)n_classes * sizeof(int));
#pragma omp for schedule(static) reduction(| : bad)
            for (int r = 0; r < nb; r++)
                for (int s = 0; s < n_ks; s++) {
                    /* each k is its own search: which rows tie in at the k-th place depends on k */
                    int64_t i = q0 + r;
                    bad |= select_neighbours(block + (size_t)r * n_train, n_train, ks[s], loo ? i : -1, hv, hi, nbr, NULL);
                    memset(votes, 0, (size_t)n_classes * sizeof(int));
                    int best = 0;
                    for (int t = 0; t < ks[s] && nbr[t] >= 0; t++) votes[train_class[nbr[t]]]++;
                    for (int c = 1; c < n_classes; c++)
                        if (votes[c] > votes[best]) best = c;   /* a tied vote goes to the smallest label */
                    pred[i * n_ks + s] = classes[best];
                }
            ds_free(hv), ds_free(hi), ds_free(nbr), ds_free(votes);
        }
    }
    ds_free(block), ds_free(classes), ds_free(train_class);
    if (bad) die_not_numbers();
}

void ds_knn_accuracy(const float *train, const int *train_labels, int64_t n_train, const float *test,
                     const int *test_labels, int64_t n_test, int dim, ds_metric metric, const int *ks, int n_ks,
                     double *accuracy) {
    const int *query_labels = test ? test_labels : train_labels;
    int64_t n_query = test ? n_test : n_train;
    if (n_query < 1) ds_die(DS_EXIT_BAD_INPUT, "kNN: no query rows");
    int *pred = ds_alloc((size_t)n_query * (n_ks > 0 ? n_ks : 1) * sizeof(int));
    ds_knn_predict(train, train_labels, n_train, test, n_test, dim, metric, ks, n_ks, pred);
    for (int s = 0; s < n_ks; s++) {
        int64_t correct = 0;
        for (int64_t i = 0; i < n_query; i++) correct += pred[i * n_ks + s] == query_labels[i];
        accuracy[s] = (double)correct / (double)n_query;
    }
    ds_free(pred);
}

double ds_silhouette_score(const float *x, const int *labels, int64_t n, int dim, ds_metric metric) {
    int n_classes, *cls = ds_alloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    ds_free(dense_labels(labels, n, &n_classes, cls));
    if (n_classes < 2 || n_classes > n - 1)
        ds_die(DS_EXIT_BAD_INPUT, "silhouette: needs 2 <= number of labels <= rows - 1 (%d labels, %lld rows)",
               n_classes, (long long)n);
    int64_t *count = ds_alloc((size_t)n_classes * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) count[cls[i]]++;
    double *s = ds_alloc((size_t)n * sizeof(double));
    double *dist = ds_alloc((size_t)ROW_BLOCK * n * sizeof(double));
    for (int64_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
        int nb = (int)(n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK);
        ds_pairwise_distances(x + (size_t)i0 * dim, nb, x, n, dim, metric, dist);
#pragma omp parallel if ((double)nb * n >= PARALLEL_MIN_WORK)
        {
            double *sum = ds_alloc((size_t)n_classes * sizeof(double));
#pragma omp for schedule(static)
            for (int r = 0; r < nb; r++) {
                int64_t i = i0 + r;
                memset(sum, 0, (size_t)n_classes * sizeof(double));
                for (int64_t j = 0; j < n; j++)
                    if (j != i) sum[cls[j]] += dist[(size_t)r * n + j];
                int own = cls[i];
                double a = count[own] > 1 ? sum[own] / (double)(count[own] - 1) : 0, b = INFINITY;
                for (int c = 0; c < n_classes; c++)
                    if (c != own && sum[c] / (double)count[c] < b) b = sum[c] / (double)count[c];
                double den = a > b ? a : b;
                s[i] = count[own] > 1 && den > 0 ? (b - a) / den : 0;   /* sklearn: 0 for singletons */
            }
            ds_free(sum);
        }
    }
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += s[i];
    ds_free(dist), ds_free(s), ds_free(count), ds_free(cls);
    return total / (double)n;
}

/* ---- linear probe ---- */

typedef struct probe_problem {
    const double *z;   /* [n][dim] standardised features */
    const int *y;      /* [n] class index */
    int64_t n;
    int dim, n_classes;
    double l2;
    double *logits;    /* [n][n_classes] scratch */
    double *row_loss;  /* [n] scratch */
} probe_problem;

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* logits[i][c] = W_c . z_i + b_c. Plain loops, not BLAS: the class count is small, and a threaded
 * GEMM per L-BFGS evaluation would cost more in team start-ups than it saves. */
static void probe_logits(const double *W, const double *b, const double *z, int64_t n, int dim, int C, double *logits) {
#pragma omp parallel for schedule(static) if ((double)n * dim * C >= PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < C; c++) logits[(size_t)i * C + c] = dot(W + (size_t)c * dim, z + (size_t)i * dim, (size_t)dim) + b[c];
}

/* f(theta) and its gradient; theta = [W (n_classes x dim), b (n_classes)]. */
static double probe_objective(const probe_problem *pp, const double *theta, double *grad) {
    int C = pp->n_classes, dim = pp->dim;
    int64_t n = pp->n;
    const double *W = theta, *b = theta + (size_t)C * dim;
    int par = (double)n * dim * C >= PARALLEL_MIN_WORK;
    probe_logits(W, b, pp->z, n, dim, C, pp->logits);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < n; i++) {
        double *l = pp->logits + (size_t)i * C, mx = -INFINITY, sum = 0;
        for (int c = 0; c < C; c++) mx = l[c] > mx ? l[c] : mx;
        for (int c = 0; c < C; c++) sum += exp(l[c] - mx);
        double lse = mx + log(sum);
        pp->row_loss[i] = lse - l[pp->y[i]];
        for (int c = 0; c < C; c++) l[c] = exp(l[c] - lse);   /* residual: softmax - one-hot */
        l[pp->y[i]] -= 1;
    }
    double f = 0;
    for (int64_t i = 0; i < n; i++) f += pp->row_loss[i];
    /* dW = R^T Z + l2 W, by column blocks so that each entry sums over rows in order */
#pragma omp parallel for schedule(static) if (par)
    for (int j0 = 0; j0 < dim; j0 += 64) {
        int j1 = j0 + 64 < dim ? j0 + 64 : dim;
        for (int c = 0; c < C; c++)
            for (int j = j0; j < j1; j++) grad[(size_t)c * dim + j] = pp->l2 * W[(size_t)c * dim + j];
        for (int64_t i = 0; i < n; i++)
            for (int c = 0; c < C; c++) {
                double r = pp->logits[(size_t)i * C + c];
                const double *zi = pp->z + (size_t)i * dim;
                double *g = grad + (size_t)c * dim;
                for (int j = j0; j < j1; j++) g[j] += r * zi[j];
            }
    }
    double *gb = grad + (size_t)C * dim;
    memset(gb, 0, (size_t)C * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < C; c++) gb[c] += pp->logits[(size_t)i * C + c];
    return f + 0.5 * pp->l2 * dot(W, W, (size_t)C * dim);
}

/* L-BFGS (10 pairs) with a bracketing line search for the Armijo and curvature (Wolfe) conditions.
 * Stops when max |gradient| <= gtol or the objective stops decreasing. Returns the iterations. */
static int probe_lbfgs(const probe_problem *pp, double *x, double gtol, int max_iter, double *f_out) {
    enum { M = 10 };
    size_t nv = (size_t)pp->n_classes * pp->dim + pp->n_classes;
    double *g = ds_alloc(nv * sizeof(double)), *d = ds_alloc(nv * sizeof(double));
    double *xn = ds_alloc(nv * sizeof(double)), *gn = ds_alloc(nv * sizeof(double));
    double *S = ds_alloc(M * nv * sizeof(double)), *Y = ds_alloc(M * nv * sizeof(double)), rho[M], alpha[M];
    int stored = 0, newest = -1, iter = 0;
    double f = probe_objective(pp, x, g);
    for (; iter < max_iter; iter++) {
        double gmax = 0;
        for (size_t t = 0; t < nv; t++) gmax = fabs(g[t]) > gmax ? fabs(g[t]) : gmax;
        if (gmax <= gtol) break;
        /* d = -H g by the two-loop recursion, H0 = (s.y / y.y) I from the newest pair. */
        for (size_t t = 0; t < nv; t++) d[t] = -g[t];
        for (int h = 0; h < stored; h++) {
            int p = (newest - h + M) % M;
            alpha[p] = rho[p] * dot(S + p * nv, d, nv);
            for (size_t t = 0; t < nv; t++) d[t] -= alpha[p] * Y[p * nv + t];
        }
        double gamma = stored ? 1 / (rho[newest] * dot(Y + newest * nv, Y + newest * nv, nv)) : 1 / fmax(1, sqrt(dot(g, g, nv)));
        for (size_t t = 0; t < nv; t++) d[t] *= gamma;
        for (int h = stored - 1; h >= 0; h--) {
            int p = (newest - h + M) % M;
            double beta = rho[p] * dot(Y + p * nv, d, nv);
            for (size_t t = 0; t < nv; t++) d[t] += (alpha[p] - beta) * S[p * nv + t];
        }
        double gd = dot(g, d, nv);
        if (!(gd < 0)) {   /* not a descent direction: forget the history, go downhill */
            stored = 0;
            for (size_t t = 0; t < nv; t++) d[t] = -g[t] / fmax(1, sqrt(dot(g, g, nv)));
            gd = dot(g, d, nv);
        }
        double step = 1, lo = 0, hi = INFINITY, fn = f;
        int ok = 0;
        for (int ls = 0; ls < 60 && !ok; ls++) {
            for (size_t t = 0; t < nv; t++) xn[t] = x[t] + step * d[t];
            fn = probe_objective(pp, xn, gn);
            if (!(fn <= f + 1e-4 * step * gd)) hi = step;
            else if (dot(gn, d, nv) < 0.9 * gd) lo = step;
            else ok = 1;
            if (!ok) step = isinf(hi) ? 2 * step : 0.5 * (lo + hi);
        }
        if (!(fn < f) && !ok) break;   /* no progress possible at this precision */
        newest = (newest + 1) % M;
        for (size_t t = 0; t < nv; t++) S[newest * nv + t] = xn[t] - x[t], Y[newest * nv + t] = gn[t] - g[t];
        double sy = dot(S + newest * nv, Y + newest * nv, nv);
        if (sy > 0) {
            rho[newest] = 1 / sy;
            stored = stored < M ? stored + 1 : M;
        } else {
            newest = (newest + M - 1) % M;   /* keep H positive definite: drop this pair */
        }
        double f_old = f;
        memcpy(x, xn, nv * sizeof(double)), memcpy(g, gn, nv * sizeof(double));
        f = fn;
        if (f_old - f <= 1e-16 * fabs(f_old) && ok) { iter++; break; }
    }
    *f_out = f;
    ds_free(g), ds_free(d), ds_free(xn), ds_free(gn), ds_free(S), ds_free(Y);
    return iter;
}

static void standardise(const ds_probe *p, const float *x, int64_t n, double *z) {
#pragma omp parallel for schedule(static) if ((double)n * p->dim >= PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < p->dim; j++)
            z[(size_t)i * p->dim + j] = ((double)x[(size_t)i * p->dim + j] - p->mean[j]) / p->scale[j];
}

void ds_probe_fit(ds_probe *p, const float *x, const int *labels, int64_t n, int dim, double l2) {
    memset(p, 0, sizeof *p);
    int *y = ds_alloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    p->classes = dense_labels(labels, n, &p->n_classes, y);
    if (p->n_classes < 2) ds_die(DS_EXIT_BAD_INPUT, "linear probe: the training rows hold %d label(s), need 2", p->n_classes);
    if (!(l2 > 0)) ds_die(DS_EXIT_BAD_INPUT, "linear probe: the L2 strength must be > 0 (got %g)", l2);
    p->dim = dim;
    p->mean = ds_alloc((size_t)dim * sizeof(double));
    p->scale = ds_alloc((size_t)dim * sizeof(double));
#pragma omp parallel for schedule(static) if ((double)n * dim >= PARALLEL_MIN_WORK)
    for (int j = 0; j < dim; j++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < n; i++) m += x[(size_t)i * dim + j];
        m /= (double)n;
        for (int64_t i = 0; i < n; i++) v += (x[(size_t)i * dim + j] - m) * (x[(size_t)i * dim + j] - m);
        double sd = sqrt(v / (double)n);
        p->mean[j] = m, p->scale[j] = sd < 10 * 2.220446049250313e-16 ? 1 : sd;   /* as StandardScaler */
    }
    int C = p->n_classes;
    double *z = ds_alloc((size_t)n * dim * sizeof(double));
    standardise(p, x, n, z);
    probe_problem pp = {.z = z, .y = y, .n = n, .dim = dim, .n_classes = C, .l2 = l2,
                        .logits = ds_alloc((size_t)n * C * sizeof(double)), .row_loss = ds_alloc((size_t)n * sizeof(double))};
    double *theta = ds_alloc(((size_t)C * dim + C) * sizeof(double));
    p->iterations = probe_lbfgs(&pp, theta, 1e-9 * (double)n, 5000, &p->objective);
    p->W = ds_alloc((size_t)C * dim * sizeof(double));
    p->b = ds_alloc((size_t)C * sizeof(double));
    memcpy(p->W, theta, (size_t)C * dim * sizeof(double));
    memcpy(p->b, theta + (size_t)C * dim, (size_t)C * sizeof(double));
    ds_free(theta), ds_free(pp.logits), ds_free(pp.row_loss), ds_free(z), ds_free(y);
}

void ds_probe_predict_proba(const ds_probe *p, const float *x, int64_t n, double *proba) {
    int C = p->n_classes;
    double *z = ds_alloc((size_t)(n > 0 ? n : 1) * p->dim * sizeof(double));
    standardise(p, x, n, z);
    probe_logits(p->W, p->b, z, n, p->dim, C, proba);
    for (int64_t i = 0; i < n; i++) {
        double *l = proba + (size_t)i * C, mx = -INFINITY, sum = 0;
        for (int c = 0; c < C; c++) mx = l[c] > mx ? l[c] : mx;
        for (int c = 0; c < C; c++) sum += (l[c] = exp(l[c] - mx));
        for (int c = 0; c < C; c++) l[c] /= sum;
    }
    ds_free(z);
}

double ds_probe_predict(const ds_probe *p, const float *x, int64_t n, const int *labels, int *pred) {
    int C = p->n_classes;
    double *proba = ds_alloc((size_t)(n > 0 ? n : 1) * C * sizeof(double));
    ds_probe_predict_proba(p, x, n, proba);
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < C; c++)
            if (proba[(size_t)i * C + c] > proba[(size_t)i * C + best]) best = c;
        if (pred) pred[i] = p->classes[best];
        if (labels) correct += p->classes[best] == labels[i];
    }
    ds_free(proba);
    return labels && n > 0 ? (double)correct / (double)n : 0;
}

void ds_probe_free(ds_probe *p) {
    ds_free(p->classes), ds_free(p->mean), ds_free(p->scale), ds_free(p->W), ds_free(p->b);
    memset(p, 0, sizeof *p);
}

void ds_shuffle_labels(const int *labels, int64_t n, uint64_t seed, int *out) {
    enum { SHUFFLE_STREAM = 0x5348 };
    memmove(out, labels, (size_t)n * sizeof(int));
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(ds_rng_u64(seed, SHUFFLE_STREAM, (uint64_t)i) % (uint64_t)(i + 1));
        int t = out[i];
        out[i] = out[j], out[j] = t;
    }
}

/* Probe accuracy by cross-validation: fold f holds the rows i with i mod folds = f. */
static double cross_validated_probe(const float *x, const int *y, int64_t n, int dim, double l2) {
    int folds = n < PROBE_FOLDS ? (int)n : PROBE_FOLDS;
    float *fit_x = ds_alloc(sizeof(float) * (size_t)n * dim), *held_x = ds_alloc(sizeof(float) * (size_t)n * dim);
    int *fit_y = ds_alloc(sizeof(int) * (size_t)n), *held_y = ds_alloc(sizeof(int) * (size_t)n);
    double correct = 0;
    for (int f = 0; f < folds; f++) {
        int64_t nf = 0, nh = 0;
        for (int64_t i = 0; i < n; i++) {
            int held = i % folds == f;
            memcpy((held ? held_x + nh * dim : fit_x + nf * dim), x + i * dim, sizeof(float) * dim);
            if (held) held_y[nh++] = y[i];
            else fit_y[nf++] = y[i];
        }
        ds_probe p;
        ds_probe_fit(&p, fit_x, fit_y, nf, dim, l2);
        correct += ds_probe_predict(&p, held_x, nh, held_y, NULL) * (double)nh;
        ds_probe_free(&p);
    }
    ds_free(fit_x), ds_free(held_x), ds_free(fit_y), ds_free(held_y);
    return correct / (double)n;
}

void ds_label_metrics_compute(const float *train, const int *train_labels, int64_t n_train, const float *test,
                              const int *test_labels, int64_t n_test, int dim, ds_metric metric, const int *ks,
                              int n_ks, double probe_l2, int shuffled, uint64_t seed, ds_label_metrics *out) {
    if (n_ks < 1 || n_ks > DS_MAX_KNN_K) ds_die(DS_EXIT_BAD_INPUT, "analysis: 1 to %d values of k, got %d", DS_MAX_KNN_K, n_ks);
    int *ytr = ds_alloc((size_t)n_train * sizeof(int)), *yte = test ? ds_alloc((size_t)n_test * sizeof(int)) : NULL;
    if (shuffled) {
        ds_shuffle_labels(train_labels, n_train, seed, ytr);
        if (test) ds_shuffle_labels(test_labels, n_test, seed + 1, yte);
    } else {
        memcpy(ytr, train_labels, (size_t)n_train * sizeof(int));
        if (test) memcpy(yte, test_labels, (size_t)n_test * sizeof(int));
    }
    memset(out, 0, sizeof *out);
    out->n_k = n_ks;
    memcpy(out->k, ks, (size_t)n_ks * sizeof(int));
    ds_knn_accuracy(train, ytr, n_train, test, yte, test ? n_test : 0, dim, metric, ks, n_ks, out->knn_accuracy);
    if (!test) {
        out->silhouette = ds_silhouette_score(train, ytr, n_train, dim, metric);
        out->probe_accuracy = cross_validated_probe(train, ytr, n_train, dim, probe_l2);
    } else {
        out->silhouette = ds_silhouette_score(test, yte, n_test, dim, metric);
        ds_probe probe;
        ds_probe_fit(&probe, train, ytr, n_train, dim, probe_l2);
        out->probe_accuracy = ds_probe_predict(&probe, test, n_test, yte, NULL);
        ds_probe_free(&probe);
    }
    ds_free(ytr), ds_free(yte);
}

/* ---- trustworthiness of an embedding ---- */

double ds_trustworthiness(const float *x, int64_t n, int dim, ds_metric metric, const double *y, int k) {
    if (k < 1 || !(k < n / 2.0))
        ds_die(DS_EXIT_BAD_INPUT, "trustworthiness: needs 1 <= k < rows / 2 (k = %d, %lld rows)", k, (long long)n);
    double *rowsum = ds_alloc((size_t)n * sizeof(double));
    double *dist = ds_alloc((size_t)ROW_BLOCK * n * sizeof(double));
    for (int64_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
        int nb = (int)(n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK);
        ds_pairwise_distances(x + (size_t)i0 * dim, nb, x, n, dim, metric, dist);
#pragma omp parallel if ((double)nb * n * k >= PARALLEL_MIN_WORK)
        {
            double *hv = ds_alloc((size_t)k * sizeof(double));
            int64_t *hi = ds_alloc((size_t)k * sizeof(int64_t));
#pragma omp for schedule(static)
            for (int r = 0; r < nb; r++) {
                int64_t i = i0 + r;
                /* the k nearest in the embedding (Euclidean, i itself excluded) */
                for (int t = 0; t < k; t++) hv[t] = INFINITY, hi[t] = -1;
                for (int64_t j = 0; j < n; j++) {
                    if (j == i) continue;
                    double dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1];
                    heap_offer(hv, hi, k, dx * dx + dy * dy, j);
                }
                /* each one's rank among i's neighbours in the input space (1 = nearest; ties by index) */
                const double *d = dist + (size_t)r * n;
                double penalty = 0;
                for (int t = 0; t < k; t++) {
                    int64_t j = hi[t], rank = 1;
                    for (int64_t m = 0; m < n; m++)
                        if (m != i && m != j && (d[m] < d[j] || (d[m] == d[j] && m < j))) rank++;
                    if (rank > k) penalty += (double)(rank - k);
                }
                rowsum[i] = penalty;
            }
            ds_free(hv), ds_free(hi);
        }
    }
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += rowsum[i];
    ds_free(rowsum), ds_free(dist);
    return 1 - total * 2 / ((double)n * k * (2.0 * n - 3.0 * k - 1));
}

/* ---- Fréchet distance between Gaussians ---- */

void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
            const int *lwork, int *info);

void ds_mean_covariance(const float *x, int64_t n, int dim, double *mean, double *cov) {
    if (n < 2) ds_die(DS_EXIT_BAD_INPUT, "covariance: needs at least 2 rows (got %lld)", (long long)n);
    memset(mean, 0, (size_t)dim * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) mean[j] += x[(size_t)i * dim + j];
    for (int j = 0; j < dim; j++) mean[j] /= (double)n;
    memset(cov, 0, (size_t)dim * dim * sizeof(double));
    double *c = ds_alloc((size_t)dim * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < dim; j++) c[j] = x[(size_t)i * dim + j] - mean[j];
        for (int a = 0; a < dim; a++)
            for (int b = 0; b <= a; b++) cov[(size_t)a * dim + b] += c[a] * c[b];
    }
    for (int a = 0; a < dim; a++)
        for (int b = 0; b <= a; b++) cov[(size_t)b * dim + a] = cov[(size_t)a * dim + b] /= (double)(n - 1);
    ds_free(c);
}

/* Eigenvalues (ascending) into w and orthonormal eigenvectors into the columns of a (column-major;
 * a symmetric matrix is its own transpose), by LAPACK dsyev. */
static void symmetric_eigen(double *a, int dim, double *w) {
    int lwork = -1, info = 0;
    double query;
    dsyev_("V", "L", &dim, a, &dim, w, &query, &lwork, &info);
    lwork = (int)query;
    double *work = ds_alloc((size_t)lwork * sizeof(double));
    dsyev_("V", "L", &dim, a, &dim, w, work, &lwork, &info);
    ds_free(work);
    if (info) ds_die(DS_EXIT_FAIL, "Fréchet distance: dsyev failed (info %d)", info);
}

double ds_frechet_distance(const double *mu1, const double *S1, const double *mu2, const double *S2, int dim) {
    size_t dd = (size_t)dim * dim;
    double *V = ds_alloc(dd * sizeof(double)), *w = ds_alloc((size_t)dim * sizeof(double));
    double *R = ds_alloc(dd * sizeof(double)), *T = ds_alloc(dd * sizeof(double)), *M = ds_alloc(dd * sizeof(double));
    /* R = S1^1/2 = V diag(sqrt(w)) V^T */
    memcpy(V, S1, dd * sizeof(double));
    symmetric_eigen(V, dim, w);
    for (int a = 0; a < dim; a++)
        for (int b = 0; b < dim; b++) {
            double s = 0;
            for (int e = 0; e < dim; e++) s += V[(size_t)e * dim + a] * sqrt(fmax(w[e], 0)) * V[(size_t)e * dim + b];
            R[(size_t)a * dim + b] = s;
        }
    /* M = R S2 R, symmetrised against rounding */
    for (int a = 0; a < dim; a++)
        for (int b = 0; b < dim; b++) {
            double s = 0;
            for (int e = 0; e < dim; e++) s += R[(size_t)a * dim + e] * S2[(size_t)e * dim + b];
            T[(size_t)a * dim + b] = s;
        }
    for (int a = 0; a < dim; a++)
        for (int b = 0; b < dim; b++) {
            double s = 0;
            for (int e = 0; e < dim; e++) s += T[(size_t)a * dim + e] * R[(size_t)e * dim + b];
            M[(size_t)a * dim + b] = s;
        }
    for (int a = 0; a < dim; a++)
        for (int b = 0; b < a; b++) M[(size_t)a * dim + b] = M[(size_t)b * dim + a] = 0.5 * (M[(size_t)a * dim + b] + M[(size_t)b * dim + a]);
    symmetric_eigen(M, dim, w);
    double d2 = 0, tr = 0;
    for (int j = 0; j < dim; j++) {
        d2 += (mu1[j] - mu2[j]) * (mu1[j] - mu2[j]);
        tr += S1[(size_t)j * dim + j] + S2[(size_t)j * dim + j] - 2 * sqrt(fmax(w[j], 0));
    }
    ds_free(V), ds_free(w), ds_free(R), ds_free(T), ds_free(M);
    return d2 + tr;
}

double ds_frechet_rows(const float *a, int64_t na, const float *b, int64_t nb, int dim) {
    double *m1 = ds_alloc((size_t)dim * sizeof(double)), *m2 = ds_alloc((size_t)dim * sizeof(double));
    double *S1 = ds_alloc((size_t)dim * dim * sizeof(double)), *S2 = ds_alloc((size_t)dim * dim * sizeof(double));
    ds_mean_covariance(a, na, dim, m1, S1);
    ds_mean_covariance(b, nb, dim, m2, S2);
    double fd = ds_frechet_distance(m1, S1, m2, S2, dim);
    ds_free(m1), ds_free(m2), ds_free(S1), ds_free(S2);
    return fd;
}
