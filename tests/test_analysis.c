/* Analysis module (PCA, distances, kNN, silhouette, probe, shuffle, t-SNE).
 *
 * Without arguments: unit tests that need no Python. PCA on one rank against LAPACK dsyev of the
 * float64 covariance (both routes), metrics against hand-computed cases (ties included) and the
 * probe against its optimality conditions, t-SNE on separated clusters (kNN accuracy of the
 * embedding, falling KL, exact vs Barnes-Hut, thread-count independence), and the bad-input exits.
 *
 * With a mode, a driver for the reference scripts (files are little-endian binary, see read_* below):
 *   --pca-mpi IN OUT K ROUTE SPLIT   under mpirun: each rank reads its own rows of IN (SPLIT "uneven":
 *                                    rank r gets a share proportional to r + 1; "gap": the same with
 *                                    rank 1 empty), fits, transforms, fits again (must be identical),
 *                                    rank 0 writes OUT ("-": none)
 *   --metrics IN OUT METRIC L2 KS    kNN / silhouette / probe / control results as JSON
 *   --tsne IN OUT METHOD [METRIC [SEED]]  t-SNE scatter JSON (the plot_scatter.py schema), with the
 *                                    map's trustworthiness (k = 5)
 *   --tsne-kl IN Y OUT METHOD [METRIC]  KL divergence of the given embedding Y (float64 n x 2)
 *   --trust IN Y OUT METRIC K        trustworthiness of the given embedding Y
 *   --frechet IN OUT                 IN: int64 n1, n2, dim; float32 rows A, rows B: the Fréchet distance
 *                                    of the Gaussians fitted to A and B, and each one's mean and covariance */
#include "dreamstate/analysis.h"

#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "test.h"

#include <omp.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
            const int *lwork, int *info);

/* ---------------------------------------------------------------- data */

/* n rows of d features with a decaying spectrum: mean 3 + sum_c 10 * 0.7^c z_ic v_c + 0.05 noise. */
static float *lowrank_rows(int64_t n, int d, int rank, uint64_t seed) {
    float *x = ds_alloc((size_t)n * d * sizeof(float));
    double *v = ds_alloc((size_t)rank * d * sizeof(double));
    for (int64_t t = 0; t < (int64_t)rank * d; t++) v[t] = ds_rng_normal(seed, 1, t) / sqrt((double)d);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double s = 3 + 0.05 * ds_rng_normal(seed, 2, (uint64_t)i * d + j);
            for (int c = 0; c < rank; c++) s += 10 * pow(0.7, c) * ds_rng_normal(seed, 3, (uint64_t)i * rank + c) * v[(size_t)c * d + j];
            x[(size_t)i * d + j] = (float)s;
        }
    ds_free(v);
    return x;
}

/* `per` points around each of n_clusters centres ~ N(0, spread^2 I) in dim dimensions, unit noise. */
static float *cluster_rows(int n_clusters, int per, int dim, double spread, uint64_t seed, int *labels) {
    float *x = ds_alloc((size_t)n_clusters * per * dim * sizeof(float));
    for (int i = 0; i < n_clusters * per; i++) {
        labels[i] = i % n_clusters;
        for (int j = 0; j < dim; j++)
            x[(size_t)i * dim + j] = (float)(spread * ds_rng_normal(seed, 10 + labels[i], j) +
                                             ds_rng_normal(seed, 9, (uint64_t)i * dim + j));
    }
    return x;
}

/* ---------------------------------------------------------------- PCA */

static void check_pca(int n, int d, int k, ds_pca_route route, ds_pca_route expect, const char *what) {
    float *x = lowrank_rows(n, d, k + 3, (uint64_t)n * 7 + d);
    ds_pca pca;
    ds_pca_fit(&pca, MPI_COMM_SELF, n, d, x, k, route);
    CHECK(pca.route == expect && pca.n == n && pca.k == k, "%s: route %d (expected %d)", what, pca.route, expect);

    /* reference: float64 covariance, dsyev (ascending) */
    double *mean = ds_alloc((size_t)d * sizeof(double)), *C = ds_alloc((size_t)d * d * sizeof(double));
    double *w = ds_alloc((size_t)d * sizeof(double)), trace = 0, mean_err = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mean[j] += x[(size_t)i * d + j] / (double)n;
    for (int i = 0; i < n; i++)
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++)
                C[(size_t)a * d + b] += (x[(size_t)i * d + a] - mean[a]) * (x[(size_t)i * d + b] - mean[b]) / (n - 1);
    for (int j = 0; j < d; j++) trace += C[(size_t)j * d + j], mean_err = fmax(mean_err, fabs(pca.mean[j] - mean[j]));
    int lwork = -1, info;
    double wq;
    dsyev_("V", "U", &d, C, &d, w, &wq, &lwork, &info);
    lwork = (int)wq;
    double *work = ds_alloc((size_t)lwork * sizeof(double));
    dsyev_("V", "U", &d, C, &d, w, work, &lwork, &info);
    double eig_err = 0, vec_err = 0, ortho_err = 0, sign_ok = 1;
    for (int c = 0; c < k; c++) {
        const double *ref = C + (size_t)(d - 1 - c) * d;   /* column-major: eigenvector d-1-c */
        const float *v = pca.components + (size_t)c * d;
        eig_err = fmax(eig_err, fabs(pca.eigenvalues[c] - w[d - 1 - c]) / w[d - 1 - c]);
        double dotp = 0, big = 0;
        int at = 0;
        for (int j = 0; j < d; j++) {
            dotp += v[j] * ref[j];
            if (fabs(v[j]) > big) big = fabs(v[j]), at = j;
        }
        vec_err = fmax(vec_err, 1 - fabs(dotp));
        sign_ok = sign_ok && v[at] > 0;
        for (int c2 = 0; c2 < k; c2++) {
            double g = 0;
            for (int j = 0; j < d; j++) g += (double)v[j] * pca.components[(size_t)c2 * d + j];
            ortho_err = fmax(ortho_err, fabs(g - (c == c2)));
        }
    }
    CHECK(info == 0 && eig_err < 1e-9, "%s: eigenvalues vs dsyev rel err %.3g", what, eig_err);
    CHECK(vec_err < 1e-6, "%s: components vs dsyev: 1 - |cos| = %.3g", what, vec_err);
    CHECK(ortho_err < 1e-6, "%s: components orthonormal to %.3g", what, ortho_err);
    CHECK(sign_ok, "%s: largest entry of each component positive", what);
    CHECK(mean_err < 1e-12 && fabs(pca.total_variance - trace) < 1e-10 * trace, "%s: mean err %.3g, total variance %.12g vs %.12g",
          what, mean_err, pca.total_variance, trace);
    /* transform against float64 projections */
    float *coords = ds_alloc((size_t)n * k * sizeof(float));
    ds_pca_transform(&pca, n, x, coords);
    double proj_err = 0, proj_max = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) {
            double p = 0;
            for (int j = 0; j < d; j++) p += (x[(size_t)i * d + j] - mean[j]) * (double)pca.components[(size_t)c * d + j];
            proj_err = fmax(proj_err, fabs(coords[(size_t)i * k + c] - p)), proj_max = fmax(proj_max, fabs(p));
        }
    CHECK(proj_err < 1e-5 * proj_max, "%s: transform rel err %.3g", what, proj_err / proj_max);
    printf("%-34s eigenvalue rel err %.2e, 1-|cos| %.2e, transform rel err %.2e\n", what, eig_err, vec_err, proj_err / proj_max);
    ds_free(coords), ds_free(work), ds_free(w), ds_free(C), ds_free(mean), ds_free(x);
    ds_pca_free(&pca);
}

