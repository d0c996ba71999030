/* t-SNE to two dimensions, exact and Barnes-Hut (definitions in analysis.h).
 *
 * Both methods share everything but the repulsion: P is a sparse symmetric matrix (CSR; for the exact
 * method every row holds all other points), the attraction is sum_j p_ij q_ij (y_i - y_j), and the
 * repulsion sum_j q_ij^2 (y_i - y_j) with Z = sum_ij q_ij comes from all pairs (exact) or from a
 * quadtree whose far cells stand in for their points (Barnes-Hut). Here q_ij = 1 / (1 + |y_i - y_j|^2)
 * is unnormalised, and the gradient of KL(P || Q) is 4 (attraction - repulsion / Z).
 * Every per-point sum runs in a fixed order and Z is summed over points serially, so the embedding
 * does not depend on the thread count. */
#include "dreamstate/analysis.h"

#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <math.h>
#include <string.h>

/* Below PARALLEL_MIN_ROWS an iteration is too short to share: threads would only add barrier waits. */
enum { EXACT_MAX_ROWS = 1000, PARALLEL_MIN_ROWS = 1000, CHECK_EVERY = 50, TSNE_INIT_STREAM = 0x7453 };

ds_tsne_opts ds_tsne_defaults(void) {
    return (ds_tsne_opts){.perplexity = 30, .early_exaggeration = 12, .exaggeration_iters = 250, .iters = 1000,
                          .learning_rate = 0, .theta = 0.5, .metric = DS_METRIC_EUCLIDEAN,
                          .method = DS_TSNE_AUTO, .seed = 0};
}

typedef struct csr {
    int64_t n, *ptr;   /* ptr[n + 1] */
    int64_t *col;      /* ascending within a row */
    double *val;
} csr;

static void csr_free(csr *a) { ds_free(a->ptr), ds_free(a->col), ds_free(a->val); }

/* Conditional p_{j|i} over one row's candidate neighbours (distances dist[m]): the precision beta
 * of exp(-beta d) is bisected until the entropy is log(perplexity) within 1e-5 nats (100 steps at
 * most, as sklearn). Distances are shifted by their minimum first, which leaves p and the entropy
 * unchanged but keeps exp() from underflowing for far-away rows. */
static void conditional_row(const double *dist, int64_t m, double perplexity, double *p) {
    double dmin = INFINITY, beta = 1, lo = -INFINITY, hi = INFINITY, target = log(perplexity);
    for (int64_t j = 0; j < m; j++) dmin = dist[j] < dmin ? dist[j] : dmin;
    for (int step = 0; step < 100; step++) {
        double sum = 0, mean_d = 0;
        for (int64_t j = 0; j < m; j++) sum += (p[j] = exp(-(dist[j] - dmin) * beta));
        for (int64_t j = 0; j < m; j++) p[j] /= sum, mean_d += (dist[j] - dmin) * p[j];
        double diff = log(sum) + beta * mean_d - target;
        if (fabs(diff) <= 1e-5) break;
        if (diff > 0) lo = beta, beta = isinf(hi) ? 2 * beta : 0.5 * (beta + hi);   /* too flat: sharpen */
        else hi = beta, beta = isinf(lo) ? 0.5 * beta : 0.5 * (beta + lo);
    }
}

/* Conditional P as CSR: row i over its candidates (all other rows for the exact method, the k nearest
 * for Barnes-Hut), columns ascending, from squared distances (Euclidean or cosine, as sklearn 1.2). */
