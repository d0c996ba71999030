/* Data module: tokenizers, token shards (round trip and corruption), the JSONL document reader,
 * prepare-data (text and JSONL to shards or binidx), default corpus.
 *
 * `test_data --encode-world VOCAB FILE OUT` encodes FILE with the World tokenizer and writes the
 * ids as little-endian int32 to OUT: tests/ref/test_tokenizer_world.py compares that with an
 * independent Python encoder. */
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "test.h"
#include "../src/data/jsonl.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp_root[64];
static char vocab_path[4200];

/* ---------------------------------------------------------------- helpers */

static uint8_t *read_command(const char *cmd, size_t *len) {
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 20, n = 0, got;
    uint8_t *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n, p)) > 0)
        if ((n += got) == cap) buf = realloc(buf, cap *= 2);
    int rc = pclose(p);
    *len = n;
    if (rc != 0 || n == 0) { free(buf); return NULL; }
    return buf;
}

static int files_equal(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    uint8_t *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    int eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x); free(y);
    return eq;
}


static void child_open_dataset(void *path) { ds_dataset_close(ds_dataset_open(path)); }
static void child_open_world(void *path) { ds_tokenizer_free(ds_tokenizer_open("world", path)); }

static void child_prepare(void *o) { ds_prepare_data(o); }

/* Expects `fn(arg)` to die with exit code `code` and `reason` in its one-line message. */
static void expect_death(void (*fn)(void *), void *arg, int code, const char *reason, const char *what) {
    char err[2048];
    int rc = test_run_in_child(fn, arg, err, sizeof err);
    size_t len = strlen(err);
    int one_line = len > 0 && err[len - 1] == '\n' && memchr(err, '\n', len - 1) == NULL;
    CHECK(rc == code && strstr(err, reason) && one_line, "%s: want exit %d with '%s', got exit %d: %s", what, code,
          reason, rc, err);
}

/* ---------------------------------------------------------------- tokenizers */

static void test_byte_tokenizer(void) {
    ds_tokenizer *tok = ds_tokenizer_open("byte", NULL);
    CHECK(ds_tokenizer_vocab_size(tok) == 256 && ds_tokenizer_fingerprint(tok) == 0, "byte tokenizer vocab/fingerprint");
    uint8_t text[1000], back[1000];
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) text[i] = (uint8_t)(i < 256 ? i : ds_rng_u64(1, 2, i));
    size_t n = ds_tokenizer_encode(tok, text, sizeof text, ids);
    int ok = n == sizeof text;
    for (size_t i = 0; ok && i < n; i++) ok = ids[i] == text[i];
    CHECK(ok, "byte tokenizer: id = byte value");
    size_t m = ds_tokenizer_decode(tok, ids, n, back, sizeof back);
    CHECK(m == sizeof text && memcmp(back, text, m) == 0, "byte tokenizer round trip");
    ds_tokenizer_free(tok);
}