static void test_pca(void) {
    check_pca(150, 40, 6, DS_PCA_AUTO, DS_PCA_COVARIANCE, "PCA auto n>d (covariance)");
    check_pca(40, 300, 6, DS_PCA_AUTO, DS_PCA_GRAM, "PCA auto n<d (Gram)");
    check_pca(90, 60, 5, DS_PCA_GRAM, DS_PCA_GRAM, "PCA forced Gram, n>d");
    check_pca(50, 70, 5, DS_PCA_COVARIANCE, DS_PCA_COVARIANCE, "PCA forced covariance, n<d");
}

/* ---------------------------------------------------------------- distances, kNN, silhouette */

static void test_distances_and_neighbours(void) {
    const float a[] = {0, 0, 1, 0, 1, 1};
    const float b[] = {3, 4, 0, 2, 0, 0, 2, 2};
    double out[12];
    ds_pairwise_distances(a, 3, b, 4, 2, DS_METRIC_EUCLIDEAN, out);
    CHECK(out[0] == 5 && out[1] == 2 && out[2] == 0 && fabs(out[3] - sqrt(8)) < 1e-15 && out[6] == 1,
          "euclidean distances: %g %g %g %g %g", out[0], out[1], out[2], out[3], out[6]);
    ds_pairwise_distances(a, 3, b, 4, 2, DS_METRIC_COSINE, out);
    /* zero rows: similarity 0, distance 1 (sklearn); parallel: 0; orthogonal: 1 */
    CHECK(out[0] == 1 && out[2] == 1 && out[5] == 1 && fabs(out[4] - 0.4) < 1e-15 && fabs(out[11]) < 1e-15 &&
          fabs(out[9] - (1 - 1 / sqrt(2))) < 1e-15,
          "cosine distances: %g %g %g %g %g", out[0], out[4], out[5], out[9], out[11]);

    /* ties: 1-D points; from 0 the order must be by (distance, index) */
    const float line[] = {2, -1, 1, -2, 1, 0};
    const float zero[] = {0};
    int64_t idx[6];
    double dist[6];
    ds_nearest_neighbours(zero, 1, line, 6, 1, DS_METRIC_EUCLIDEAN, 6, 0, idx, dist);
    int64_t expect[6] = {5, 1, 2, 4, 0, 3};
    CHECK(!memcmp(idx, expect, sizeof expect) && dist[0] == 0 && dist[3] == 1 && dist[5] == 2,
          "neighbour order (distance, index): %lld %lld %lld %lld %lld %lld", (long long)idx[0], (long long)idx[1],
          (long long)idx[2], (long long)idx[3], (long long)idx[4], (long long)idx[5]);
    int64_t self_idx[6 * 3];
    ds_nearest_neighbours(line, 6, line, 6, 1, DS_METRIC_EUCLIDEAN, 3, 1, self_idx, NULL);
    /* row 5 (at 0) without itself: 1, 2, 4; row 2 (at 1): its duplicate 4 (distance 0), then 0 and 5 */
    CHECK(self_idx[15] == 1 && self_idx[16] == 2 && self_idx[17] == 4 && self_idx[6] == 4 && self_idx[7] == 0 &&
          self_idx[8] == 5, "leave-self-out neighbour order");
}

static void test_knn(void) {
    /* vote ties go to the smallest label; label 0 never appears (labels are not indices) */
    const float train[] = {-1, 1, 5};
    const int train_labels[] = {7, 3, 9};
    const float query[] = {0, 0.1f};
    int ks[] = {1, 2, 3}, pred[6];
    ds_knn_predict(train, train_labels, 3, query, 2, 1, DS_METRIC_EUCLIDEAN, ks, 3, pred);
    /* query 0: k=1 tie at distance 1 -> lower index (label 7); k=2: 7 and 3 tie -> 3; k=3: 7, 3, 9 -> 3 */
    CHECK(pred[0] == 7 && pred[1] == 3 && pred[2] == 3, "kNN ties at 0: %d %d %d", pred[0], pred[1], pred[2]);
    CHECK(pred[3] == 3 && pred[4] == 3 && pred[5] == 3, "kNN at 0.1: %d %d %d", pred[3], pred[4], pred[5]);
    double acc[3];
    const int test_labels[] = {7, 9};
    ds_knn_accuracy(train, train_labels, 3, query, test_labels, 2, 1, DS_METRIC_EUCLIDEAN, ks, 3, acc);
    CHECK(acc[0] == 0.5 && acc[1] == 0 && acc[2] == 0, "kNN accuracy %g %g %g", acc[0], acc[1], acc[2]);

    /* leave-one-out: 0, 1, 2 labelled 0; 10, 11 labelled 1; 12 labelled 0 (an outlier among the 1s) */
    const float loo_x[] = {0, 1, 2, 10, 11, 12};
    const int loo_y[] = {0, 0, 0, 1, 1, 0};
    int k1[] = {1, 3};
    ds_knn_accuracy(loo_x, loo_y, 6, NULL, NULL, 0, 1, DS_METRIC_EUCLIDEAN, k1, 2, acc);
    /* k=1: 0, 1 (tie 0/2: lower index), 2 right; 10 -> 11 right; 11 -> 10 (tie 10/12: lower index)
     * right; 12 -> 11 wrong: 5/6. k=3: the 0s right; 10 -> 11, 12, 2 = labels 1, 0, 0 wrong;
     * 11 -> 10, 12, 2 wrong; 12 -> 11, 10, 2 = 1, 1, 0 wrong: 3/6. */
    CHECK(fabs(acc[0] - 5.0 / 6) < 1e-15 && fabs(acc[1] - 0.5) < 1e-15, "leave-one-out accuracy %g %g", acc[0], acc[1]);
}

