/* DREAMSTATE part A data: contexts JSONL (round trip, parser errors with line numbers), the contexts
 * builder (split by document, determinism, texts really from their documents), state shards, indexes
 * and state files (bit-exact round trips against an independent reading of the documented layout,
 * corruption refusals, wrong shapes, unknown labels), and extract-states against ds_rwkv7_forward
 * plus the "inject the state, continue = run the whole text" identity (src/dit/README.md §3.7). */
#include "dreamstate/blas.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/kernels.h"
#include "dreamstate/states.h"
#include "dreamstate/train.h"
#include "dreamstate/weights.h"
#include "test.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp_root[64];

/* ---------------------------------------------------------------- helpers */

static void tmp_path(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", tmp_root, name); }



static void child_load_contexts(void *path) { ds_contexts_free(ds_contexts_load(path, 0, NULL)); }
static void child_open_states(void *path) { ds_states_close(ds_states_open(path)); }

/* ---------------------------------------------------------------- contexts JSONL */

static void test_contexts_roundtrip(void) {
    char path[256];
    tmp_path(path, sizeof path, "rt.jsonl");
    /* Every byte class the writer escapes or passes through: quotes, backslash, all control
     * characters but NUL, DEL, multi-byte UTF-8 (2, 3 and 4 bytes). */
    char tricky[64 + 32];
    size_t n = 0;
    for (int c = 1; c < 0x20; c++) tricky[n++] = (char)c;
    const char tail[] = "\"\\/\x7f" "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    memcpy(tricky + n, tail, sizeof tail - 1);
    n += sizeof tail - 1;
    struct { const char *label, *text, *doc; size_t len; } items[] = {
        {"zeta", "plain text", "d0", 0},
        {"alpha", tricky, NULL, n},
        {"fortunes/people", "line one\nline two\n", "/usr/x#3", 0},
        {"alpha", "x", "", 0},
    };
    ds_contexts_writer *w = ds_contexts_writer_open(path);
    for (int i = 0; i < 4; i++)
        ds_contexts_writer_add(w, items[i].label, items[i].text, items[i].len ? items[i].len : strlen(items[i].text),
                               items[i].doc);
    ds_contexts_writer_commit(w);
    ds_contexts *c = ds_contexts_load(path, 0, NULL);
    CHECK(c->n == 4 && c->n_labels == 3, "round trip: %lld contexts, %d labels", (long long)c->n, c->n_labels);
    const char *sorted[] = {"alpha", "fortunes/people", "zeta"};
    for (int i = 0; i < 3 && i < c->n_labels; i++)
        CHECK(strcmp(c->labels[i], sorted[i]) == 0, "label %d is '%s', want '%s'", i, c->labels[i], sorted[i]);
    for (int i = 0; i < 4 && i < c->n; i++) {
        size_t len = items[i].len ? items[i].len : strlen(items[i].text);
        CHECK(c->items[i].len == len && memcmp(c->items[i].text, items[i].text, len) == 0, "context %d text differs", i);
        CHECK(strcmp(c->labels[c->items[i].label], items[i].label) == 0, "context %d label", i);
        CHECK(strcmp(c->items[i].doc, items[i].doc ? items[i].doc : "") == 0, "context %d doc '%s'", i, c->items[i].doc);
    }
    ds_contexts_free(c);

    /* A given label list fixes the ids (extract-states --labels-from). */
    char *given[] = {"zeta", "fortunes/people", "alpha", "unused"};
    c = ds_contexts_load(path, 4, given);
    CHECK(c->n_labels == 4 && c->items[0].label == 0 && c->items[1].label == 2 && c->items[2].label == 1,
          "given labels: ids %d %d %d", c->items[0].label, c->items[1].label, c->items[2].label);
    ds_contexts_free(c);

    /* Escapes written by other tools: \u with surrogate pairs, \/, mixed key order, spaces, CRLF. */
    const char *other = "{ \"text\" : \"a\\u00e9\\ud83d\\ude00\\/\\u20ac\" , \"label\" : \"x\" }\r\n";
    tmp_path(path, sizeof path, "other.jsonl");
    test_write_file(path, other, strlen(other));
    c = ds_contexts_load(path, 0, NULL);
    const char want[] = "a\xc3\xa9\xf0\x9f\x98\x80/\xe2\x82\xac";
    CHECK(c->n == 1 && c->items[0].len == sizeof want - 1 && memcmp(c->items[0].text, want, sizeof want - 1) == 0,
          "foreign escapes decode to the right UTF-8");
    ds_contexts_free(c);
}

typedef struct { const char *line, *reason; } bad_line;

static void test_contexts_errors(void) {
    static const bad_line cases[] = {
        {"{\"label\":\"a\",\"text\":\"x\"", "column 24: expected ',' or '}'"},
        {"{\"label\":\"a\"}", "missing \"text\""},
        {"{\"text\":\"x\"}", "missing \"label\""},
        {"{\"label\":\"a\",\"text\":\"x\",\"extra\":\"y\"}", "unknown key \"extra\""},
        {"{\"label\":\"a\",\"label\":\"b\",\"text\":\"x\"}", "column 14: duplicate key \"label\""},
        {"{\"label\":\"a b\",\"text\":\"x\"}", "label 'a b' must be 1-63 characters"},
        {"{\"label\":\"a\",\"text\":\"\"}", "empty \"text\""},
        {"{\"label\":\"a\",\"text\":\"bad \\q\"}", "bad escape '\\q'"},
        {"{\"label\":\"a\",\"text\":\"\\ud800x\"}", "high surrogate \\uD800 not followed by a low one"},
        {"{\"label\":\"a\",\"text\":\"\\udc00\"}", "lone low surrogate"},
        {"{\"label\":\"a\",\"text\":\"\\u0000\"}", "NUL"},
        {"{\"label\":\"a\",\"text\":\"\\u12\"}", "\\u needs 4 hex digits"},
        {"{\"label\":\"a\",\"text\":1}", "\"text\" must be a string"},
        {"", "empty line"},
        {"[1]", "expected '{'"},
        {"{}", "empty object"},
        {"{\"label\":\"a\",\"text\":\"x\"} tail", "unexpected text after the object"},
        {"{\"label\":\"a\",\"text\":\"\xff\"}", "invalid UTF-8"},
        {"{\"label\":\"a\",\"text\":\"\xc0\xaf\"}", "invalid UTF-8"},
        {"{\"label\":\"a\",\"text\":\"tab\there\"}", "control character 0x09"},
        {"{\"label\":\"a\",\"text\":\"unterminated}", "unterminated string"},
        /* what a message quotes cannot break it over lines (control characters are shown escaped) */
        {"{\"label\":\"a\\nb\",\"text\":\"x\"}", "label 'a\\nb' must be 1-63 characters"},
        {"{\"label\":\"a\",\"text\":\"x\",\"k\\r\\u001b[31m\":\"y\"}", "unknown key \"k\\r\\x1b[31m\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[256], file[512], want[512];
        snprintf(path, sizeof path, "%s/bad%zu.jsonl", tmp_root, i);
        snprintf(file, sizeof file, "{\"label\":\"ok\",\"text\":\"fine\"}\n%s\n{\"label\":\"ok\",\"text\":\"fine\"}\n",
                 cases[i].line);
        test_write_file(path, file, strlen(file));
        snprintf(want, sizeof want, "%s:2: ", path);
        char err[2048];
        int rc = test_run_in_child(child_load_contexts, path, err, sizeof err);
        size_t len = strlen(err);
        int one_line = len > 0 && err[len - 1] == '\n' && memchr(err, '\n', len - 1) == NULL;
        CHECK(rc == DS_EXIT_BAD_INPUT && strstr(err, want) && strstr(err, cases[i].reason) && one_line,
              "case %zu: want exit 2 with one line '%s%s', got %d: %s", i, want, cases[i].reason, rc, err);
    }
    char path[256];
    tmp_path(path, sizeof path, "empty.jsonl");
    test_write_file(path, "", 0);
    test_expect_bad_input(child_load_contexts, path, "no contexts (empty file)", "empty file");
    tmp_path(path, sizeof path, "missing.jsonl");
    test_expect_bad_input(child_load_contexts, path, "cannot open: No such file or directory", "missing file");
}

static char unknown_label_path[256];
static void child_load_with_labels(void *arg) {
    char *labels[] = {"a", "b", "c"};
    ds_contexts_free(ds_contexts_load(arg, 3, labels));
}
static void child_lookup(void *arg) {
    char *labels[] = {"a", "b", "c"};
    ds_label_lookup(NULL, arg, 3, labels);
}

static void test_unknown_label(void) {
    tmp_path(unknown_label_path, sizeof unknown_label_path, "labels.jsonl");
    const char *text = "{\"label\":\"b\",\"text\":\"x\"}\n{\"label\":\"zebra\",\"text\":\"y\"}\n";
    test_write_file(unknown_label_path, text, strlen(text));
    char want[512];
    snprintf(want, sizeof want, "%s:2: unknown label 'zebra' (known: a, b, c)", unknown_label_path);
    test_expect_bad_input(child_load_with_labels, unknown_label_path, want, "unknown label in contexts");
    test_expect_bad_input(child_lookup, "x", "dreamstate: unknown label 'x' (known: a, b, c)", "ds_label_lookup");
    char *labels[] = {"a", "b", "c"};
    CHECK(ds_label_lookup(NULL, "c", 3, labels) == 2, "lookup of a known label");
}

/* ---------------------------------------------------------------- build-contexts */

static void run_builder(const char *out, const char *held, uint64_t seed) {
    ds_build_contexts_options o = ds_build_contexts_defaults();
    o.out = out;
    o.held_out = held;
    o.sources = "fortunes,licenses";
    o.max_per_label = 20;
    o.min_bytes = 40;
    o.max_bytes = 300;
    o.seed = seed;
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    ds_build_contexts(&o);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved); close(devnull);
}

static void child_builder(void *o) { ds_build_contexts(o); }

/* The text occurs verbatim in its document (a file path, or "PATH#k" for a fortune of PATH). */
static int text_from_doc(const ds_context *c) {
    char path[1024];
    snprintf(path, sizeof path, "%s", c->doc);
    char *hash = strrchr(path, '#');
    if (hash) *hash = 0;
    size_t len;
    uint8_t *data = test_read_file(path, &len);
    if (!data) return 0;
    int found = 0;
    for (size_t i = 0; i + c->len <= len && !found; i++) found = memcmp(data + i, c->text, c->len) == 0;
    free(data);
    return found;
}

static void test_builder(void) {
    char train[256], held[256], train2[256], held2[256], train3[256], held3[256];
    tmp_path(train, sizeof train, "b_train.jsonl");
    tmp_path(held, sizeof held, "b_held.jsonl");
    tmp_path(train2, sizeof train2, "b_train2.jsonl");
    tmp_path(held2, sizeof held2, "b_held2.jsonl");
    tmp_path(train3, sizeof train3, "b_train3.jsonl");
    tmp_path(held3, sizeof held3, "b_held3.jsonl");
    run_builder(train, held, 7);
    run_builder(train2, held2, 7);
    run_builder(train3, held3, 8);
    size_t a_len, b_len, c_len;
    uint8_t *a = test_read_file(train, &a_len), *b = test_read_file(train2, &b_len), *c3 = test_read_file(train3, &c_len);
    CHECK(a && b && a_len == b_len && memcmp(a, b, a_len) == 0, "same seed: identical output");
    CHECK(a && c3 && (a_len != c_len || memcmp(a, c3, a_len) != 0), "another seed: another selection");
    free(a); free(b); free(c3);

    ds_contexts *tr = ds_contexts_load(train, 0, NULL), *ho = ds_contexts_load(held, 0, NULL);
    CHECK(tr->n_labels == 7 && ho->n_labels == 7, "7 labels (6 fortune categories + license): %d, %d", tr->n_labels,
          ho->n_labels);
    int per_label[2][8] = {{0}};
    int bad_len = 0, not_from_doc = 0, shared_docs = 0;
    for (int s = 0; s < 2; s++) {
        ds_contexts *x = s ? ho : tr;
        for (int64_t i = 0; i < x->n; i++) {
            const ds_context *ci = &x->items[i];
            if (ci->label < 8) per_label[s][ci->label]++;
            bad_len += ci->len < 40 || ci->len > 300;
            not_from_doc += !text_from_doc(ci);
        }
    }
    for (int64_t i = 0; i < tr->n; i++)
        for (int64_t j = 0; j < ho->n; j++) shared_docs += strcmp(tr->items[i].doc, ho->items[j].doc) == 0;
    CHECK(bad_len == 0, "%d contexts outside 40..300 bytes", bad_len);
    CHECK(not_from_doc == 0, "%d contexts not found verbatim in their document", not_from_doc);
    CHECK(shared_docs == 0, "%d documents in both train and held-out", shared_docs);
    for (int l = 0; l < 7 && l < tr->n_labels; l++) {
        int fortune = strncmp(tr->labels[l], "fortunes/", 9) == 0;
        /* 20 per label: 16 train + 4 held out; the 23 licences (few documents) may fall short */
        CHECK(per_label[0][l] <= 16 && per_label[1][l] <= 4 && (!fortune || (per_label[0][l] == 16 && per_label[1][l] == 4)),
              "label %s: %d train, %d held-out", tr->labels[l], per_label[0][l], per_label[1][l]);
        CHECK(per_label[0][l] > 0 && per_label[1][l] > 0, "label %s has contexts in both files", tr->labels[l]);
    }
    ds_contexts_free(tr);
    ds_contexts_free(ho);

    ds_build_contexts_options bad_source = ds_build_contexts_defaults();
    bad_source.out = train;
    bad_source.sources = "fortunes,poems";
    test_expect_bad_input(child_builder, &bad_source, "build-contexts: unknown source 'poems' (known: fortunes, c-headers",
                     "bad source");
    ds_build_contexts_options bad_bytes = ds_build_contexts_defaults();
    bad_bytes.out = train;
    bad_bytes.min_bytes = 100;
    bad_bytes.max_bytes = 50;
    test_expect_bad_input(child_builder, &bad_bytes, "--max-bytes 50 is below --min-bytes 100", "max < min");
}

/* ---------------------------------------------------------------- the manifest of source documents */

static void hex(const uint8_t *b, int n, char *out) {
    for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

/* ds_sha256 against FIPS 180-2's examples and against coreutils' sha256sum on every length that
 * crosses the padding boundaries (0-200 bytes). */
static void test_sha256(void) {
    static const struct { const char *text; const char *digest; } fips[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"}};
    uint8_t d[32];
    char h[65];
    for (int i = 0; i < 3; i++) {
        ds_sha256(fips[i].text, strlen(fips[i].text), d);
        hex(d, 32, h);
        CHECK(strcmp(h, fips[i].digest) == 0, "sha256('%s') = %s", fips[i].text, h);
    }
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    ds_sha256(million, 1000000, d);
    hex(d, 32, h);
    free(million);
    CHECK(strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0, "sha256(a x 1e6) = %s", h);
    uint8_t data[200];
    for (int i = 0; i < 200; i++) data[i] = (uint8_t)(ds_rng_u64(5, 0, (uint64_t)i) & 0xff);
    char path[256], cmd[512], want[80];
    tmp_path(path, sizeof path, "sha.bin");
    int differ = 0, ran = 0;
    for (int n = 0; n <= 200; n++) {
        test_write_file(path, data, (size_t)n);
        snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
        FILE *p = popen(cmd, "r");
        if (!p) break;
        ran += fgets(want, sizeof want, p) != NULL;
        pclose(p);
        ds_sha256(data, (size_t)n, d);
        hex(d, 32, h);
        differ += strncmp(want, h, 64) != 0;
    }
    CHECK(ran == 201 && differ == 0, "sha256 = sha256sum on lengths 0-200: %d of %d differ", differ, ran);
}

/* A manifest line for `path` (its sha256 computed here). */
static void manifest_line(FILE *f, const char *source, const char *label, const char *split, const char *path) {
    size_t len;
    uint8_t *data = test_read_file(path, &len), d[32];
    char h[65];
    ds_sha256(data, len, d);
    free(data);
    hex(d, 32, h);
    fprintf(f, "%s\t%s\t%s\tzz-test\t%s\t%s\n", source, label, split, path, h);
}

static void build_quietly(ds_build_contexts_options *o) {
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    ds_build_contexts(o);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved); close(devnull);
}

/* The manifest's splits ('%' entries, blank-line paragraphs, whole files) and sources sharing a label;
 * malformed lines refused as FILE:LINE. */
static void test_manifest(void) {
    char entries[256], paragraphs[256], whole[256], manifest[256], out[256];
    tmp_path(entries, sizeof entries, "m_entries.txt");
    tmp_path(paragraphs, sizeof paragraphs, "m_paragraphs.txt");
    tmp_path(whole, sizeof whole, "m_whole.txt");
    tmp_path(manifest, sizeof manifest, "m.tsv");
    tmp_path(out, sizeof out, "m_out.jsonl");
    const char *e = "entry zero is about the first thing\n%\nentry one is about the second thing\n%\n"
                    "entry two is about the third thing\n";
    const char *p = "paragraph zero: the first of three blocks\n\nparagraph one: the second of three blocks\n\n"
                    "paragraph two: the third of three blocks\n";
    const char *w = "a whole file is one document, however many lines\nit has\n\nor blank lines.\n";
    test_write_file(entries, e, strlen(e));
    test_write_file(paragraphs, p, strlen(p));
    test_write_file(whole, w, strlen(w));
    FILE *f = fopen(manifest, "w");
    fprintf(f, "# a comment\n\n");
    manifest_line(f, "first", "notes", "%", entries);
    manifest_line(f, "second", "notes", "blank", paragraphs);
    manifest_line(f, "third", "whole", "file", whole);
    manifest_line(f, "corpus", "-", "file", whole);
    fclose(f);
    ds_build_contexts_options o = ds_build_contexts_defaults();
    o.out = out;
    o.manifest = manifest;
    o.max_per_label = 100;
    o.min_bytes = 10;
    o.max_bytes = 400;
    build_quietly(&o);
    ds_contexts *c = ds_contexts_load(out, 0, NULL);
    int notes = 0, whole_docs = 0, from_doc = 0;
    for (int64_t i = 0; i < c->n; i++) {
        const ds_context *x = &c->items[i];
        from_doc += text_from_doc(x);
        if (strcmp(c->labels[x->label], "notes") == 0) {
            char want[300];
            const char *kind = strstr(x->text, "entry") ? entries : paragraphs;
            snprintf(want, sizeof want, "%s#%d", kind, strstr(x->text, "zero") ? 0 : strstr(x->text, "one") ? 1 : 2);
            notes += strcmp(x->doc, want) == 0;
        } else {
            whole_docs += strcmp(x->doc, whole) == 0 && x->len == strlen(w) - 1;
        }
    }
    CHECK(c->n == 7 && c->n_labels == 2 && notes == 6 && whole_docs == 1 && from_doc == 7,
          "3 entries + 3 paragraphs under one label 'notes' (ids PATH#k), the whole file as one: %lld contexts, "
          "%d labels, %d notes, %d whole, %d verbatim", (long long)c->n, c->n_labels, notes, whole_docs, from_doc);
    ds_contexts_free(c);

    /* %s: a valid sha256; each manifest is "# header" and then these lines */
    static const struct { const char *lines, *reason; } bad[] = {
        {"s\tl\tlines\tp\t/x\t%s", "2: split must be file, % or blank"},
        {"s\tl a\tfile\tp\t/x\t%s", "2: label must be 1-63 characters"},
        {"corpus\tl\tfile\tp\t/x\t%s", "2: the corpus's label must be '-'"},
        {"s\tl\tfile\t\t/x\t%s", "2: empty package"},
        {"s\tl\tfile\tp\tx\t%s", "2: the path must be absolute"},
        {"s\tl\tfile\tp\t/x\t%s0", "2: sha256 must be 64 lower-case hex digits"},
        {"s\tl\tfile\tp\t/x\tE%.63s", "2: sha256 must be 64 lower-case hex digits"},
        {"s\tl\tfile\tp\t/x\t%s\textra", "2: more tab-separated fields, not 6"},
        {"s\tl\tfile\tp\t/x", "2: fewer tab-separated fields, not 6"},
        {"s\tl\tfile\tp\t/x\t%s\ns\tm\tfile\tp\t/x\t%s", "3: /x is already listed for source 's' (line 2)"},
    };
    const char *sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[32], bad_path[256], want[512];
        snprintf(name, sizeof name, "m_bad%zu.tsv", i);
        tmp_path(bad_path, sizeof bad_path, name);
        f = fopen(bad_path, "w");
        fprintf(f, "# header\n");
        fprintf(f, bad[i].lines, sha, sha);
        fprintf(f, "\n");
        fclose(f);
        ds_build_contexts_options b = o;
        b.manifest = bad_path;
        snprintf(want, sizeof want, "build-contexts: %s:%s", bad_path, bad[i].reason);
        test_expect_bad_input(child_builder, &b, want, bad[i].lines);
    }
    ds_build_contexts_options corpus = o;
    corpus.sources = "corpus";
    test_expect_bad_input(child_builder, &corpus, "unknown source 'corpus' (known: first, second, third)",
                          "the corpus is not a source of contexts");
}

/* ---------------------------------------------------------------- shards, indexes, state files */

static ds_rwkv7_dims small_dims(int L, int C) {
    ds_rwkv7_dims d = {.n_layer = L, .n_embd = C, .vocab_size = 256};
    ds_rwkv7_default_ranks(&d, "released");
    return d;
}

static void fill_state(ds_rwkv7_state *s, uint64_t seed) {
    for (int64_t i = 0; i < s->numel; i++) s->data[i] = (float)ds_rng_normal(seed, 7, i);
}

/* The documented record layout, read with independent offset arithmetic: label, context, cond, then
 * per layer att x_prev [C], WKV [H][N][N], ffn x_prev [C]. Compares with sequence b of s. */
static int record_matches(const uint8_t *rec, int L, int C, int cond_dim, const float *cond, int32_t label,
                          int32_t context, const ds_rwkv7_state *s, int b) {
    int32_t got_label, got_context;
    memcpy(&got_label, rec, 4);
    memcpy(&got_context, rec + 4, 4);
    if (got_label != label || got_context != context) return 0;
    if (cond_dim && memcmp(rec + 8, cond, 4 * (size_t)cond_dim) != 0) return 0;
    const uint8_t *p = rec + 8 + 4 * (size_t)cond_dim;
    int64_t B = s->B, W = (int64_t)C * 64;  /* H*N*N = (C/64)*64*64 */
    for (int l = 0; l < L; l++) {
        if (memcmp(p, s->att_x + (l * B + b) * C, 4 * (size_t)C) != 0) return 0;
        p += 4 * C;
        if (memcmp(p, s->wkv + (l * B + b) * W, 4 * (size_t)W) != 0) return 0;
        p += 4 * W;
        if (memcmp(p, s->ffn_x + (l * B + b) * C, 4 * (size_t)C) != 0) return 0;
        p += 4 * C;
    }
    return 1;
}

static uint32_t u32_at(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t u64_at(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static char good_index[256], good_shard0[256];

static void write_dataset(const char *dir_name, ds_rwkv7_dims *d, ds_rwkv7_state *src, float *conds) {
    /* Two shards: records (b=0,1) and (b=2); labels 1,0,2; contexts 5,6,7. */
    char dir[256], path[1024];
    tmp_path(dir, sizeof dir, dir_name);
    mkdir(dir, 0777);
    ds_state_shape shape = ds_state_shape_of(d, DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN);
    int32_t labels[3] = {1, 0, 2};
    ds_states_shard shards[2] = {{"s0.bin", 2}, {"s1.bin", 1}};
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/%s", dir, shards[s].file);
        ds_state_writer *w = ds_state_writer_open(path, &shape);
        for (int b = s * 2; b < (s ? 3 : 2); b++)
            ds_state_writer_add(w, labels[b], 5 + b, conds + b * shape.cond_dim, src, b);
        char sig[256], meta[400];
        ds_weights_signature(d, sig, sizeof sig);
        snprintf(meta, sizeof meta, "model=%s\nrank=%d\n", sig, s);
        ds_state_writer_commit(w, meta);
    }
    ds_states_info info;
    memset(&info, 0, sizeof info);
    info.shape = shape;
    info.n_records = 3;
    char *names[] = {"planner", "poet", "programmer"};
    info.n_labels = 3;
    info.labels = names;
    info.n_shards = 2;
    info.max_tokens = 99;
    ds_weights_signature(d, info.model, sizeof info.model);
    strcpy(info.tokenizer, "byte");
    strcpy(info.checkpoint, "/some/where.ckpt");
    strcpy(info.contexts, "/some/contexts.jsonl");
    snprintf(path, sizeof path, "%s/index.txt", dir);
    ds_states_write_index(path, &info, shards);
}

static void corrupt_shard(const char *name, long offset, int flip, long truncate_to, long append, const char *reason) {
    /* A copy of the dataset directory whose first shard is damaged. */
    char dir[200], cmd[700], shard[300], index[300];
    tmp_path(dir, sizeof dir, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/ds' '%s'", dir, tmp_root, dir);
    CHECK(system(cmd) == 0, "copy dataset");
    snprintf(shard, sizeof shard, "%s/s0.bin", dir);
    snprintf(index, sizeof index, "%s/index.txt", dir);
    size_t len;
    uint8_t *data = test_read_file(shard, &len);
    if (offset >= 0) data[offset] ^= (uint8_t)flip;
    if (truncate_to >= 0) len = (size_t)truncate_to;
    test_write_file(shard, data, len);
    if (append) { FILE *f = fopen(shard, "ab"); fputc('x', f); fclose(f); }
    char why[256];
    CHECK(ds_state_file_check(shard, why, sizeof why) == -1 && strstr(why, reason), "%s: check says '%s'", name, why);
    char want[700];
    snprintf(want, sizeof want, "%s: %s", shard, reason);
    test_expect_bad_input(child_open_states, index, want, name);
    free(data);
}

static void corrupt_index(const char *name, const char *from, const char *to, const char *reason) {
    char dir[256], cmd[700], index[300];
    tmp_path(dir, sizeof dir, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/ds' '%s'", dir, tmp_root, dir);
    CHECK(system(cmd) == 0, "copy dataset");
    snprintf(index, sizeof index, "%s/index.txt", dir);
    size_t len;
    char *text = (char *)test_read_file(index, &len), *at = strstr(text, from);
    CHECK(at != NULL, "%s: '%s' in the index", name, from);
    if (!at) { free(text); return; }
    char out[4096];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    test_write_file(index, out, strlen(out));
    test_expect_bad_input(child_open_states, index, reason, name);
    free(text);
}

typedef struct { const char *path; ds_rwkv7_dims d; } load_args;
static void child_load_state_file(void *a) {
    load_args *la = a;
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &la->d, 1);
    ds_state_file_load(la->path, &la->d, &st, NULL);
}
static void child_load_record(void *a) {
    load_args *la = a;
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &la->d, 1);
    ds_states *s = ds_states_open(la->path);
    ds_states_load_rwkv7(s, 0, &la->d, &st);
}

static void test_states_format(void) {
    ds_rwkv7_dims d = small_dims(2, 128);
    ds_rwkv7_state src;
    ds_rwkv7_state_create(&src, &d, 3);
    fill_state(&src, 11);
    int cond_dim = 2 * 128;
    float conds[3 * 256];
    for (int i = 0; i < 3 * 256; i++) conds[i] = (float)ds_rng_normal(12, 0, i);
    write_dataset("ds", &d, &src, conds);
    snprintf(good_index, sizeof good_index, "%s/ds/index.txt", tmp_root);
    snprintf(good_shard0, sizeof good_shard0, "%s/ds/s0.bin", tmp_root);

    /* The header fields and the record layout at their documented offsets. */
    size_t len;
    uint8_t *raw = test_read_file(good_shard0, &len);
    int64_t rb = 8 + 4 * (cond_dim + 2 * (2 * 128 + 2 * 64 * 64));
    CHECK(memcmp(raw, "DSSTATES", 8) == 0 && u32_at(raw + 8) == 1 && u32_at(raw + 12) == 2 && u32_at(raw + 16) == 128 &&
          u32_at(raw + 20) == 2 && u32_at(raw + 24) == 64 && u32_at(raw + 28) == 256 && u32_at(raw + 32) == 3 &&
          u64_at(raw + 40) == 2 && u64_at(raw + 48) == (uint64_t)rb,
          "shard header fields at their documented offsets");
    uint32_t meta_bytes = u32_at(raw + 36);
    CHECK(len == 64 + 2 * (size_t)rb + meta_bytes && u32_at(raw + 60) == ds_crc32c(0, raw, 60) &&
          u32_at(raw + 56) == ds_crc32c(0, raw + 64, len - 64), "size and both checksums as documented");
    CHECK(record_matches(raw + 64, 2, 128, cond_dim, conds, 1, 5, &src, 0) &&
          record_matches(raw + 64 + rb, 2, 128, cond_dim, conds + cond_dim, 0, 6, &src, 1),
          "records hold label, context, cond and the per-layer state in the documented order");
    CHECK(strncmp((char *)raw + len - meta_bytes, "model=rwkv7 L=2 C=128", 21) == 0, "metadata after the records");
    free(raw);

    /* Reader: every record bit-exact, labels, info. */
    ds_states *s = ds_states_open(good_index);
    const ds_states_info *in = ds_states_get_info(s);
    CHECK(in->n_records == 3 && in->n_shards == 2 && in->n_labels == 3 && strcmp(in->labels[2], "programmer") == 0 &&
          in->max_tokens == 99 && strcmp(in->checkpoint, "/some/where.ckpt") == 0 && in->shape.cond_dim == 256 &&
          strcmp(in->tokenizer, "byte") == 0, "index fields read back");
    int32_t labels[3] = {1, 0, 2};
    ds_state_shape sh = in->shape;
    for (int i = 0; i < 3; i++) {
        ds_state_record r = ds_states_record(s, i);
        CHECK(r.label == labels[i] && r.context == 5 + i && memcmp(r.cond, conds + i * cond_dim, 4 * cond_dim) == 0,
              "record %d label/context/cond", i);
        CHECK(memcmp(ds_state_att_x(&sh, r.state, 1), src.att_x + (1 * 3 + i) * 128, 4 * 128) == 0 &&
              memcmp(ds_state_wkv(&sh, r.state, 1), src.wkv + (int64_t)(1 * 3 + i) * 2 * 4096, 4 * 2 * 4096) == 0 &&
              memcmp(ds_state_ffn_x(&sh, r.state, 1), src.ffn_x + (1 * 3 + i) * 128, 4 * 128) == 0,
              "record %d layer-1 parts via the accessors", i);
        ds_rwkv7_state one;
        ds_rwkv7_state_create(&one, &d, 1);
        ds_states_load_rwkv7(s, i, &d, &one);
        int same = 1;
        for (int l = 0; l < 2; l++)
            same &= memcmp(one.att_x + l * 128, src.att_x + (l * 3 + i) * 128, 4 * 128) == 0 &&
                    memcmp(one.wkv + (int64_t)l * 8192, src.wkv + (int64_t)(l * 3 + i) * 8192, 4 * 8192) == 0 &&
                    memcmp(one.ffn_x + l * 128, src.ffn_x + (l * 3 + i) * 128, 4 * 128) == 0;
        CHECK(same, "record %d loads into a B=1 model state bit-exactly", i);
        ds_rwkv7_state_destroy(&one);
    }

    /* State files: save a sequence, load it back; a dataset record as a state file. */
    char path[256], path2[256];
    tmp_path(path, sizeof path, "one.state");
    ds_state_file_save(path, DS_STATE_FILE_DREAMSTATE, &d, &src, 2, 4, "note=hello\n");
    ds_rwkv7_state one;
    ds_rwkv7_state_create(&one, &d, 1);
    char *meta = NULL;
    ds_state_file_load(path, &d, &one, &meta);
    ds_rwkv7_state want;
    ds_rwkv7_state_create(&want, &d, 1);
    ds_state_shape shape0 = ds_state_shape_of(&d, 0);
    float *packed = malloc(sizeof(float) * ds_state_floats(&shape0));
    ds_state_pack(&shape0, &src, 2, packed);
    ds_state_unpack(&shape0, packed, &want, 0);
    CHECK(memcmp(one.data, want.data, sizeof(float) * one.numel) == 0, "state file round trip bit-exact");
    CHECK(meta && strstr(meta, "model=rwkv7 L=2 C=128 V=256") && strstr(meta, "note=hello\n"), "state file metadata: %s",
          meta ? meta : "(none)");
    free(meta);
    tmp_path(path2, sizeof path2, "rec2.state");
    ds_states_save_record(s, 2, path2);
    ds_state_file_load(path2, &d, &one, &meta);
    CHECK(memcmp(one.data, want.data, sizeof(float) * one.numel) == 0 && strstr(meta, "label=programmer\n") &&
          strstr(meta, "context=7\n"), "dataset record 2 as a state file");
    free(meta);
    free(packed);
    ds_rwkv7_state_destroy(&one);
    ds_rwkv7_state_destroy(&want);
    ds_states_close(s);

    /* Wrong shapes. */
    load_args la = {path, small_dims(4, 256)};
    char msg[512];
    snprintf(msg, sizeof msg, "%s: state has L=2 C=128, model has L=4 C=256", path);
    test_expect_bad_input(child_load_state_file, &la, msg, "state file into a bigger model");
    load_args lb = {good_index, small_dims(2, 192)};
    snprintf(msg, sizeof msg, "%s: state has L=2 C=128, model has L=2 C=192", good_index);
    test_expect_bad_input(child_load_record, &lb, msg, "dataset record into another model");
    load_args lc = {good_shard0, d};
    test_expect_bad_input(child_load_state_file, &lc, "holds 2 states; a state file holds one", "a shard is not a state file");

    /* Corruption: each refused with the file and the reason. */
    corrupt_shard("c_payload", 64 + 8 + 4 * 300, 0x01, -1, 0, "payload checksum mismatch");
    corrupt_shard("c_header", 16, 0x40, -1, 0, "header checksum mismatch");
    corrupt_shard("c_magic", 0, 'D' ^ 'X', -1, 0, "not a state file (bad magic)");
    corrupt_shard("c_trunc", -1, 0, 64 + 1000, 0, "truncated (expected");
    corrupt_shard("c_trunc_header", -1, 0, 10, 0, "truncated header (10 of 64 bytes)");
    corrupt_shard("c_append", -1, 0, -1, 1, "wrong size (expected");
    corrupt_index("i_count", "s1.bin 1", "s1.bin 2", "shards hold 4 records, the index says 3");
    corrupt_index("i_total", "records 3", "records 4", "shards hold 3 records, the index says 4");
    corrupt_index("i_shard_count", "records 3\n", "records 3\nx\n", "index.txt:9: expected 'labels VALUE'");
    corrupt_index("i_magic", "dreamstate-states 1", "dreamstate-states 2", "index.txt:1: expected 'dreamstate-states 1'");
    corrupt_index("i_missing", "s1.bin", "s9.bin", "s9.bin: cannot open");
    corrupt_index("i_model", "Dw=", "Dw=1", "made by model 'rwkv7 L=2 C=128");
    corrupt_index("i_shape", "C=128 H=2", "C=192 H=3", "differs from the index's L=2 C=192");
    corrupt_index("i_labels", "label programmer\n", "", "index.txt:12: expected 'label VALUE'");
    corrupt_index("i_overflow", "s1.bin 1", "s1.bin 9223372036854775807",
                  "index.txt:15: record counts add up to more than 9223372036854775807; the index is corrupt");
    ds_rwkv7_state_destroy(&src);
}

/* ---------------------------------------------------------------- extract-states */

static void make_checkpoint(const ds_rwkv7_dims *d, const char *path, ds_rwkv7 *m) {
    ds_rwkv7_create(m, d);
    ds_rwkv7_init_weights(m, 5);
    /* noise on every parameter so that no state part is trivially zero */
    for (int64_t i = 0; i < m->n_params; i++) m->params[i] += 0.05f * (float)ds_rng_normal(5, 999, i);
    float *adam = ds_alloc(sizeof(float) * m->n_params);
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * (m->n_tensors + 2));
    int n = ds_weights_ckpt_tensors(m, adam, adam, t);
    char meta[512], err[DS_ERR_LEN];
    ds_weights_ckpt_meta(d, 0, NULL, meta, sizeof meta);
    CHECK(ds_ckpt_save(path, meta, n, t, err) == 0, "checkpoint save: %s", err);
    ds_free(t);
    ds_free(adam);
}

static ds_config extract_config(void) {
    ds_config cfg;
    ds_config_defaults(&cfg);
    cfg.model.n_layer = 2;
    cfg.model.n_embd = 128;
    cfg.model.vocab_size = 256;
    cfg.run.threads = 1;
    strcpy(cfg.data.tokenizer, "byte");
    return cfg;
}

/* In this process, its JSON summary line silenced. (Runs that use the model stay in this process:
 * libgomp does not survive fork once its threads exist, so forked children only test refusals that
 * happen before any model work.) */
static int quiet_extract(const ds_config *cfg, const ds_extract_options *opt) {
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    int rc = ds_extract_states(cfg, opt);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved); close(devnull);
    return rc;
}