/* A small hand-written vocab with known answers for parsing and greedy matching. */
static void test_small_vocab(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/small_vocab.txt", tmp_root);
    FILE *f = fopen(path, "w");
    for (int b = 0; b < 256; b++) fprintf(f, "%d b'\\x%02x' 1\n", b + 1, b);
    fputs("257 'ab' 2\n"
          "258 'abc' 3\n"
          "259 'abd' 3\n"
          "260 '\xc3\xa9' 2\n"        /* raw UTF-8 e-acute */
          "261 '\\u4e2d' 3\n"         /* U+4E2D */
          "262 \"it's\" 4\n"
          "263 'a\\'b' 3\n"
          "264 'x\\\\y' 3\n"
          "265 '\\x80 \\t' 4\n"       /* str \x80 is U+0080 = C2 80; a space inside the literal */
          "266 '\\U0001f600' 4\n",
          f);
    fclose(f);
    ds_tokenizer *tok = ds_tokenizer_open("world", path);
    static const struct { int id; const char *bytes; size_t len; } want[] = {
        {258, "abc", 3}, {260, "\xc3\xa9", 2}, {261, "\xe4\xb8\xad", 3}, {262, "it's", 4}, {263, "a'b", 3},
        {264, "x\\y", 3}, {265, "\xc2\x80 \t", 4}, {266, "\xf0\x9f\x98\x80", 4}, {129, "\x80", 1}, {1, "", 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        size_t len;
        const uint8_t *b = ds_tokenizer_token(tok, want[i].id, &len);
        CHECK(len == want[i].len && memcmp(b, want[i].bytes, len) == 0, "small vocab: bytes of id %d", want[i].id);
    }
    const char *text = "abcabxabd\xe4\xb8\xad" "ab";
    int32_t ids[32];
    size_t n = ds_tokenizer_encode(tok, text, strlen(text), ids);
    int32_t expect[] = {258, 257, 'x' + 1, 259, 261, 257};
    CHECK(n == 6 && memcmp(ids, expect, sizeof expect) == 0, "small vocab greedy longest match: got %zu ids", n);
    ds_tokenizer_free(tok);

    /* Malformed vocab lines: "FILE:LINE: reason", exit code 2. */
    static const struct { const char *text, *reason; } bad[] = {
        {"1 'a' 1\n2 'ab' 3\n", ":2: literal encodes to 2 bytes but the line says 3"},
        {"1 'a' 1\n2 ab 2\n", ":2: token is not a quoted Python str or bytes literal"},
        {"1 'a' 1\n1 'b' 1\n", ":2: duplicate id 1 (first on line 1)"},
        {"1 'a' 1\n2 '\\q' 2\n", ":2: unsupported escape sequence"},
        {"1 'a' 1\n2 'a' 1\n", ":2: token bytes duplicate those of id 1"},
        {"1 'a'1\n", ":1: expected \"<id> <python literal> <byte length>\""},
        {"1 'a' 1\n70000 'b' 1\n", ":2: id must be a number in 1..65535"},
        {"1 'a' 1\n2 b'\\u0041' 6\n", ":2: \\u escape in bytes literal"},
        {"1 'a' 1\n2 'it's' 4\n", ":2: unescaped quote inside literal"},
        {"1 'a' 1\n2 'b' 1\n", ": no token for the single byte 0x00"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "%s/bad_vocab_%zu.txt", tmp_root, i);
        test_write_file(path, bad[i].text, strlen(bad[i].text));
        char reason[256];
        snprintf(reason, sizeof reason, "%s%s", path, bad[i].reason);
        expect_death(child_open_world, path, DS_EXIT_BAD_INPUT, reason, "malformed vocab");
    }
}

/* Token byte strings sorted, for an independent brute-force "is this a token" lookup. */
typedef struct { const uint8_t *b; size_t len; } bytes_ref;
static int compare_bytes_ref(const void *x, const void *y) {
    const bytes_ref *a = x, *b = y;
    int c = memcmp(a->b, b->b, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static void test_world_tokenizer(void) {
    double t0 = ds_now_seconds();
    ds_tokenizer *tok = ds_tokenizer_open("world", vocab_path);
    printf("world vocab loaded in %.3f s\n", ds_now_seconds() - t0);
    CHECK(ds_tokenizer_vocab_size(tok) == 65536 && ds_tokenizer_fingerprint(tok) != 0, "world vocab size/fingerprint");
    /* No vocab file: the built-in copy of the same file, so the same fingerprint (shards stay valid). */
    ds_tokenizer *builtin = ds_tokenizer_open("world", NULL);
    CHECK(ds_tokenizer_fingerprint(builtin) == ds_tokenizer_fingerprint(tok), "world: built-in vocab = the file");

    /* Facts from the vocab file (src/rwkv7/README.md §7 and the file's own lines). */
    int ok = 1;
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        int32_t id;
        ok &= ds_tokenizer_encode(tok, &c, 1, &id) == 1 && id == b + 1;
    }
    CHECK(ok, "world: single byte b encodes to id b + 1");
    static const struct { int id; const char *bytes; } lines[] = {
        {12, "\x0b"}, {40, "'"}, {99, "b"}, {129, "\x80"}, {2423, "\xc2\x80"}, {9804, "\xe2\x80\x82"},
        {65527, "################################################################################"},
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        size_t len;
        const uint8_t *b = ds_tokenizer_token(tok, lines[i].id, &len);
        CHECK(len == strlen(lines[i].bytes) && memcmp(b, lines[i].bytes, len) == 0, "world: bytes of id %d", lines[i].id);
    }
    size_t len;
    ds_tokenizer_token(tok, 0, &len);
    CHECK(len == 0, "world: id 0 (<|endoftext|>) decodes to nothing");

    /* A token's own bytes encode to that single id (1000 sampled ids). */
    int single = 0, tried = 0;
    for (int k = 0; k < 1000; k++) {
        int32_t id = 1 + (int32_t)(ds_rng_u64(7, 0, k) % 65529), ids[256];
        const uint8_t *b = ds_tokenizer_token(tok, id, &len);
        tried++;
        single += ds_tokenizer_encode(tok, b, len, ids) == 1 && ids[0] == id;
    }
    CHECK(single == tried, "world: %d of %d sampled tokens encode to themselves", single, tried);

    /* Round trip of UTF-8 with CJK and emoji; common characters are single tokens. */
    const char *text = "Hello, world! \xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c\xe3\x80\x82 "
                       "\xf0\x9f\x98\x80\xf0\x9f\x9a\x80 Gr\xc3\xbc\xc3\x9f""e \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 "
                       "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf\n\t\x00\xff\xfe";
    size_t n = strlen(text) + 3;  /* keep the trailing NUL and the invalid-UTF-8 bytes */
    int32_t ids[256];
    uint8_t back[256];
    size_t n_ids = ds_tokenizer_encode(tok, text, n, ids);
    size_t m = ds_tokenizer_decode(tok, ids, n_ids, back, sizeof back);
    CHECK(m == n && memcmp(back, text, n) == 0, "world: round trip of UTF-8 text with CJK and emoji");
    CHECK(n_ids < n / 2, "world: %zu ids for %zu bytes (expected multi-byte tokens)", n_ids, n);
    int32_t builtin_ids[256];
    CHECK(ds_tokenizer_encode(builtin, text, n, builtin_ids) == n_ids &&
              memcmp(builtin_ids, ids, n_ids * sizeof *ids) == 0,
          "world: the built-in vocab encodes the same ids");
    ds_tokenizer_free(builtin);
    CHECK(ds_tokenizer_encode(tok, "\xe4\xb8\xad", 3, ids) == 1, "world: U+4E2D is one token");
    CHECK(ds_tokenizer_decode(tok, ids, 1, back, 2) == 3 && back[0] == 0xe4 && back[1] == 0xb8,
          "decode reports the full length when the buffer is short");

    /* Greedy = longest: at every position of real text, no longer token matches there. Checked by
     * brute force against a sorted table of all token byte strings (independent of the trie). */
    size_t text_len;
    uint8_t *jargon = read_command("gzip -dc /usr/share/doc/jargon-text/jargon.txt.gz 2>/dev/null", &text_len);
    if (!jargon) {
        printf("note: jargon-text not installed, greedy-longest and speed checks skipped\n");
        ds_tokenizer_free(tok);
        return;
    }
    bytes_ref *table = malloc(65530 * sizeof *table);
    size_t max_len = 0;
    for (int id = 1; id < 65530; id++) {
        table[id - 1].b = ds_tokenizer_token(tok, id, &table[id - 1].len);
        if (table[id - 1].len > max_len) max_len = table[id - 1].len;
    }
    qsort(table, 65529, sizeof *table, compare_bytes_ref);
    const size_t sample = 40000, offset = 300000;  /* a stretch of lexicon entries */
    int32_t *sids = malloc(sample * sizeof *sids);
    size_t sn = ds_tokenizer_encode(tok, jargon + offset, sample, sids);
    size_t pos = 0, longer_found = 0, mismatched = 0;
    for (size_t i = 0; i < sn; i++) {
        size_t tl;
        const uint8_t *tb = ds_tokenizer_token(tok, sids[i], &tl);
        mismatched += pos + tl > sample || memcmp(tb, jargon + offset + pos, tl) != 0;
        for (size_t l = tl + 1; l <= max_len && pos + l <= sample; l++) {
            bytes_ref key = {jargon + offset + pos, l};
            longer_found += bsearch(&key, table, 65529, sizeof *table, compare_bytes_ref) != NULL;
        }
        pos += tl;
    }
    CHECK(pos == sample && mismatched == 0, "world: ids spell the text (%zu mismatches)", mismatched);
    CHECK(longer_found == 0, "world: %zu positions where a longer token matched", longer_found);
    printf("world: %zu bytes of jargon -> %zu ids (%.2f bytes/token), greedy-longest verified\n", sample, sn,
           (double)sample / sn);

    int32_t *all = malloc(text_len * sizeof *all);
    t0 = ds_now_seconds();
    size_t n_all = ds_tokenizer_encode(tok, jargon, text_len, all);
    double dt = ds_now_seconds() - t0;
    printf("world: encoded the %.2f MB jargon file into %zu ids in %.3f s (%.1f MB/s)\n", text_len / 1e6, n_all, dt,
           text_len / 1e6 / dt);
    uint8_t *round = malloc(text_len);
    CHECK(ds_tokenizer_decode(tok, all, n_all, round, text_len) == text_len && memcmp(round, jargon, text_len) == 0,
          "world: round trip of the whole jargon file");
    free(round); free(all); free(sids); free(table); free(jargon);
    ds_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- shards */

static void write_shard(const char *path, uint32_t vocab, int n_docs, uint64_t seed) {
    ds_shard_writer *w = ds_shard_writer_open(path, vocab, 0);
    int32_t ids[100];
    for (int d = 0; d < n_docs; d++) {
        int n = 1 + d % 50;
        for (int i = 0; i < n; i++) ids[i] = 1 + (int32_t)(ds_rng_u64(seed, d, i) % (vocab - 1));
        ds_shard_writer_add_document(w, ids, n);
    }
    ds_shard_writer_commit(w);
}

/* The stream write_shard produces, recomputed. */
static int32_t *expected_stream(uint32_t vocab, int n_docs, uint64_t seed, uint64_t *count) {
    int32_t *s = malloc(51 * n_docs * sizeof *s);
    uint64_t k = 0;
    for (int d = 0; d < n_docs; d++) {
        for (int i = 0; i < 1 + d % 50; i++) s[k++] = 1 + (int32_t)(ds_rng_u64(seed, d, i) % (vocab - 1));
        s[k++] = 0;
    }
    *count = k;
    return s;
}

static void check_stream(const char *path, uint32_t vocab, int n_docs, uint64_t seed, const char *what) {
    uint64_t count;
    int32_t *want = expected_stream(vocab, n_docs, seed, &count);
    ds_dataset *ds = ds_dataset_open(path);
    int32_t *got = malloc(count * sizeof *got);
    ds_dataset_read(ds, 0, count, got);
    CHECK(ds_dataset_num_tokens(ds) == count && ds_dataset_num_docs(ds) == (uint64_t)n_docs &&
          ds_dataset_vocab_size(ds) == vocab && memcmp(got, want, count * sizeof *got) == 0 &&
          ds_dataset_token(ds, count - 2) == want[count - 2],
          "%s: shard round trip (vocab %u, %llu tokens)", what, vocab, (unsigned long long)count);
    ds_dataset_close(ds);
    free(got); free(want);
}

static void corrupt_and_expect(const char *good, const char *name, long offset, int flip, long truncate_to,
                               const char *reason) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmp_root, name);
    size_t len;
    uint8_t *data = test_read_file(good, &len);
    if (offset >= 0) data[offset] ^= (uint8_t)flip;
    if (truncate_to >= 0) len = (size_t)truncate_to;
    test_write_file(path, data, len);
    char why[256];
    CHECK(ds_shard_check(path, why, sizeof why) == -1 && strstr(why, reason), "%s: ds_shard_check says '%s'", name, why);
    char want[512];
    snprintf(want, sizeof want, "%s: %s", path, reason);
    expect_death(child_open_dataset, path, DS_EXIT_BAD_INPUT, want, name);
    size_t after_len;
    uint8_t *after = test_read_file(path, &after_len);
    CHECK(after && after_len == len && memcmp(after, data, len) == 0, "%s: file left unchanged", name);
    free(after); free(data);
}

static void test_shards(void) {
    char path[256], dir[256], tmp[300];
    snprintf(path, sizeof path, "%s/a.bin", tmp_root);
    write_shard(path, 256, 300, 1);
    check_stream(path, 256, 300, 1, "uint16");
    snprintf(path, sizeof path, "%s/wide.bin", tmp_root);
    write_shard(path, 100000, 40, 2);
    check_stream(path, 100000, 40, 2, "uint32");
    size_t len;
    uint8_t *wide = test_read_file(path, &len);
    uint32_t dtype;
    memcpy(&dtype, wide + 12, 4);
    CHECK(dtype == 2 && memcmp(wide, "DSTOKENS", 8) == 0, "vocab > 65536 uses uint32 ids");
    free(wide);

    /* Exact layout: header fields at their documented offsets, payload at 64. */
    snprintf(path, sizeof path, "%s/tiny.bin", tmp_root);
    ds_shard_writer *w = ds_shard_writer_open(path, 300, 0xabcdef);
    int32_t doc1[] = {5, 299}, doc2[] = {7};
    ds_shard_writer_add_document(w, doc1, 2);
    ds_shard_writer_add_document(w, doc2, 1);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) == 0, "writer: nothing at the final path before commit");
    ds_shard_writer_commit(w);
    CHECK(access(tmp, F_OK) != 0, "writer: temp file gone after commit");
    uint8_t *b = test_read_file(path, &len);
    uint32_t u32[4];
    uint64_t u64[2];
    uint16_t payload[5], want_payload[5] = {5, 299, 0, 7, 0};
    memcpy(u32, b + 8, 16);
    memcpy(u64, b + 24, 16);
    memcpy(payload, b + 64, 10);
    uint32_t payload_crc, header_crc;
    memcpy(&payload_crc, b + 40, 4);
    memcpy(&header_crc, b + 60, 4);
    CHECK(len == 74 && u32[0] == 1 && u32[1] == 1 && u32[2] == 300 && u32[3] == 0xabcdef && u64[0] == 5 &&
          u64[1] == 2 && memcmp(payload, want_payload, 10) == 0 && payload_crc == ds_crc32c(0, b + 64, 10) &&
          header_crc == ds_crc32c(0, b, 60),
          "shard layout matches the documented format");
    free(b);

    /* Unigram entropy, closed form: tokens {5, 299, 0, 7, 0} -> p = (2/5, 1/5, 1/5, 1/5). */
    ds_dataset *ds = ds_dataset_open(path);
    double h = ds_unigram_entropy_nats(ds), want_h = -(0.4 * log(0.4) + 3 * 0.2 * log(0.2));
    CHECK(fabs(h - want_h) < 1e-12, "unigram entropy %.15f vs %.15f", h, want_h);
    ds_dataset_close(ds);

    w = ds_shard_writer_open(path, 300, 0);
    ds_shard_writer_abort(w);
    CHECK(access(tmp, F_OK) != 0 && access(path, F_OK) == 0, "writer: abort removes the temp file, keeps the old one");

    /* A directory of shards is one stream, in name order, across boundaries. */
    snprintf(dir, sizeof dir, "%s/shards", tmp_root);
    mkdir(dir, 0777);
    char p1[300], p2[300], p3[300];
    snprintf(p1, sizeof p1, "%s/00.bin", dir);
    snprintf(p2, sizeof p2, "%s/01.bin", dir);
    snprintf(p3, sizeof p3, "%s/notes.txt", dir);
    write_shard(p2, 256, 7, 5);
    write_shard(p1, 256, 10, 4);
    test_write_file(p3, "ignored", 7);
    uint64_t n1, n2;
    int32_t *s1 = expected_stream(256, 10, 4, &n1), *s2 = expected_stream(256, 7, 5, &n2);
    ds = ds_dataset_open(dir);
    int32_t *got = malloc((n1 + n2) * sizeof *got);
    ds_dataset_read(ds, 0, n1 + n2, got);
    int32_t window[6];
    ds_dataset_read(ds, n1 - 3, 6, window);
    CHECK(ds_dataset_num_tokens(ds) == n1 + n2 && ds_dataset_num_docs(ds) == 17 &&
          memcmp(got, s1, n1 * sizeof *got) == 0 && memcmp(got + n1, s2, n2 * sizeof *got) == 0 &&
          memcmp(window, s1 + n1 - 3, 3 * sizeof *got) == 0 && memcmp(window + 3, s2, 3 * sizeof *got) == 0,
          "directory dataset = concatenated shards");
    ds_dataset_close(ds);
    free(got); free(s1); free(s2);
    snprintf(p3, sizeof p3, "%s/02.bin", dir);
    ds_shard_writer *w2 = ds_shard_writer_open(p3, 512, 0);
    ds_shard_writer_commit(w2);
    char reason[700];
    snprintf(reason, sizeof reason, "%s: tokenizer differs from %s", p3, p1);
    expect_death(child_open_dataset, dir, DS_EXIT_BAD_INPUT, reason, "directory with mixed vocabularies");

    /* Corruption: each refused with exit code 2 and its reason; the file is left as it was. */
    snprintf(path, sizeof path, "%s/a.bin", tmp_root);
    ds = ds_dataset_open(path);
    long n_tokens = (long)ds_dataset_num_tokens(ds);
    ds_dataset_close(ds);
    long file_len = 64 + 2 * n_tokens;
    corrupt_and_expect(path, "payload_flip.bin", 64 + 2 * 1234, 0x10, -1, "payload checksum mismatch (file corrupt)");
    corrupt_and_expect(path, "header_flip.bin", 25, 0x01, -1, "header checksum mismatch (file corrupt)");
    corrupt_and_expect(path, "crc_flip.bin", 61, 0x80, -1, "header checksum mismatch (file corrupt)");
    char trunc_reason[200];
    snprintf(trunc_reason, sizeof trunc_reason, "truncated: header says %ld tokens (%ld bytes), file has %ld bytes",
             n_tokens, file_len, file_len - 3);
    corrupt_and_expect(path, "truncated.bin", -1, 0, file_len - 3, trunc_reason);
    corrupt_and_expect(path, "short.bin", -1, 0, 40, "truncated: file has 40 bytes, the header alone needs 64");
    corrupt_and_expect(path, "magic.bin", 0, 0x20, -1, "not a dreamstate token shard (bad magic)");
    corrupt_and_expect(path, "empty.bin", -1, 0, 0, "not a dreamstate token shard (bad magic)");
    expect_death(child_open_dataset, "/nonexistent/x.bin", DS_EXIT_BAD_INPUT, "/nonexistent/x.bin: cannot open dataset",
                 "missing dataset");

    /* A header that is self-consistent (CRC recomputed) but from a future version. */
    uint8_t *data = test_read_file(path, &len);
    uint32_t version = 2;
    memcpy(data + 8, &version, 4);
    uint32_t crc = ds_crc32c(0, data, 60);
    memcpy(data + 60, &crc, 4);
    snprintf(tmp, sizeof tmp, "%s/version2.bin", tmp_root);
    test_write_file(tmp, data, len);
    char want[400];
    snprintf(want, sizeof want, "%s: unsupported shard version 2 (this build reads version 1)", tmp);
    expect_death(child_open_dataset, tmp, DS_EXIT_BAD_INPUT, want, "future version");
    free(data);

    /* Ids are read as int32: a vocabulary above 2^31 - 1 is refused, its large ids would read back negative. */
    snprintf(tmp, sizeof tmp, "%s/huge_vocab.bin", tmp_root);
    ds_shard_writer *wh = ds_shard_writer_open(tmp, 0x80000001u, 0);
    ds_shard_writer_add_document(wh, NULL, 0);
    ds_shard_writer_commit(wh);
    snprintf(want, sizeof want, "%s: vocab_size 2147483649 exceeds 2147483647", tmp);
    expect_death(child_open_dataset, tmp, DS_EXIT_BAD_INPUT, want, "vocabulary above 2^31 - 1");
}

