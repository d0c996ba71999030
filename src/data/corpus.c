/* Text to training data: prepare-data (token shards or binidx) and the built-in default corpus
 * (shards). Both feed documents, in a deterministic order, to one splitter that tokenizes each and
 * appends it to the train or valid output by a hash of its index (see DS_SPLIT_STREAM in data.h). */
#include "dreamstate/data.h"
#include "dreamstate/common.h"
#include "jsonl.h"
#include "manifest.h"
#include "text_files.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the splitter */

enum { TRAIN, VALID };
static const char *const split_name[2] = {"train", "valid"};

/* Each split goes to a token shard, or to a binidx pair; binidx[VALID] is NULL when nothing is held
 * out (valid_fraction 0). */
typedef struct splitter {
    const ds_tokenizer *tok;
    const char *out_dir;
    double valid_fraction;
    uint64_t seed, next_doc;
    ds_shard_writer *shard[2];
    ds_binidx_writer *binidx[2];
    char path[2][4096];        /* the shard, or the binidx prefix */
    char created_dir[4096];    /* the outermost output directory this run created ("": none) */
    uint64_t docs[2], bytes[2], tokens[2];
    int32_t *ids;
    size_t ids_cap;
} splitter;

/* Creates dir and its missing parents, noting in `created` the outermost one it made, which a failed
 * run removes again. */
static void make_dirs(const char *dir, char *created, size_t created_len) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        ds_die(DS_EXIT_BAD_INPUT, "%s: path too long", dir);
    created[0] = 0;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        if (mkdir(path, 0777) == 0) {
            if (!created[0]) snprintf(created, created_len, "%s", path);
        } else if (errno != EEXIST) {
            ds_die(DS_EXIT_BAD_INPUT, "%s: cannot create directory: %s", path, strerror(errno));
        }
        *p = c;
        if (!c) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) ds_die(DS_EXIT_BAD_INPUT, "%s: not a directory", dir);
}

/* Removes dir and its parents up to `created` (make_dirs'), if they are empty. */
static void remove_created_dirs(const char *dir, const char *created) {
    if (!created[0]) return;
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (size_t stop = strlen(created);;) {
        rmdir(path);
        char *slash = strrchr(path, '/');
        if (strlen(path) <= stop || !slash) break;
        *slash = 0;
    }
}

static void splitter_open(splitter *sp, const char *out_dir, const ds_tokenizer *tok, double valid_fraction,
                          uint64_t seed, int binidx) {
    memset(sp, 0, sizeof *sp);
    sp->tok = tok;
    sp->out_dir = out_dir;
    sp->valid_fraction = valid_fraction;
    sp->seed = seed;
    make_dirs(out_dir, sp->created_dir, sizeof sp->created_dir);
    for (int s = 0; s < 2; s++) {
        snprintf(sp->path[s], sizeof sp->path[s], "%s/%s%s", out_dir, split_name[s], binidx ? "" : ".bin");
        if (!binidx)
            sp->shard[s] = ds_shard_writer_open(sp->path[s], ds_tokenizer_vocab_size(tok), ds_tokenizer_fingerprint(tok));
        else if (s == TRAIN || valid_fraction > 0)
            sp->binidx[s] = ds_binidx_writer_open(sp->path[s], ds_tokenizer_vocab_size(tok));
    }
}

