/* Distributed PCA with ScaLAPACK (the route choice and conventions are in analysis.h).
 *
 * Layout: a row-major n x d block of rows is, read column-major, a d x n matrix X^T whose columns are
 * the samples. So each rank's centred rows, converted to float64, are already a valid one-block
 * column-major piece of X^T, living on a 1 x 1 BLACS grid of that rank alone. pdgemr2d copies that
 * piece into the shared block-cyclic X^T; this handles any row counts per rank (a single block-cyclic
 * descriptor cannot describe unequal contiguous blocks). Both symmetric problems are then rank-k
 * updates of that one matrix: C = X^T (X^T)^T (pdsyrk 'N') or G = (X^T)^T X^T (pdsyrk 'T'). */
#include "dreamstate/analysis.h"

#include "dreamstate/blas.h"
#include "dreamstate/common.h"

#include <math.h>
#include <string.h>

/* BLACS and ScaLAPACK have no C header in Debian: declare the Fortran-symbol entry points we use. */
void Cblacs_pinfo(int *mypnum, int *nprocs);
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);
void Cblacs_gridinit(int *context, const char *order, int nprow, int npcol);
void Cblacs_gridmap(int *context, int *usermap, int ldumap, int nprow, int npcol);
void Cblacs_gridinfo(int context, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int context);
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb, const int *irsrc,
               const int *icsrc, const int *ictxt, const int *lld, int *info);
void pdgemr2d_(const int *m, const int *n, const double *a, const int *ia, const int *ja, const int *desca,
               double *b, const int *ib, const int *jb, const int *descb, const int *ictxt);
void pdsyrk_(const char *uplo, const char *trans, const int *n, const int *k, const double *alpha,
             const double *a, const int *ia, const int *ja, const int *desca, const double *beta, double *c,
             const int *ic, const int *jc, const int *descc);
void pdgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
             const double *alpha, const double *a, const int *ia, const int *ja, const int *desca,
             const double *b, const int *ib, const int *jb, const int *descb, const double *beta, double *c,
             const int *ic, const int *jc, const int *descc);
void pdsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a, const int *ia,
              const int *ja, const int *desca, const double *vl, const double *vu, const int *il, const int *iu,
              int *m, int *nz, double *w, double *z, const int *iz, const int *jz, const int *descz,
              double *work, const int *lwork, int *iwork, const int *liwork, int *info);

static const int I0 = 0, I1 = 1;

typedef struct grid {
    int ctx, nprow, npcol, myrow, mycol;
} grid;

/* A block-cyclic m x n float64 matrix with square nb x nb blocks, column-major local storage. */
typedef struct bc_matrix {
    int desc[9];
    int m, n, nb, local_rows, local_cols;
    double *a;
} bc_matrix;

static void bc_alloc(bc_matrix *A, const grid *g, int m, int n, int nb) {
    A->m = m, A->n = n, A->nb = nb;
    A->local_rows = numroc_(&m, &nb, &g->myrow, &I0, &g->nprow);
    A->local_cols = numroc_(&n, &nb, &g->mycol, &I0, &g->npcol);
    int lld = A->local_rows > 1 ? A->local_rows : 1, info;
    descinit_(A->desc, &m, &n, &nb, &nb, &I0, &I0, &g->ctx, &lld, &info);
    if (info) ds_die(DS_EXIT_FAIL, "PCA: descinit failed (info %d) for a %d x %d matrix", info, m, n);
    A->a = ds_alloc(((size_t)lld * (A->local_cols > 1 ? A->local_cols : 1)) * sizeof(double));
}

/* Global index of local index l along a dimension cut into nb-blocks dealt cyclically over p processes. */
static int64_t local_to_global(int l, int nb, int me, int p) {
    return ((int64_t)(l / nb) * p + me) * nb + l % nb;
}

/* Columns [j0, j0 + ncols) of A onto every rank as a column-major m x ncols array: each rank writes
 * the entries it owns into zeros and a sum over ranks fills in the rest (each entry has one owner). */
static void bc_allgather_columns(const bc_matrix *A, const grid *g, int j0, int ncols, double *out, MPI_Comm comm) {
    memset(out, 0, (size_t)A->m * ncols * sizeof(double));
    int lld = A->desc[8];
    for (int lj = 0; lj < A->local_cols; lj++) {
        int64_t j = local_to_global(lj, A->nb, g->mycol, g->npcol) - j0;
        if (j < 0 || j >= ncols) continue;
        for (int li = 0; li < A->local_rows; li++)
            out[j * A->m + local_to_global(li, A->nb, g->myrow, g->nprow)] = A->a[(size_t)lj * lld + li];
    }
    size_t total = (size_t)A->m * ncols;
    for (size_t off = 0; off < total; off += 1 << 28) {  /* MPI counts are int */
        size_t cnt = total - off < (1u << 28) ? total - off : (1u << 28);
        MPI_Allreduce(MPI_IN_PLACE, out + off, (int)cnt, MPI_DOUBLE, MPI_SUM, comm);
    }
}


