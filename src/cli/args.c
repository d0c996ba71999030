#include "args.h"

#include "dreamstate/common.h"
#include "dreamstate/dist.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An option token: "-h", "--name" or "--name=value" (a lone "-" is a positional argument, e.g. stdin). */
static int is_option(const char *arg) { return arg[0] == '-' && arg[1] != 0; }

enum { UNKNOWN = -1, SET = -2 };  /* find_option's answers besides an index into spec->options */

/* The option `arg` names (up to a '='). */
static int find_option(const cli_spec *spec, const char *arg) {
    size_t len = strcspn(arg, "=");
    if (spec->config && len == 5 && strncmp(arg, "--set", 5) == 0) return SET;
    for (int i = 0; i < CLI_MAX_OPTIONS && spec->options[i].name; i++)
        if (strlen(spec->options[i].name) == len && strncmp(arg, spec->options[i].name, len) == 0) return i;
    return UNKNOWN;
}

static int takes_value(const cli_spec *spec, int option) {
    return option == SET || (option >= 0 && spec->options[option].kind != CLI_SWITCH);
}

/* Prints the usage if --help or -h is among the options. */
static int help(const cli_spec *spec, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) break;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(spec->usage, stdout);
            return 1;
        }
        if (is_option(arg) && !strchr(arg, '=') && takes_value(spec, find_option(spec, arg))) i++;
    }
    return 0;
}

int cli_parse(const cli_spec *spec, int argc, char **argv, cli_args *a) {
    const char *cmd = spec->cmd, *noun = spec->config ? "config file" : spec->positional;
    if (help(spec, argc, argv)) return 0;
    if (spec->mpi) ds_dist_init();
    size_t n = argc > 0 ? (size_t)argc : 1;
    *a = (cli_args){.spec = spec};
    a->positional = calloc(n, sizeof *a->positional);
    a->sets = calloc(n, sizeof *a->sets);
    a->given_option = calloc(n, sizeof *a->given_option);
    a->given_value = calloc(n, sizeof *a->given_value);
    if (!a->positional || !a->sets || !a->given_option || !a->given_value) ds_die(DS_EXIT_FAIL, "out of memory");
    int options_end = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_end && strcmp(arg, "--") == 0) { options_end = 1; continue; }
        if (options_end || !is_option(arg)) {
            if (!noun) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: unexpected argument '%s' (see --help)", cmd, arg);
            if (!spec->any_positionals && a->n_positional == 1)
                ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: more than one %s ('%s', '%s')", cmd, noun, a->positional[0],
                                  arg);
            a->positional[a->n_positional++] = arg;
            continue;
        }
        int option = find_option(spec, arg);
        const char *eq = strchr(arg, '=');
        int name_len = (int)(eq ? eq - arg : (ptrdiff_t)strlen(arg));
        if (option == UNKNOWN)
            ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: unknown option '%.*s' (see --help)", cmd, name_len, arg);
        const char *value = NULL;
        if (!takes_value(spec, option)) {
            if (eq) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %.*s takes no value (see --help)", cmd, name_len, arg);
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else if (option == SET) {
            ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: --set needs section.key=value", cmd);
        } else {
            ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s needs a value (see --help)", cmd, arg);
        }
        if (option == SET) {
            a->sets[a->n_sets++] = (char *)value;
            continue;
        }
        a->given_option[a->n_given] = option;
        a->given_value[a->n_given++] = value;
    }
    if (spec->config) a->config = cli_required_positional(a, "CONFIG");
    for (int i = 0; i < CLI_MAX_OPTIONS && spec->options[i].name; i++)
        if (spec->options[i].kind == CLI_REQUIRED && !cli_value(a, spec->options[i].name))
            ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: missing %s (see --help)", cmd, spec->options[i].name);
    return 1;
}

void cli_args_free(cli_args *a) {
    free(a->positional);
    free(a->sets);
    free(a->given_option);
    free(a->given_value);
    *a = (cli_args){0};
}