static csr conditional_p(const float *x, int64_t n, int dim, const ds_tsne_opts *o, int exact) {
    int64_t m = exact ? n - 1 : (int64_t)(3 * o->perplexity + 1);
    if (m > n - 1) m = n - 1;
    csr c = {.n = n, .ptr = ds_alloc((size_t)(n + 1) * sizeof(int64_t)),
             .col = ds_alloc((size_t)(n * m) * sizeof(int64_t)), .val = ds_alloc((size_t)(n * m) * sizeof(double))};
    for (int64_t i = 0; i <= n; i++) c.ptr[i] = i * m;
    double *dist = ds_alloc((size_t)(n * m) * sizeof(double));
    if (exact) {
        enum { BLOCK = 64 };
        double *full = ds_alloc((size_t)BLOCK * n * sizeof(double));
        for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
            int nb = (int)(n - i0 < BLOCK ? n - i0 : BLOCK);
            ds_pairwise_distances(x + (size_t)i0 * dim, nb, x, n, dim, o->metric, full);
            for (int r = 0; r < nb; r++)
                for (int64_t j = 0, t = (i0 + r) * m; j < n; j++)
                    if (j != i0 + r) c.col[t] = j, dist[t++] = full[(size_t)r * n + j];
        }
        ds_free(full);
    } else {
        ds_nearest_neighbours(x, n, x, n, dim, o->metric, (int)m, 1, c.col, dist);
    }
    for (int64_t t = 0; t < n * m; t++) dist[t] *= dist[t];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        int64_t *col = c.col + i * m;
        double *d = dist + i * m, *p = c.val + i * m;
        conditional_row(d, m, o->perplexity, p);
        for (int64_t a = 1; a < m; a++)   /* neighbour lists come by distance: sort by column */
            for (int64_t b = a; b > 0 && col[b - 1] > col[b]; b--) {
                int64_t tc = col[b]; col[b] = col[b - 1], col[b - 1] = tc;
                double tp = p[b]; p[b] = p[b - 1], p[b - 1] = tp;
            }
    }
    ds_free(dist);
    return c;
}

/* P = (C + C^T) / sum(C + C^T), merging each row of C with the same row of C^T. */
static csr symmetrise(const csr *c) {
    int64_t n = c->n, nnz = c->ptr[n];
    csr t = {.n = n, .ptr = ds_alloc((size_t)(n + 1) * sizeof(int64_t)), .col = ds_alloc((size_t)nnz * sizeof(int64_t)),
             .val = ds_alloc((size_t)nnz * sizeof(double))};
    for (int64_t e = 0; e < nnz; e++) t.ptr[c->col[e] + 1]++;
    for (int64_t i = 0; i < n; i++) t.ptr[i + 1] += t.ptr[i];
    int64_t *fill = ds_alloc((size_t)n * sizeof(int64_t));
    memcpy(fill, t.ptr, (size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++)   /* rows in order: each transposed row comes out sorted */
        for (int64_t e = c->ptr[i]; e < c->ptr[i + 1]; e++) {
            int64_t s = fill[c->col[e]]++;
            t.col[s] = i, t.val[s] = c->val[e];
        }
    csr p = {.n = n, .ptr = ds_alloc((size_t)(n + 1) * sizeof(int64_t)), .col = ds_alloc((size_t)2 * nnz * sizeof(int64_t)),
             .val = ds_alloc((size_t)2 * nnz * sizeof(double))};
    int64_t out = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = c->ptr[i], ae = c->ptr[i + 1], b = t.ptr[i], be = t.ptr[i + 1];
        while (a < ae || b < be) {
            int64_t ca = a < ae ? c->col[a] : INT64_MAX, cb = b < be ? t.col[b] : INT64_MAX;
            int64_t j = ca < cb ? ca : cb;
            double v = 0;
            if (ca == j) v += c->val[a++];
            if (cb == j) v += t.val[b++];
            p.col[out] = j, p.val[out++] = v;
        }
        p.ptr[i + 1] = out;
    }
    double sum = 0;
    for (int64_t e = 0; e < out; e++) sum += p.val[e];
    for (int64_t e = 0; e < out; e++) p.val[e] /= sum;
    ds_free(fill), csr_free(&t);
    return p;
}

/* ---- quadtree over the embedding (Barnes-Hut) ---- */

typedef struct qnode {
    double cx, cy, half;   /* the cell: a square of side 2 half */
    double mx, my;         /* centre of mass of its points */
    int64_t count, lo;     /* its points: order[lo, lo + count) */
    int child[4];          /* -1: none (leaf when all four are -1) */
} qnode;

typedef struct quadtree {
    qnode *node;
    int n_nodes, cap;
    int64_t *order, *scratch;
} quadtree;

static int quad_add(quadtree *t, double cx, double cy, double half, int64_t lo, int64_t count) {
    if (t->n_nodes == t->cap) {
        int cap = t->cap ? 2 * t->cap : 1024;
        qnode *grown = ds_alloc((size_t)cap * sizeof(qnode));
        if (t->n_nodes) memcpy(grown, t->node, (size_t)t->n_nodes * sizeof(qnode));
        ds_free(t->node);
        t->node = grown, t->cap = cap;
    }
    qnode *q = &t->node[t->n_nodes];
    *q = (qnode){.cx = cx, .cy = cy, .half = half, .lo = lo, .count = count, .child = {-1, -1, -1, -1}};
    return t->n_nodes++;
}