static void test_silhouette(void) {
    /* 1-D, clusters {0, 1} and {4, 6}: s = 4/5, 3/4, 1.5/3.5, 3.5/5.5 */
    const float x[] = {0, 1, 4, 6};
    const int y[] = {2, 2, 5, 5};
    double s = ds_silhouette_score(x, y, 4, 1, DS_METRIC_EUCLIDEAN);
    double expect = (0.8 + 0.75 + 1.5 / 3.5 + 3.5 / 5.5) / 4;
    CHECK(fabs(s - expect) < 1e-15, "silhouette %.17g vs %.17g", s, expect);
    /* a singleton cluster scores 0: {0, 1}, {10} -> (9/10 + 8/9 + 0) / 3 */
    const float x2[] = {0, 1, 10};
    const int y2[] = {0, 0, 1};
    s = ds_silhouette_score(x2, y2, 3, 1, DS_METRIC_EUCLIDEAN);
    CHECK(fabs(s - (0.9 + 8.0 / 9) / 3) < 1e-15, "silhouette with a singleton %.17g", s);
    /* cosine: directions at 0 and 90 degrees, two per cluster, scaled (scale must not matter) */
    const float x3[] = {1, 0, 3, 0.1f, 0, 2, 0.1f, 5};
    const int y3[] = {0, 0, 1, 1};
    double c1 = ds_silhouette_score(x3, y3, 4, 2, DS_METRIC_COSINE);
    const float x4[] = {2, 0, 30, 1, 0, 1, 1, 50};
    double c2 = ds_silhouette_score(x4, y3, 4, 2, DS_METRIC_COSINE);
    CHECK(c1 > 0.9 && fabs(c1 - c2) < 1e-7, "cosine silhouette %g, scaled rows %g", c1, c2);
}

/* ---------------------------------------------------------------- probe, shuffle, metric bundle */

static void test_probe(void) {
    enum { K = 3, PER = 40, DIM = 6 };
    int y[K * PER];
    float *x = cluster_rows(K, PER, DIM, 1.0, 5, y);   /* overlapping clusters: a non-trivial optimum */
    for (int i = 0; i < K * PER; i++) x[(size_t)i * DIM + 2] = 4 * x[(size_t)i * DIM + 2] + 7;   /* scale, shift */
    for (int i = 0; i < K * PER; i++) x[(size_t)i * DIM + 5] = 3;                                 /* constant */
    ds_probe p;
    ds_probe_fit(&p, x, y, K * PER, DIM, 1.0);
    /* optimality, recomputed here in float64: dL/dW = sum_i (softmax - onehot) z_i^T + W = 0, dL/db = 0 */
    double *proba = ds_alloc((size_t)K * PER * K * sizeof(double)), gmax = 0, wmax = 0, rowsum_err = 0, obj = 0;
    ds_probe_predict_proba(&p, x, K * PER, proba);
    double gW[K][DIM] = {{0}}, gb[K] = {0};
    for (int i = 0; i < K * PER; i++) {
        double rs = 0;
        for (int c = 0; c < K; c++) {
            double r = proba[i * K + c] - (c == y[i]);
            rs += proba[i * K + c];
            gb[c] += r;
            for (int j = 0; j < DIM; j++) gW[c][j] += r * (x[(size_t)i * DIM + j] - p.mean[j]) / p.scale[j];
        }
        obj -= log(proba[i * K + y[i]]);
        rowsum_err = fmax(rowsum_err, fabs(rs - 1));
    }
    for (int c = 0; c < K; c++) {
        gmax = fmax(gmax, fabs(gb[c]));
        for (int j = 0; j < DIM; j++)
            gmax = fmax(gmax, fabs(gW[c][j] + p.W[c * DIM + j])), wmax = fmax(wmax, fabs(p.W[c * DIM + j])),
            obj += 0.5 * p.W[c * DIM + j] * p.W[c * DIM + j];
    }
    CHECK(gmax < 1e-6 && wmax > 0.1, "probe optimality: max |gradient| %.3g (|W| max %.3g, %d iterations)", gmax, wmax, p.iterations);
    CHECK(fabs(obj - p.objective) < 1e-9 * obj, "probe objective %.12g vs recomputed %.12g", p.objective, obj);
    CHECK(rowsum_err < 1e-12 && p.scale[5] == 1 && p.W[5] == 0, "probabilities sum to 1 (%.3g); constant feature inert", rowsum_err);
    double acc = ds_probe_predict(&p, x, K * PER, y, NULL);
    CHECK(acc > 0.8, "probe training accuracy %g", acc);
    printf("probe: %d L-BFGS iterations, max |grad| %.2e, train accuracy %.3f\n", p.iterations, gmax, acc);
    ds_probe_free(&p);

    /* stronger L2 -> smaller weights; separable clusters -> perfect held-out accuracy */
    ds_probe strong;
    ds_probe_fit(&strong, x, y, K * PER, DIM, 100.0);
    double w2 = 0;
    for (int t = 0; t < K * DIM; t++) w2 = fmax(w2, fabs(strong.W[t]));
    CHECK(w2 < wmax, "L2 100: max |W| %g < %g", w2, wmax);
    ds_probe_free(&strong);
    int ys[K * PER];
    float *sep = cluster_rows(K, PER, DIM, 10.0, 6, ys);
    ds_probe_fit(&p, sep, ys, K * PER / 2, DIM, 1.0);
    int pred[K * PER / 2];
    acc = ds_probe_predict(&p, sep + (size_t)K * PER / 2 * DIM, K * PER / 2, ys + K * PER / 2, pred);
    CHECK(acc == 1.0, "separable clusters: held-out probe accuracy %g", acc);
    ds_probe_free(&p);
    ds_free(sep), ds_free(proba), ds_free(x);
}

