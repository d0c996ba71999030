/* `build-contexts`: labelled contexts (format: include/dreamstate/states.h) cut out of the text files the
 * manifest of source documents lists (manifest.h: fortunes by category, C headers, Python modules,
 * shell scripts, licences, man pages, ...), each checked against its sha256 before anything is read,
 * so the same contexts come out on every machine. */
#include "dreamstate/states.h"
#include "dreamstate/common.h"
#include "jsonl.h"
#include "manifest.h"
#include "text_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WHAT "build-contexts"

/* ---------------------------------------------------------------- documents */

typedef struct doc {
    char *id;              /* file path, or "PATH#k" for the k-th entry (fortune, paragraph) of a file */
    char *text;            /* entries: the entry; files: NULL until read */
    size_t len;
    uint64_t hash, order;  /* hash of id; seeded position in the order of use */
} doc;

typedef struct label_docs {
    char label[DS_LABEL_MAX];
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

typedef struct entry_list {
    label_docs *ld;
    const char *path;
    int k;
} entry_list;

static void add_entry(void *ctx, const uint8_t *text, size_t len) {
    entry_list *el = ctx;
    char id[4200];
    snprintf(id, sizeof id, "%s#%d", el->path, el->k++);
    add_doc(el->ld, id, (const char *)text, len);
}

/* A manifest file's documents: the file (read when used), or each of its entries, "PATH#k". */
static void list_documents(label_docs *ld, const ds_manifest_entry *e) {
    const char *separator = ds_manifest_separator(e);
    if (!separator) { add_doc(ld, e->path, NULL, 0); return; }
    uint8_t *data;
    size_t len;
    char why[256];
    if (ds_read_input(e->path, &data, &len, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, WHAT ": %s: %s", e->path, why);
    entry_list el = {ld, e->path, 0};
    ds_split_text(data, len, separator, add_entry, &el);
    free(data);
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
            uint8_t *data;
            char why[256];
            if (ds_read_input(d->id, &data, &d->len, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, WHAT ": %s: %s", d->id, why);
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

/* ---------------------------------------------------------------- extra contexts */

/* The records of a hand-written contexts file (--extra-contexts), every one used. Each label's distinct
 * documents ("doc"; a record without one is its own document, FILE#LINE) go in a seeded order (by the
 * hash of the doc), and the first round(D * fraction) of its D documents are held out, so that every
 * label with at least two documents gets both splits and a document never straddles them. */
typedef struct extra_label {
    char label[DS_LABEL_MAX];
    int count[2], docs[2];
} extra_label;

typedef struct extra_doc {
    const char *id;
    int label;
    uint64_t order;
    int split;
} extra_doc;

static int compare_extra_doc(const void *x, const void *y) {
    const extra_doc *a = x, *b = y;
    if (a->label != b->label) return a->label < b->label ? -1 : 1;
    if (a->order != b->order) return a->order < b->order ? -1 : 1;
    return strcmp(a->id, b->id);
}

/* Split (TRAIN or HELD) of each record of ctx into split[]; per-label counts into labels[ctx->n_labels]. */
static void split_extra(const ds_contexts *ctx, char **ids, uint64_t seed, double fraction, int *split,
                        extra_label *labels) {
    extra_doc *docs = calloc((size_t)ctx->n + 1, sizeof *docs);
    int64_t n_docs = 0;
    for (int64_t i = 0; i < ctx->n; i++) {   /* distinct (label, doc) pairs; files are small */
        int64_t j = 0;
        while (j < n_docs && !(docs[j].label == ctx->items[i].label && strcmp(docs[j].id, ids[i]) == 0)) j++;
        if (j == n_docs) docs[n_docs++] = (extra_doc){ids[i], ctx->items[i].label, ds_rng_u64(seed, SPLIT_STREAM, fnv1a64(ids[i])), TRAIN};
    }
    qsort(docs, (size_t)n_docs, sizeof *docs, compare_extra_doc);
    for (int64_t a = 0; a < n_docs;) {
        int64_t b = a;
        while (b < n_docs && docs[b].label == docs[a].label) b++;
        int64_t held = (int64_t)((double)(b - a) * fraction + 0.5);
        for (int64_t j = a; j < b; j++) {
            docs[j].split = j - a < held ? HELD : TRAIN;
            labels[docs[j].label].docs[docs[j].split]++;
        }
        a = b;
    }
    for (int64_t i = 0; i < ctx->n; i++) {
        int64_t j = 0;
        while (!(docs[j].label == ctx->items[i].label && strcmp(docs[j].id, ids[i]) == 0)) j++;
        split[i] = docs[j].split;
        labels[ctx->items[i].label].count[split[i]]++;
    }
    free(docs);
}

/* ---------------------------------------------------------------- build-contexts */

ds_build_contexts_options ds_build_contexts_defaults(void) {
    return (ds_build_contexts_options){.held_out_fraction = 0.2, .max_per_label = 100, .chunks_per_doc = 4,
                                       .min_bytes = 64, .max_bytes = 512,
                                       .seed = 1234};
}

int ds_build_contexts(const ds_build_contexts_options *o) {
    const char *out = o->out, *held_out = o->held_out;
    chunk_options co = {o->min_bytes, o->max_bytes, o->chunks_per_doc};
    double fraction = held_out ? o->held_out_fraction : 0;
    int max_per_label = o->max_per_label;
    uint64_t seed = o->seed;
    if (co.max_bytes < co.min_bytes)
        ds_die(DS_EXIT_BAD_INPUT, WHAT ": --max-bytes %zu is below --min-bytes %zu", co.max_bytes, co.min_bytes);
    int quota[2] = {max_per_label - (int)(max_per_label * fraction + 0.5), (int)(max_per_label * fraction + 0.5)};

    /* The manifest's sources (but the corpus's), in its order; those asked for, in --sources order. */
    ds_manifest *m = ds_manifest_load(o->manifest, WHAT);
    const char **known = calloc(m->n + 1, sizeof *known), **wanted = calloc(m->n + 1, sizeof *wanted);
    int n_known = 0, n_wanted = 0;
    char known_list[1024] = "";
    for (size_t i = 0; i < m->n; i++) {
        const char *source = m->items[i].source;
        int k = 0;
        while (k < n_known && strcmp(known[k], source) != 0) k++;
        if (k == n_known && strcmp(source, "corpus") != 0) {
            known[n_known++] = source;
            size_t used = strlen(known_list);
            if (used < sizeof known_list - 80) snprintf(known_list + used, sizeof known_list - used, "%s%s", used ? ", " : "", source);
        }
    }
    int no_sources = o->extra_contexts && o->sources && strcmp(o->sources, "none") == 0;
    char *list = strdup(o->sources && !no_sources ? o->sources : ""), *save = NULL;
    if (!o->sources) memcpy(wanted, known, (size_t)n_known * sizeof *known), n_wanted = n_known;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < n_known && strcmp(known[k], name) != 0) k++;
        if (k == n_known) ds_die(DS_EXIT_BAD_INPUT, WHAT ": unknown source '%s' (known: %s)", name, known_list);
        for (int j = 0; j < n_wanted; j++)
            if (wanted[j] == known[k]) ds_die(DS_EXIT_BAD_INPUT, WHAT ": source '%s' given twice", name);
        wanted[n_wanted++] = known[k];
    }
    if (n_wanted == 0 && !no_sources) ds_die(DS_EXIT_BAD_INPUT, WHAT ": --sources is empty");

    /* --extra-contexts: read and split before anything is written */
    ds_contexts *extra = o->extra_contexts ? ds_contexts_load(o->extra_contexts, 0, NULL) : NULL;
    char **extra_ids = NULL;
    int *extra_split = NULL;
    extra_label *extra_labels = NULL;
    if (extra) {
        extra_ids = calloc((size_t)extra->n, sizeof *extra_ids);
        extra_split = calloc((size_t)extra->n, sizeof *extra_split);
        extra_labels = calloc((size_t)extra->n_labels, sizeof *extra_labels);
        for (int l = 0; l < extra->n_labels; l++) snprintf(extra_labels[l].label, DS_LABEL_MAX, "%s", extra->labels[l]);
        for (int64_t i = 0; i < extra->n; i++) {
            char id[DS_PATH_MAX + 32];
            snprintf(id, sizeof id, "%s#%lld", o->extra_contexts, (long long)i + 1);
            extra_ids[i] = strdup(extra->items[i].doc[0] ? extra->items[i].doc : id);
        }
        split_extra(extra, extra_ids, seed, fraction, extra_split, extra_labels);
        for (int l = 0; l < extra->n_labels; l++)
            if (extra_labels[l].count[TRAIN] == 0)
                ds_die(DS_EXIT_BAD_INPUT, WHAT ": %s: label '%s' has one document, which is held out; give it more "
                       "documents (\"doc\") or a lower --held-out-fraction", o->extra_contexts, extra->labels[l]);
    }

    /* Every file is checked before any is used; then the labels, in order of first appearance. */
    for (int j = 0; j < n_wanted; j++)
        for (size_t i = 0; i < m->n; i++)
            if (strcmp(m->items[i].source, wanted[j]) == 0)
                ds_manifest_verify(m, &m->items[i], WHAT);
    label_docs *labels = calloc(m->n, sizeof *labels);
    int n_labels = 0;
    for (int j = 0; j < n_wanted; j++)
        for (size_t i = 0; i < m->n; i++) {
            const ds_manifest_entry *e = &m->items[i];
            if (strcmp(e->source, wanted[j]) != 0) continue;
            int l = 0;
            while (l < n_labels && strcmp(labels[l].label, e->label) != 0) l++;
            if (l == n_labels) snprintf(labels[n_labels++].label, DS_LABEL_MAX, "%s", e->label);
            list_documents(&labels[l], e);
        }
    free(list);
    free(known);
    free(wanted);

    selection *sel = calloc((size_t)n_labels, sizeof *sel);
    for (int l = 0; l < n_labels; l++) {
        select_label(&labels[l], seed, fraction, quota, &co, &sel[l]);
        if (sel[l].count[TRAIN] == 0)
            ds_die(DS_EXIT_BAD_INPUT, WHAT ": label '%s': no chunk of at least %zu bytes in %zu documents",
                   labels[l].label, co.min_bytes, labels[l].n);
    }

    ds_contexts_writer *w[2] = {ds_contexts_writer_open(out), held_out ? ds_contexts_writer_open(held_out) : NULL};
    for (int l = 0; l < n_labels; l++)
        for (size_t i = 0; i < sel[l].n; i++) {
            picked *p = &sel[l].items[i];
            ds_contexts_writer_add(w[p->split], labels[l].label, p->text, p->len, p->doc_id);
        }
    for (int64_t i = 0; extra && i < extra->n; i++) {
        const ds_context *c = &extra->items[i];
        ds_contexts_writer_add(w[extra_split[i]], extra->labels[c->label], c->text, c->len, extra_ids[i]);
    }
    ds_contexts_writer_commit(w[TRAIN]);
    if (w[HELD]) ds_contexts_writer_commit(w[HELD]);

    printf(WHAT ": %d labels, seed %llu, chunks %zu-%zu bytes, <= %d per document\n", n_labels + (extra ? extra->n_labels : 0),
           (unsigned long long)seed, co.min_bytes, co.max_bytes, co.per_doc);
    printf("  %-22s %8s %8s %10s %10s\n", "label", "train", "held-out", "docs", "docs used");
    int total[2] = {0, 0};
    for (int l = 0; l < n_labels; l++) {
        printf("  %-22s %8d %8d %10zu %10d%s\n", labels[l].label, sel[l].count[TRAIN], sel[l].count[HELD],
               labels[l].n, sel[l].docs[TRAIN] + sel[l].docs[HELD],
               sel[l].count[TRAIN] < quota[TRAIN] || sel[l].count[HELD] < quota[HELD] ? "  (short of its quota)" : "");
        total[TRAIN] += sel[l].count[TRAIN];
        total[HELD] += sel[l].count[HELD];
    }
    for (int l = 0; extra && l < extra->n_labels; l++) {
        const extra_label *e = &extra_labels[l];
        printf("  %-22s %8d %8d %10d %10d  (--extra-contexts)\n", e->label, e->count[TRAIN], e->count[HELD],
               e->docs[TRAIN] + e->docs[HELD], e->docs[TRAIN] + e->docs[HELD]);
        total[TRAIN] += e->count[TRAIN];
        total[HELD] += e->count[HELD];
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
    for (int64_t i = 0; extra && i < extra->n; i++) free(extra_ids[i]);
    free(extra_ids), free(extra_split), free(extra_labels);
    ds_contexts_free(extra);
    ds_manifest_free(m);
    return 0;
}