/* Builds the subtree of node `id`: centre of mass, then (unless it holds one point, or only
 * coincident points, or is 40 levels deep) a stable split of its points into the four quadrants. */
static void quad_build(quadtree *t, int id, const double *y, int depth) {
    qnode q = t->node[id];
    double sx = 0, sy = 0, x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int64_t s = q.lo; s < q.lo + q.count; s++) {
        const double *p = y + 2 * t->order[s];
        sx += p[0], sy += p[1];
        x0 = fmin(x0, p[0]), x1 = fmax(x1, p[0]), y0 = fmin(y0, p[1]), y1 = fmax(y1, p[1]);
    }
    t->node[id].mx = sx / (double)q.count, t->node[id].my = sy / (double)q.count;
    if (q.count <= 1 || (x0 == x1 && y0 == y1) || depth >= 40) return;
    int64_t cnt[4] = {0}, start[4];
    for (int64_t s = q.lo; s < q.lo + q.count; s++) {
        const double *p = y + 2 * t->order[s];
        cnt[(p[0] >= q.cx) + 2 * (p[1] >= q.cy)]++;
    }
    start[0] = q.lo;
    for (int c = 1; c < 4; c++) start[c] = start[c - 1] + cnt[c - 1];
    int64_t fill[4] = {start[0], start[1], start[2], start[3]};
    for (int64_t s = q.lo; s < q.lo + q.count; s++) {
        const double *p = y + 2 * t->order[s];
        t->scratch[fill[(p[0] >= q.cx) + 2 * (p[1] >= q.cy)]++] = t->order[s];
    }
    memcpy(t->order + q.lo, t->scratch + q.lo, (size_t)q.count * sizeof(int64_t));
    for (int c = 0; c < 4; c++) {
        if (!cnt[c]) continue;
        double h = 0.5 * q.half;
        int kid = quad_add(t, q.cx + (c & 1 ? h : -h), q.cy + (c & 2 ? h : -h), h, start[c], cnt[c]);
        t->node[id].child[c] = kid;   /* quad_add may move t->node: index, never hold a pointer */
        quad_build(t, kid, y, depth + 1);
    }
}

static void quad_rebuild(quadtree *t, const double *y, int64_t n) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        t->order[i] = i;
        x0 = fmin(x0, y[2 * i]), x1 = fmax(x1, y[2 * i]), y0 = fmin(y0, y[2 * i + 1]), y1 = fmax(y1, y[2 * i + 1]);
    }
    double half = 0.5 * fmax(x1 - x0, y1 - y0);
    half = half * (1 + 1e-9) + 1e-12;   /* the largest point must fall strictly inside */
    t->n_nodes = 0;
    quad_add(t, 0.5 * (x0 + x1), 0.5 * (y0 + y1), half, 0, n);
    quad_build(t, 0, y, 0);
}

/* Repulsion on point i from the tree: a cell whose side is below theta times its distance counts
 * as all its points at its centre of mass; leaves count point by point, skipping i itself. */
static void quad_repulsion(const quadtree *t, const double *y, int64_t i, double theta2, double *z, double *rx,
                           double *ry) {
    int stack[4 * 64], top = 0;
    double yi0 = y[2 * i], yi1 = y[2 * i + 1], zs = 0, fx = 0, fy = 0;
    stack[top++] = 0;
    while (top) {
        const qnode *q = &t->node[stack[--top]];
        int leaf = q->child[0] < 0 && q->child[1] < 0 && q->child[2] < 0 && q->child[3] < 0;
        if (leaf) {
            for (int64_t s = q->lo; s < q->lo + q->count; s++) {
                int64_t j = t->order[s];
                if (j == i) continue;
                double dx = yi0 - y[2 * j], dy = yi1 - y[2 * j + 1], qij = 1 / (1 + dx * dx + dy * dy);
                zs += qij, fx += qij * qij * dx, fy += qij * qij * dy;
            }
            continue;
        }
        double dx = yi0 - q->mx, dy = yi1 - q->my, d2 = dx * dx + dy * dy, side = 2 * q->half;
        if (d2 > 0 && side * side < theta2 * d2) {
            double qij = 1 / (1 + d2), w = (double)q->count;
            zs += w * qij, fx += w * qij * qij * dx, fy += w * qij * qij * dy;
        } else {
            for (int c = 3; c >= 0; c--)   /* pushed in reverse: children visited 0, 1, 2, 3 */
                if (q->child[c] >= 0) stack[top++] = q->child[c];
        }
    }
    *z = zs, *rx = fx, *ry = fy;
}

