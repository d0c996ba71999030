/* `build-contexts`: labelled contexts (format: include/dreamstate/states.h) cut out of text a Debian
 * system has: fortunes by category, C headers, Python modules, shell scripts, licences, man pages. */
#include "dreamstate/states.h"
#include "dreamstate/common.h"
#include "jsonl.h"
#include "text_files.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- sources */

#define FORTUNES_DIR "/usr/share/games/fortunes"
/* Large fortune files of distinct character (each has 600-1250 entries). */
static const char *const fortune_categories[] = {"computers", "definitions", "people", "politics", "science",
                                                 "songs-poems"};
enum { N_FORTUNE_CATEGORIES = sizeof fortune_categories / sizeof *fortune_categories };

static int keep_h(const char *name) { return ds_has_suffix(name, ".h"); }
static int keep_py(const char *name) { return ds_has_suffix(name, ".py"); }
static int keep_gz(const char *name) { return ds_has_suffix(name, ".gz"); }

/* A script whose "#!" line runs sh, bash or dash (directly or through env). */
static int is_shell_script(const char *path) {
    char head[256];
    int fd = ds_open_input(path, head, sizeof head);
    if (fd < 0) return 0;
    ssize_t n = read(fd, head, sizeof head - 1);
    close(fd);
    if (n < 3 || head[0] != '#' || head[1] != '!') return 0;
    head[n] = 0;
    head[strcspn(head, "\n")] = 0;
    char *cmd = head + 2 + strspn(head + 2, " \t");
    char *end = cmd + strcspn(cmd, " \t");
    char *base = end;
    while (base > cmd && base[-1] != '/') base--;
    if ((size_t)(end - base) == 3 && strncmp(base, "env", 3) == 0) {
        base = end + strspn(end, " \t");
        end = base + strcspn(base, " \t");
    }
    size_t k = (size_t)(end - base);
    return (k == 2 && !strncmp(base, "sh", 2)) || (k == 4 && !strncmp(base, "bash", 4)) ||
           (k == 4 && !strncmp(base, "dash", 4));
}

typedef struct source {
    const char *name;                  /* for --sources */
    const char *label;                 /* NULL: fortunes, one label per category */
    const char *dirs[3];               /* glob patterns of directories, listed without recursion */
    int (*keep)(const char *name);     /* by file name; NULL = all */
    int (*probe)(const char *path);    /* by content; NULL = all */
    const char *package;               /* what provides it on Debian */
} source;

static const source sources[] = {
    {"fortunes", NULL, {FORTUNES_DIR}, NULL, NULL, "fortunes"},
    {"c-headers", "c-header", {"/usr/include"}, keep_h, NULL, "libc6-dev"},
    {"python", "python", {"/usr/lib/python3.*"}, keep_py, NULL, "libpython3-stdlib"},
    {"shell", "shell", {"/usr/bin", "/usr/sbin", "/etc/init.d"}, NULL, is_shell_script, "(any: /usr/bin scripts)"},
    {"licenses", "license", {"/usr/share/common-licenses"}, NULL, NULL, "base-files"},
    {"man", "man", {"/usr/share/man/man1"}, keep_gz, NULL, "man pages (dpkg must not exclude /usr/share/man)"},
};
enum { N_SOURCES = sizeof sources / sizeof *sources };

/* ---------------------------------------------------------------- documents */

typedef struct doc {
    char *id;              /* file path, or "PATH#k" for the k-th fortune of a file */
    char *text;            /* fortunes: the entry; files: NULL until read */
    size_t len;
    uint64_t hash, order;  /* hash of id; seeded position in the order of use */
} doc;

typedef struct label_docs {
    char label[DS_LABEL_MAX];
    const source *src;
    doc *docs;
    size_t n, cap;
} label_docs;

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static void add_doc(label_docs *ld, const char *id, const char *text, size_t len) {
    if (ld->n == ld->cap) {
        ld->cap = ld->cap ? 2 * ld->cap : 256;
        ld->docs = realloc(ld->docs, ld->cap * sizeof *ld->docs);
        if (!ld->docs) ds_die(DS_EXIT_FAIL, "out of memory listing documents");
    }
    doc *d = &ld->docs[ld->n++];
    d->id = strdup(id);
    d->text = text ? memcpy(malloc(len + 1), text, len) : NULL;
    d->len = len;
    d->hash = fnv1a64(id);
}

