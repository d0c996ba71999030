/* Labelled contexts (format: include/dreamstate/states.h): labels, and the strict reader and the
 * writer of contexts files. */
#include "dreamstate/states.h"
#include "dreamstate/common.h"
#include "jsonl.h"
#include "text_files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- labels */

int ds_label_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= DS_LABEL_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._/+-", c)))
            return 0;
    }
    return 1;
}

int ds_label_lookup(const char *where, const char *name, int n, char *const *names) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    char known[1024] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof known - 80; i++)
        used += snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", names[i]);
    if (used >= sizeof known - 80) snprintf(known + used, sizeof known - used, ", ...");
    ds_die(DS_EXIT_BAD_INPUT, "%s%sunknown label '%s' (known: %s)", where ? where : "", where ? ": " : "", name,
           n ? known : "none");
}

void ds_label_file_name(const char *label, char *out, size_t len) {
    snprintf(out, len, "%s", label);
    for (char *p = out; *p; p++)
        if (*p == '/') *p = '_';
}

/* ---------------------------------------------------------------- reader */

enum { KEY_LABEL, KEY_TEXT, KEY_DOC, N_KEYS };
static const char *const key_names[N_KEYS] = {"label", "text", "doc"};
static const ds_jsonl_keys context_keys = {.n = N_KEYS, .n_required = 2, .names = key_names};  /* label, text */

/* One line: the object's strings go to a, their offsets to off[] (-1 = absent); the label must be
 * valid and the text non-empty. */
static int parse_line(const char *line, size_t len, ds_text_arena *a, int64_t off[N_KEYS], char *why, size_t why_len) {
    if (ds_jsonl_parse_line(line, len, &context_keys, a, off, NULL, why, why_len) != 0) return -1;
    const char *label = a->data + off[KEY_LABEL];
    if (!ds_label_valid(label))
        snprintf(why, why_len, "column %zu: label '%s' must be 1-%d characters of [A-Za-z0-9._/+-]", len + 1, label,
                 DS_LABEL_MAX - 1);
    else if (a->data[off[KEY_TEXT]] == 0)
        snprintf(why, why_len, "column %zu: empty \"text\"", len + 1);
    else
        return 0;
    return -1;
}

static int compare_strings(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

ds_contexts *ds_contexts_load(const char *path, int n_labels, char *const *labels) {
    uint8_t *data;
    size_t len;
    char why[512];
    if (ds_read_input(path, &data, &len, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", path, why);
    if (len == 0) ds_die(DS_EXIT_BAD_INPUT, "%s: no contexts (empty file)", path);
    ds_text_arena a = {0};
    int64_t n = 0, cap = 0, (*offs)[N_KEYS] = NULL;
    size_t pos = 0;
    for (int64_t line = 1; pos < len; line++) {
        const char *begin = (const char *)data + pos;
        const char *nl = memchr(begin, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - begin) : len - pos;
        pos += line_len + (nl != NULL);
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            offs = realloc(offs, (size_t)cap * sizeof *offs);
            if (!offs) ds_die(DS_EXIT_FAIL, "out of memory reading contexts");
        }
        if (parse_line(begin, line_len, &a, offs[n], why, sizeof why) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s:%lld: %s", path, (long long)line, why);
        if (++n > INT32_MAX) ds_die(DS_EXIT_BAD_INPUT, "%s: more than %d contexts", path, INT32_MAX);
    }
    free(data);

    ds_contexts *ctx = calloc(1, sizeof *ctx);
    ctx->n = n;
    ctx->arena = a.data;
    ctx->items = calloc((size_t)n, sizeof *ctx->items);
    if (labels) {
        ctx->n_labels = n_labels;
        ctx->labels = calloc((size_t)n_labels, sizeof(char *));
        for (int i = 0; i < n_labels; i++) ctx->labels[i] = strdup(labels[i]);
    } else {  /* the sorted distinct labels */
        char **all = malloc((size_t)n * sizeof(char *));
        for (int64_t i = 0; i < n; i++) all[i] = a.data + offs[i][KEY_LABEL];
        qsort(all, (size_t)n, sizeof *all, compare_strings);
        ctx->labels = malloc((size_t)n * sizeof(char *));
        for (int64_t i = 0; i < n; i++)
            if (i == 0 || strcmp(all[i], all[i - 1]) != 0) ctx->labels[ctx->n_labels++] = strdup(all[i]);
        free(all);
    }
    for (int64_t i = 0; i < n; i++) {
        ds_context *it = &ctx->items[i];
        const char *label = a.data + offs[i][KEY_LABEL];
        if (labels) {
            char where[DS_PATH_MAX + 32];
            snprintf(where, sizeof where, "%s:%lld", path, (long long)i + 1);
            it->label = ds_label_lookup(where, label, ctx->n_labels, ctx->labels);
        } else {
            char **hit = bsearch(&label, ctx->labels, (size_t)ctx->n_labels, sizeof(char *), compare_strings);
            it->label = (int)(hit - ctx->labels);
        }
        it->text = a.data + offs[i][KEY_TEXT];
        it->len = strlen(it->text);
        it->doc = offs[i][KEY_DOC] >= 0 ? a.data + offs[i][KEY_DOC] : "";
    }
    free(offs);
    return ctx;
}

void ds_contexts_free(ds_contexts *c) {
    if (!c) return;
    for (int i = 0; i < c->n_labels; i++) free(c->labels[i]);
    free(c->labels);
    free(c->items);
    free(c->arena);
    free(c);
}

/* ---------------------------------------------------------------- writer */

struct ds_contexts_writer {
    ds_atomic_file af;
};

ds_contexts_writer *ds_contexts_writer_open(const char *path) {
    ds_contexts_writer *w = calloc(1, sizeof *w);
    if (ds_atomic_open(&w->af, path) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot create: %s", path, strerror(errno));
    return w;
}

void ds_contexts_writer_add(ds_contexts_writer *w, const char *label, const char *text, size_t len, const char *doc) {
    const char *why = !ds_label_valid(label)                   ? "label must be 1-63 characters of [A-Za-z0-9._/+-]"
                      : len == 0                                ? "empty text"
                      : memchr(text, 0, len)                    ? "text contains a NUL byte"
                      : !ds_utf8_valid(text, len)               ? "text is not valid UTF-8"
                      : doc && !ds_utf8_valid(doc, strlen(doc)) ? "doc is not valid UTF-8"
                                                                : NULL;
    if (why) {
        ds_atomic_abort(&w->af);
        ds_die(DS_EXIT_BAD_INPUT, "%s: context with label '%s': %s", w->af.path, label, why);
    }
    static const char *const keys[3] = {"label", "doc", "text"};
    const char *values[3] = {label, doc, text};
    size_t lens[3] = {strlen(label), doc ? strlen(doc) : 0, len};
    ds_jsonl_write_line(w->af.fp, 3, keys, values, lens);
}

void ds_contexts_writer_commit(ds_contexts_writer *w) {
    if (ds_atomic_commit(&w->af) != 0)
        ds_die(DS_EXIT_FAIL, "%s: write failed: %s", w->af.path, strerror(errno));
    free(w);
}

void ds_contexts_writer_abort(ds_contexts_writer *w) {
    ds_atomic_abort(&w->af);
    free(w);
}