/* ---- objective ---- */

typedef struct tsne_state {
    const csr *P;
    int64_t n;
    int exact;
    double theta2;
    quadtree tree;
    /* per point: repulsion sum_j q^2 (y_i - y_j), attraction sum_j p q (y_i - y_j), sum_j q,
     * sum_j p log(p / q), sum_j p */
    double *rep, *att, *zrow, *plogq, *psum;
} tsne_state;

/* grad <- dKL/dy with P scaled by `exaggeration`; returns KL(P || Q) with the unscaled P when
 * want_kl, else 0. KL = sum p log(p Z / q) = sum p log(p / q) + (sum p) log Z, so one pass suffices. */
static double tsne_gradient(tsne_state *s, const double *y, double exaggeration, int want_kl, double *grad) {
    const csr *P = s->P;
    int64_t n = s->n;
    if (!s->exact) quad_rebuild(&s->tree, y, n);
#pragma omp parallel for schedule(dynamic, 16) if (n >= PARALLEL_MIN_ROWS)
    for (int64_t i = 0; i < n; i++) {
        double z = 0, rx = 0, ry = 0, ax = 0, ay = 0, plq = 0, ps = 0, yi0 = y[2 * i], yi1 = y[2 * i + 1];
        int64_t e = P->ptr[i], e_end = P->ptr[i + 1];
        if (s->exact) {   /* row i of P holds every j != i in order: one pass over all pairs */
            for (int64_t j = 0; j < n; j++) {
                if (j == i) continue;
                double dx = yi0 - y[2 * j], dy = yi1 - y[2 * j + 1], q = 1 / (1 + dx * dx + dy * dy), p = P->val[e++];
                z += q, rx += q * q * dx, ry += q * q * dy, ax += p * q * dx, ay += p * q * dy;
                if (want_kl && p > 0) plq += p * log(p / q), ps += p;
            }
        } else {
            quad_repulsion(&s->tree, y, i, s->theta2, &z, &rx, &ry);
            for (; e < e_end; e++) {
                int64_t j = P->col[e];
                double dx = yi0 - y[2 * j], dy = yi1 - y[2 * j + 1], q = 1 / (1 + dx * dx + dy * dy), p = P->val[e];
                ax += p * q * dx, ay += p * q * dy;
                if (want_kl && p > 0) plq += p * log(p / q), ps += p;
            }
        }
        s->zrow[i] = z, s->plogq[i] = plq, s->psum[i] = ps;
        s->rep[2 * i] = rx, s->rep[2 * i + 1] = ry, s->att[2 * i] = ax, s->att[2 * i + 1] = ay;
    }
    double Z = 0, plq = 0, ps = 0;
    for (int64_t i = 0; i < n; i++) Z += s->zrow[i], plq += s->plogq[i], ps += s->psum[i];
    for (int64_t t = 0; t < 2 * n; t++) grad[t] = 4 * (exaggeration * s->att[t] - s->rep[t] / Z);
    return want_kl ? plq + ps * log(Z) : 0;
}