/* Each '%'-line separated entry of a fortune file is one document. */
static void list_fortunes(label_docs *ld, const char *category) {
    char path[512], id[600], why[256];
    snprintf(path, sizeof path, "%s/%s", FORTUNES_DIR, category);
    uint8_t *data;
    size_t len;
    if (ds_read_input(path, &data, &len, why, sizeof why) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "build-contexts: source 'fortunes': %s: %s (install package fortunes)", path, why);
    size_t start = 0, line = 0;
    int k = 0;
    while (line < len) {
        const uint8_t *nl = memchr(data + line, '\n', len - line);
        size_t next = nl ? (size_t)(nl - data) + 1 : len;
        if (next - line == 2 && data[line] == '%') {
            snprintf(id, sizeof id, "%s#%d", path, k++);
            add_doc(ld, id, (const char *)data + start, line - start);
            start = next;
        }
        line = next;
    }
    snprintf(id, sizeof id, "%s#%d", path, k);
    add_doc(ld, id, (const char *)data + start, len - start);
    free(data);
}

static void list_files(label_docs *ld) {
    const source *s = ld->src;
    for (int i = 0; i < 3 && s->dirs[i]; i++) {
        glob_t g;
        if (glob(s->dirs[i], GLOB_ONLYDIR, NULL, &g) != 0) continue;
        for (size_t j = 0; j < g.gl_pathc; j++) {
            ds_path_list files = {0};
            ds_walk_dir(g.gl_pathv[j], 0, s->keep, &files);
            for (size_t f = 0; f < files.n; f++) add_doc(ld, files.items[f], NULL, 0);
            ds_path_list_free(&files);
        }
        globfree(&g);
    }
}

/* ---------------------------------------------------------------- chunks */

typedef struct chunk_options {
    size_t min_bytes, max_bytes;
    int per_doc;
} chunk_options;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Cuts text into consecutive chunks of at most max_bytes, ending after a newline when there is one
 * past min_bytes, else at a UTF-8 character boundary; leading and trailing white space is dropped and
 * chunks shorter than min_bytes are skipped. Returns the count; (start, len) pairs go to out. */
static size_t cut_chunks(const char *text, size_t len, const chunk_options *o, size_t (*out)[2], size_t cap) {
    size_t n = 0, pos = 0;
    while (n < cap) {
        while (pos < len && is_space(text[pos])) pos++;
        if (pos >= len) break;
        size_t end = pos + o->max_bytes < len ? pos + o->max_bytes : len;
        if (end < len) {
            size_t cut = end;
            while (cut > pos + o->min_bytes && text[cut - 1] != '\n') cut--;
            if (text[cut - 1] == '\n' && cut > pos + o->min_bytes) {
                end = cut;
            } else {
                size_t b = end;
                while (b > pos && ((unsigned char)text[b] & 0xC0) == 0x80) b--;
                if (b > pos) end = b;  /* else not UTF-8 at all: keep the hard cut */
            }
        }
        size_t stop = end;
        while (stop > pos && is_space(text[stop - 1])) stop--;
        if (stop - pos >= o->min_bytes) { out[n][0] = pos; out[n][1] = stop - pos; n++; }
        pos = end;
    }
    return n;
}

/* Invalid UTF-8 bytes become '?', so that every chunk can be written as JSON and keeps its length. */
static void make_utf8(char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = ds_utf8_char_len((const unsigned char *)s + i, n - i);
        if (k == 0) { s[i] = '?'; k = 1; }
        i += k;
    }
}

/* ---------------------------------------------------------------- selection */

#define ORDER_STREAM 0x4354584f  /* "CTXO": the order in which documents are used */
#define SPLIT_STREAM 0x43545853  /* "CTXS": train / held-out */

enum { TRAIN, HELD };

typedef struct picked {
    int split;
    char *doc_id;
    char *text;
    size_t len;
} picked;

typedef struct selection {
    picked *items;
    size_t n, cap;
    int count[2];
    int docs[2];
    int unreadable;
} selection;

