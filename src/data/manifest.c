/* The manifest of source documents (manifest.h): parsing and checking the pinned files. */
#include "manifest.h"
#include "dreamstate/common.h"
#include "dreamstate/states.h"
#include "text_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The manifest, embedded at build time like the World vocabulary (tokenizer.c), so that the binary
 * reads the same list whatever its working directory; the Makefile lists the file as a prerequisite. */
#define BUILTIN_MANIFEST "configs/text-manifest.tsv"
extern const char builtin_manifest[], builtin_manifest_end[];
__asm__(".pushsection .rodata\n"
        "builtin_manifest:\n"
        ".incbin \"" BUILTIN_MANIFEST "\"\n"
        "builtin_manifest_end:\n"
        ".popsection\n");

enum { F_SOURCE, F_LABEL, F_SPLIT, F_PACKAGE, F_PATH, F_SHA256, N_FIELDS };

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Why a line's fields are not an entry, or NULL. */
static const char *check_fields(char *const f[N_FIELDS], uint8_t sha[32]) {
    if (!f[F_SOURCE][0]) return "empty source";
    int corpus = strcmp(f[F_SOURCE], "corpus") == 0;
    if (corpus ? strcmp(f[F_LABEL], "-") != 0 : !ds_label_valid(f[F_LABEL]))
        return corpus ? "the corpus's label must be '-'" : "label must be 1-63 characters of [A-Za-z0-9._/+-]";
    if (strcmp(f[F_SPLIT], "file") && strcmp(f[F_SPLIT], "%") && strcmp(f[F_SPLIT], "blank"))
        return "split must be file, % or blank";
    if (!f[F_PACKAGE][0]) return "empty package";
    if (f[F_PATH][0] != '/') return "the path must be absolute";
    if (strlen(f[F_SHA256]) != 64) return "sha256 must be 64 lower-case hex digits";
    for (int i = 0; i < 64; i += 2) {
        int hi = hex_value(f[F_SHA256][i]), lo = hex_value(f[F_SHA256][i + 1]);
        if (hi < 0 || lo < 0) return "sha256 must be 64 lower-case hex digits";
        sha[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return NULL;
}

ds_manifest *ds_manifest_load(const char *path, const char *what) {
    ds_manifest *m = calloc(1, sizeof *m);
    size_t len;
    if (path) {
        uint8_t *data;
        char why[256];
        if (ds_read_file(path, &data, &len, why, sizeof why) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: manifest %s: %s", what, path, why);
        m->text = realloc(data, len + 1);
        snprintf(m->name, sizeof m->name, "%s", path);
    } else {
        len = (size_t)(builtin_manifest_end - builtin_manifest);
        m->text = memcpy(malloc(len + 1), builtin_manifest, len);
        snprintf(m->name, sizeof m->name, "%s", BUILTIN_MANIFEST);
    }
    m->text[len] = 0;
    if (memchr(m->text, 0, len)) ds_die(DS_EXIT_BAD_INPUT, "%s: %s: contains a NUL byte", what, m->name);
    size_t cap = 0;
    char *line = m->text;
    for (int number = 1; line < m->text + len; number++) {
        char *end = strchr(line, '\n');
        if (end) *end = 0;
        char *next = end ? end + 1 : m->text + len;
        if (line[0] && line[0] != '#') {
            char *f[N_FIELDS + 1];
            int n = 0;
            for (char *p = line; p && n <= N_FIELDS; n++) {
                f[n] = p;
                p = strchr(p, '\t');
                if (p) *p++ = 0;
            }
            if (n != N_FIELDS)
                ds_die(DS_EXIT_BAD_INPUT, "%s: %s:%d: %s tab-separated fields, not 6 (source label split package "
                       "path sha256)", what, m->name, number, n < N_FIELDS ? "fewer" : "more");
            if (m->n == cap) {
                cap = cap ? 2 * cap : 1024;
                m->items = realloc(m->items, cap * sizeof *m->items);
                if (!m->items) ds_die(DS_EXIT_FAIL, "out of memory reading the manifest");
            }
            ds_manifest_entry *e = &m->items[m->n];
            const char *why = check_fields(f, e->sha256);
            if (why) ds_die(DS_EXIT_BAD_INPUT, "%s: %s:%d: %s", what, m->name, number, why);
            e->source = f[F_SOURCE];
            e->label = f[F_LABEL];
            e->split = f[F_SPLIT];
            e->package = f[F_PACKAGE];
            e->path = f[F_PATH];
            e->line = number;
            for (size_t i = 0; i < m->n; i++)
                if (strcmp(m->items[i].path, e->path) == 0 && strcmp(m->items[i].source, e->source) == 0)
                    ds_die(DS_EXIT_BAD_INPUT, "%s: %s:%d: %s is already listed for source '%s' (line %d)", what,
                           m->name, number, e->path, e->source, m->items[i].line);
            m->n++;
        }
        line = next;
    }
    return m;
}

void ds_manifest_free(ds_manifest *m) {
    if (!m) return;
    free(m->items);
    free(m->text);
    free(m);
}

void ds_manifest_verify(const ds_manifest *m, const ds_manifest_entry *e, const char *what) {
    uint8_t *data, sha[32];
    size_t len;
    char why[256];
    if (ds_read_file(e->path, &data, &len, why, sizeof why) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: %s: %s (package %s, %s:%d); install it with 'make deps'", what, e->path, why,
               e->package, m->name, e->line);
    ds_sha256(data, len, sha);
    free(data);
    if (memcmp(sha, e->sha256, 32) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: %s: not the file pinned by %s:%d (sha256 differs; package %s changed it?); "
               "reinstall that version, or regenerate the manifest with src/tools/text_manifest.py", what, e->path,
               m->name, e->line, e->package);
}

const char *ds_manifest_separator(const ds_manifest_entry *e) {
    return strcmp(e->split, "%") == 0 ? "%" : strcmp(e->split, "blank") == 0 ? "" : NULL;
}