/* Top k eigenpairs of the symmetric A (lower triangle referenced; destroyed), in pdsyevr's ascending
 * order: values into w[k], eigenvectors into the first k columns of Z (same layout as A).
 * Callers ask for at least min(nb, n) pairs: pdsyevr sizes the back-transformation's workspace
 * from the number of pairs, and with fewer than one block of them PDORMTR rejects it ("parameter
 * 16", ScaLAPACK 2.2). With at least nb pairs its size NP*MQ + 2nb^2 covers PDORMTR's
 * (MP + NQ) nb + nb^2, since (NP - nb)(MQ - nb) >= 0. */
static void top_eigenpairs(bc_matrix *A, int k, bc_matrix *Z, double *w) {
    int n = A->m, il = n - k + 1, iu = n, m = 0, nz = 0, info = 0, lwork = -1, liwork = -1, iwork_query = 0;
    double vl = 0, vu = 0, work_query = 0;
    double *w_all = ds_alloc((size_t)n * sizeof(double));
    pdsyevr_("V", "I", "L", &n, A->a, &I1, &I1, A->desc, &vl, &vu, &il, &iu, &m, &nz, w_all, Z->a, &I1, &I1,
             Z->desc, &work_query, &lwork, &iwork_query, &liwork, &info);
    lwork = (int)work_query + 1024, liwork = iwork_query + 1024;   /* slack: the query is tight */
    double *work = ds_alloc((size_t)lwork * sizeof(double));
    int *iwork = ds_alloc((size_t)liwork * sizeof(int));
    pdsyevr_("V", "I", "L", &n, A->a, &I1, &I1, A->desc, &vl, &vu, &il, &iu, &m, &nz, w_all, Z->a, &I1, &I1,
             Z->desc, work, &lwork, iwork, &liwork, &info);
    if (info || m != k || nz != k)
        ds_die(DS_EXIT_FAIL, "PCA: pdsyevr failed (info %d, %d of %d eigenpairs)", info, nz, k);
    memcpy(w, w_all, (size_t)k * sizeof(double));
    ds_free(work), ds_free(iwork), ds_free(w_all);
}

/* Copies every rank's centred rows into the block-cyclic X^T (d x n): rank r's rows are columns
 * [offset_r, offset_r + count_r), sent from a 1 x 1 grid holding only rank r, a chunk of rows at a
 * time. Chunks of <= 16 MiB keep pdgemr2d's internal buffers below glibc's mmap threshold, so they
 * are reused instead of being mapped and page-faulted afresh on every call (3x faster at d = 49152).
 * Collective over comm. */
static void scatter_centred_rows(bc_matrix *Xt, const grid *g, int blacs_sys, MPI_Comm comm, const int64_t *counts,
                                 const float *rows, const double *mean) {
    int rank, P, d = Xt->m;
    MPI_Comm_rank(comm, &rank), MPI_Comm_size(comm, &P);
    int64_t chunk = ((int64_t)1 << 21) / d > 0 ? ((int64_t)1 << 21) / d : 1;
    int64_t own = counts[rank] < chunk ? counts[rank] : chunk;
    double *buf = ds_alloc((size_t)(own > 0 ? own : 1) * d * sizeof(double));
    int64_t offset = 0;
    for (int r = 0; r < P; r++) {
        int ctx_r = blacs_sys, who = r;
        Cblacs_gridmap(&ctx_r, &who, 1, 1, 1);   /* collective; ranks other than r get -1 */
        for (int64_t c0 = 0; c0 < counts[r]; c0 += chunk) {
            int cnt = (int)(counts[r] - c0 < chunk ? counts[r] - c0 : chunk);
            if (rank == r) {
#pragma omp parallel for schedule(static)
                for (int c = 0; c < cnt; c++)
                    for (int j = 0; j < d; j++)
                        buf[(size_t)c * d + j] = (double)rows[(size_t)(c0 + c) * d + j] - mean[j];
            }
            /* pdgemr2d wants the source descriptor's context to be -1 on ranks outside its grid. */
            int desc_src[9] = {1, rank == r ? ctx_r : -1, d, cnt, d, cnt, 0, 0, d};
            int jb = (int)(offset + c0 + 1);
            pdgemr2d_(&d, &cnt, buf, &I1, &I1, desc_src, Xt->a, &I1, &jb, Xt->desc, &g->ctx);
        }
        if (rank == r) Cblacs_gridexit(ctx_r);
        offset += counts[r];
    }
    ds_free(buf);
}