static int compare_doc_order(const void *x, const void *y) {
    const doc *a = x, *b = y;
    if (a->order != b->order) return a->order < b->order ? -1 : 1;
    return strcmp(a->id, b->id);
}

/* Walks the label's documents in a seeded order that depends only on each document's id. Every
 * document belongs to one split (by a seeded hash of its id), and gives at most per_doc chunks, spread
 * evenly over it, until both splits have their quota. */
static void select_label(label_docs *ld, uint64_t seed, double held_fraction, const int quota[2],
                         const chunk_options *co, selection *sel) {
    for (size_t i = 0; i < ld->n; i++) ld->docs[i].order = ds_rng_u64(seed, ORDER_STREAM, ld->docs[i].hash);
    qsort(ld->docs, ld->n, sizeof *ld->docs, compare_doc_order);
    size_t cap = 1 << 16;
    size_t (*chunks)[2] = malloc(cap * sizeof *chunks);
    /* A label with few documents (licences) may take more chunks of each to fill its quota. */
    size_t want = (size_t)quota[TRAIN] + (size_t)quota[HELD];
    int per_doc = ld->n && (want + ld->n - 1) / ld->n > (size_t)co->per_doc ? (int)((want + ld->n - 1) / ld->n) : co->per_doc;
    for (size_t i = 0; i < ld->n && (sel->count[TRAIN] < quota[TRAIN] || sel->count[HELD] < quota[HELD]); i++) {
        doc *d = &ld->docs[i];
        int split = held_fraction > 0 && ds_rng_uniform(seed, SPLIT_STREAM, d->hash) < held_fraction ? HELD : TRAIN;
        if (sel->count[split] >= quota[split]) continue;
        if (!d->text) {
            if (ld->src->probe && !ld->src->probe(d->id)) continue;
            uint8_t *data;
            char why[256];
            if (ds_read_input(d->id, &data, &d->len, why, sizeof why) != 0) { sel->unreadable++; continue; }
            d->text = (char *)data;
        }
        size_t n = memchr(d->text, 0, d->len) ? 0 : cut_chunks(d->text, d->len, co, chunks, cap);  /* NUL: binary */
        int used = 0;
        for (int k = 0; k < per_doc && (size_t)k < n && sel->count[split] < quota[split]; k++) {
            size_t c = n <= (size_t)per_doc ? (size_t)k : (size_t)k * n / (size_t)per_doc;
            if (sel->n == sel->cap) {
                sel->cap = sel->cap ? 2 * sel->cap : 256;
                sel->items = realloc(sel->items, sel->cap * sizeof *sel->items);
                if (!sel->items) ds_die(DS_EXIT_FAIL, "out of memory selecting contexts");
            }
            picked *p = &sel->items[sel->n++];
            p->split = split;
            p->doc_id = d->id;
            p->len = chunks[c][1];
            p->text = memcpy(malloc(p->len), d->text + chunks[c][0], p->len);
            make_utf8(p->text, p->len);
            sel->count[split]++;
            used = 1;
        }
        sel->docs[split] += used;
        free(d->text);  /* each document is visited once */
        d->text = NULL;
    }
    free(chunks);
}

/* ---------------------------------------------------------------- build-contexts */

ds_build_contexts_options ds_build_contexts_defaults(void) {
    return (ds_build_contexts_options){.held_out_fraction = 0.2, .max_per_label = 100, .chunks_per_doc = 4,
                                       .min_bytes = 64, .max_bytes = 512,
                                       .sources = "fortunes,c-headers,python,shell,licenses,man", .seed = 1234};
}

