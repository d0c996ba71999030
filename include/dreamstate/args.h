/* Command-line values: strict parsing with one-line errors (exit 2) that name the command and flag,
 * e.g. "sample-state: --guidance 'abc' is not a number". */
#ifndef DREAMSTATE_ARGS_H
#define DREAMSTATE_ARGS_H

#include <stdint.h>

double ds_arg_number(const char *cmd, const char *flag, const char *text, double lo, double hi);
int64_t ds_arg_int(const char *cmd, const char *flag, const char *text, int64_t lo, int64_t hi);
uint64_t ds_arg_seed(const char *cmd, const char *flag, const char *text);

/* A simple option scanner: argv[1..] holds "--flag value" pairs for the flags listed in `flags`
 * (values go to out[i]; a flag given twice: the last wins), "--set k=v" pairs collected into sets
 * (may be NULL if not accepted), and at most n_pos positional arguments (into pos). Unknown flags,
 * missing values and extra positionals die with exit 2. Returns the number of positionals. */
int ds_args_scan(const char *cmd, int argc, char **argv, int n_flags, const char *const *flags, const char **out,
                 int n_pos, const char **pos, int *n_sets, char **sets);

#endif