/* Bad input found mid-way: remove the temporary outputs and the directories made for them, then die. */
static _Noreturn void splitter_fail(splitter *sp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void splitter_fail(splitter *sp, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (int s = 0; s < 2; s++) {
        if (sp->shard[s]) ds_shard_writer_abort(sp->shard[s]);
        if (sp->binidx[s]) ds_binidx_writer_abort(sp->binidx[s]);
    }
    remove_created_dirs(sp->out_dir, sp->created_dir);
    ds_die(DS_EXIT_BAD_INPUT, "%s", msg);
}

static void splitter_add_document(splitter *sp, const uint8_t *text, size_t n) {
    if (n == 0) return;
    if (n > sp->ids_cap) {
        ds_free(sp->ids);
        sp->ids_cap = n > 2 * sp->ids_cap ? n : 2 * sp->ids_cap;
        sp->ids = ds_alloc(sp->ids_cap * sizeof *sp->ids);
    }
    size_t n_ids = ds_tokenizer_encode(sp->tok, text, n, sp->ids);
    int s = ds_rng_uniform(sp->seed, DS_SPLIT_STREAM, sp->next_doc++) < sp->valid_fraction ? VALID : TRAIN;
    if (sp->shard[s]) ds_shard_writer_add_document(sp->shard[s], sp->ids, n_ids);
    else ds_binidx_writer_add_document(sp->binidx[s], sp->ids, n_ids);
    sp->docs[s]++;
    sp->bytes[s] += n;
    sp->tokens[s] += n_ids + 1;  /* + separator */
}

static void emit_document(void *sp, const uint8_t *text, size_t n) { splitter_add_document(sp, text, n); }

/* RWKV-LM's make_data.py input: one {"text": ...} object per line, other keys ignored. */
static const char *const text_key[] = {"text"};
static const ds_jsonl_keys document_keys = {.n = 1, .n_required = 1, .names = text_key, .others_skipped = 1,
                                            .nul_allowed = 1};

static int is_jsonl(const char *path) { return ds_has_suffix(path, ".jsonl") || ds_has_suffix(path, ".jsonl.gz"); }

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

/* A JSONL file: each line's "text" is a document; blank lines are skipped (as make_data.py does). */
static void splitter_add_jsonl(splitter *sp, const char *path, const uint8_t *data, size_t len) {
    ds_text_arena a = {0};
    char why[512];
    size_t pos = 0;
    for (long long line = 1; pos < len; line++) {
        const char *begin = (const char *)data + pos, *nl = memchr(begin, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - begin) : len - pos;
        pos += line_len + (nl != NULL);
        if (is_blank(begin, line_len)) continue;
        int64_t off;
        size_t text_len;
        a.n = 0;
        if (ds_jsonl_parse_line(begin, line_len, &document_keys, &a, &off, &text_len, why, sizeof why) != 0) {
            free(a.data);
            splitter_fail(sp, "%s:%lld: %s", path, line, why);
        }
        splitter_add_document(sp, (const uint8_t *)a.data + off, text_len);
    }
    free(a.data);
}

static void splitter_add_file(splitter *sp, const char *path, const char *split_on) {
    uint8_t *data;
    size_t len;
    char why[256];
    if (ds_read_input(path, &data, &len, why, sizeof why) != 0) splitter_fail(sp, "%s: %s", path, why);
    if (is_jsonl(path)) splitter_add_jsonl(sp, path, data, len);
    else ds_split_text(data, len, split_on, emit_document, sp);
    free(data);
}

static void splitter_commit(splitter *sp, FILE *report) {
    for (int s = 0; s < 2; s++) {
        if (sp->shard[s]) ds_shard_writer_commit(sp->shard[s]);
        else if (sp->binidx[s]) ds_binidx_writer_commit(sp->binidx[s]);
        else continue;
        fprintf(report, "%s: %llu documents, %llu bytes, %llu tokens (incl. separators) -> %s%s\n", split_name[s],
                (unsigned long long)sp->docs[s], (unsigned long long)sp->bytes[s],
                (unsigned long long)sp->tokens[s], sp->path[s], sp->binidx[s] ? ".bin + .idx" : "");
    }
    if (sp->docs[VALID] == 0 && sp->valid_fraction > 0)
        fprintf(report, "warning: the valid split is empty (%llu documents in all)\n",
                (unsigned long long)sp->docs[TRAIN]);
    ds_free(sp->ids);
}

/* ---------------------------------------------------------------- prepare-data */

ds_prepare_options ds_prepare_defaults(void) {
    return (ds_prepare_options){.tokenizer = "byte", .format = "shards", .valid_fraction = 0.05, .seed = 1234};
}

int ds_prepare_data(const ds_prepare_options *o) {
    if (strcmp(o->tokenizer, "world") != 0 && o->vocab)
        ds_die(DS_EXIT_BAD_INPUT, "prepare-data: --vocab is only used with --tokenizer world");
    int binidx = strcmp(o->format, "binidx") == 0;
    if (!binidx && strcmp(o->format, "shards") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "prepare-data: unknown --format '%s' (shards or binidx)", o->format);

    /* Resolve every input before writing anything, so argument mistakes leave no files behind. */
    ds_path_list files = {0};
    for (int i = 0; i < o->n_inputs; i++) {
        struct stat st;
        if (stat(o->inputs[i], &st) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "prepare-data: %s: %s", o->inputs[i], strerror(errno));
        if (S_ISDIR(st.st_mode)) ds_walk_dir(o->inputs[i], 1, NULL, &files);
        else ds_path_list_add(&files, o->inputs[i]);
    }
    if (files.n == 0) ds_die(DS_EXIT_BAD_INPUT, "prepare-data: the inputs contain no files");
    ds_tokenizer *tok = ds_tokenizer_open(o->tokenizer, o->vocab);

    splitter sp;
    splitter_open(&sp, o->out_dir, tok, o->valid_fraction, o->seed, binidx);
    for (size_t i = 0; i < files.n; i++) splitter_add_file(&sp, files.items[i], o->split_on);
    printf("prepare-data: %zu files, %s tokenizer, %s format, valid fraction %g, seed %llu\n", files.n, o->tokenizer,
           o->format, o->valid_fraction, (unsigned long long)o->seed);
    splitter_commit(&sp, stdout);
    ds_tokenizer_free(tok);
    ds_path_list_free(&files);
    return 0;
}

/* ---------------------------------------------------------------- default corpus */

/* Names the corpus's sources: the sha256 of their manifest lines' split, path and sha256, as hex. */
static void corpus_sources_digest(const ds_manifest *m, char hex[65]) {
    size_t cap = 1 << 16, n = 0;
    char *all = malloc(cap);
    for (size_t i = 0; i < m->n; i++) {
        const ds_manifest_entry *e = &m->items[i];
        if (strcmp(e->source, "corpus") != 0) continue;
        size_t need = strlen(e->split) + strlen(e->path) + 32 + 2;
        if (n + need > cap) all = realloc(all, cap = 2 * (n + need));
        if (!all) ds_die(DS_EXIT_FAIL, "out of memory listing the corpus's sources");
        n += (size_t)sprintf(all + n, "%s\t%s\t", e->split, e->path);
        memcpy(all + n, e->sha256, 32);
        n += 32;
    }
    uint8_t sha[32];
    ds_sha256(all, n, sha);
    free(all);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", sha[i]);
}

/* Both shards present, valid, made with this tokenizer, and from these sources (out_dir/SOURCES_STAMP
 * holds their digest: a corpus built from other files is rebuilt). */
#define SOURCES_STAMP "sources.sha256"
static int corpus_ready(const char *out_dir, const ds_tokenizer *tok, const char *digest) {
    char path[4096], why[256];
    snprintf(path, sizeof path, "%s/%s", out_dir, SOURCES_STAMP);
    uint8_t *stamp;
    size_t len;
    if (ds_read_file(path, &stamp, &len, why, sizeof why) != 0) return 0;
    int same_sources = len == 65 && memcmp(stamp, digest, 64) == 0 && stamp[64] == '\n';
    free(stamp);
    if (!same_sources) return 0;
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/%s.bin", out_dir, split_name[s]);
        if (access(path, F_OK) != 0) return 0;
        if (ds_shard_check(path, why, sizeof why) != 0) {
            ds_log("default corpus: %s: %s; rebuilding", path, why);
            return 0;
        }
        ds_dataset *ds = ds_dataset_open(path);
        int same = ds_dataset_vocab_size(ds) == ds_tokenizer_vocab_size(tok) &&
                   ds_dataset_fingerprint(ds) == ds_tokenizer_fingerprint(tok);
        ds_dataset_close(ds);
        if (!same) return 0;
    }
    return 1;
}

