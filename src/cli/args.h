/* The one command-line parser of every dreamstate command (private to src/cli). A command describes
 * its arguments in a cli_spec: positional arguments, options that take a value ("--out DIR" or
 * "--out=DIR"; given twice, the last wins, and cli_nth reads every occurrence), switches ("--json"),
 * and, for commands of a config file, the CONFIG argument and "--set section.key=value" overrides.
 * "--" ends the options; --help or -h anywhere among them prints the usage.
 * Every mistake is one line naming the command, e.g. "generate: unknown option '--top-k' (see
 * --help)", and exit code 2; values are parsed strictly ("sample-state: --guidance 'abc' is not a
 * number"). */
#ifndef DREAMSTATE_CLI_ARGS_H
#define DREAMSTATE_CLI_ARGS_H

#include "dreamstate/config.h"
#include "dreamstate/states.h"

#include <stdint.h>

#define CLI_MAX_OPTIONS 24

typedef enum cli_kind {
    CLI_VALUE = 0,              /* takes a value */
    CLI_REQUIRED,               /* takes a value and must be given: "CMD: missing NAME (see --help)" */
    CLI_SWITCH,                 /* takes none */
} cli_kind;

typedef struct cli_option {
    const char *name;           /* "--out" */
    cli_kind kind;
} cli_option;

typedef struct cli_spec {
    const char *cmd;            /* the command's name, first in every error */
    const char *usage;          /* what --help and -h print to stdout */
    const char *positional;     /* a positional argument in errors ("INDEX"); NULL: none accepted */
    int any_positionals;        /* accepts any number of them; else at most one */
    int config;                 /* the one positional argument is a required CONFIG file, and --set
                                 * section.key=value (repeatable) overrides its keys */
    int mpi;                    /* runs on MPI ranks: cli_parse calls ds_dist_init before reading the
                                 * arguments, so that only rank 0 reports a mistake; the command
                                 * calls ds_dist_finalize */
    cli_option options[CLI_MAX_OPTIONS];  /* ended by an entry without a name */
} cli_spec;

typedef struct cli_args {
    const cli_spec *spec;
    const char *config;         /* spec->config: the CONFIG file */
    int n_positional;
    const char **positional;
    int n_sets;
    char **sets;                /* the --set values in order, as ds_config_load takes them */
    int n_given;
    int *given_option;          /* every option given, in order: its index in spec->options */
    const char **given_value;   /* and its value (NULL for a switch) */
} cli_args;

/* Reads argv[1..] (argv[0] is the command's name) into a and returns 1; dies (exit 2) on an unknown
 * option, a missing value, a value given to a switch, too many positional arguments, a missing CONFIG
 * or a missing required option. Returns 0 after printing spec->usage to stdout if --help or -h is
 * among the options (not the value of one: "--prompt -h" is a prompt), before any other check. */
int cli_parse(const cli_spec *spec, int argc, char **argv, cli_args *a);
void cli_args_free(cli_args *a);

/* An option's last value, or NULL (cli_string: `absent`) if it is not given. `name` must be in the
 * spec. */
const char *cli_value(const cli_args *a, const char *name);
const char *cli_string(const cli_args *a, const char *name, const char *absent);
/* How often an option (or switch) is given, and its i-th value (0 <= i < count). */
int cli_count(const cli_args *a, const char *name);
const char *cli_nth(const cli_args *a, const char *name, int i);
/* The first positional argument: dies "CMD: missing WHAT (see --help)" without one. */
const char *cli_required_positional(const cli_args *a, const char *what);

/* ds_config_load of the CONFIG file with the --set overrides (spec->config). */
void cli_load_config(const cli_args *a, ds_config *cfg);

/* Strict values: the whole text must be the number, else "CMD: FLAG 'TEXT' is not a number" (or "an
 * integer"); outside [lo, hi]: "CMD: FLAG TEXT must be in [lo, hi]". A seed is any integer in
 * [0, 2^64). */
double cli_parse_number(const char *cmd, const char *flag, const char *text, double lo, double hi);
int64_t cli_parse_int(const char *cmd, const char *flag, const char *text, int64_t lo, int64_t hi);
uint64_t cli_parse_seed(const char *cmd, const char *flag, const char *text);
/* Comma-separated integers in [lo, hi] ("1,5,10"), appended to out[n..cap); returns the new count.
 * An empty item or more than cap in all: "CMD: FLAG 'TEXT' is not a list of at most CAP integers". */
int cli_parse_int_list(const char *cmd, const char *flag, const char *text, int lo, int hi, int *out, int n, int cap);
/* The same for an option's value, or `absent` when it is not given. */
double cli_number(const cli_args *a, const char *name, double lo, double hi, double absent);
int64_t cli_int(const cli_args *a, const char *name, int64_t lo, int64_t hi, int64_t absent);
uint64_t cli_seed(const cli_args *a, const char *name, uint64_t absent);
/* The format of the state file(s) written to `path` (NULL: no file name to go by) from --format
 * dreamstate|rwkv-state and the path's extension (ds_state_file_format_of); dies (exit 2) on an
 * unknown name or one the extension contradicts. "--format" must be in the spec. */
ds_state_file_format cli_state_format(const cli_args *a, const char *path);

#endif