static void test_shuffle_and_bundle(void) {
    enum { N = 200 };
    int y[N], a[N], b[N], c[N], hist_y[5] = {0}, hist_a[5] = {0}, moved = 0;
    for (int i = 0; i < N; i++) y[i] = i % 5;
    ds_shuffle_labels(y, N, 42, a);
    ds_shuffle_labels(y, N, 42, b);
    ds_shuffle_labels(y, N, 43, c);
    for (int i = 0; i < N; i++) hist_y[y[i]]++, hist_a[a[i]]++, moved += a[i] != y[i];
    CHECK(!memcmp(hist_y, hist_a, sizeof hist_y) && !memcmp(a, b, sizeof a) && memcmp(a, c, sizeof a) && moved > N / 2,
          "shuffle: a deterministic permutation that moves most labels (%d moved)", moved);

    enum { K = 5, PER = 40, DIM = 20 };
    int labels[K * PER];
    float *x = cluster_rows(K, PER, DIM, 4.0, 8, labels);   /* rows alternate labels: first half train */
    int ks[] = {1, 5, 10};
    ds_label_metrics real, control;
    int half = K * PER / 2;
    ds_label_metrics_compute(x, labels, half, x + (size_t)half * DIM, labels + half, half, DIM, DS_METRIC_EUCLIDEAN,
                             ks, 3, 1.0, 0, 7, &real);
    ds_label_metrics_compute(x, labels, half, x + (size_t)half * DIM, labels + half, half, DIM, DS_METRIC_EUCLIDEAN,
                             ks, 3, 1.0, 1, 7, &control);
    CHECK(real.knn_accuracy[0] == 1 && real.knn_accuracy[2] == 1 && real.probe_accuracy == 1 && real.silhouette > 0.3,
          "real labels: kNN %g %g %g, probe %g, silhouette %g", real.knn_accuracy[0], real.knn_accuracy[1],
          real.knn_accuracy[2], real.probe_accuracy, real.silhouette);
    CHECK(control.knn_accuracy[1] < 0.45 && control.probe_accuracy < 0.45 && fabs(control.silhouette) < 0.1,
          "shuffled control near chance (0.2): kNN %g %g %g, probe %g, silhouette %g", control.knn_accuracy[0],
          control.knn_accuracy[1], control.knn_accuracy[2], control.probe_accuracy, control.silhouette);
    printf("label metrics: real kNN@5 %.3f probe %.3f silhouette %.3f | shuffled kNN@5 %.3f probe %.3f silhouette %.3f\n",
           real.knn_accuracy[1], real.probe_accuracy, real.silhouette, control.knn_accuracy[1], control.probe_accuracy,
           control.silhouette);
    ds_free(x);
}

/* ---------------------------------------------------------------- t-SNE */

static double embedding_knn_accuracy(const double *y, const int *labels, int n) {
    float *yf = ds_alloc((size_t)n * 2 * sizeof(float));
    for (int t = 0; t < 2 * n; t++) yf[t] = (float)y[t];
    int k = 5;
    double acc;
    ds_knn_accuracy(yf, labels, n, NULL, NULL, 0, 2, DS_METRIC_EUCLIDEAN, &k, 1, &acc);
    ds_free(yf);
    return acc;
}

static void test_tsne(void) {
    enum { K = 5, PER = 60, DIM = 50, N = K * PER };
    int labels[N];
    float *x = cluster_rows(K, PER, DIM, 1.5, 11, labels);   /* centres ~15 apart, points ~10 apart within one */
    double *y_exact = ds_alloc(N * 2 * sizeof(double)), *y_bh = ds_alloc(N * 2 * sizeof(double));
    double *y_other = ds_alloc(N * 2 * sizeof(double));
    ds_tsne_opts o = ds_tsne_defaults();
    ds_tsne_info info_exact, info_bh, info_other;
    double kl_bh_final = 0;
    for (int m = 0; m < 2; m++) {
        o.method = m ? DS_TSNE_BARNES_HUT : DS_TSNE_EXACT;
        double *y = m ? y_bh : y_exact;
        ds_tsne_info *info = m ? &info_bh : &info_exact;
        const char *name = m ? "Barnes-Hut" : "exact";
        double t0 = ds_now_seconds();
        ds_tsne(x, N, DIM, &o, y, info);
        double secs = ds_now_seconds() - t0;
        double acc = embedding_knn_accuracy(y, labels, N);
        CHECK(info->method == o.method && acc > 0.95, "t-SNE %s: embedding 5-NN accuracy %g", name, acc);
        /* KL after the exaggeration phase: falls overall, and never rises by more than 1% between checks */
        int first = -1, rises = 0;
        for (int t = 0; t < info->n_trace; t++) {
            if (info->trace_iter[t] <= o.exaggeration_iters + 50) continue;
            if (first < 0) first = t;
            else rises += info->trace_kl[t] > 1.01 * info->trace_kl[t - 1];
        }
        int after = first > 0 ? first - 1 : 0;   /* the first check after the exaggeration phase */
        CHECK(first > 0 && info->kl < 0.9 * info->trace_kl[after] && rises == 0,
              "t-SNE %s: KL %.4f at iteration %d -> %.4f at %d (%d rises)", name, info->trace_kl[after],
              info->trace_iter[after], info->kl, info->iters_run, rises);
        double kl_start = info->trace_kl[0];
        CHECK(info->kl < kl_start, "t-SNE %s: final KL %.4f below the first check's %.4f", name, info->kl, kl_start);
        printf("t-SNE %-10s n=%d: 5-NN accuracy %.3f, KL %.4f (at iter 50: %.4f), %d iterations, %.2f s\n", name, N,
               acc, info->kl, kl_start, info->iters_run, secs);
        if (m) kl_bh_final = ds_tsne_kl_divergence(x, N, DIM, &o, y);
    }
    CHECK(fabs(info_bh.kl - info_exact.kl) < 0.2 * info_exact.kl, "KL Barnes-Hut %.4f vs exact %.4f",
          info_bh.kl, info_exact.kl);
    /* the KL of the final embedding (after the last update) is within a hair of the last check's */
    CHECK(fabs(kl_bh_final - info_bh.kl) < 0.01 * info_bh.kl, "KL of the returned embedding %.5f vs last check %.5f",
          kl_bh_final, info_bh.kl);

    /* another seed: a different embedding of the same quality (500 iterations are plenty here) */
    o.seed = 1, o.iters = 500;
    o.method = DS_TSNE_EXACT;
    ds_tsne(x, N, DIM, &o, y_other, &info_other);
    CHECK(memcmp(y_exact, y_other, N * 2 * sizeof(double)) && embedding_knn_accuracy(y_other, labels, N) > 0.95,
          "t-SNE seed 1: different embedding, same separation");
    /* cosine metric works on the same clusters */
    o.metric = DS_METRIC_COSINE;
    ds_tsne(x, N, DIM, &o, y_other, &info_other);
    CHECK(embedding_knn_accuracy(y_other, labels, N) > 0.95, "t-SNE cosine: 5-NN accuracy %g",
          embedding_knn_accuracy(y_other, labels, N));
    ds_free(y_exact), ds_free(y_bh), ds_free(y_other), ds_free(x);

    /* the same result with another thread count, bit for bit, for both methods: 1100 rows, so that
     * the iterations run in parallel; 100 iterations are enough to compare */
    enum { NT = 1100 };
    int lt[NT];
    float *xt = cluster_rows(5, NT / 5, 10, 3.0, 12, lt);
    double *ya = ds_alloc(NT * 2 * sizeof(double)), *yb = ds_alloc(NT * 2 * sizeof(double));
    ds_tsne_opts ot = ds_tsne_defaults();
    ot.iters = 100, ot.exaggeration_iters = 50;
    int threads = omp_get_max_threads();
    for (int m = 0; m < 2; m++) {
        ot.method = m ? DS_TSNE_BARNES_HUT : DS_TSNE_EXACT;
        omp_set_num_threads(threads == 1 ? 3 : 1);
        ds_tsne(xt, NT, 10, &ot, ya, NULL);
        omp_set_num_threads(threads == 1 ? 2 : threads);
        ds_tsne(xt, NT, 10, &ot, yb, NULL);
        omp_set_num_threads(threads);
        CHECK(!memcmp(ya, yb, NT * 2 * sizeof(double)), "t-SNE %s: independent of the thread count",
              m ? "Barnes-Hut" : "exact");
    }
    ds_free(ya), ds_free(yb), ds_free(xt);
}