/* ---------------------------------------------------------------- JSONL documents */

/* The reader as prepare-data uses it: "text" required, other keys with any JSON value skipped,
 * \u0000 decoded. */
static const char *const doc_key[] = {"text"};
static const ds_jsonl_keys doc_keys = {.n = 1, .n_required = 1, .names = doc_key, .others_skipped = 1,
                                       .nul_allowed = 1};

static void test_jsonl_documents(void) {
    static const struct { const char *line, *text; size_t len; } good[] = {
        {"{\"text\":\"plain\"}", "plain", 5},
        {" { \"id\" : -12.5e+3 , \"meta\" : {\"a\": [0, 1E2, true, false, null, \"s\\\"\", {}], \"b\": []},"
         " \"text\" : \"x\" }\r", "x", 1},
        {"{\"text\":\"a\\u0000b\",\"n\":0}", "a\0b", 3},
        {"{\"text\":\"\\ud83d\\ude00 \\u00e9\\u4E2D\\/\", \"x\": \"\\ud800\\udc00\"}",
         "\xf0\x9f\x98\x80 \xc3\xa9\xe4\xb8\xad/", 11},
        {"{\"skip\":\"\\u0000\",\"text\":\"\"}", "", 0},
    };
    ds_text_arena a = {0};
    char why[256];
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        int64_t off;
        size_t len = 0;
        a.n = 0;
        int rc = ds_jsonl_parse_line(good[i].line, strlen(good[i].line), &doc_keys, &a, &off, &len, why, sizeof why);
        CHECK(rc == 0 && len == good[i].len && memcmp(a.data + off, good[i].text, len) == 0,
              "JSONL document %zu: rc %d, %zu bytes (want %zu): %s", i, rc, len, good[i].len, rc ? why : "");
    }
    static char deep[700];
    size_t n = (size_t)snprintf(deep, sizeof deep, "{\"n\":");
    for (int i = 0; i < 300; i++) deep[n++] = '[';
    static const struct { const char *line, *reason; } bad[] = {
        {"{\"meta\":1}", "missing \"text\""},
        {"{}", "empty object; need \"text\""},
        {"[\"text\"]", "expected '{'"},
        {"\"text\"", "expected '{'"},
        {"{\"text\":\"abc", "unterminated string"},
        {"{\"text\":\"abc\"", "column 14: expected ',' or '}'"},
        {"{\"text\":\"a\\x\"}", "bad escape '\\x'"},
        {"{\"text\":\"\\ude00\"}", "lone low surrogate"},
        {"{\"text\":5}", "\"text\" must be a string"},
        {"{\"text\":null}", "\"text\" must be a string"},
        {"{\"text\":\"a\",\"text\":\"b\"}", "duplicate key \"text\""},
        {"{\"text\":\"\xe2\x82\"}", "invalid UTF-8"},
        {"{\"te\\u0000xt\":\"a\"}", "NUL"},
        {"{\"n\":01,\"text\":\"a\"}", "expected ',' or '}'"},
        {"{\"n\":1.,\"text\":\"a\"}", "expected a digit"},
        {"{\"n\":-,\"text\":\"a\"}", "expected a digit"},
        {"{\"n\":1e,\"text\":\"a\"}", "expected a digit"},
        {"{\"n\":NaN,\"text\":\"a\"}", "expected a value"},
        {"{\"n\":tru,\"text\":\"a\"}", "expected a value"},
        {"{\"n\":,\"text\":\"a\"}", "expected a value"},
        {"{\"n\":[1,],\"text\":\"a\"}", "expected a value"},
        {"{\"n\":[1 2],\"text\":\"a\"}", "expected ',' or ']'"},
        {"{\"n\":{\"a\" 1},\"text\":\"a\"}", "expected ':'"},
        {"{\"n\":{1:2},\"text\":\"a\"}", "expected a string"},
        {"{\"n\":{\"a\":1,},\"text\":\"a\"}", "expected a string"},
        {"{\"n\":\"\\ud800\",\"text\":\"a\"}", "high surrogate \\uD800 not followed by a low one"},
        {"{\"n\":\"\xff\",\"text\":\"a\"}", "invalid UTF-8"},
        {"{\"text\":\"a\"} {}", "unexpected text after the object"},
        {deep, "nested deeper than 256 levels"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t off;
        a.n = 0;
        int rc = ds_jsonl_parse_line(bad[i].line, strlen(bad[i].line), &doc_keys, &a, &off, NULL, why, sizeof why);
        CHECK(rc == -1 && strncmp(why, "column ", 7) == 0 && strstr(why, bad[i].reason),
              "bad JSONL document %zu: want '%s', got rc %d: %s", i, bad[i].reason, rc, rc ? why : "");
    }
    free(a.data);
}