/* The spec's index of `name`; a name the spec does not list is a bug in the command. */
static int option_index(const cli_args *a, const char *name) {
    int option = find_option(a->spec, name);
    if (option < 0 || strchr(name, '='))
        ds_die(DS_EXIT_FAIL, "%s: internal error: option %s is not in the command's table", a->spec->cmd, name);
    return option;
}

int cli_count(const cli_args *a, const char *name) {
    int option = option_index(a, name), count = 0;
    for (int i = 0; i < a->n_given; i++) count += a->given_option[i] == option;
    return count;
}

const char *cli_nth(const cli_args *a, const char *name, int n) {
    int option = option_index(a, name);
    for (int i = 0; i < a->n_given; i++)
        if (a->given_option[i] == option && n-- == 0) return a->given_value[i];
    return NULL;
}

const char *cli_value(const cli_args *a, const char *name) {
    int count = cli_count(a, name);
    return count ? cli_nth(a, name, count - 1) : NULL;
}

const char *cli_string(const cli_args *a, const char *name, const char *absent) {
    const char *value = cli_value(a, name);
    return value ? value : absent;
}

const char *cli_required_positional(const cli_args *a, const char *what) {
    if (a->n_positional == 0) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: missing %s (see --help)", a->spec->cmd, what);
    return a->positional[0];
}

void cli_load_config(const cli_args *a, ds_config *cfg) { ds_config_load(cfg, a->config, a->n_sets, a->sets); }

double cli_parse_number(const char *cmd, const char *flag, const char *text, double lo, double hi) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || isnan(v))
        ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s '%s' is not a number", cmd, flag, text);
    if (v < lo || v > hi) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s %s must be in [%g, %g]", cmd, flag, text, lo,
                                            hi);
    return v;
}

int64_t cli_parse_int(const char *cmd, const char *flag, const char *text, int64_t lo, int64_t hi) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s '%s' is not an integer", cmd, flag, text);
    if (errno == ERANGE || v < lo || v > hi)
        ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s %s must be in [%" PRId64 ", %" PRId64 "]", cmd, flag, text, lo,
                          hi);
    return v;
}

uint64_t cli_parse_seed(const char *cmd, const char *flag, const char *text) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end || strchr(text, '-') || errno == ERANGE)
        ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s '%s' is not an integer in [0, 2^64)", cmd, flag, text);
    return v;
}

int cli_parse_int_list(const char *cmd, const char *flag, const char *text, int lo, int hi, int *out, int n, int cap) {
    char item[64];
    for (const char *p = text;; p++) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item || n == cap)
            ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s '%s' is not a list of at most %d integers, comma-separated",
                              cmd, flag, text, cap);
        memcpy(item, p, len);
        item[len] = 0;
        out[n++] = (int)cli_parse_int(cmd, flag, item, lo, hi);
        p += len;
        if (!*p) return n;
    }
}

double cli_number(const cli_args *a, const char *name, double lo, double hi, double absent) {
    const char *text = cli_value(a, name);
    return text ? cli_parse_number(a->spec->cmd, name, text, lo, hi) : absent;
}

int64_t cli_int(const cli_args *a, const char *name, int64_t lo, int64_t hi, int64_t absent) {
    const char *text = cli_value(a, name);
    return text ? cli_parse_int(a->spec->cmd, name, text, lo, hi) : absent;
}

uint64_t cli_seed(const cli_args *a, const char *name, uint64_t absent) {
    const char *text = cli_value(a, name);
    return text ? cli_parse_seed(a->spec->cmd, name, text) : absent;
}

ds_state_file_format cli_state_format(const cli_args *a, const char *path) {
    ds_state_file_format f;
    char why[DS_PATH_MAX + 256];
    if (ds_state_file_format_of(cli_value(a, "--format"), path, &f, why, sizeof why) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: --format: %s", a->spec->cmd, why);
    return f;
}