/* ---------------------------------------------------------------- bad input */

/* Runs fn in a child; expects exit code 2 and one stderr line containing `fragment`. */
static void expect_bad_input(void (*fn)(void), const char *fragment) {
    int fds[2];
    if (pipe(fds)) { perror("pipe"); exit(1); }
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2), close(fds[0]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    char buf[1024] = {0};
    size_t len = 0;
    for (ssize_t r; (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0;) len += (size_t)r;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    int lines = 0;
    for (size_t t = 0; t < len; t++) lines += buf[t] == '\n';
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2 && lines == 1 && strstr(buf, fragment),
          "expected exit 2 with \"%s\", got status %d: %s", fragment, WIFEXITED(status) ? WEXITSTATUS(status) : -1, buf);
}

static const float tiny_x[] = {0, 1, 2, 3};
static const int tiny_same[] = {4, 4, 4, 4}, tiny_two[] = {0, 1, 0, 1}, tiny_neg[] = {0, -1, 0, 1};
static void bad_silhouette(void) { ds_silhouette_score(tiny_x, tiny_same, 4, 1, DS_METRIC_EUCLIDEAN); }
static void bad_knn_k(void) {
    int k = 4;
    double acc;
    ds_knn_accuracy(tiny_x, tiny_two, 4, NULL, NULL, 0, 1, DS_METRIC_EUCLIDEAN, &k, 1, &acc);
}
static void bad_label(void) {
    int k = 1;
    double acc;
    ds_knn_accuracy(tiny_x, tiny_neg, 4, tiny_x, tiny_two, 4, 1, DS_METRIC_EUCLIDEAN, &k, 1, &acc);
}
static void bad_probe(void) {
    ds_probe p;
    ds_probe_fit(&p, tiny_x, tiny_same, 4, 1, 1.0);
}
static void bad_perplexity(void) {
    ds_tsne_opts o = ds_tsne_defaults();
    double y[8];
    ds_tsne(tiny_x, 4, 1, &o, y, NULL);
}

static void test_bad_input(void) {
    expect_bad_input(bad_silhouette, "silhouette: needs 2 <= number of labels");
    expect_bad_input(bad_knn_k, "k = 4 needs 1 <= k <= 3");
    expect_bad_input(bad_label, "label -1 of row 1 is negative");
    expect_bad_input(bad_probe, "hold 1 label(s), need 2");
    expect_bad_input(bad_perplexity, "0 < perplexity < rows");
}

/* ---------------------------------------------------------------- driver modes */

static FILE *open_or_die(const char *path, const char *mode) {
    FILE *fp = fopen(path, mode);
    if (!fp) ds_die(DS_EXIT_BAD_INPUT, "cannot open %s", path);
    return fp;
}

static void read_or_die(FILE *fp, void *buf, size_t bytes, const char *path) {
    if (bytes && fread(buf, 1, bytes, fp) != bytes) ds_die(DS_EXIT_BAD_INPUT, "%s: truncated", path);
}

static ds_metric parse_metric(const char *s) {
    if (!strcmp(s, "euclidean")) return DS_METRIC_EUCLIDEAN;
    if (!strcmp(s, "cosine")) return DS_METRIC_COSINE;
    ds_die(DS_EXIT_BAD_INPUT, "unknown metric %s", s);
}

static ds_tsne_method parse_method(const char *s) {
    if (!strcmp(s, "exact")) return DS_TSNE_EXACT;
    if (!strcmp(s, "barnes_hut")) return DS_TSNE_BARNES_HUT;
    ds_die(DS_EXIT_BAD_INPUT, "unknown t-SNE method %s", s);
}

