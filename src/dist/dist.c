#include "dreamstate/dist.h"
#include "dreamstate/common.h"

#include <malloc.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static int rank, size = 1, active;

/* ---- collective watchdog (train.comm_timeout, src/dist/README.md §8) ----
 * Open MPI's TCP transport waits forever for a peer that died with its node or sits behind a link
 * that went down. While the watchdog is on, every blocking collective below runs under a timer; when
 * it expires the rank prints one line naming the collective and exits 1, so the launcher (srun
 * --kill-on-bad-exit, mpirun) ends the job instead of it hanging until its time limit. The line is
 * formatted before the wait, because the signal handler may only write() and _exit(). */
static double watch_seconds;
static char watch_host[128] = "?", watch_line[512];
static size_t watch_len;

static void on_watch_expired(int sig) {
    (void)sig;
    ssize_t ignored = write(STDERR_FILENO, watch_line, watch_len);
    (void)ignored;
    _exit(DS_EXIT_FAIL);
}

void ds_dist_set_comm_timeout(double seconds) {
    watch_seconds = active && size > 1 ? seconds : 0;
    if (watch_seconds <= 0) return;
    const char *node = getenv("SLURMD_NODENAME");  /* Slurm's name of this node, else the host's */
    if (node) snprintf(watch_host, sizeof watch_host, "%s", node);
    else gethostname(watch_host, sizeof watch_host - 1);
    signal(SIGALRM, on_watch_expired);
}

static void watch_begin(const char *what) {
    if (watch_seconds <= 0) return;
    int n = snprintf(watch_line, sizeof watch_line,
                     "dreamstate[rank %d]: %s did not complete within %g s (train.comm_timeout) on %s: another rank "
                     "died or hangs, or the network between the nodes is down; exit 1. The newest checkpoint is "
                     "intact and the same command resumes from it (raise train.comm_timeout if a step or a "
                     "checkpoint write takes longer)\n", rank, what, watch_seconds, watch_host);
    watch_len = n < (int)sizeof watch_line ? (size_t)n : sizeof watch_line - 1;
    struct itimerval t = {.it_value = {.tv_sec = (time_t)watch_seconds,
                                       .tv_usec = (suseconds_t)((watch_seconds - (time_t)watch_seconds) * 1e6)}};
    if (t.it_value.tv_sec == 0 && t.it_value.tv_usec == 0) t.it_value.tv_usec = 1;
    setitimer(ITIMER_REAL, &t, NULL);
}

static void watch_end(void) {
    if (watch_seconds <= 0) return;
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
}

void ds_dist_init(void) {
    /* Open MPI's nonblocking allreduce allocates a temporary per bucket; with glibc's default
     * thresholds those pages go back to the OS and fault in again every step (5-10x slower buckets). */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    int initialized;
    MPI_Initialized(&initialized);
    if (!initialized) {
        int provided;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);  /* MPI-2 needs no command line */
    }
    active = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    ds_set_rank(rank, size);
}

void ds_dist_finalize(void) {
    int finalized;
    MPI_Finalized(&finalized);
    if (active && !finalized) MPI_Finalize();
    active = 0;
}

int ds_dist_rank(void) { return rank; }
int ds_dist_size(void) { return size; }
void ds_dist_barrier(void) {
    if (!active) return;
    watch_begin("a barrier");
    MPI_Barrier(MPI_COMM_WORLD);
    watch_end();
}

int ds_dist_cores_per_local_rank(void) {
    /* A rank the launcher bound to some cores (mpirun's default, Slurm's task affinity) uses exactly
     * those; an unbound rank shares the node's cores with the other ranks on it. */
    int mine = ds_affinity_cores(), online = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (mine < online) return mine;
    int local = 1;
    if (active && size > 1) {
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
        MPI_Comm_size(node, &local);
        MPI_Comm_free(&node);
    }
    int per = online / local;
    return per > 0 ? per : 1;
}

int ds_dist_threads(int requested, const char *what) {
    return requested > 0 ? ds_check_threads(requested, what) : ds_dist_cores_per_local_rank();
}

