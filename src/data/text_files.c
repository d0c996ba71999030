/* Reading text inputs for prepare-data, the default corpus and the contexts builder (text_files.h). */
#include "text_files.h"
#include "dreamstate/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void ds_path_list_add(ds_path_list *l, const char *path) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->items = realloc(l->items, l->cap * sizeof *l->items);
        if (!l->items) ds_die(DS_EXIT_FAIL, "out of memory listing input files");
    }
    l->items[l->n++] = strdup(path);
}

void ds_path_list_free(ds_path_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ds_has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void ds_walk_dir(const char *dir, int recursive, int (*keep)(const char *name), ds_path_list *out) {
    DIR *d = opendir(dir);
    if (!d) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot read directory: %s", dir, strerror(errno));
    ds_path_list names = {0};
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') ds_path_list_add(&names, e->d_name);
    closedir(d);
    qsort(names.items, names.n, sizeof *names.items, compare_strings);
    char path[4096];
    for (size_t i = 0; i < names.n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names.items[i]);
        struct stat st;
        if (lstat(path, &st) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode) && recursive) ds_walk_dir(path, recursive, keep, out);
        else if (S_ISREG(st.st_mode) && (!keep || keep(names.items[i]))) ds_path_list_add(out, path);
    }
    ds_path_list_free(&names);
}

/* Reads all of fd into a malloc'ed buffer. */
static int read_fd(int fd, uint8_t **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) ds_die(DS_EXIT_FAIL, "out of memory reading input");
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { free(buf); return -1; }
        if (got == 0) break;
        n += (size_t)got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    *data = buf;
    *len = n;
    return 0;
}

/* An opened .gz file through `gzip -dc` reading it as its standard input. */
static int read_gzip(int fd, uint8_t **data, size_t *len, char *why, size_t why_len) {
    int pipefd[2];
    if (pipe(pipefd) != 0) { snprintf(why, why_len, "pipe: %s", strerror(errno)); return -1; }
    pid_t pid = fork();
    if (pid < 0) { snprintf(why, why_len, "fork: %s", strerror(errno)); return -1; }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(fd, STDIN_FILENO);
        dup2(pipefd[1], STDOUT_FILENO);
        if (devnull >= 0) dup2(devnull, STDERR_FILENO);  /* our own one-line reason replaces gzip's */
        close(pipefd[0]);
        close(pipefd[1]);
        execlp("gzip", "gzip", "-dc", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    int rc = read_fd(pipefd[0], data, len);
    close(pipefd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (rc == 0) free(*data);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) snprintf(why, why_len, "cannot run gzip -dc");
    else snprintf(why, why_len, "gzip -dc failed (not a valid .gz file?)");
    return -1;
}

static int read_input(const char *path, int decompress, uint8_t **data, size_t *len, char *why, size_t why_len) {
    int fd = ds_open_input(path, why, why_len);
    if (fd < 0) return -1;
    int rc = 0;
    if (decompress && ds_has_suffix(path, ".gz")) rc = read_gzip(fd, data, len, why, why_len);
    else if (read_fd(fd, data, len) != 0) rc = -1, snprintf(why, why_len, "cannot read: %s", strerror(errno));
    close(fd);
    return rc;
}

int ds_read_input(const char *path, uint8_t **data, size_t *len, char *why, size_t why_len) {
    return read_input(path, 1, data, len, why, why_len);
}

int ds_read_file(const char *path, uint8_t **data, size_t *len, char *why, size_t why_len) {
    return read_input(path, 0, data, len, why, why_len);
}

void ds_split_text(const uint8_t *text, size_t n, const char *separator,
                   void (*emit)(void *ctx, const uint8_t *doc, size_t len), void *ctx) {
    if (!separator) { emit(ctx, text, n); return; }
    size_t sep_len = strlen(separator), doc_start = 0, line = 0;
    while (line < n) {
        const uint8_t *nl = memchr(text + line, '\n', n - line);
        size_t line_end = nl ? (size_t)(nl - text) : n, next = nl ? line_end + 1 : n;
        size_t content_end = line_end > line && text[line_end - 1] == '\r' ? line_end - 1 : line_end;
        if (content_end - line == sep_len && memcmp(text + line, separator, sep_len) == 0) {
            emit(ctx, text + doc_start, line - doc_start);
            doc_start = next;
        }
        line = next;
    }
    emit(ctx, text + doc_start, n - doc_start);
}