/* ---------------------------------------------------------------- prepare-data */

#define N_DOCS 160

static void doc_text(int i, char *buf, size_t cap) {
    snprintf(buf, cap, "document %d: %s\nline two of %d\n", i, i % 3 ? "short" : "a somewhat longer line", i);
}

/* Documents from a shard file (byte tokenizer: split at 0). */
static int read_docs(const char *path, char docs[][128], int max) {
    ds_dataset *ds = ds_dataset_open(path);
    uint64_t n = ds_dataset_num_tokens(ds);
    int count = 0;
    size_t len = 0;
    for (uint64_t i = 0; i < n; i++) {
        int32_t t = ds_dataset_token(ds, i);
        if (t == 0) { if (count < max) docs[count][len] = 0; count++; len = 0; continue; }
        if (count < max && len < 127) docs[count][len++] = (char)t;
    }
    CHECK(ds_dataset_num_docs(ds) == (uint64_t)count, "%s: header doc count %llu vs %d separators", path,
          (unsigned long long)ds_dataset_num_docs(ds), count);
    ds_dataset_close(ds);
    return count;
}

/* prepare-data of one input with the given defaults changed (the command line is tests/e2e_cli.sh's). */
static ds_prepare_options prepare_options(const char *out, const char *const *input) {
    ds_prepare_options o = ds_prepare_defaults();
    o.out_dir = out;
    o.n_inputs = 1;
    o.inputs = input;
    return o;
}

