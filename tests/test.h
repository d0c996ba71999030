/* Minimal test harness: CHECK-style assertions that count, and a summary line in the plain
 * "N passed, N failed" form that tests/run.sh and CI read. Each test program is one file. */
#ifndef DREAMSTATE_TEST_H
#define DREAMSTATE_TEST_H

#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int test_passed, test_failed;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            test_passed++;                                                 \
        } else {                                                           \
            test_failed++;                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

/* Relative error of two arrays in the max-norm: max|a-b| / max(max|b|, tiny). */
static inline double test_rel_err(const float *a, const float *b, long n) {
    double num = 0, den = 1e-30;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num || d != d) num = d != d ? INFINITY : d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

/* Runs fn(arg) in a child process (for code that exits, like ds_die); returns its exit code and what
 * it wrote to stderr. */
static inline int test_run_in_child(void (*fn)(void *), void *arg, char *err, size_t err_len) {
    fflush(stdout); fflush(stderr);
    char name[] = "/tmp/ds_test_stderr_XXXXXX";
    int fd = mkstemp(name);
    unlink(name);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        fn(arg);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, err, err_len - 1);
    err[n > 0 ? n : 0] = 0;
    close(fd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Expects fn(arg), run in a child, to exit with code 2 (bad input) and one line on stderr containing
 * `reason`. */
static inline void test_expect_bad_input(void (*fn)(void *), void *arg, const char *reason, const char *what) {
    char err[2048];
    int rc = test_run_in_child(fn, arg, err, sizeof err);
    size_t len = strlen(err);
    int one_line = len > 0 && err[len - 1] == '\n' && memchr(err, '\n', len - 1) == NULL;
    CHECK(rc == 2 && strstr(err, reason) && one_line, "%s: want exit 2 with '%s', got exit %d: %s", what, reason, rc,
          err);
}

/* Exit code of fn() run in a child process (stderr discarded). */
typedef struct { void (*fn)(void); } test_thunk;
static inline void test_thunk_call(void *arg) { ((test_thunk *)arg)->fn(); }
static inline int test_exit_code(void (*fn)(void)) {
    char err[512];
    test_thunk thunk = {fn};
    return test_run_in_child(test_thunk_call, &thunk, err, sizeof err);
}

/* Whole file, NUL-terminated (not counted in *len); NULL if it cannot be opened. */
static inline uint8_t *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n + 1);
    *len = fread(buf, 1, n, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

static inline void test_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

/* One tensor of the "DSDUMP01" files the PyTorch reference tests read (tests/ref/dump.py):
 * u32 name length, name, u32 ndim, i64 shape[ndim], u32 dtype (0 f32, 1 i32), data. */
static inline void test_dump_tensor(FILE *f, const char *name, int ndim, const int64_t *shape, int dtype,
                                    const void *data) {
    uint32_t len = (uint32_t)strlen(name), nd = (uint32_t)ndim, dt = (uint32_t)dtype;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    fwrite(&len, 4, 1, f); fwrite(name, 1, len, f); fwrite(&nd, 4, 1, f);
    fwrite(shape, 8, ndim, f); fwrite(&dt, 4, 1, f); fwrite(data, 4, numel, f);
}

static inline int test_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed ? 1 : 0;
}

#endif
