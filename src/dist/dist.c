#include "dreamstate/dist.h"
#include "dreamstate/common.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size = 1, active;

void ds_dist_init(int *argc, char ***argv) {
    int initialized;
    MPI_Initialized(&initialized);
    if (!initialized) {
        int provided;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    }
    active = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    ds_set_rank(rank);
}

void ds_dist_finalize(void) {
    int finalized;
    MPI_Finalized(&finalized);
    if (active && !finalized) MPI_Finalize();
    active = 0;
}

int ds_dist_rank(void) { return rank; }
int ds_dist_size(void) { return size; }
void ds_dist_barrier(void) { if (active) MPI_Barrier(MPI_COMM_WORLD); }

int ds_dist_cores_per_local_rank(void) {
    int local = 1;
    if (active && size > 1) {
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
        MPI_Comm_size(node, &local);
        MPI_Comm_free(&node);
    }
    int per = (int)sysconf(_SC_NPROCESSORS_ONLN) / local;
    return per > 0 ? per : 1;
}

void ds_dist_bcast(void *buf, size_t bytes, int root) {
    if (!active || size == 1) return;
    /* MPI counts are int: send in chunks of at most 1 GiB */
    for (size_t off = 0; off < bytes; off += (size_t)1 << 30) {
        size_t n = bytes - off < ((size_t)1 << 30) ? bytes - off : ((size_t)1 << 30);
        MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
    }
}

double ds_dist_sum_double(double x) {
    if (active && size > 1) MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return x;
}

void ds_dist_sum_doubles(double *x, int n) {
    if (active && size > 1) MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

int ds_dist_max_int(int x) {
    if (active && size > 1) MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return x;
}

/* ---- bucketed gradient allreduce overlapping backward ---- */

struct ds_grad_sync {
    float *grads;
    double *acc;             /* fp64 mode: accumulated gradient, else NULL */
    int64_t n, bucket_len;
    int n_buckets, last_micro;
    int64_t *ready;          /* elements of each bucket final this step */
    MPI_Request *requests;   /* MPI_REQUEST_NULL until posted */
};

ds_grad_sync *ds_grad_sync_create(float *grads, int64_t n, int64_t bucket_bytes, int fp64) {
    ds_grad_sync *gs = ds_alloc(sizeof *gs);
    gs->grads = grads;
    gs->acc = fp64 ? ds_alloc(sizeof(double) * n) : NULL;
    gs->n = n;
    gs->bucket_len = bucket_bytes / (int64_t)(fp64 ? sizeof(double) : sizeof(float));
    if (gs->bucket_len < 1024) gs->bucket_len = 1024;
    if (gs->bucket_len > INT32_MAX) gs->bucket_len = INT32_MAX;
    gs->n_buckets = (int)((n + gs->bucket_len - 1) / gs->bucket_len);
    gs->ready = ds_alloc(sizeof(int64_t) * gs->n_buckets);
    gs->requests = ds_alloc(sizeof(MPI_Request) * gs->n_buckets);
    for (int b = 0; b < gs->n_buckets; b++) gs->requests[b] = MPI_REQUEST_NULL;
    return gs;
}

void ds_grad_sync_free(ds_grad_sync *gs) {
    if (!gs) return;
    ds_free(gs->acc);
    ds_free(gs->ready);
    ds_free(gs->requests);
    ds_free(gs);
}

int ds_grad_sync_is_fp64(const ds_grad_sync *gs) { return gs->acc != NULL; }

void ds_grad_sync_micro_begin(ds_grad_sync *gs, int first, int last) {
    if (first && gs->acc) memset(gs->acc, 0, sizeof(double) * gs->n);
    gs->last_micro = last;
    if (last)
        for (int b = 0; b < gs->n_buckets; b++) gs->ready[b] = 0;
}

static int64_t bucket_size(const ds_grad_sync *gs, int b) {
    int64_t begin = (int64_t)b * gs->bucket_len, end = begin + gs->bucket_len;
    return (end > gs->n ? gs->n : end) - begin;
}

void ds_grad_sync_ready(ds_grad_sync *gs, int64_t offset, int64_t numel) {
    if (gs->acc) {
        double *acc = gs->acc + offset;
        const float *g = gs->grads + offset;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < numel; i++) acc[i] += g[i];
    }
    if (!gs->last_micro || !active || size == 1) return;
    int64_t end = offset + numel;
    for (int b = (int)(offset / gs->bucket_len); b < gs->n_buckets && (int64_t)b * gs->bucket_len < end; b++) {
        int64_t bb = (int64_t)b * gs->bucket_len, be = bb + bucket_size(gs, b);
        gs->ready[b] += (end < be ? end : be) - (offset > bb ? offset : bb);
        if (gs->ready[b] != bucket_size(gs, b)) continue;
        if (gs->acc)
            MPI_Iallreduce(MPI_IN_PLACE, gs->acc + bb, (int)bucket_size(gs, b), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD,
                           &gs->requests[b]);
        else
            MPI_Iallreduce(MPI_IN_PLACE, gs->grads + bb, (int)bucket_size(gs, b), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                           &gs->requests[b]);
    }
    int flag;  /* let the MPI library progress what is in flight */
    MPI_Testall(gs->n_buckets, gs->requests, &flag, MPI_STATUSES_IGNORE);
}

double ds_grad_sync_finish(ds_grad_sync *gs) {
    double wait = 0.0;
    if (active && size > 1) {
        for (int b = 0; b < gs->n_buckets; b++)
            if (gs->ready[b] != bucket_size(gs, b))
                ds_die(DS_EXIT_FAIL, "gradient bucket %d: %lld of %lld elements were marked ready", b,
                       (long long)gs->ready[b], (long long)bucket_size(gs, b));
        double t0 = MPI_Wtime();
        MPI_Waitall(gs->n_buckets, gs->requests, MPI_STATUSES_IGNORE);
        wait = MPI_Wtime() - t0;
    }
    if (gs->acc) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < gs->n; i++) gs->grads[i] = (float)gs->acc[i];
    }
    return wait;
}