static void json_doubles(FILE *fp, const double *v, int64_t n) {
    fputc('[', fp);
    for (int64_t i = 0; i < n; i++) fprintf(fp, "%s%.17g", i ? "," : "", v[i]);
    fputc(']', fp);
}

static void json_ints(FILE *fp, const int *v, int64_t n, int stride) {
    fputc('[', fp);
    for (int64_t i = 0; i < n; i++) fprintf(fp, "%s%d", i ? "," : "", v[i * stride]);
    fputc(']', fp);
}

static void commit_or_die(ds_atomic_file *af) {
    if (ds_atomic_commit(af)) ds_die(DS_EXIT_FAIL, "cannot write %s", af->path);
}

/* IN: int64 n, int64 d, float32 rows. */
static int mode_pca_mpi(int argc, char **argv) {
    if (argc != 7) ds_die(DS_EXIT_BAD_INPUT, "usage: --pca-mpi IN OUT K ROUTE(auto|covariance|gram) SPLIT(uneven|gap)");
    MPI_Init(&argc, &argv);
    ds_blas_init(1);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank), MPI_Comm_size(MPI_COMM_WORLD, &P);
    const char *in = argv[2], *out = argv[3], *route_s = argv[5];
    int k = atoi(argv[4]);
    ds_pca_route route = !strcmp(route_s, "gram") ? DS_PCA_GRAM : !strcmp(route_s, "covariance") ? DS_PCA_COVARIANCE : DS_PCA_AUTO;
    FILE *fp = open_or_die(in, "rb");
    int64_t hdr[2];
    read_or_die(fp, hdr, sizeof hdr, in);
    int64_t n = hdr[0];
    int d = (int)hdr[1];
    /* rank r's share ~ r + 1 (rank 1 gets nothing with "gap"): rows [n W_r / W, n W_{r+1} / W) */
    double *cum = ds_alloc((size_t)(P + 1) * sizeof(double));
    for (int r = 0; r < P; r++) cum[r + 1] = cum[r] + (!strcmp(argv[6], "gap") && r == 1 ? 0 : r + 1);
    int64_t lo = (int64_t)(n * cum[rank] / cum[P]), hi = (int64_t)(n * cum[rank + 1] / cum[P]);
    float *rows = ds_alloc((size_t)(hi - lo > 0 ? hi - lo : 1) * d * sizeof(float));
    fseek(fp, (long)(sizeof hdr + (size_t)lo * d * sizeof(float)), SEEK_SET);
    read_or_die(fp, rows, (size_t)(hi - lo) * d * sizeof(float), in);
    fclose(fp);

    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    ds_pca pca;
    ds_pca_fit(&pca, MPI_COMM_WORLD, hi - lo, d, rows, k, route);
    double t1 = MPI_Wtime();
    float *coords = ds_alloc((size_t)(hi - lo > 0 ? hi - lo : 1) * k * sizeof(float));
    ds_pca_transform(&pca, hi - lo, rows, coords);
    MPI_Barrier(MPI_COMM_WORLD);
    double t2 = MPI_Wtime();
    /* a second fit in the same process (the CLI fits once per layer) must give the same result */
    ds_pca again;
    ds_pca_fit(&again, MPI_COMM_WORLD, hi - lo, d, rows, k, route);
    int same = !memcmp(again.eigenvalues, pca.eigenvalues, (size_t)k * sizeof(double)) &&
               !memcmp(again.components, pca.components, (size_t)k * d * sizeof(float));
    ds_pca_free(&again);

    int *counts = ds_alloc((size_t)P * sizeof(int)), *displs = ds_alloc((size_t)P * sizeof(int));
    int mine = (int)((hi - lo) * k);
    MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    for (int r = 1; r < P; r++) displs[r] = displs[r - 1] + counts[r - 1];
    float *all = rank == 0 ? ds_alloc((size_t)n * k * sizeof(float)) : NULL;
    MPI_Gatherv(coords, mine, MPI_FLOAT, all, counts, displs, MPI_FLOAT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("PCA %lld x %d -> %d on %d ranks (%s route): fit %.3f s (redistribute %.2f, product %.2f, eigen %.2f, "
               "components %.2f), transform %.3f s; rows per rank:", (long long)n, d, k, P,
               pca.route == DS_PCA_GRAM ? "Gram" : "covariance", t1 - t0, pca.seconds[0], pca.seconds[1], pca.seconds[2],
               pca.seconds[3], t2 - t1);
        for (int r = 0; r < P; r++) printf(" %d", counts[r] / k);
        printf("\n");
        if (!same) ds_die(DS_EXIT_FAIL, "PCA: a second fit of the same rows gave a different result");
        if (strcmp(out, "-")) {
            ds_atomic_file af;
            if (ds_atomic_open(&af, out)) ds_die(DS_EXIT_FAIL, "cannot write %s", out);
            int32_t h32[2] = {pca.route, k};
            int64_t h64[2] = {n, d};
            double times[3] = {pca.total_variance, t1 - t0, t2 - t1};
            fwrite(h32, sizeof h32, 1, af.fp), fwrite(h64, sizeof h64, 1, af.fp), fwrite(times, sizeof times, 1, af.fp);
            fwrite(pca.eigenvalues, sizeof(double), (size_t)k, af.fp);
            fwrite(pca.mean, sizeof(double), (size_t)d, af.fp);
            fwrite(pca.components, sizeof(float), (size_t)k * d, af.fp);
            fwrite(all, sizeof(float), (size_t)n * k, af.fp);
            commit_or_die(&af);
        }
    }
    ds_pca_free(&pca);
    ds_free(all), ds_free(counts), ds_free(displs), ds_free(coords), ds_free(rows), ds_free(cum);
    MPI_Finalize();
    return 0;
}