typedef struct { ds_config cfg; ds_extract_options opt; } extract_args;
static void child_extract(void *a) {
    extract_args *e = a;
    ds_extract_states(&e->cfg, &e->opt);
}

static void test_extract(void) {
    ds_config cfg = extract_config();
    ds_rwkv7_dims d = ds_rwkv7_dims_from_config(&cfg);
    char ckpt[256], contexts[256], out[256], index[300];
    tmp_path(ckpt, sizeof ckpt, "model.ckpt");
    tmp_path(contexts, sizeof contexts, "ex.jsonl");
    tmp_path(out, sizeof out, "ex_states");
    ds_rwkv7 m;
    make_checkpoint(&d, ckpt, &m);
    const char *texts[] = {"Once upon a time there was a fox.", "int main(void) { return 0; }",
                           "A", "The plan: step one, step two, step three, and then a long tail of further steps."};
    const char *labels[] = {"story", "code", "story", "plan"};
    ds_contexts_writer *w = ds_contexts_writer_open(contexts);
    for (int i = 0; i < 4; i++) ds_contexts_writer_add(w, labels[i], texts[i], strlen(texts[i]), NULL);
    ds_contexts_writer_commit(w);

    const int max_tokens = 40;  /* the last context is longer: cut to its first 40 bytes */
    ds_extract_options opt = {.checkpoint = ckpt, .contexts = contexts, .out_dir = out, .max_tokens = max_tokens};
    int rc = quiet_extract(&cfg, &opt);
    CHECK(rc == 0, "extract-states returned %d", rc);
    snprintf(index, sizeof index, "%s/index.txt", out);
    ds_states *s = ds_states_open(index);
    const ds_states_info *in = ds_states_get_info(s);
    CHECK(in->n_records == 4 && in->n_labels == 3 && in->shape.cond_dim == 256 &&
          in->shape.flags == (DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN) && in->max_tokens == max_tokens,
          "extracted dataset: %lld records, %d labels", (long long)in->n_records, in->n_labels);

    ds_rwkv7_state ref, injected;
    ds_rwkv7_state_create(&ref, &d, 1);
    ds_rwkv7_state_create(&injected, &d, 1);
    ds_state_shape sh = in->shape;
    float *packed = malloc(sizeof(float) * ds_state_floats(&sh));
    const char *sorted[] = {"code", "plan", "story"};
    for (int i = 0; i < 4 && i < in->n_records; i++) {
        ds_state_record r = ds_states_record(s, i);
        int T = (int)strlen(texts[i]) < max_tokens ? (int)strlen(texts[i]) : max_tokens;
        int32_t tok[128];
        for (int t = 0; t < T; t++) tok[t] = (unsigned char)texts[i][t];
        ds_rwkv7_forward(&m, 1, T, tok, NULL, 1.0f, 0.0f, NULL, &ref, NULL);
        ds_state_pack(&sh, &ref, 0, packed);
        CHECK(r.context == i && strcmp(in->labels[r.label], labels[i]) == 0 && strcmp(in->labels[r.label], sorted[r.label]) == 0,
              "record %d: context %d, label %s", i, r.context, in->labels[r.label]);
        CHECK(memcmp(r.state, packed, sizeof(float) * ds_state_floats(&sh)) == 0,
              "record %d: the state equals ds_rwkv7_forward's final state (T=%d)", i, T);
        /* condition: emb row of the first token, and the float64 mean of the rows */
        double err_first = 0, err_mean = 0;
        for (int c = 0; c < 128; c++) {
            double mean = 0;
            for (int t = 0; t < T; t++) mean += m.w.emb[(int64_t)tok[t] * 128 + c];
            mean /= T;
            err_first = fmax(err_first, fabs(r.cond[c] - m.w.emb[(int64_t)tok[0] * 128 + c]));
            err_mean = fmax(err_mean, fabs(r.cond[128 + c] - mean));
        }
        CHECK(err_first == 0 && err_mean < 1e-7, "record %d: condition errors %.3g (first token), %.3g (mean)", i,
              err_first, err_mean);
    }
    /* Injection (src/dit/README.md §3.7): the stored state of P, then Q from it, gives the logits of P||Q. */
    {
        const char *P = texts[0], *Q = " It ran into the woods.";
        int nP = (int)strlen(P), nQ = (int)strlen(Q), V = 256;
        int32_t all[128];
        for (int t = 0; t < nP + nQ; t++) all[t] = (unsigned char)(t < nP ? P[t] : Q[t - nP]);
        float *whole = malloc(sizeof(float) * (nP + nQ) * V), *cont = malloc(sizeof(float) * nQ * V);
        ds_rwkv7_forward(&m, 1, nP + nQ, all, NULL, 1.0f, 0.0f, NULL, NULL, whole);
        ds_states_load_rwkv7(s, 0, &d, &injected);
        ds_rwkv7_forward(&m, 1, nQ, all + nP, NULL, 1.0f, 0.0f, &injected, NULL, cont);
        double err = test_rel_err(cont, whole + (int64_t)nP * V, (long)nQ * V);
        CHECK(err < 1e-4, "injected state + Q = P||Q: logits rel err %.3g", err);
        /* control: the same continuation from the zero state is far from it */
        ds_rwkv7_forward(&m, 1, nQ, all + nP, NULL, 1.0f, 0.0f, NULL, NULL, cont);
        double far = test_rel_err(cont, whole + (int64_t)nP * V, (long)nQ * V);
        CHECK(far > 1e-2, "control: Q from the zero state differs (rel err %.3g)", far);
        free(whole); free(cont);
    }
    free(packed);
    ds_rwkv7_state_destroy(&ref);
    ds_rwkv7_state_destroy(&injected);

    /* --labels-from: a held-out set uses the train set's ids; an unknown label is refused. */
    char held[256], out2[256], index2[300];
    tmp_path(held, sizeof held, "ex_held.jsonl");
    tmp_path(out2, sizeof out2, "ex_held_states");
    w = ds_contexts_writer_open(held);
    ds_contexts_writer_add(w, "story", "Far away", 8, NULL);
    ds_contexts_writer_commit(w);
    ds_extract_options opt2 = {.checkpoint = ckpt, .contexts = held, .out_dir = out2, .labels_from = index, .max_tokens = 64};
    extract_args ea = {cfg, opt2};
    CHECK(quiet_extract(&cfg, &opt2) == 0, "held-out extraction");
    snprintf(index2, sizeof index2, "%s/index.txt", out2);
    ds_states *s2 = ds_states_open(index2);
    const ds_states_info *in2 = ds_states_get_info(s2);
    CHECK(in2->n_labels == 3 && strcmp(in2->labels[2], "story") == 0 && ds_states_record(s2, 0).label == 2,
          "--labels-from keeps the reference label ids");
    ds_states_close(s2);
    w = ds_contexts_writer_open(held);
    ds_contexts_writer_add(w, "story", "Far away", 8, NULL);
    ds_contexts_writer_add(w, "poem", "Roses", 5, NULL);
    ds_contexts_writer_commit(w);
    char want[512];
    snprintf(want, sizeof want, "%s:2: unknown label 'poem' (known: code, plan, story)", held);
    test_expect_bad_input(child_extract, &ea, want, "extract with an unknown label");

    /* A checkpoint of another shape is refused before any work. */
    w = ds_contexts_writer_open(held);
    ds_contexts_writer_add(w, "story", "Far away", 8, NULL);
    ds_contexts_writer_commit(w);
    char *other_shape[] = {"model.n_layer=3", "run.threads=1"};  /* a given model key must match the file */
    ds_config_load(&ea.cfg, NULL, 2, other_shape);
    test_expect_bad_input(child_extract, &ea, ckpt, "checkpoint of another shape");
    ds_states_close(s);
    ds_rwkv7_destroy(&m);
}

