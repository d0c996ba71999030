#include "dreamstate/args.h"
#include "dreamstate/common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

double ds_arg_number(const char *cmd, const char *flag, const char *text, double lo, double hi) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || isnan(v)) ds_die(DS_EXIT_BAD_INPUT, "%s: %s '%s' is not a number", cmd, flag, text);
    if (v < lo || v > hi) ds_die(DS_EXIT_BAD_INPUT, "%s: %s %s must be in [%g, %g]", cmd, flag, text, lo, hi);
    return v;
}

int64_t ds_arg_int(const char *cmd, const char *flag, const char *text, int64_t lo, int64_t hi) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end) ds_die(DS_EXIT_BAD_INPUT, "%s: %s '%s' is not an integer", cmd, flag, text);
    if (errno == ERANGE || v < lo || v > hi)
        ds_die(DS_EXIT_BAD_INPUT, "%s: %s %s must be in [%" PRId64 ", %" PRId64 "]", cmd, flag, text, lo, hi);
    return v;
}

uint64_t ds_arg_seed(const char *cmd, const char *flag, const char *text) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end || strchr(text, '-') || errno == ERANGE)
        ds_die(DS_EXIT_BAD_INPUT, "%s: %s '%s' is not an integer in [0, 2^64)", cmd, flag, text);
    return v;
}

int ds_args_scan(const char *cmd, int argc, char **argv, int n_flags, const char *const *flags, const char **out,
                 int n_pos, const char **pos, int *n_sets, char **sets) {
    int got = 0;
    if (n_sets) *n_sets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (sets && strcmp(a, "--set") == 0) {
            if (i + 1 >= argc) ds_die(DS_EXIT_BAD_INPUT, "%s: --set needs section.key=value", cmd);
            sets[(*n_sets)++] = argv[++i];
            continue;
        }
        if (a[0] == '-' && a[1] == '-') {
            int f = 0;
            while (f < n_flags && strcmp(a, flags[f]) != 0) f++;
            if (f == n_flags) ds_die(DS_EXIT_BAD_INPUT, "%s: unknown option '%s' (see --help)", cmd, a);
            if (i + 1 >= argc) ds_die(DS_EXIT_BAD_INPUT, "%s: %s needs a value", cmd, a);
            out[f] = argv[++i];
            continue;
        }
        if (got == n_pos) ds_die(DS_EXIT_BAD_INPUT, "%s: unexpected argument '%s' (see --help)", cmd, a);
        pos[got++] = a;
    }
    return got;
}