static void run_prepare(const char *out, uint64_t seed, const char *in_dir) {
    ds_prepare_options o = prepare_options(out, &in_dir);
    o.split_on = "%";
    o.valid_fraction = 0.3;
    o.seed = seed;
    CHECK(ds_prepare_data(&o) == 0, "prepare-data returns 0");
}

static void test_prepare_data(void) {
    /* Inputs: a directory tree with plain and gzipped files (walked in name order), a hidden file
     * and a symlink that must be skipped. Documents are '%'-separated, with empty ones in between. */
    char in_dir[256], sub[300], path[400], cmd[1200], text[256];
    snprintf(in_dir, sizeof in_dir, "%s/in", tmp_root);
    snprintf(sub, sizeof sub, "%s/b_sub", in_dir);
    mkdir(in_dir, 0777);
    mkdir(sub, 0777);
    const char *files[] = {"a.txt", "b_sub/x.txt", "b_sub/y.txt", "c.txt"};  /* y.txt becomes y.txt.gz */
    int per_file = N_DOCS / 4;
    for (int f = 0; f < 4; f++) {
        snprintf(path, sizeof path, "%s/%s", in_dir, files[f]);
        FILE *fp = fopen(path, "w");
        for (int d = 0; d < per_file; d++) {
            doc_text(f * per_file + d, text, sizeof text);
            fprintf(fp, "%s%s", text, d % 7 == 3 ? "%\n%\n" : "%\n");
        }
        fclose(fp);
        if (f == 2) {
            snprintf(cmd, sizeof cmd, "gzip '%s'", path);
            CHECK(system(cmd) == 0, "gzip test input");
        }
    }
    snprintf(path, sizeof path, "%s/.hidden.txt", in_dir);
    test_write_file(path, "hidden\n", 7);
    snprintf(path, sizeof path, "%s/d_link.txt", in_dir);
    snprintf(cmd, sizeof cmd, "%s/a.txt", in_dir);
    CHECK(symlink(cmd, path) == 0, "symlink");

    char out1[256], out2[256], out3[256];
    snprintf(out1, sizeof out1, "%s/out1/nested", tmp_root);
    snprintf(out2, sizeof out2, "%s/out2", tmp_root);
    snprintf(out3, sizeof out3, "%s/out3", tmp_root);
    run_prepare(out1, 42, in_dir);
    run_prepare(out2, 42, in_dir);
    run_prepare(out3, 43, in_dir);

    static char train[N_DOCS + 10][128], valid[N_DOCS + 10][128];
    snprintf(path, sizeof path, "%s/train.bin", out1);
    int n_train = read_docs(path, train, N_DOCS + 10);
    snprintf(path, sizeof path, "%s/valid.bin", out1);
    int n_valid = read_docs(path, valid, N_DOCS + 10);
    /* Expected: documents in walk order, each to valid iff its hash says so (DS_SPLIT_STREAM rule). */
    int ti = 0, vi = 0, misplaced = 0;
    for (int i = 0; i < N_DOCS; i++) {
        doc_text(i, text, sizeof text);
        int to_valid = ds_rng_uniform(42, DS_SPLIT_STREAM, i) < 0.3;
        if (to_valid) misplaced += vi >= n_valid || strcmp(valid[vi++], text) != 0;
        else misplaced += ti >= n_train || strcmp(train[ti++], text) != 0;
    }
    CHECK(n_train + n_valid == N_DOCS && ti == n_train && vi == n_valid && misplaced == 0,
          "prepare-data: %d train + %d valid documents, %d misplaced (want %d in all)", n_train, n_valid, misplaced, N_DOCS);
    CHECK(n_valid > 20 && n_valid < 80, "prepare-data: %d of %d held out at fraction 0.3", n_valid, N_DOCS);
    char a[400], b[400];
    int same = 1;
    for (int s = 0; s < 2; s++) {
        snprintf(a, sizeof a, "%s/%s.bin", out1, s ? "valid" : "train");
        snprintf(b, sizeof b, "%s/%s.bin", out2, s ? "valid" : "train");
        same &= files_equal(a, b);
    }
    CHECK(same, "prepare-data: same seed, byte-identical shards");
    snprintf(a, sizeof a, "%s/valid.bin", out1);
    snprintf(b, sizeof b, "%s/valid.bin", out3);
    CHECK(!files_equal(a, b), "prepare-data: another seed, another split");

    /* Whole files as documents, World tokenizer: same document count, decodes back. */
    if (access(vocab_path, R_OK) == 0) {
        char out4[256];
        snprintf(out4, sizeof out4, "%s/out4", tmp_root);
        const char *input = in_dir;
        ds_prepare_options o = prepare_options(out4, &input);
        o.tokenizer = "world";
        o.vocab = vocab_path;
        o.valid_fraction = 0;
        CHECK(ds_prepare_data(&o) == 0, "prepare-data world");
        snprintf(path, sizeof path, "%s/train.bin", out4);
        ds_dataset *ds = ds_dataset_open(path);
        ds_tokenizer *tok = ds_tokenizer_open("world", vocab_path);
        CHECK(ds_dataset_num_docs(ds) == 4 && ds_dataset_vocab_size(ds) == 65536 &&
              ds_dataset_fingerprint(ds) == ds_tokenizer_fingerprint(tok),
              "prepare-data world: 4 files = 4 documents, fingerprint stored");
        uint64_t n = ds_dataset_num_tokens(ds);
        int32_t *ids = malloc(n * sizeof *ids);
        ds_dataset_read(ds, 0, n, ids);
        char *dec = malloc(16 * n);
        size_t m = ds_tokenizer_decode(tok, ids, n, dec, 16 * n);
        snprintf(path, sizeof path, "%s/a.txt", in_dir);
        size_t alen;
        uint8_t *araw = test_read_file(path, &alen);
        CHECK(m > alen && memcmp(dec, araw, alen) == 0, "prepare-data world: first document decodes to a.txt");
        free(araw); free(dec); free(ids);
        ds_tokenizer_free(tok);
        ds_dataset_close(ds);
    }

    /* Bad options and inputs: one line, exit code 2, and no output files (bad command lines:
     * tests/e2e_cli.sh). */
    char out5[256];
    snprintf(out5, sizeof out5, "%s/out5", tmp_root);
    char bad_gz[300];
    snprintf(bad_gz, sizeof bad_gz, "%s/bad.gz", tmp_root);
    test_write_file(bad_gz, "this is not gzip data", 21);
    const char *const in[] = {in_dir}, *const missing[] = {"/nonexistent/input"}, *const with_gz[] = {in_dir, bad_gz};
    char gz_reason[400];
    snprintf(gz_reason, sizeof gz_reason, "%s: gzip -dc failed", bad_gz);
    struct { ds_prepare_options o; const char *reason; } cases[] = {
        {prepare_options(out5, missing), "/nonexistent/input: No such file or directory"},
        {prepare_options(out5, in), "--vocab is only used with --tokenizer world"},
        {prepare_options(out5, with_gz), gz_reason},
        {prepare_options(out5, in), "unknown tokenizer 'bpe'"},
        {prepare_options(out5, in), "unknown --format 'arrow' (shards or binidx)"},
    };
    cases[1].o.vocab = vocab_path;
    cases[2].o.n_inputs = 2;
    cases[3].o.tokenizer = "bpe";
    cases[4].o.format = "arrow";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_death(child_prepare, &cases[i].o, DS_EXIT_BAD_INPUT, cases[i].reason, "prepare-data bad input");
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s' 2>/dev/null)\"", out5);
    CHECK(system(cmd) == 0, "prepare-data: failed runs leave no files in %s", out5);
}

