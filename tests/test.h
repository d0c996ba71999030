/* Minimal test harness: CHECK-style assertions that count, and a summary line in the plain
 * "N passed, N failed" form that tests/run.sh and CI read. Each test program is one file. */
#ifndef DREAMSTATE_TEST_H
#define DREAMSTATE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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

static inline int test_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed ? 1 : 0;
}

#endif
