/* One run per run directory (checkpoint.h): an earlier run's files are found before a fresh start, and
 * moved aside, never deleted, when the user asks for a restart. */
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RUN_PATH 4096

/* Lines in OUT/train.jsonl; 0 when it is absent or empty (a run killed before its first step). */
static long log_lines(const char *out_dir) {
    char path[RUN_PATH + 16];
    snprintf(path, sizeof path, "%s/train.jsonl", out_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long n = 0;
    int c, last = '\n';
    while ((c = getc(f)) != EOF) {
        n += c == '\n';
        last = c;
    }
    fclose(f);
    return n + (last != '\n');
}

/* OUT without trailing slashes, then ".old-N": the first N (from 1) that does not exist yet. */
static void old_dir(const char *out_dir, char *buf, size_t len) {
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    struct stat st;
    for (int k = 1;; k++) {
        snprintf(buf, len, "%.*s.old-%d", (int)n, out_dir, k);
        if (stat(buf, &st) != 0 && errno == ENOENT) return;
    }
}

int ds_run_dir_check_fresh(const char *out_dir, const char *ckpt_dir, int restart, const char *hint) {
    int64_t *steps;
    int n = ds_ckpt_list(ckpt_dir, &steps);
    if (n < 0 && errno == ENOTDIR) ds_mkdir_p(ckpt_dir);  /* a path through a file: its one-line error, exit 2 */
    if (n < 0) ds_die(DS_EXIT_FAIL, "%s: cannot list: %s", ckpt_dir, strerror(errno));
    free(steps);
    long lines = log_lines(out_dir);
    if (n == 0 && lines == 0) return 0;
    if (restart) return 1;
    char what[2 * RUN_PATH + 128] = "", to[RUN_PATH + 32];
    if (n > 0) snprintf(what, sizeof what, "%d checkpoint(s) in %s", n, ckpt_dir);
    if (lines > 0)
        snprintf(what + strlen(what), sizeof what - strlen(what), "%s%ld line(s) in %s/train.jsonl", n > 0 ? ", " : "",
                 lines, out_dir);
    old_dir(out_dir, to, sizeof to);
    ds_die(DS_EXIT_BAD_INPUT, "%s holds an earlier run (%s); %sstart over with --set checkpoint.resume=restart (moves "
           "its files to %s/), or pick another run.out_dir", out_dir, what, hint, to);
}

static void move_file(const char *from, const char *to) {
    if (rename(from, to) != 0)
        ds_die(DS_EXIT_FAIL, "cannot move %s to %s: %s; move the earlier run's files away yourself or pick another "
               "run.out_dir", from, to, strerror(errno));
}

void ds_run_dir_move_aside(const char *out_dir, const char *ckpt_dir, char *moved_to, size_t len) {
    for (;;) {
        old_dir(out_dir, moved_to, len);
        if (mkdir(moved_to, 0777) == 0) break;
        if (errno != EEXIST) ds_die(DS_EXIT_FAIL, "%s: cannot create: %s", moved_to, strerror(errno));
    }
    char from[RUN_PATH + 64], to[RUN_PATH + 64], old_ckpt_dir[RUN_PATH + 32];
    snprintf(old_ckpt_dir, sizeof old_ckpt_dir, "%s/checkpoints", moved_to);
    int64_t *steps;
    int n = ds_ckpt_list(ckpt_dir, &steps);
    if (n < 0) ds_die(DS_EXIT_FAIL, "%s: cannot list: %s", ckpt_dir, strerror(errno));
    if (n > 0) ds_mkdir_p(old_ckpt_dir);
    for (int i = 0; i < n; i++) {
        ds_ckpt_path(from, sizeof from, ckpt_dir, steps[i]);
        ds_ckpt_path(to, sizeof to, old_ckpt_dir, steps[i]);
        move_file(from, to);
    }
    free(steps);
    static const char *const run_files[] = {"train.jsonl", "config.yaml"};
    for (int i = 0; i < 2; i++) {
        snprintf(from, sizeof from, "%s/%s", out_dir, run_files[i]);
        snprintf(to, sizeof to, "%s/%s", moved_to, run_files[i]);
        if (access(from, F_OK) == 0) move_file(from, to);
    }
}
