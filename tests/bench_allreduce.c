/* MPI allreduce throughput on this machine, for tests/bench.sh and to calibrate `dreamstate plan`.
 * Every call is what the trainer's gradient sync does: in-place MPI_Iallreduce (sum), then wait.
 *   mpirun -np P bench_allreduce [BYTES...]
 *       per message size (default 8K 256K 8M 64M) and element type (fp32, fp64): one JSON line with the
 *       mean and the best time of the slowest rank, and the bus bandwidth 2(p-1)/p x bytes / time of
 *       each, the traffic per rank of a ring allreduce (the convention of nccl-tests).
 *   mpirun -np P bench_allreduce --buckets BYTES BUCKET fp32|fp64
 *       the trainer's gradient allreduce without the backward: BYTES in buckets of at most BUCKET bytes,
 *       all posted at once, then MPI_Waitall (what ds_grad_sync does when nothing overlaps).
 * Every rank runs the same reps (a collective cannot stop on one rank's clock). */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, size;

typedef struct { double mean, best; } timing;

/* Seconds per call after one warm-up call, of the slowest rank: the mean and the fastest of reps. */
static timing time_allreduce(void *buf, int64_t count, MPI_Datatype type, int64_t elem, int64_t bucket_bytes, int reps) {
    int64_t per = bucket_bytes / elem, n_buckets = (count + per - 1) / per;
    MPI_Request *req = malloc(sizeof(MPI_Request) * n_buckets);
    double total = 0, best = 1e30;
    for (int r = -1; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (int64_t b = 0; b < n_buckets; b++) {
            int64_t len = count - b * per < per ? count - b * per : per;
            MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + b * per * elem, (int)len, type, MPI_SUM, MPI_COMM_WORLD, &req[b]);
        }
        MPI_Waitall((int)n_buckets, req, MPI_STATUSES_IGNORE);
        double dt = MPI_Wtime() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (r >= 0) {
            total += dt;
            if (dt < best) best = dt;
        }
    }
    free(req);
    return (timing){total / reps, best};
}

static void report(const char *kind, int64_t bytes, int64_t bucket, timing t) {
    if (rank != 0) return;
    double traffic = size > 1 ? 2.0 * (size - 1) / size * bytes : 0.0;
    printf("{\"ranks\":%d,\"type\":\"%s\",\"bytes\":%lld,\"bucket_bytes\":%lld,\"seconds\":%.6g,\"best_seconds\":%.6g,"
           "\"busbw_gbps\":%.4g,\"best_busbw_gbps\":%.4g}\n",
           size, kind, (long long)bytes, (long long)bucket, t.mean, t.best, traffic / t.mean * 1e-9, traffic / t.best * 1e-9);
    fflush(stdout);
}

static int64_t parse_bytes(const char *s) {
    char *end;
    double v = strtod(s, &end);
    double mult = *end == 'K' || *end == 'k' ? 1024.0 : *end == 'M' || *end == 'm' ? 1048576.0
                : *end == 'G' || *end == 'g' ? 1073741824.0 : 1.0;
    if (v <= 0 || end == s || (mult > 1 && end[1]) || (mult == 1 && *end)) {
        if (rank == 0) fprintf(stderr, "bench_allreduce: bad size '%s'\n", s);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return (int64_t)(v * mult);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && strcmp(argv[1], "--buckets") == 0) {
        if (argc != 5 || (strcmp(argv[4], "fp32") != 0 && strcmp(argv[4], "fp64") != 0)) {
            if (rank == 0) fprintf(stderr, "usage: bench_allreduce --buckets BYTES BUCKET fp32|fp64\n");
            MPI_Finalize();
            return 2;
        }
        int fp64 = strcmp(argv[4], "fp64") == 0;
        int64_t bytes = parse_bytes(argv[2]), bucket = parse_bytes(argv[3]), elem = fp64 ? 8 : 4;
        void *buf = calloc((size_t)(bytes / elem), (size_t)elem);
        report(argv[4], bytes / elem * elem, bucket, time_allreduce(buf, bytes / elem, fp64 ? MPI_DOUBLE : MPI_FLOAT, elem, bucket, 3));
        free(buf);
        MPI_Finalize();
        return 0;
    }
    const char *defaults[] = {"8K", "256K", "8M", "64M"};
    int n_sizes = argc > 1 ? argc - 1 : 4;
    for (int t = 0; t < 2; t++) {
        int64_t elem = t ? 8 : 4;
        for (int i = 0; i < n_sizes; i++) {
            int64_t bytes = parse_bytes(argc > 1 ? argv[i + 1] : defaults[i]), count = bytes / elem;
            if (count < 1) count = 1;
            void *buf = calloc((size_t)count, (size_t)elem);
            /* about 128 MB of traffic per size, at least 3 reps */
            int reps = (int)(((int64_t)128 << 20) / (count * elem));
            reps = reps < 3 ? 3 : reps > 200 ? 200 : reps;
            report(t ? "fp64" : "fp32", count * elem, count * elem,
                   time_allreduce(buf, count, t ? MPI_DOUBLE : MPI_FLOAT, elem, count * elem, reps));
            free(buf);
        }
    }
    MPI_Finalize();
    return 0;
}