typedef struct { const char *text; size_t len; } doc_bytes;
#define DOC(literal) {literal, sizeof literal - 1}

/* The token stream of the dataset at path is docs[d]'s ids, each followed by 0, for the documents
 * with split[d] == want_split, in order. */
static void check_documents(const char *path, const ds_tokenizer *tok, const doc_bytes *docs, int n_docs,
                            const int *split, int want_split, const char *what) {
    ds_dataset *ds = ds_dataset_open(path);
    uint64_t n = ds_dataset_num_tokens(ds), k = 0;
    int32_t *got = malloc((n + 1) * sizeof *got), want[256];
    ds_dataset_read(ds, 0, n, got);
    int same = 1, count = 0;
    for (int d = 0; d < n_docs; d++) {
        if (split[d] != want_split) continue;
        size_t m = ds_tokenizer_encode(tok, docs[d].text, docs[d].len, want);
        want[m++] = 0;
        same &= k + m <= n && memcmp(got + k, want, m * sizeof *want) == 0;
        k += m;
        count++;
    }
    CHECK(same && k == n && ds_dataset_num_docs(ds) == (uint64_t)count,
          "%s: %llu tokens, %llu documents (want %llu, %d), same ids: %d", what, (unsigned long long)n,
          (unsigned long long)ds_dataset_num_docs(ds), (unsigned long long)k, count, same);
    free(got);
    ds_dataset_close(ds);
}