/* --ln-out: the condition's third part is the last token's ln_out(x), i.e. the row that the head maps to
 * the last logits; --random-init: the states of the model `train` would start from (run.seed), no
 * checkpoint; both with a checkpoint or neither are refused. */
static void test_extract_controls(void) {
    ds_config cfg = extract_config();
    cfg.run.seed = 77;
    ds_rwkv7_dims d = ds_rwkv7_dims_from_config(&cfg);
    char ckpt[256], contexts[256], out[256], index[300];
    tmp_path(ckpt, sizeof ckpt, "ctl.ckpt");
    tmp_path(contexts, sizeof contexts, "ctl.jsonl");
    ds_rwkv7 m, init;
    make_checkpoint(&d, ckpt, &m);
    const char *texts[] = {"Once upon a time there was a fox.", "int main(void) { return 0; }"};
    ds_contexts_writer *w = ds_contexts_writer_open(contexts);
    for (int i = 0; i < 2; i++) ds_contexts_writer_add(w, i ? "code" : "story", texts[i], strlen(texts[i]), NULL);
    ds_contexts_writer_commit(w);
    ds_rwkv7_create(&init, &d);
    ds_rwkv7_init_weights(&init, 77);
    for (int random = 0; random < 2; random++) {
        ds_rwkv7 *ref = random ? &init : &m;
        tmp_path(out, sizeof out, random ? "ctl_random" : "ctl_ln_out");
        ds_extract_options opt = {.checkpoint = random ? NULL : ckpt, .contexts = contexts, .out_dir = out,
                                  .max_tokens = 64, .random_init = random, .ln_out = 1};
        CHECK(quiet_extract(&cfg, &opt) == 0, "extract %s", random ? "--random-init --ln-out" : "--ln-out");
        snprintf(index, sizeof index, "%s/index.txt", out);
        ds_states *s = ds_states_open(index);
        const ds_states_info *in = ds_states_get_info(s);
        CHECK(in->shape.cond_dim == 3 * 128 && in->shape.flags == (DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN | DS_COND_LAST_HIDDEN),
              "--ln-out: cond_dim %d, flags %u", in->shape.cond_dim, in->shape.flags);
        CHECK(!random || strcmp(in->checkpoint, "random-init:seed=77") == 0, "--random-init: index checkpoint '%s'",
              in->checkpoint);
        ds_rwkv7_state st;
        ds_rwkv7_state_create(&st, &d, 1);
        float *packed = malloc(sizeof(float) * ds_state_floats(&in->shape)), logits[64 * 256];
        for (int i = 0; i < 2; i++) {
            ds_state_record r = ds_states_record(s, i);
            int T = (int)strlen(texts[i]);
            int32_t tok[64];
            for (int t = 0; t < T; t++) tok[t] = (unsigned char)texts[i][t];
            ds_rwkv7_forward(ref, 1, T, tok, NULL, 1.0f, 0.0f, NULL, &st, logits);
            ds_state_pack(&in->shape, &st, 0, packed);
            const float *h = r.cond + 2 * 128;
            double err = 0, scale = 0;   /* the head's input: logits[T-1][v] = head[v] . h */
            for (int v = 0; v < 256; v++) {
                double z = 0;
                for (int c = 0; c < 128; c++) z += (double)ref->w.head[(int64_t)v * 128 + c] * h[c];
                err = fmax(err, fabs(z - logits[(T - 1) * 256 + v])), scale = fmax(scale, fabs(logits[(T - 1) * 256 + v]));
            }
            CHECK(memcmp(r.state, packed, sizeof(float) * ds_state_floats(&in->shape)) == 0 &&
                  memcmp(h, ds_rwkv7_ln_out(ref) + (T - 1) * 128, sizeof(float) * 128) == 0 && err < 1e-5 * scale,
                  "%s record %d: state and ln_out row equal the model's; head . h = last logits (err %.2g of %.2g)",
                  random ? "random-init" : "checkpoint", i, err, scale);
        }
        free(packed);
        ds_rwkv7_state_destroy(&st);
        ds_states_close(s);
    }
    extract_args both = {cfg, {.checkpoint = ckpt, .contexts = contexts, .out_dir = out, .max_tokens = 64, .random_init = 1}};
    test_expect_bad_input(child_extract, &both, "give either --checkpoint FILE or --random-init, not both",
                          "--random-init with --checkpoint");
    extract_args neither = {cfg, {.contexts = contexts, .out_dir = out, .max_tokens = 64}};
    test_expect_bad_input(child_extract, &neither, "give either --checkpoint FILE or --random-init",
                          "neither --checkpoint nor --random-init");
    ds_rwkv7_destroy(&m);
    ds_rwkv7_destroy(&init);
}