/* Sums over the local rows in float64, in row order per column (thread-count independent). */
static void local_column_sums(int64_t n, int d, const float *rows, double *sums) {
#pragma omp parallel for schedule(static)
    for (int j0 = 0; j0 < d; j0 += 256) {
        int j1 = j0 + 256 < d ? j0 + 256 : d;
        for (int64_t i = 0; i < n; i++)
            for (int j = j0; j < j1; j++) sums[j] += rows[(size_t)i * d + j];
    }
}

static double local_centred_sum_squares(int64_t n, int d, const float *rows, const double *mean) {
    double *per_row = ds_alloc((size_t)(n > 0 ? n : 1) * sizeof(double)), total = 0;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) {
            double c = rows[(size_t)i * d + j] - mean[j];
            s += c * c;
        }
        per_row[i] = s;
    }
    for (int64_t i = 0; i < n; i++) total += per_row[i];
    ds_free(per_row);
    return total;
}

/* Block size of the block-cyclic matrices: 64 for large problems (what PBLAS likes), smaller when the
 * eigenproblem is small so that every process still owns several blocks. */
static int block_size(int m, int pmax) {
    int nb = (m + 2 * pmax - 1) / (2 * pmax);
    return nb < 4 ? 4 : nb > 64 ? 64 : nb;
}