int ds_build_contexts(const ds_build_contexts_options *o) {
    const char *out = o->out, *held_out = o->held_out;
    chunk_options co = {o->min_bytes, o->max_bytes, o->chunks_per_doc};
    double fraction = held_out ? o->held_out_fraction : 0;
    int max_per_label = o->max_per_label;
    uint64_t seed = o->seed;
    if (co.max_bytes < co.min_bytes)
        ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --max-bytes %zu is below --min-bytes %zu", co.max_bytes, co.min_bytes);
    int quota[2] = {max_per_label - (int)(max_per_label * fraction + 0.5), (int)(max_per_label * fraction + 0.5)};

    /* The labels, in --sources order. */
    label_docs *labels = calloc(N_SOURCES + N_FORTUNE_CATEGORIES, sizeof *labels);
    int n_labels = 0, used[N_SOURCES] = {0};
    char *list = strdup(o->sources), *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int s = 0;
        while (s < N_SOURCES && strcmp(sources[s].name, name) != 0) s++;
        if (s == N_SOURCES)
            ds_die(DS_EXIT_BAD_INPUT, "build-contexts: unknown source '%s' (known: fortunes, c-headers, python, shell, "
                   "licenses, man)", name);
        if (used[s]++) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: source '%s' given twice", name);
        if (!sources[s].label) {
            for (int c = 0; c < N_FORTUNE_CATEGORIES; c++) {
                label_docs *ld = &labels[n_labels++];
                ld->src = &sources[s];
                snprintf(ld->label, sizeof ld->label, "fortunes/%s", fortune_categories[c]);
                list_fortunes(ld, fortune_categories[c]);
            }
        } else {
            label_docs *ld = &labels[n_labels++];
            ld->src = &sources[s];
            snprintf(ld->label, sizeof ld->label, "%s", sources[s].label);
            list_files(ld);
            if (ld->n == 0)
                ds_die(DS_EXIT_BAD_INPUT, "build-contexts: source '%s': no files in %s (provided by %s)", name,
                       sources[s].dirs[0], sources[s].package);
        }
    }
    free(list);
    if (n_labels == 0) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --sources is empty");

    selection *sel = calloc((size_t)n_labels, sizeof *sel);
    for (int l = 0; l < n_labels; l++) {
        select_label(&labels[l], seed, fraction, quota, &co, &sel[l]);
        if (sel[l].count[TRAIN] == 0)
            ds_die(DS_EXIT_BAD_INPUT, "build-contexts: label '%s': no chunk of at least %zu bytes in %zu documents",
                   labels[l].label, co.min_bytes, labels[l].n);
    }

    ds_contexts_writer *w[2] = {ds_contexts_writer_open(out), held_out ? ds_contexts_writer_open(held_out) : NULL};
    for (int l = 0; l < n_labels; l++)
        for (size_t i = 0; i < sel[l].n; i++) {
            picked *p = &sel[l].items[i];
            ds_contexts_writer_add(w[p->split], labels[l].label, p->text, p->len, p->doc_id);
        }
    ds_contexts_writer_commit(w[TRAIN]);
    if (w[HELD]) ds_contexts_writer_commit(w[HELD]);

    printf("build-contexts: %d labels, seed %llu, chunks %zu-%zu bytes, <= %d per document\n", n_labels,
           (unsigned long long)seed, co.min_bytes, co.max_bytes, co.per_doc);
    printf("  %-22s %8s %8s %10s %10s\n", "label", "train", "held-out", "docs", "docs used");
    int total[2] = {0, 0};
    for (int l = 0; l < n_labels; l++) {
        printf("  %-22s %8d %8d %10zu %10d%s\n", labels[l].label, sel[l].count[TRAIN], sel[l].count[HELD],
               labels[l].n, sel[l].docs[TRAIN] + sel[l].docs[HELD],
               sel[l].count[TRAIN] < quota[TRAIN] || sel[l].count[HELD] < quota[HELD] ? "  (short of its quota)" : "");
        if (sel[l].unreadable) printf("  %-22s %d unreadable documents skipped\n", "", sel[l].unreadable);
        total[TRAIN] += sel[l].count[TRAIN];
        total[HELD] += sel[l].count[HELD];
    }
    printf("  %-22s %8d %8d\n", "total", total[TRAIN], total[HELD]);
    printf("  -> %s%s%s\n", out, held_out ? ", " : "", held_out ? held_out : "");

    for (int l = 0; l < n_labels; l++) {
        for (size_t i = 0; i < sel[l].n; i++) free(sel[l].items[i].text);
        free(sel[l].items);
        for (size_t i = 0; i < labels[l].n; i++) { free(labels[l].docs[i].id); free(labels[l].docs[i].text); }
        free(labels[l].docs);
    }
    free(sel);
    free(labels);
    return 0;
}