/* IN: int64 n_train, n_test, dim; float32 train rows; int32 train labels; float32 test rows; int32 test labels. */
static int mode_metrics(int argc, char **argv) {
    if (argc != 7) ds_die(DS_EXIT_BAD_INPUT, "usage: --metrics IN OUT METRIC L2 K1,K2,...");
    const char *in = argv[2];
    ds_metric metric = parse_metric(argv[4]);
    double l2 = atof(argv[5]);
    int ks[DS_MAX_KNN_K], n_ks = 0;
    for (char *s = argv[6]; *s && n_ks < DS_MAX_KNN_K; s += *s == ',') ks[n_ks++] = (int)strtol(s, &s, 10);
    FILE *fp = open_or_die(in, "rb");
    int64_t h[3];
    read_or_die(fp, h, sizeof h, in);
    int64_t ntr = h[0], nte = h[1];
    int dim = (int)h[2];
    float *xtr = ds_alloc((size_t)ntr * dim * 4), *xte = ds_alloc((size_t)nte * dim * 4);
    int *ytr = ds_alloc((size_t)ntr * 4), *yte = ds_alloc((size_t)nte * 4);
    read_or_die(fp, xtr, (size_t)ntr * dim * 4, in), read_or_die(fp, ytr, (size_t)ntr * 4, in);
    read_or_die(fp, xte, (size_t)nte * dim * 4, in), read_or_die(fp, yte, (size_t)nte * 4, in);
    fclose(fp);

    int *pred = ds_alloc((size_t)nte * n_ks * sizeof(int)), *pred_loo = ds_alloc((size_t)ntr * n_ks * sizeof(int));
    double acc[DS_MAX_KNN_K], acc_loo[DS_MAX_KNN_K];
    ds_knn_predict(xtr, ytr, ntr, xte, nte, dim, metric, ks, n_ks, pred);
    ds_knn_accuracy(xtr, ytr, ntr, xte, yte, nte, dim, metric, ks, n_ks, acc);
    ds_knn_predict(xtr, ytr, ntr, NULL, 0, dim, metric, ks, n_ks, pred_loo);
    ds_knn_accuracy(xtr, ytr, ntr, NULL, NULL, 0, dim, metric, ks, n_ks, acc_loo);
    double sil_train = ds_silhouette_score(xtr, ytr, ntr, dim, metric);
    double sil_test = ds_silhouette_score(xte, yte, nte, dim, metric);
    ds_probe p;
    ds_probe_fit(&p, xtr, ytr, ntr, dim, l2);
    int *probe_pred = ds_alloc((size_t)nte * sizeof(int));
    double probe_acc = ds_probe_predict(&p, xte, nte, yte, probe_pred);
    double *proba = ds_alloc((size_t)nte * p.n_classes * sizeof(double));
    ds_probe_predict_proba(&p, xte, nte, proba);
    ds_label_metrics real, control;
    ds_label_metrics_compute(xtr, ytr, ntr, xte, yte, nte, dim, metric, ks, n_ks, l2, 0, 1, &real);
    ds_label_metrics_compute(xtr, ytr, ntr, xte, yte, nte, dim, metric, ks, n_ks, l2, 1, 1, &control);

    ds_atomic_file af;
    if (ds_atomic_open(&af, argv[3])) ds_die(DS_EXIT_FAIL, "cannot write %s", argv[3]);
    FILE *o = af.fp;
    fprintf(o, "{\"k\":"), json_ints(o, ks, n_ks, 1);
    fprintf(o, ",\n\"knn_accuracy\":"), json_doubles(o, acc, n_ks);
    fprintf(o, ",\n\"knn_loo_accuracy\":"), json_doubles(o, acc_loo, n_ks);
    fprintf(o, ",\n\"knn_pred\":[");
    for (int s = 0; s < n_ks; s++) fprintf(o, "%s", s ? "," : ""), json_ints(o, pred + s, nte, n_ks);
    fprintf(o, "],\n\"knn_loo_pred\":[");
    for (int s = 0; s < n_ks; s++) fprintf(o, "%s", s ? "," : ""), json_ints(o, pred_loo + s, ntr, n_ks);
    fprintf(o, "],\n\"silhouette_train\":%.17g,\"silhouette_test\":%.17g", sil_train, sil_test);
    fprintf(o, ",\n\"probe_accuracy\":%.17g,\"probe_objective\":%.17g,\"probe_iterations\":%d,\"probe_classes\":",
            probe_acc, p.objective, p.iterations);
    json_ints(o, p.classes, p.n_classes, 1);
    fprintf(o, ",\n\"probe_pred\":"), json_ints(o, probe_pred, nte, 1);
    fprintf(o, ",\n\"probe_proba\":"), json_doubles(o, proba, nte * p.n_classes);
    fprintf(o, ",\n\"bundle\":{\"knn_accuracy\":"), json_doubles(o, real.knn_accuracy, n_ks);
    fprintf(o, ",\"silhouette\":%.17g,\"probe_accuracy\":%.17g}", real.silhouette, real.probe_accuracy);
    fprintf(o, ",\n\"control\":{\"knn_accuracy\":"), json_doubles(o, control.knn_accuracy, n_ks);
    fprintf(o, ",\"silhouette\":%.17g,\"probe_accuracy\":%.17g}}\n", control.silhouette, control.probe_accuracy);
    commit_or_die(&af);
    ds_probe_free(&p);
    ds_free(xtr), ds_free(xte), ds_free(ytr), ds_free(yte), ds_free(pred), ds_free(pred_loo), ds_free(probe_pred), ds_free(proba);
    return 0;
}

/* IN: int64 n, int64 dim, float32 rows, int32 labels. */
static float *read_labelled(const char *in, int64_t *n, int *dim, int **labels) {
    FILE *fp = open_or_die(in, "rb");
    int64_t h[2];
    read_or_die(fp, h, sizeof h, in);
    *n = h[0], *dim = (int)h[1];
    float *x = ds_alloc((size_t)*n * *dim * 4);
    *labels = ds_alloc((size_t)*n * 4);
    read_or_die(fp, x, (size_t)*n * *dim * 4, in), read_or_die(fp, *labels, (size_t)*n * 4, in);
    fclose(fp);
    return x;
}