void ds_corpus_default(const char *out_dir, const char *tokenizer_kind, const char *vocab_file) {
    ds_manifest *m = ds_manifest_load(NULL, "default corpus");
    char digest[65];
    corpus_sources_digest(m, digest);
    ds_tokenizer *tok = ds_tokenizer_open(tokenizer_kind, vocab_file);
    if (corpus_ready(out_dir, tok, digest)) { ds_tokenizer_free(tok); ds_manifest_free(m); return; }

    size_t n_files = 0;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->items[i].source, "corpus") == 0) { ds_manifest_verify(m, &m->items[i], "default corpus"); n_files++; }
    if (n_files == 0) ds_die(DS_EXIT_BAD_INPUT, "default corpus: %s lists no file for source 'corpus'", m->name);
    ds_log("default corpus: building %s from the %zu files %s lists for it, %s tokenizer", out_dir, n_files, m->name,
           tokenizer_kind);
    splitter sp;
    splitter_open(&sp, out_dir, tok, DS_CORPUS_VALID_FRACTION, DS_CORPUS_SEED, 0);
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->items[i].source, "corpus") == 0)
            splitter_add_file(&sp, m->items[i].path, ds_manifest_separator(&m->items[i]));
    splitter_commit(&sp, stderr);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, SOURCES_STAMP);
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) ds_die(DS_EXIT_FAIL, "%s: cannot create: %s", path, strerror(errno));
    fprintf(af.fp, "%s\n", digest);
    if (ds_atomic_commit(&af) != 0) ds_die(DS_EXIT_FAIL, "%s: write failed: %s", path, strerror(errno));
    ds_tokenizer_free(tok);
    ds_manifest_free(m);
}