void ds_dist_bcast(void *buf, size_t bytes, int root) {
    if (!active || size == 1) return;
    watch_begin("a broadcast");
    /* MPI counts are int: send in chunks of at most 1 GiB */
    for (size_t off = 0; off < bytes; off += (size_t)1 << 30) {
        size_t n = bytes - off < ((size_t)1 << 30) ? bytes - off : ((size_t)1 << 30);
        MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
    }
    watch_end();
}

void ds_dist_sum_doubles(double *x, int n) {
    if (!active || size == 1) return;
    watch_begin("an allreduce (sum)");
    MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    watch_end();
}

double ds_dist_sum_double(double x) {
    ds_dist_sum_doubles(&x, 1);
    return x;
}

int ds_dist_max_int(int x) {
    if (!active || size == 1) return x;
    watch_begin("an allreduce (max)");
    MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    watch_end();
    return x;
}

/* ---- bucketed gradient allreduce overlapping backward ---- */

struct ds_grad_sync {
    float *grads;
    double *acc;             /* fp64 mode: accumulated gradient, else NULL */
    int64_t n, bucket_len;
    int n_buckets, last_micro, zero1;
    int passthrough;         /* one process, one micro-step: the fp64 sum would be an exact copy */
    int64_t *ready;          /* elements of each bucket final this step */
    MPI_Request *requests;   /* MPI_REQUEST_NULL until posted */
};