static void run_prepare_jsonl(const char *in_dir, const char *out, const char *format, double valid_fraction) {
    ds_prepare_options o = prepare_options(out, &in_dir);
    o.tokenizer = "world";  /* the built-in vocabulary: no --vocab */
    o.format = format;
    o.valid_fraction = valid_fraction;
    o.seed = 7;
    o.split_on = "%";       /* text files only */
    CHECK(ds_prepare_data(&o) == 0, "prepare-data JSONL to %s", format);
}

/* JSONL inputs (plain and gzipped, beside a text file) to binidx and shards with the built-in World
 * vocabulary: the documents in input order, blank lines and empty texts skipped, the split by
 * document; bad lines refused as FILE:LINE, leaving nothing behind. (The ids against an independent
 * tokenizer: tests/ref/test_binidx.py.) */
static void test_prepare_jsonl(void) {
    char in_dir[256], path[400], cmd[1200], out[300], prefix[400];
    snprintf(in_dir, sizeof in_dir, "%s/jsonl_in", tmp_root);
    mkdir(in_dir, 0777);
    const char a_lines[] = "{\"text\":\"first document\\nwith two lines\",\"id\":1}\n"
                           "\n"
                           "{\"meta\":{\"src\":[1,2]},\"text\":\"caf\\u00e9 \\ud83d\\ude00 %\"}\r\n"
                           "  \t\n"
                           "{\"text\":\"\"}\n"
                           "{\"text\":\"third\"}";  /* no final newline */
    const char b_lines[] = "{\"text\":\"from gzip\"}\n{\"text\":\"nul \\u0000 byte\"}\n";
    snprintf(path, sizeof path, "%s/a.jsonl", in_dir);
    test_write_file(path, a_lines, sizeof a_lines - 1);
    snprintf(path, sizeof path, "%s/b.jsonl", in_dir);
    test_write_file(path, b_lines, sizeof b_lines - 1);
    snprintf(cmd, sizeof cmd, "gzip '%s'", path);
    CHECK(system(cmd) == 0, "gzip JSONL");
    snprintf(path, sizeof path, "%s/c.txt", in_dir);
    const char c_text[] = "a text file\n%\nits second document\n";
    test_write_file(path, c_text, sizeof c_text - 1);
    static const doc_bytes docs[] = {DOC("first document\nwith two lines"), DOC("caf\xc3\xa9 \xf0\x9f\x98\x80 %"),
                                     DOC("third"), DOC("from gzip"), DOC("nul \0 byte"), DOC("a text file\n"),
                                     DOC("its second document\n")};
    enum { N = sizeof docs / sizeof *docs };
    ds_tokenizer *tok = ds_tokenizer_open("world", NULL);
    int split[N] = {0};

    snprintf(out, sizeof out, "%s/jsonl_binidx", tmp_root);
    run_prepare_jsonl(in_dir, out, "binidx", 0);
    snprintf(prefix, sizeof prefix, "%s/train", out);
    check_documents(prefix, tok, docs, N, split, 0, "prepare-data JSONL to binidx");
    snprintf(path, sizeof path, "%s/valid.idx", out);
    CHECK(access(path, F_OK) != 0, "binidx with valid fraction 0: no valid pair");

    snprintf(out, sizeof out, "%s/jsonl_shards", tmp_root);
    run_prepare_jsonl(in_dir, out, "shards", 0);
    snprintf(path, sizeof path, "%s/train.bin", out);
    check_documents(path, tok, docs, N, split, 0, "prepare-data JSONL to shards");

    snprintf(out, sizeof out, "%s/jsonl_split", tmp_root);
    run_prepare_jsonl(in_dir, out, "binidx", 0.5);
    for (int d = 0; d < N; d++) split[d] = ds_rng_uniform(7, DS_SPLIT_STREAM, (uint64_t)d) < 0.5;
    for (int s = 0; s < 2; s++) {
        snprintf(prefix, sizeof prefix, "%s/%s", out, s ? "valid" : "train");
        check_documents(prefix, tok, docs, N, split, s, s ? "binidx valid split" : "binidx train split");
    }
    ds_tokenizer_free(tok);

    /* Bad lines: FILE:LINE, exit 2, and no output (not even the directories). */
    static const struct { const char *line, *reason; } bad[] = {
        {"{\"id\":3}", "column 9: missing \"text\""},
        {"\"just a string\"", "column 1: expected '{' (JSONL: one object per line)"},
        {"{\"text\":\"cut off", "column 17: unterminated string"},
        {"{\"text\":\"bad \\q escape\"}", "column 15: bad escape '\\q'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char file[512], want[600];
        snprintf(path, sizeof path, "%s/bad%zu.jsonl", tmp_root, i);
        snprintf(file, sizeof file, "{\"text\":\"fine\"}\n%s\n{\"text\":\"fine\"}\n", bad[i].line);
        test_write_file(path, file, strlen(file));
        snprintf(out, sizeof out, "%s/jsonl_bad/nested", tmp_root);
        const char *input = path;
        ds_prepare_options o = prepare_options(out, &input);
        o.format = i % 2 ? "binidx" : "shards";
        snprintf(want, sizeof want, "%s:2: %s", path, bad[i].reason);
        expect_death(child_prepare, &o, DS_EXIT_BAD_INPUT, want, "prepare-data bad JSONL");
        snprintf(out, sizeof out, "%s/jsonl_bad", tmp_root);
        CHECK(access(out, F_OK) != 0, "prepare-data bad JSONL %zu: %s not left behind", i, out);
    }
}

/* ---------------------------------------------------------------- default corpus */

static void test_default_corpus(void) {
    if (access("/usr/share/games/fortunes", F_OK) != 0 || access("/usr/share/doc/jargon-text/jargon.txt.gz", F_OK) != 0) {
        printf("note: fortunes / jargon-text not installed, default corpus test skipped\n");
        return;
    }
    char dir[256], train[300], valid[300];
    snprintf(dir, sizeof dir, "%s/corpus", tmp_root);
    snprintf(train, sizeof train, "%s/train.bin", dir);
    snprintf(valid, sizeof valid, "%s/valid.bin", dir);
    double t0 = ds_now_seconds();
    ds_corpus_default(dir, "byte", NULL);
    printf("default corpus (byte) built in %.2f s\n", ds_now_seconds() - t0);
    ds_dataset *tr = ds_dataset_open(train), *va = ds_dataset_open(valid);
    uint64_t tokens = ds_dataset_num_tokens(tr) + ds_dataset_num_tokens(va);
    uint64_t docs = ds_dataset_num_docs(tr) + ds_dataset_num_docs(va);
    double frac = (double)ds_dataset_num_docs(va) / docs, h = ds_unigram_entropy_nats(tr);
    printf("default corpus: %llu tokens, %llu documents, %.2f%% held out, unigram entropy %.3f nats\n",
           (unsigned long long)tokens, (unsigned long long)docs, 100 * frac, h);
    CHECK(tokens > 1000000, "default corpus has %llu tokens (> 1M)", (unsigned long long)tokens);
    CHECK(docs > 20000 && frac > 0.04 && frac < 0.06, "default corpus: %llu docs, %.3f held out", (unsigned long long)docs, frac);
    CHECK(h > 2.5 && h < log(256.0), "English bytes: unigram entropy %.3f nats in (2.5, ln 256)", h);
    ds_dataset_close(tr);
    ds_dataset_close(va);

    /* A second call reuses the valid shards; a corrupt one is rebuilt. */
    struct stat before, after;
    stat(train, &before);
    ds_corpus_default(dir, "byte", NULL);
    stat(train, &after);
    CHECK(before.st_ino == after.st_ino, "default corpus: reused when already built");
    FILE *f = fopen(valid, "r+b");
    fseek(f, 100, SEEK_SET);
    fputc(0xff, f);
    fclose(f);
    ds_corpus_default(dir, "byte", NULL);
    char why[256];
    CHECK(ds_shard_check(valid, why, sizeof why) == 0, "default corpus: corrupt shard rebuilt");

    /* Asking for another tokenizer rebuilds it with that one. */
    if (access(vocab_path, R_OK) == 0) {
        ds_corpus_default(dir, "world", vocab_path);
        tr = ds_dataset_open(train);
        double h_world = ds_unigram_entropy_nats(tr);
        CHECK(ds_dataset_vocab_size(tr) == 65536 && ds_dataset_num_tokens(tr) < tokens / 2 && h_world > h,
              "default corpus rebuilt for the world tokenizer: %llu tokens, unigram entropy %.3f nats",
              (unsigned long long)ds_dataset_num_tokens(tr), h_world);
        ds_dataset_close(tr);
    }
}

/* ---------------------------------------------------------------- main */

static int encode_world_to_file(const char *vocab, const char *in, const char *out) {
    ds_tokenizer *tok = ds_tokenizer_open("world", vocab);
    size_t len;
    uint8_t *text = test_read_file(in, &len);
    if (!text) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot read", in);
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    size_t n = ds_tokenizer_encode(tok, text, len, ids);
    ds_atomic_file af;
    if (ds_atomic_open(&af, out) != 0 || fwrite(ids, sizeof *ids, n, af.fp) != n || ds_atomic_commit(&af) != 0)
        ds_die(DS_EXIT_FAIL, "%s: write failed", out);
    free(ids); free(text);
    ds_tokenizer_free(tok);
    return 0;
}

/* JSON lines of a run (train.jsonl): a NaN or Inf that printf made becomes null, outside strings only */
static void test_json_null_nonfinite(void) {
    char line[256], out[256];
    snprintf(line, sizeof line, "{\"loss\":%.10f,\"a\":%.4f,\"b\":[%g,%g],\"c\":%.6e,\"d\":%.1f}", NAN, -NAN,
             INFINITY, -INFINITY, 1.5, -0.25);
    size_t n = ds_json_null_nonfinite(line, out, sizeof out);
    const char *want = "{\"loss\":null,\"a\":null,\"b\":[null,null],\"c\":1.500000e+00,\"d\":-0.2}";
    CHECK(strcmp(out, want) == 0 && n == strlen(want), "%s -> %s", line, out);
    const char *strings = "{\"inf\":\"nan \\\"inf\\\" -nan\",\"x\":nan}";
    ds_json_null_nonfinite(strings, out, sizeof out);
    CHECK(strcmp(out, "{\"inf\":\"nan \\\"inf\\\" -nan\",\"x\":null}") == 0, "strings untouched: %s", out);
    ds_json_null_nonfinite("{\"loss\":nan}", out, 10);
    CHECK(strcmp(out, "{\"loss\":") == 0, "cut to fit, never half a null: %s", out);
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--encode-world") == 0) return encode_world_to_file(argv[2], argv[3], argv[4]);

    /* The repository root is two levels above build/tests/test_data. */
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    for (int up = 0; up < 3; up++) { char *slash = strrchr(exe, '/'); if (slash) *slash = 0; }
    snprintf(vocab_path, sizeof vocab_path, "%s/src/data/rwkv_vocab_v20230424.txt", exe);

    snprintf(tmp_root, sizeof tmp_root, "/tmp/ds_test_data_XXXXXX");
    if (!mkdtemp(tmp_root)) { perror("mkdtemp"); return 1; }
    test_byte_tokenizer();
    test_small_vocab();
    test_world_tokenizer();
    test_shards();
    test_jsonl_documents();
    test_prepare_data();
    test_prepare_jsonl();
    test_default_corpus();
    test_json_null_nonfinite();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return test_summary("test_data");
}