static int mode_tsne(int argc, char **argv) {
    if (argc < 5 || argc > 7) ds_die(DS_EXIT_BAD_INPUT, "usage: --tsne IN OUT METHOD(exact|barnes_hut) [METRIC [SEED]]");
    int64_t n;
    int dim, *labels;
    float *x = read_labelled(argv[2], &n, &dim, &labels);
    ds_tsne_opts o = ds_tsne_defaults();
    o.method = parse_method(argv[4]);
    if (argc > 5) o.metric = parse_metric(argv[5]);
    if (argc > 6) o.seed = strtoull(argv[6], NULL, 10);
    double *y = ds_alloc((size_t)n * 2 * sizeof(double)), *col = ds_alloc((size_t)n * sizeof(double));
    ds_tsne_info info;
    ds_tsne(x, n, dim, &o, y, &info);
    double acc = embedding_knn_accuracy(y, labels, (int)n);
    ds_atomic_file af;
    if (ds_atomic_open(&af, argv[3])) ds_die(DS_EXIT_FAIL, "cannot write %s", argv[3]);
    FILE *f = af.fp;
    fprintf(f, "{\"label_names\":[\"alpha\",\"beta\",\"gamma\",\"delta\",\"epsilon\"],\n\"panels\":[{\"title\":\"t-SNE %s\",\"x\":",
            argv[4]);
    for (int64_t i = 0; i < n; i++) col[i] = y[2 * i];
    json_doubles(f, col, n);
    fprintf(f, ",\"y\":");
    for (int64_t i = 0; i < n; i++) col[i] = y[2 * i + 1];
    json_doubles(f, col, n);
    fprintf(f, ",\"label\":"), json_ints(f, labels, n, 1);
    fprintf(f, ",\"metrics\":{\"KL\":%.6g,\"5-NN accuracy\":%.4g}}],\n\"kl\":%.17g,\"iters\":%d,\"trustworthiness\":%.17g}\n",
            info.kl, acc, info.kl, info.iters_run, ds_trustworthiness(x, n, dim, o.metric, y, 5));
    commit_or_die(&af);
    ds_free(x), ds_free(labels), ds_free(y), ds_free(col);
    return 0;
}

static int mode_tsne_kl(int argc, char **argv) {
    if (argc != 6 && argc != 7) ds_die(DS_EXIT_BAD_INPUT, "usage: --tsne-kl IN Y OUT METHOD(exact|barnes_hut) [METRIC]");
    int64_t n;
    int dim, *labels;
    float *x = read_labelled(argv[2], &n, &dim, &labels);
    double *y = ds_alloc((size_t)n * 2 * sizeof(double));
    FILE *fp = open_or_die(argv[3], "rb");
    read_or_die(fp, y, (size_t)n * 2 * sizeof(double), argv[3]);
    fclose(fp);
    ds_tsne_opts o = ds_tsne_defaults();
    o.method = parse_method(argv[5]);
    if (argc > 6) o.metric = parse_metric(argv[6]);
    double kl = ds_tsne_kl_divergence(x, n, dim, &o, y);
    ds_atomic_file af;
    if (ds_atomic_open(&af, argv[4])) ds_die(DS_EXIT_FAIL, "cannot write %s", argv[4]);
    fprintf(af.fp, "{\"kl\":%.17g}\n", kl);
    commit_or_die(&af);
    ds_free(x), ds_free(labels), ds_free(y);
    return 0;
}

static int mode_trust(int argc, char **argv) {
    if (argc != 7) ds_die(DS_EXIT_BAD_INPUT, "usage: --trust IN Y OUT METRIC K");
    int64_t n;
    int dim, *labels;
    float *x = read_labelled(argv[2], &n, &dim, &labels);
    double *y = ds_alloc((size_t)n * 2 * sizeof(double));
    FILE *fp = open_or_die(argv[3], "rb");
    read_or_die(fp, y, (size_t)n * 2 * sizeof(double), argv[3]);
    fclose(fp);
    double t = ds_trustworthiness(x, n, dim, parse_metric(argv[5]), y, atoi(argv[6]));
    ds_atomic_file af;
    if (ds_atomic_open(&af, argv[4])) ds_die(DS_EXIT_FAIL, "cannot write %s", argv[4]);
    fprintf(af.fp, "{\"trustworthiness\":%.17g}\n", t);
    commit_or_die(&af);
    ds_free(x), ds_free(labels), ds_free(y);
    return 0;
}

static int mode_frechet(int argc, char **argv) {
    if (argc != 4) ds_die(DS_EXIT_BAD_INPUT, "usage: --frechet IN OUT");
    FILE *fp = open_or_die(argv[2], "rb");
    int64_t h[3];
    read_or_die(fp, h, sizeof h, argv[2]);
    int dim = (int)h[2];
    float *a = ds_alloc((size_t)h[0] * dim * 4), *b = ds_alloc((size_t)h[1] * dim * 4);
    read_or_die(fp, a, (size_t)h[0] * dim * 4, argv[2]), read_or_die(fp, b, (size_t)h[1] * dim * 4, argv[2]);
    fclose(fp);
    double *mean = ds_alloc((size_t)dim * sizeof(double)), *cov = ds_alloc((size_t)dim * dim * sizeof(double));
    ds_atomic_file af;
    if (ds_atomic_open(&af, argv[3])) ds_die(DS_EXIT_FAIL, "cannot write %s", argv[3]);
    fprintf(af.fp, "{\"frechet\":%.17g", ds_frechet_rows(a, h[0], b, h[1], dim));
    for (int set = 0; set < 2; set++) {
        ds_mean_covariance(set ? b : a, h[set], dim, mean, cov);
        fprintf(af.fp, ",\n\"mean%d\":", set + 1), json_doubles(af.fp, mean, dim);
        fprintf(af.fp, ",\n\"cov%d\":", set + 1), json_doubles(af.fp, cov, (int64_t)dim * dim);
    }
    fprintf(af.fp, "}\n");
    commit_or_die(&af);
    ds_free(a), ds_free(b), ds_free(mean), ds_free(cov);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--pca-mpi")) return mode_pca_mpi(argc, argv);
    ds_blas_init(0);
    if (argc > 1 && !strcmp(argv[1], "--metrics")) return mode_metrics(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--tsne")) return mode_tsne(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--tsne-kl")) return mode_tsne_kl(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--trust")) return mode_trust(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--frechet")) return mode_frechet(argc, argv);
    if (argc > 1) ds_die(DS_EXIT_BAD_INPUT, "unknown mode %s", argv[1]);

    test_bad_input();   /* forks: before MPI starts */
    MPI_Init(&argc, &argv);
    test_pca();
    test_distances_and_neighbours();
    test_knn();
    test_silhouette();
    test_probe();
    test_shuffle_and_bundle();
    test_tsne();
    MPI_Finalize();
    return test_summary("test_analysis");
}