ds_grad_sync *ds_grad_sync_create(float *grads, int64_t n, int64_t bucket_bytes, int fp64, int zero1) {
    ds_grad_sync *gs = ds_alloc(sizeof *gs);
    gs->grads = grads;
    gs->acc = fp64 ? ds_alloc(sizeof(double) * n) : NULL;
    gs->n = n;
    gs->zero1 = zero1 && active && size > 1;
    gs->bucket_len = bucket_bytes / (int64_t)(fp64 ? sizeof(double) : sizeof(float));
    /* ZeRO-1 balances ownership by buckets: keep at least 4 per rank */
    if (gs->zero1 && gs->bucket_len > n / (4 * size)) gs->bucket_len = n / (4 * size);
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

static int several_ranks(void) { return active && size > 1; }

int ds_grad_sync_accumulates(const ds_grad_sync *gs, int micro_steps) {
    return gs->acc && (micro_steps > 1 || several_ranks());
}

void ds_grad_sync_micro_begin(ds_grad_sync *gs, int first, int last) {
    gs->passthrough = first && last && !several_ranks();
    if (first && gs->acc && !gs->passthrough) memset(gs->acc, 0, sizeof(double) * gs->n);
    gs->last_micro = last;
    if (last)
        for (int b = 0; b < gs->n_buckets; b++) gs->ready[b] = 0;
}

static int64_t bucket_size(const ds_grad_sync *gs, int b) {
    int64_t begin = (int64_t)b * gs->bucket_len, end = begin + gs->bucket_len;
    return (end > gs->n ? gs->n : end) - begin;
}

void ds_grad_sync_ready(ds_grad_sync *gs, int64_t offset, int64_t numel) {
    if (gs->acc && !gs->passthrough) {
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
        if (gs->zero1) {
            int owner = b % size;
            void *buf = gs->acc ? (void *)(gs->acc + bb) : (void *)(gs->grads + bb);
            MPI_Ireduce(rank == owner ? MPI_IN_PLACE : buf, buf, (int)bucket_size(gs, b),
                        gs->acc ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM, owner, MPI_COMM_WORLD, &gs->requests[b]);
        } else if (gs->acc)
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
        watch_begin("the gradient allreduce");
        MPI_Waitall(gs->n_buckets, gs->requests, MPI_STATUSES_IGNORE);
        watch_end();
        wait = MPI_Wtime() - t0;
    }
    if (gs->acc && !gs->passthrough) {
        for (int b = 0; b < gs->n_buckets; b++) {
            if (gs->zero1 && b % size != rank) continue;
            int64_t bb = (int64_t)b * gs->bucket_len, len = bucket_size(gs, b);
#pragma omp parallel for schedule(static)
            for (int64_t i = bb; i < bb + len; i++) gs->grads[i] = (float)gs->acc[i];
        }
    }
    return wait;
}

static int owns(const ds_grad_sync *gs, int b, int r) { return !gs->zero1 || b % size == r; }

int ds_grad_sync_n_buckets(const ds_grad_sync *gs) { return gs->n_buckets; }

int ds_grad_sync_owned_ranges(const ds_grad_sync *gs, int64_t *begin, int64_t *len) {
    int count = 0;
    for (int b = 0; b < gs->n_buckets; b++) {
        if (!owns(gs, b, rank)) continue;
        int64_t bb = (int64_t)b * gs->bucket_len;
        if (count > 0 && begin[count - 1] + len[count - 1] == bb) {
            len[count - 1] += bucket_size(gs, b);  /* merge adjacent buckets */
        } else {
            begin[count] = bb;
            len[count++] = bucket_size(gs, b);
        }
    }
    return count;
}

void ds_grad_sync_share_params(ds_grad_sync *gs, float *params) {
    if (!gs->zero1) return;
    for (int b = 0; b < gs->n_buckets; b++)
        MPI_Ibcast(params + (int64_t)b * gs->bucket_len, (int)bucket_size(gs, b), MPI_FLOAT, b % size, MPI_COMM_WORLD,
                   &gs->requests[b]);
    watch_begin("the parameter broadcast (ZeRO-1)");
    MPI_Waitall(gs->n_buckets, gs->requests, MPI_STATUSES_IGNORE);
    watch_end();
}

/* Moves one bucket between its owner's compact array (at compact_off) and rank 0's full array. */
static void move_bucket(ds_grad_sync *gs, int b, int64_t compact_off, const float *src_compact, float *dst_full,
                        const float *src_full, float *dst_compact) {
    int owner = b % size;
    int64_t bb = (int64_t)b * gs->bucket_len, len = bucket_size(gs, b);
    if (src_compact) {         /* gather: owner -> rank 0 */
        if (owner == 0 && rank == 0) memcpy(dst_full + bb, src_compact + compact_off, sizeof(float) * len);
        else if (rank == owner) MPI_Send(src_compact + compact_off, (int)len, MPI_FLOAT, 0, b, MPI_COMM_WORLD);
        else if (rank == 0) MPI_Recv(dst_full + bb, (int)len, MPI_FLOAT, owner, b, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {                   /* scatter: rank 0 -> owner */
        if (owner == 0 && rank == 0) memcpy(dst_compact + compact_off, src_full + bb, sizeof(float) * len);
        else if (rank == 0) MPI_Send(src_full + bb, (int)len, MPI_FLOAT, owner, b, MPI_COMM_WORLD);
        else if (rank == owner) MPI_Recv(dst_compact + compact_off, (int)len, MPI_FLOAT, 0, b, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
}

static void move_all(ds_grad_sync *gs, const float *src_compact, float *dst_full, const float *src_full, float *dst_compact) {
    if (!gs->zero1) {  /* every rank owns everything: rank 0's copy is the full array */
        if (src_compact) {
            if (rank == 0 && dst_full != src_compact) memcpy(dst_full, src_compact, sizeof(float) * gs->n);
        } else {
            if (rank == 0 && dst_compact != src_full) memcpy(dst_compact, src_full, sizeof(float) * gs->n);
            ds_dist_bcast(dst_compact, sizeof(float) * gs->n, 0);
        }
        return;
    }
    int64_t *off = ds_alloc(sizeof(int64_t) * size);  /* next compact offset of each owner */
    watch_begin(src_compact ? "the AdamW moment gather (ZeRO-1)" : "the AdamW moment scatter (ZeRO-1)");
    for (int b = 0; b < gs->n_buckets; b++) {
        int owner = b % size;
        move_bucket(gs, b, off[owner], src_compact, dst_full, src_full, dst_compact);
        off[owner] += bucket_size(gs, b);
    }
    watch_end();
    ds_free(off);
}

void ds_grad_sync_gather(ds_grad_sync *gs, const float *compact, float *full_on_root) {
    move_all(gs, compact, full_on_root, NULL, NULL);
}

void ds_grad_sync_scatter(ds_grad_sync *gs, const float *full_on_root, float *compact) {
    move_all(gs, NULL, NULL, full_on_root, compact);
}
