/* Shared basics: error reporting with exit codes, aligned allocation, checksums, atomic file writes,
 * a deterministic counter-based RNG, and logging. Every other module builds on these. */
#ifndef DREAMSTATE_COMMON_H
#define DREAMSTATE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: 0 ok, 1 internal/runtime failure, 2 bad input (config, checkpoint, dataset, CLI). */
enum { DS_EXIT_OK = 0, DS_EXIT_FAIL = 1, DS_EXIT_BAD_INPUT = 2 };

/* This process's rank among `ranks` (set by the dist module; 0 of 1 without MPI). Only rank 0 prints
 * ds_log lines. */
void ds_set_rank(int rank, int ranks);

/* Prints "dreamstate: <message>" on one line to stderr and exits with `code`. Every rank that dies
 * prints its line, so an error that only one rank finds (its share of the data, its node's files) is
 * never lost behind mpirun's generic failure; in a job of several ranks the line starts
 * "dreamstate[rank R]: " instead. An error every rank finds alike (a corrupt dataset every rank opens)
 * thus prints once per rank, each line naming its rank. */
void ds_die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* ds_die for a mistake in what every rank reads from the same source, the command line and the config
 * file: rank 0 prints it and the other ranks exit with the same code silently, so it prints once. */
void ds_die_replicated(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* A hook for code that must survive a ds_die: the fuzzing harnesses (tests/fuzz/README.md) longjmp
 * back to the next input instead of ending the process. When set, ds_die and ds_die_replicated call
 * it with the exit code and the line they would print (without its newline; NULL on a rank that
 * prints nothing) before printing; a handler that returns gets the usual print and exit. NULL (the
 * default) restores that behaviour. */
typedef void (*ds_die_handler)(int code, const char *line);
void ds_set_die_handler(ds_die_handler handler);
/* Informational line to stderr, rank 0 only. */
void ds_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 64-byte aligned, zero-filled allocation; dies on failure. Free with ds_free. */
void *ds_alloc(size_t bytes);
void ds_free(void *p);

/* CRC-32C (Castagnoli) of a buffer, continuing from `crc` (start with 0). */
uint32_t ds_crc32c(uint32_t crc, const void *data, size_t n);
/* SHA-256 of a buffer (the pinned source documents of src/data/manifest.c are checked with it). */
void ds_sha256(const void *data, size_t n, uint8_t digest[32]);

/* Opening an input file (data, checkpoint, weights, config, ...) for reading: only a regular file is
 * accepted, and a FIFO, device or socket is refused without blocking in open() (which waits for a
 * FIFO's writer forever). Returns a descriptor (or stream) in blocking mode, or -1 (NULL) with a
 * one-line reason in why: "cannot open: <strerror>" (a directory: "cannot open: Is a directory") or
 * "not a regular file (a FIFO)". */
int ds_open_input(const char *path, char *why, size_t why_len);
FILE *ds_fopen_input(const char *path, char *why, size_t why_len);

/* Atomic file replacement: write everything to "<path>.tmp.<pid>", fsync it, rename over `path`,
 * fsync the directory. A crash at any point leaves either the old file or the new one, never a mix. */
typedef struct ds_atomic_file {
    FILE *fp;
    char path[4096];
    char tmp_path[4200];
} ds_atomic_file;
int ds_atomic_open(ds_atomic_file *af, const char *path);   /* 0 ok, -1 with errno */
int ds_atomic_commit(ds_atomic_file *af);  /* fsync + rename; 0 ok; -1 (temp file removed) if any write to fp failed */
void ds_atomic_abort(ds_atomic_file *af);                   /* removes the temp file */

/* Counter-based RNG (splitmix64 of key and counter): the value depends only on (seed, stream, index),
 * so results are independent of thread count and resumable from a step number alone. */
static inline uint64_t ds_splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
/* The key every draw of (seed, stream) hashes its index with: ds_rng_u64 = ds_splitmix64(key ^ index). */
uint64_t ds_rng_key(uint64_t seed, uint64_t stream);
uint64_t ds_rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
double ds_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);      /* [0, 1) */
/* Gaussian draws of this generator: ds_rng_normal and its batched forms, in kernels.h. */
/* x[i] in [-scale/2, scale/2), a fixed pattern: weights for timing a model, where only NaN and
 * infinities must be avoided (far cheaper than Gaussian draws). */
void ds_fill_pattern(float *x, int64_t n, float scale);
/* x[i] = 0, i < n, on several threads when n is large: a large array's first touch is its page faults
 * (a fresh gigabyte costs about a second on a virtual machine), shared out like any other work. */
void ds_zero_floats(float *x, int64_t n);

/* a * b mod m exactly (m > 0), through a 128-bit product. */
uint64_t ds_mulmod_u64(uint64_t a, uint64_t b, uint64_t m);
/* Whether n is prime (deterministic for every 64-bit n). */
int ds_is_prime_u64(uint64_t n);

/* Cores this process may run on (its CPU affinity mask, which mpirun, srun and taskset set), or the
 * online cores if the mask cannot be read. Thread counts follow this, never the node's core count. */
int ds_affinity_cores(void);
/* Returns `threads`, or dies (exit 2) when it exceeds ds_affinity_cores(): "<what> N exceeds the M
 * core(s) this process may run on ...". `what` names the setting ("run.threads"). */
int ds_check_threads(int threads, const char *what);
double ds_now_seconds(void);  /* monotonic clock */
/* Seconds since this process started (from the kernel's record of its start, 10 ms resolution), or a
 * negative number where that is unknown. */
double ds_process_seconds(void);

/* The absolute form of an existing path (realpath), else the path as given: what indexes and metadata record. */
void ds_absolute_path(const char *path, char *out, size_t len);
/* mkdir -p; dies (exit 2: the path is not one that can be made a directory) naming the path. */
void ds_mkdir_p(const char *path);
/* Whether ds_mkdir_p(path) would succeed and leave a directory this process can write in, without
 * making anything: 0, or -1 with ds_mkdir_p's reason in why ("PATH: cannot create directory: ..."). */
int ds_dir_creatable(const char *path, char *why, size_t why_len);

/* JSON output: a string with quotes and escapes (n bytes, or up to its NUL); a number with 17
 * significant digits, or null when it is not finite; an array of n numbers, ", "-separated. */
void ds_json_string_n(FILE *f, const char *s, size_t n);
void ds_json_string(FILE *f, const char *s);
void ds_json_number(FILE *f, double x);
void ds_json_numbers(FILE *f, const double *x, int n);
/* Copies the JSON text `in` (numbers formatted with printf) to out (len bytes, cut to fit), writing
 * null for every nan, -nan, inf or -inf that printf made of a non-finite value (outside strings), so
 * the output parses as JSON. Returns the length written. */
size_t ds_json_null_nonfinite(const char *in, char *out, size_t len);

#endif