/* An index whose labels are `labels` (n names); its shard does not exist. */
static void write_index_with_labels(const char *path, int n, const char *const *labels) {
    FILE *f = fopen(path, "w");
    fprintf(f, "dreamstate-states 1\nmodel m\nshape L=1 C=64 H=1 N=64 cond_dim=0 flags=0\ncheckpoint c\ncontexts x\n"
               "tokenizer byte\nmax_tokens 64\nrecords 0\nlabels %d\n", n);
    for (int i = 0; i < n; i++) fprintf(f, "label %s\n", labels[i]);
    fprintf(f, "shards 1\nshard missing.bin 0\n");
    fclose(f);
}

/* A label listed twice is refused at its second line (the first repeat in file order), and an index
 * of 2^18 labels is read in well under a second (a pairwise check took minutes; at the 2^20 an index
 * may list, hours). Labels start at line 10. */
static void test_index_labels(void) {
    char path[300], want[400];
    tmp_path(path, sizeof path, "labels.txt");
    const char *repeats[] = {"a", "b", "c", "b", "a"};
    write_index_with_labels(path, 5, repeats);
    snprintf(want, sizeof want, "%s:13: label 'b' listed twice", path);
    test_expect_bad_input(child_open_states, path, want, "label listed twice");

    enum { N = 1 << 18 };
    char (*names)[16] = malloc(sizeof *names * N);
    const char **labels = malloc(sizeof *labels * N);
    for (int i = 0; i < N; i++) {  /* l0 .. l(N-1), shuffled */
        snprintf(names[i], sizeof names[i], "l%d", (int)((int64_t)i * 7919 % N));
        labels[i] = names[i];
    }
    write_index_with_labels(path, N, labels);
    snprintf(want, sizeof want, "%s/missing.bin: cannot open", tmp_root);
    double t0 = ds_now_seconds();
    test_expect_bad_input(child_open_states, path, want, "2^18 labels");
    double dt = ds_now_seconds() - t0;
    CHECK(dt < 5.0, "an index of %d labels read in %.2f s", N, dt);
    labels[N - 1] = labels[0];
    write_index_with_labels(path, N, labels);
    snprintf(want, sizeof want, "%s:%d: label 'l0' listed twice", path, 10 + N - 1);
    test_expect_bad_input(child_open_states, path, want, "the last of 2^18 labels repeats the first");
    free(labels);
    free(names);
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/ds_test_states_XXXXXX");
    if (!mkdtemp(tmp_root)) { perror("mkdtemp"); return 1; }
    ds_blas_init(1);
    ds_kernels_init();
    test_contexts_roundtrip();
    test_contexts_errors();
    test_unknown_label();
    test_builder();
    test_sha256();
    test_manifest();
    test_states_format();
    test_index_labels();
    test_extract();
    test_extract_controls();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return test_summary("test_states");
}