void ds_pca_fit(ds_pca *pca, MPI_Comm comm, int64_t n_local, int d, const float *rows_local, int k,
                ds_pca_route route) {
    int rank, P;
    MPI_Comm_rank(comm, &rank), MPI_Comm_size(comm, &P);
    if (d < 1 || n_local < 0 || k < 1) ds_die(DS_EXIT_BAD_INPUT, "PCA: needs d >= 1, k >= 1 (got d %d, k %d)", d, k);
    int64_t *counts = ds_alloc((size_t)P * sizeof(int64_t)), n = 0;
    MPI_Allgather(&n_local, 1, MPI_INT64_T, counts, 1, MPI_INT64_T, comm);
    for (int r = 0; r < P; r++) n += counts[r];
    if (n < 2 || k > n - 1 || k > d)
        ds_die(DS_EXIT_BAD_INPUT, "PCA: %d components need at least %d rows and %d features (have %lld rows, %d features)",
               k, k + 1, k, (long long)n, d);
    if (n > 2000000000) ds_die(DS_EXIT_BAD_INPUT, "PCA: %lld rows exceed ScaLAPACK's int indexing", (long long)n);
    if (route == DS_PCA_AUTO) route = n < d ? DS_PCA_GRAM : DS_PCA_COVARIANCE;

    memset(pca, 0, sizeof *pca);
    pca->d = d, pca->k = k, pca->n = n, pca->route = route;
    pca->mean = ds_alloc((size_t)d * sizeof(double));
    pca->eigenvalues = ds_alloc((size_t)k * sizeof(double));
    pca->components = ds_alloc((size_t)k * d * sizeof(float));
    local_column_sums(n_local, d, rows_local, pca->mean);
    MPI_Allreduce(MPI_IN_PLACE, pca->mean, d, MPI_DOUBLE, MPI_SUM, comm);
    for (int j = 0; j < d; j++) pca->mean[j] /= (double)n;
    double ss = local_centred_sum_squares(n_local, d, rows_local, pca->mean);
    MPI_Allreduce(MPI_IN_PLACE, &ss, 1, MPI_DOUBLE, MPI_SUM, comm);
    pca->total_variance = ss / (double)(n - 1);

    /* A near-square process grid: the largest divisor of P not above sqrt(P) rows. */
    int me, np, nprow = (int)sqrt((double)P);
    while (P % nprow) nprow--;
    Cblacs_pinfo(&me, &np);
    int blacs_sys = Csys2blacs_handle(comm);
    grid g = {.ctx = blacs_sys};
    Cblacs_gridinit(&g.ctx, "Row", nprow, P / nprow);
    Cblacs_gridinfo(g.ctx, &g.nprow, &g.npcol, &g.myrow, &g.mycol);

    int ni = (int)n, m_eig = route == DS_PCA_GRAM ? ni : d;
    int nb = block_size(m_eig, g.nprow > g.npcol ? g.nprow : g.npcol);
    bc_matrix Xt, A, Z;
    double t0 = MPI_Wtime();
    bc_alloc(&Xt, &g, d, ni, nb);
    scatter_centred_rows(&Xt, &g, blacs_sys, comm, counts, rows_local, pca->mean);
    double t1 = MPI_Wtime();
    bc_alloc(&A, &g, m_eig, m_eig, nb);
    bc_alloc(&Z, &g, m_eig, m_eig, nb);
    const double one = 1, zero = 0;
    if (route == DS_PCA_GRAM)
        pdsyrk_("L", "T", &ni, &d, &one, Xt.a, &I1, &I1, Xt.desc, &zero, A.a, &I1, &I1, A.desc);
    else
        pdsyrk_("L", "N", &d, &ni, &one, Xt.a, &I1, &I1, Xt.desc, &zero, A.a, &I1, &I1, A.desc);
    int k_eig = k > nb ? k : nb < m_eig ? nb : m_eig, first = k_eig - k;   /* see top_eigenpairs */
    double t2 = MPI_Wtime();
    double *w = ds_alloc((size_t)k_eig * sizeof(double));
    top_eigenpairs(&A, k_eig, &Z, w);
    ds_free(A.a);
    double t3 = MPI_Wtime();

    /* The top k eigenvectors of the d x d problem (columns first .. k_eig-1 of Z, ascending like w),
     * as a column-major d x k array. For the Gram route they are X^T u (norm sqrt(lambda)). */
    double *vecs = ds_alloc((size_t)d * k * sizeof(double));
    if (route == DS_PCA_GRAM) {
        bc_matrix V;
        bc_alloc(&V, &g, d, k, nb);
        int jz = first + 1;
        pdgemm_("N", "N", &d, &k, &ni, &one, Xt.a, &I1, &I1, Xt.desc, Z.a, &I1, &jz, Z.desc, &zero, V.a, &I1, &I1,
                V.desc);
        bc_allgather_columns(&V, &g, 0, k, vecs, comm);
        ds_free(V.a);
    } else {
        bc_allgather_columns(&Z, &g, first, k, vecs, comm);
    }
    ds_free(Z.a), ds_free(Xt.a);
    pca->seconds[0] = t1 - t0, pca->seconds[1] = t2 - t1, pca->seconds[2] = t3 - t2, pca->seconds[3] = MPI_Wtime() - t3;
    Cblacs_gridexit(g.ctx);
    Cfree_blacs_system_handle(blacs_sys);

    for (int c = 0; c < k; c++) {
        double lambda = w[k_eig - 1 - c];
        const double *v = vecs + (size_t)(k - 1 - c) * d;
        if (!(lambda > 1e-12 * w[k_eig - 1]))
            ds_die(DS_EXIT_BAD_INPUT, "PCA: component %d has no variance: the centred data have rank < k = %d", c + 1, k);
        double norm = 0, big = 0;
        int at = 0;
        for (int j = 0; j < d; j++) {
            norm += v[j] * v[j];
            if (fabs(v[j]) > big) big = fabs(v[j]), at = j;
        }
        double scale = (v[at] < 0 ? -1 : 1) / sqrt(norm);
        for (int j = 0; j < d; j++) pca->components[(size_t)c * d + j] = (float)(v[j] * scale);
        pca->eigenvalues[c] = lambda / (double)(n - 1);
    }
    ds_free(vecs), ds_free(w), ds_free(counts);
}

void ds_pca_transform(const ds_pca *pca, int64_t n_rows, const float *rows, float *coords) {
    int d = pca->d, k = pca->k;
    int64_t block = ((int64_t)1 << 22) / d;   /* ~16 MiB of centred rows at a time */
    block = block < 1 ? 1 : block > 256 ? 256 : block;
    float *centred = ds_alloc((size_t)block * d * sizeof(float));
    for (int64_t i0 = 0; i0 < n_rows; i0 += block) {
        int nb = (int)(n_rows - i0 < block ? n_rows - i0 : block);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < nb; r++)
            for (int j = 0; j < d; j++)
                centred[(size_t)r * d + j] = (float)(rows[(size_t)(i0 + r) * d + j] - pca->mean[j]);
        ds_gemm(0, 1, nb, k, d, 1.0f, centred, d, pca->components, d, 0.0f, coords + (size_t)i0 * k, k);
    }
    ds_free(centred);
}

void ds_pca_free(ds_pca *pca) {
    ds_free(pca->mean), ds_free(pca->eigenvalues), ds_free(pca->components);
    memset(pca, 0, sizeof *pca);
}