/* Checks the options, builds P and the scratch state of the chosen method. */
static tsne_state tsne_setup(const float *x, int64_t n, int dim, const ds_tsne_opts *o, csr *P) {
    if (n < 2 || !(o->perplexity > 0) || !(o->perplexity < (double)n))
        ds_die(DS_EXIT_BAD_INPUT, "t-SNE: needs at least 2 rows and 0 < perplexity < rows (%lld rows, perplexity %g)",
               (long long)n, o->perplexity);
    if (o->iters < 1 || o->exaggeration_iters < 0 || !(o->early_exaggeration > 0) || !(o->theta >= 0))
        ds_die(DS_EXIT_BAD_INPUT, "t-SNE: bad options (iters %d, exaggeration iters %d, exaggeration %g, theta %g)",
               o->iters, o->exaggeration_iters, o->early_exaggeration, o->theta);
    int exact = o->method == DS_TSNE_EXACT || (o->method == DS_TSNE_AUTO && n <= EXACT_MAX_ROWS);
    csr c = conditional_p(x, n, dim, o, exact);
    *P = symmetrise(&c);
    csr_free(&c);
    tsne_state s = {.P = P, .n = n, .exact = exact, .theta2 = o->theta * o->theta,
                    .rep = ds_alloc((size_t)2 * n * sizeof(double)), .att = ds_alloc((size_t)2 * n * sizeof(double)),
                    .zrow = ds_alloc((size_t)n * sizeof(double)), .plogq = ds_alloc((size_t)n * sizeof(double)),
                    .psum = ds_alloc((size_t)n * sizeof(double))};
    if (!exact) {
        s.tree.order = ds_alloc((size_t)n * sizeof(int64_t));
        s.tree.scratch = ds_alloc((size_t)n * sizeof(int64_t));
    }
    return s;
}

static void tsne_teardown(tsne_state *s, csr *P) {
    ds_free(s->rep), ds_free(s->att), ds_free(s->zrow), ds_free(s->plogq), ds_free(s->psum);
    ds_free(s->tree.node), ds_free(s->tree.order), ds_free(s->tree.scratch);
    csr_free(P);
}

void ds_tsne(const float *x, int64_t n, int dim, const ds_tsne_opts *o, double *y, ds_tsne_info *info) {
    csr P;
    tsne_state s = tsne_setup(x, n, dim, o, &P);
    double lr = o->learning_rate > 0 ? o->learning_rate : fmax((double)n / o->early_exaggeration / 4, 50);
    double *grad = ds_alloc((size_t)2 * n * sizeof(double)), *update = ds_alloc((size_t)2 * n * sizeof(double));
    double *gains = ds_alloc((size_t)2 * n * sizeof(double));
    for (int64_t t = 0; t < 2 * n; t++) y[t] = 1e-4 * ds_rng_normal(o->seed, TSNE_INIT_STREAM, (uint64_t)t);

    ds_tsne_info local = {.method = s.exact ? DS_TSNE_EXACT : DS_TSNE_BARNES_HUT};
    int it = 0;
    for (; it < o->iters; it++) {
        int exploring = it < o->exaggeration_iters;
        if (it == 0 || it == o->exaggeration_iters)   /* each phase starts afresh, as sklearn's two calls */
            for (int64_t t = 0; t < 2 * n; t++) update[t] = 0, gains[t] = 1;
        double momentum = exploring ? 0.5 : 0.8;
        int check = (it + 1) % CHECK_EVERY == 0 || it == o->iters - 1;
        double kl = tsne_gradient(&s, y, exploring ? o->early_exaggeration : 1, check, grad);
        double gnorm = 0;
        for (int64_t t = 0; t < 2 * n; t++) {
            /* gains grow where the gradient's sign disagrees with the running update, shrink otherwise */
            gains[t] = update[t] * grad[t] < 0 ? gains[t] + 0.2 : fmax(gains[t] * 0.8, 0.01);
            double g = grad[t] * gains[t];
            gnorm += g * g;
            update[t] = momentum * update[t] - lr * g;
            y[t] += update[t];
        }
        if (check) {
            if (local.n_trace < DS_TSNE_MAX_TRACE)
                local.trace_iter[local.n_trace] = it + 1, local.trace_kl[local.n_trace++] = kl;
            local.kl = kl;
            if (sqrt(gnorm) <= 1e-7) { it++; break; }
        }
    }
    local.iters_run = it;
    if (info) *info = local;
    ds_free(grad), ds_free(update), ds_free(gains);
    tsne_teardown(&s, &P);
}

double ds_tsne_kl_divergence(const float *x, int64_t n, int dim, const ds_tsne_opts *o, const double *y) {
    csr P;
    tsne_state s = tsne_setup(x, n, dim, o, &P);
    double *grad = ds_alloc((size_t)2 * n * sizeof(double));
    double kl = tsne_gradient(&s, y, 1, 1, grad);
    ds_free(grad);
    tsne_teardown(&s, &P);
    return kl;
}
