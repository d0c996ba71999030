/* binidx data and RWKV-LM's sample order: writer/reader round trip, path rules, every refusal, the
 * prime test, the rwkv_lm offsets and their use in training batches, and the data paths of the config.
 *
 * Also the C side of tests/ref/test_binidx.py (an independent Python reader, writer and sampler):
 *   test_binidx --offsets P CTX_LEN FIRST N   prints ds_rwkv_lm_offset for samples FIRST .. FIRST+N-1
 *   test_binidx --read PATH OUT               opens PATH with ds_dataset_open (exit 2 and one line if
 *                                             bad), writes its stream to OUT as int32, prints
 *                                             "tokens docs vocab_size"
 *   test_binidx --write PREFIX VOCAB IN       IN: int32 records (n, n ids) per document; writes binidx */
#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/train.h"
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>

static char tmp_root[64];

static void child_open_dataset(void *path) { ds_dataset_close(ds_dataset_open(path)); }


static int files_in(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

/* n_docs documents of pseudo-random lengths and ids below vocab (no 0: the separator). */
static void write_docs(const char *prefix, uint32_t vocab, int n_docs, uint64_t seed, int32_t *stream,
                       size_t *n_stream) {
    ds_binidx_writer *w = ds_binidx_writer_open(prefix, vocab);
    int32_t ids[300];
    size_t n = 0;
    for (int d = 0; d < n_docs; d++) {
        size_t len = ds_rng_u64(seed, 1, d) % 300;
        for (size_t i = 0; i < len; i++) ids[i] = 1 + (int32_t)(ds_rng_u64(seed, 2, n + i) % (vocab - 1));
        ds_binidx_writer_add_document(w, ids, len);
        if (stream) {
            memcpy(stream + n, ids, len * sizeof *ids);
            stream[n + len] = 0;
        }
        n += len + 1;
    }
    ds_binidx_writer_commit(w);
    if (n_stream) *n_stream = n;
}

/* ---------------------------------------------------------------- round trip and paths */

static void test_round_trip(void) {
    char prefix[128], path[160];
    static int32_t stream[200 * 301], got[200 * 301];
    size_t n;
    snprintf(prefix, sizeof prefix, "%s/small", tmp_root);
    write_docs(prefix, 65536, 200, 3, stream, &n);
    CHECK(files_in(tmp_root) == 2, "writer leaves exactly NAME.bin and NAME.idx: %d files", files_in(tmp_root));
    struct stat st;
    snprintf(path, sizeof path, "%s.bin", prefix);
    CHECK(stat(path, &st) == 0 && (size_t)st.st_size == 2 * n, "uint16 ids for vocab 65536: %lld bytes for %zu tokens",
          (long long)st.st_size, n);
    snprintf(path, sizeof path, "%s.idx", prefix);
    CHECK(stat(path, &st) == 0 && st.st_size == 34 + 12 * 200 + 8 * 201, "index length %lld", (long long)st.st_size);

    const char *suffixes[] = {"", ".bin", ".idx"};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s%s", prefix, suffixes[k]);
        ds_dataset *ds = ds_dataset_open(path);
        int32_t largest = 0;
        for (size_t i = 0; i < n; i++) largest = stream[i] > largest ? stream[i] : largest;
        CHECK(ds_dataset_num_tokens(ds) == n && ds_dataset_num_docs(ds) == 200 && ds_dataset_fingerprint(ds) == 0 &&
                  ds_dataset_vocab_size(ds) == (uint32_t)largest + 1,
              "open '%s': %llu tokens, %llu docs, vocab %u", path, (unsigned long long)ds_dataset_num_tokens(ds),
              (unsigned long long)ds_dataset_num_docs(ds), ds_dataset_vocab_size(ds));
        ds_dataset_read(ds, 0, n, got);
        CHECK(memcmp(got, stream, n * sizeof *got) == 0, "open '%s': the stream is the documents, each ended by 0",
              path);
        ds_dataset_close(ds);
    }

    /* vocab above 65536: int32 ids */
    snprintf(prefix, sizeof prefix, "%s/wide", tmp_root);
    write_docs(prefix, 100000, 50, 4, stream, &n);
    snprintf(path, sizeof path, "%s.bin", prefix);
    CHECK(stat(path, &st) == 0 && (size_t)st.st_size == 4 * n, "int32 ids for vocab 100000");
    ds_dataset *ds = ds_dataset_open(prefix);
    ds_dataset_read(ds, 0, n, got);
    CHECK(ds_dataset_num_tokens(ds) == n && memcmp(got, stream, n * sizeof *got) == 0, "int32 round trip");
    ds_dataset_close(ds);

    /* no documents: a valid, empty pair */
    snprintf(prefix, sizeof prefix, "%s/empty", tmp_root);
    ds_binidx_writer_commit(ds_binidx_writer_open(prefix, 256));
    ds = ds_dataset_open(prefix);
    CHECK(ds_dataset_num_tokens(ds) == 0 && ds_dataset_num_docs(ds) == 0, "empty binidx");
    ds_dataset_close(ds);

    /* abort leaves nothing */
    snprintf(prefix, sizeof prefix, "%s/aborted", tmp_root);
    int before = files_in(tmp_root);
    ds_binidx_writer *w = ds_binidx_writer_open(prefix, 256);
    int32_t one = 5;
    ds_binidx_writer_add_document(w, &one, 1);
    ds_binidx_writer_abort(w);
    CHECK(files_in(tmp_root) == before, "abort removes both temporaries");

    /* a token shard named NAME.bin stays a shard, even with NAME.idx beside it */
    snprintf(path, sizeof path, "%s/small.bin", tmp_root);
    char shard[160];
    snprintf(shard, sizeof shard, "%s/shard.bin", tmp_root);
    ds_shard_writer *sw = ds_shard_writer_open(shard, 256, 0);
    ds_shard_writer_add_document(sw, &one, 1);
    ds_shard_writer_commit(sw);
    snprintf(path, sizeof path, "cp '%s/small.idx' '%s/shard.idx'", tmp_root, tmp_root);
    CHECK(system(path) == 0, "cp");
    ds = ds_dataset_open(shard);
    CHECK(ds_dataset_num_tokens(ds) == 2 && ds_dataset_vocab_size(ds) == 256, "shard magic wins over NAME.idx");
    ds_dataset_close(ds);
}

/* ---------------------------------------------------------------- refusals */

static uint8_t *slurp(const char *path, size_t *len) {
    uint8_t *d = test_read_file(path, len);
    if (!d) { perror(path); exit(1); }
    return d;
}

/* Writes an index and a .bin as the pair tmp_root/NAME. */
static void make_variant(const char *name, const uint8_t *idx, size_t idx_len, const uint8_t *bin, size_t bin_len,
                         char *prefix_out, size_t n) {
    snprintf(prefix_out, n, "%s/%s", tmp_root, name);
    char path[200];
    snprintf(path, sizeof path, "%s.idx", prefix_out);
    test_write_file(path, idx, idx_len);
    snprintf(path, sizeof path, "%s.bin", prefix_out);
    test_write_file(path, bin, bin_len);
}

static void expect_refused(const char *name, const uint8_t *idx, size_t idx_len, const uint8_t *bin, size_t bin_len,
                           const char *file_suffix, const char *reason) {
    char prefix[160], want[600];
    make_variant(name, idx, idx_len, bin, bin_len, prefix, sizeof prefix);
    snprintf(want, sizeof want, "%s%s: %s", prefix, file_suffix, reason);
    test_expect_bad_input(child_open_dataset, prefix, want, name);
}

static void test_refusals(void) {
    char prefix[128], path[160];
    snprintf(prefix, sizeof prefix, "%s/good", tmp_root);
    write_docs(prefix, 256, 10, 5, NULL, NULL);  /* ids < 256 also read as int16 (code 3) */
    size_t idx_len, bin_len;
    snprintf(path, sizeof path, "%s.idx", prefix);
    uint8_t *idx = slurp(path, &idx_len);
    snprintf(path, sizeof path, "%s.bin", prefix);
    uint8_t *bin = slurp(path, &bin_len);
    uint8_t *e = malloc(idx_len + 64);
    char reason[300];

    snprintf(reason, sizeof reason, "truncated: the header says 10 sequences and 11 document-index entries (%zu "
             "bytes), the file has %zu bytes", idx_len, idx_len - 1);
    expect_refused("trunc_idx", idx, idx_len - 1, bin, bin_len, ".idx", reason);
    expect_refused("trunc_header", idx, 20, bin, bin_len, ".idx", "truncated: 20 bytes, the header alone needs 34");
    expect_refused("empty_idx", idx, 0, bin, bin_len, ".idx", "truncated: 0 bytes, the header alone needs 34");
    memcpy(e, idx, idx_len); memset(e + idx_len, 0, 8);
    snprintf(reason, sizeof reason, "trailing data: the header says 10 sequences and 11 document-index entries (%zu "
             "bytes), the file has %zu bytes", idx_len, idx_len + 8);
    expect_refused("long_idx", e, idx_len + 8, bin, bin_len, ".idx", reason);
    memcpy(e, idx, idx_len); e[18] = 0xff; e[22] = 0x7f;
    expect_refused("huge_count", e, idx_len, bin, bin_len, ".idx", "truncated: the header says 545460846847 sequences");

    memcpy(e, idx, idx_len); e[0] = 'X';
    expect_refused("magic", e, idx_len, bin, bin_len, ".idx", "not a binidx index (bad magic");
    memcpy(e, idx, idx_len); e[9] = 2;
    expect_refused("version", e, idx_len, bin, bin_len, ".idx", "unsupported binidx version 2 (expected 1)");
    memcpy(e, idx, idx_len); e[17] = 6;
    expect_refused("dtype", e, idx_len, bin, bin_len, ".idx", "dtype code 6 is not an integer type");

    int64_t v;
    memcpy(e, idx, idx_len);
    memcpy(&v, e + 34 + 40 + 8 * 3, 8); v += 2; memcpy(e + 34 + 40 + 8 * 3, &v, 8);
    expect_refused("pointer", e, idx_len, bin, bin_len, ".idx", "sequence 3 starts at byte");
    memcpy(e, idx, idx_len);
    int32_t neg = -1;
    memcpy(e + 34 + 4 * 2, &neg, 4);
    expect_refused("size", e, idx_len, bin, bin_len, ".idx", "sequence 2 has a negative size -1");
    memcpy(e, idx, idx_len);
    v = 1; memcpy(e + 34 + 120, &v, 8);
    expect_refused("docidx0", e, idx_len, bin, bin_len, ".idx", "the document index must start with 0");
    memcpy(e, idx, idx_len);
    v = 9; memcpy(e + 34 + 120 + 8 * 10, &v, 8);
    expect_refused("docidx_end", e, idx_len, bin, bin_len, ".idx", "the document index ends at 9");

    snprintf(reason, sizeof reason, "shorter than its index says: %zu bytes, the index has %zu tokens of uint16",
             bin_len - 2, bin_len / 2);
    expect_refused("short_bin", idx, idx_len, bin, bin_len - 2, ".bin", reason);
    uint8_t *b2 = calloc(bin_len + 2, 1);
    memcpy(b2, bin, bin_len);
    expect_refused("longer_bin", idx, idx_len, b2, bin_len + 2, ".bin", "longer than its index says");

    /* int16 ids (code 3) with a negative one */
    memcpy(e, idx, idx_len); e[17] = 3;
    memcpy(b2, bin, bin_len); b2[6] = 0xfe; b2[7] = 0xff;
    expect_refused("negative", e, idx_len, b2, bin_len, ".bin", "token -2 at index 3 is negative");

    snprintf(path, sizeof path, "%s/missing", tmp_root);
    snprintf(reason, sizeof reason, "%s/missing.bin: cannot open", tmp_root);
    make_variant("missing", idx, idx_len, bin, bin_len, prefix, sizeof prefix);
    snprintf(path, sizeof path, "%s.bin", prefix);
    unlink(path);
    test_expect_bad_input(child_open_dataset, prefix, reason, "missing .bin");
    free(e); free(b2); free(idx); free(bin);
}

/* ---------------------------------------------------------------- primes and offsets */

static int trial_division_prime(uint64_t n) {
    if (n < 2) return 0;
    for (uint64_t d = 2; d * d <= n; d++)
        if (n % d == 0) return 0;
    return 1;
}

static void test_primes(void) {
    int agree = 1;
    for (uint64_t n = 0; n < 200000; n++) agree &= ds_is_prime_u64(n) == trial_division_prime(n);
    CHECK(agree, "ds_is_prime_u64 = trial division below 200000");
    /* strong pseudoprimes and Carmichael numbers that fool weaker tests, and large primes */
    const uint64_t composite[] = {3215031751ull, 2152302898747ull, 3474749660383ull, 341550071728321ull,
                                  3825123056546413051ull, 561, 1105, 4294967297ull, 18446744073709551615ull};
    const uint64_t prime[] = {2926181, 4294967291ull, 1000000000039ull, 9223372036854775643ull,
                              18446744073709551557ull};
    for (size_t i = 0; i < sizeof composite / sizeof *composite; i++)
        CHECK(!ds_is_prime_u64(composite[i]), "%llu is composite", (unsigned long long)composite[i]);
    for (size_t i = 0; i < sizeof prime / sizeof *prime; i++)
        CHECK(ds_is_prime_u64(prime[i]), "%llu is prime", (unsigned long long)prime[i]);
    CHECK(ds_mulmod_u64(UINT64_MAX - 1, UINT64_MAX - 2, UINT64_MAX) == 2, "mulmod without overflow");
}

static void test_offsets(void) {
    /* P = 11: phi = int(11 * 0.618..) = 6; sample 0 is ii = 1: (6 * 1) mod 11 = 6; ii = 2: 48 mod 11 = 4 */
    CHECK(ds_rwkv_lm_offset(11, 10, 0) == 60 && ds_rwkv_lm_offset(11, 10, 1) == 40, "P = 11 by hand");
    /* P = 2 mod 3: cubing permutes the residues, so P consecutive samples cover every window once */
    const uint64_t P = 2003;
    char *seen = calloc(P, 1);
    int distinct = 1;
    for (uint64_t g = 5000; g < 5000 + P; g++) {
        uint64_t w = ds_rwkv_lm_offset(P, 7, g);
        distinct &= w % 7 == 0 && w / 7 < P && !seen[w / 7];
        seen[w / 7] = 1;
    }
    CHECK(distinct, "P consecutive samples visit each of the P windows once");
    free(seen);

    /* the automatic prime, as make_data.py picks it: the largest P = 2 mod 3 below tokens // ctx_len */
    CHECK(ds_rwkv_lm_magic_prime(100000, 64) == 1559, "auto prime for 1562 slots: %llu",
          (unsigned long long)ds_rwkv_lm_magic_prime(100000, 64));
    CHECK(ds_rwkv_lm_magic_prime(64 * 12, 64) == 11, "auto prime for 12 slots");
    CHECK(ds_rwkv_lm_magic_prime(64 * 6, 64) == 0, "no prime for 6 slots (5 is below 0.9 x 6)");
    char why[256];
    CHECK(ds_rwkv_lm_check_prime(1559, 100000, 64, why, sizeof why) == 0, "1559 fits");
    CHECK(ds_rwkv_lm_check_prime(1523, 100000, 64, why, sizeof why) == 0, "1523 > 0.9 x 1562 = 1405.8 fits");
    CHECK(ds_rwkv_lm_check_prime(1367, 100000, 64, why, sizeof why) != 0 &&
              strstr(why, "must be in (0.9, 1] x (tokens // ctx_len) = (1405.8, 1562] for 100000 tokens and ctx_len "
                          "64"),
          "1367 is too small: %s", why);
    CHECK(ds_rwkv_lm_check_prime(1571, 100000, 64, why, sizeof why) != 0, "1571 is too large");
    CHECK(ds_rwkv_lm_check_prime(11, 64 * 11, 64, why, sizeof why) != 0 && strstr(why, "no room"),
          "P = tokens / ctx_len leaves no room for the last window's extra token: %s", why);
}

/* ---------------------------------------------------------------- training hooks */

static void test_sample_batch(void) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/train", tmp_root);
    write_docs(prefix, 256, 300, 6, NULL, NULL);
    ds_dataset *ds = ds_dataset_open(prefix);
    uint64_t n = ds_dataset_num_tokens(ds);
    const int T = 32, B = 5;
    uint64_t P = ds_rwkv_lm_magic_prime(n, T);
    ds_sample_order order = {.seed = 1234, .magic_prime = P};
    int32_t tokens[B * T], targets[B * T], window[T + 1], want[T + 1];
    ds_train_sample_batch(ds, &order, 777, B, T, tokens, targets, window);
    int ok = P > 0;
    for (int b = 0; b < B; b++) {
        ds_dataset_read(ds, ds_rwkv_lm_offset(P, T, 777 + b), T + 1, want);
        ok &= memcmp(tokens + b * T, want, T * 4) == 0 && memcmp(targets + b * T, want + 1, T * 4) == 0;
    }
    CHECK(ok, "rwkv_lm batches read RWKV-LM's windows of the global sample numbers (P = %llu)", (unsigned long long)P);
    /* the random order is the same function of (seed, sample) as before */
    order.magic_prime = 0;
    ds_train_sample_batch(ds, &order, 777, B, T, tokens, targets, window);
    uint64_t off = ds_rng_u64(1234, 0x44415441, 779) % (n - T);
    ds_dataset_read(ds, off, T + 1, want);
    CHECK(memcmp(tokens + 2 * T, want, T * 4) == 0, "random order: offset from (seed, sample)");
    ds_dataset_close(ds);
}

static ds_config open_cfg;
static void child_open_data(void *arg) {
    (void)arg;
    ds_dataset *tr, *va;
    ds_sample_order order;
    char path[DS_PATH_MAX + 64];
    ds_train_open_data(&open_cfg, &tr, &va, &order, path, sizeof path);
    printf("%llu\n", (unsigned long long)order.magic_prime);
}

static void test_open_data(void) {
    char prefix[128], want[400];
    snprintf(prefix, sizeof prefix, "%s/train", tmp_root);  /* from test_sample_batch */
    ds_config_defaults(&open_cfg);
    snprintf(open_cfg.data.train, sizeof open_cfg.data.train, "%s", prefix);
    snprintf(open_cfg.data.sampler, sizeof open_cfg.data.sampler, "rwkv_lm");
    open_cfg.train.ctx_len = 64;
    ds_dataset *tr, *va;
    ds_sample_order order;
    char path[DS_PATH_MAX + 64];
    ds_train_open_data(&open_cfg, &tr, &va, &order, path, sizeof path);
    uint64_t n = ds_dataset_num_tokens(tr);
    CHECK(order.magic_prime == ds_rwkv_lm_magic_prime(n, 64) && order.magic_prime > 0 && order.seed == 1234,
          "data.magic_prime 0: the largest fitting prime (%llu)", (unsigned long long)order.magic_prime);
    CHECK(ds_dataset_num_tokens(va) == n, "data.valid empty: held-out data is data.train");
    ds_dataset_close(tr);
    ds_dataset_close(va);

    open_cfg.data.magic_prime = 11;
    snprintf(want, sizeof want, "%s: data.magic_prime 11 must be in (0.9, 1] x (tokens // ctx_len)", prefix);
    test_expect_bad_input(child_open_data, NULL, want, "magic prime too small for the data");
    open_cfg.data.magic_prime = 0;
    open_cfg.model.vocab_size = 100;  /* ids reach 255 */
    snprintf(want, sizeof want, "%s: data vocabulary", prefix);
    test_expect_bad_input(child_open_data, NULL, want, "ids >= model.vocab_size");
}

static void test_data_paths(void) {
    ds_config cfg;
    ds_config_defaults(&cfg);
    char train[DS_PATH_MAX + 64], valid[DS_PATH_MAX + 64];
    snprintf(cfg.data.valid, sizeof cfg.data.valid, "held/out");
    CHECK(ds_data_paths(&cfg, 1, NULL, 0, valid, sizeof valid) == 0, "no default corpus is needed for data.valid alone");
    struct stat st;
    CHECK(!strcmp(valid, "held/out") && stat("data", &st) != 0,
          "data.valid without data.train is honoured (and no default corpus is built for it): %s", valid);
    snprintf(cfg.data.train, sizeof cfg.data.train, "my/train");
    cfg.data.valid[0] = 0;
    CHECK(ds_data_paths(&cfg, 1, train, sizeof train, valid, sizeof valid) == 0, "nor for data.train alone");
    CHECK(!strcmp(train, "my/train") && !strcmp(valid, "my/train"), "data.valid empty: data.train (%s, %s)", train,
          valid);
}

/* ---------------------------------------------------------------- modes for tests/ref/test_binidx.py */

static int print_offsets(char **argv) {
    uint64_t p = strtoull(argv[0], NULL, 10), ctx = strtoull(argv[1], NULL, 10);
    uint64_t first = strtoull(argv[2], NULL, 10), n = strtoull(argv[3], NULL, 10);
    for (uint64_t g = first; g < first + n; g++) printf("%llu\n", (unsigned long long)ds_rwkv_lm_offset(p, ctx, g));
    return 0;
}

static int read_to_file(const char *path, const char *out) {
    ds_dataset *ds = ds_dataset_open(path);
    uint64_t n = ds_dataset_num_tokens(ds);
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    ds_dataset_read(ds, 0, n, ids);
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(ids, sizeof *ids, n, f) != n || fclose(f) != 0) { perror(out); return 1; }
    printf("%llu %llu %u\n", (unsigned long long)n, (unsigned long long)ds_dataset_num_docs(ds),
           ds_dataset_vocab_size(ds));
    free(ids);
    ds_dataset_close(ds);
    return 0;
}

static int write_from_file(const char *prefix, const char *vocab, const char *in) {
    size_t len;
    uint8_t *data = test_read_file(in, &len);
    if (!data) { perror(in); return 1; }
    ds_binidx_writer *w = ds_binidx_writer_open(prefix, (uint32_t)strtoul(vocab, NULL, 10));
    for (size_t at = 0; at + 4 <= len;) {
        int32_t n;
        memcpy(&n, data + at, 4);
        int32_t *ids = malloc((size_t)n * 4 + 4);
        memcpy(ids, data + at + 4, (size_t)n * 4);
        ds_binidx_writer_add_document(w, ids, (size_t)n);
        free(ids);
        at += 4 + 4 * (size_t)n;
    }
    ds_binidx_writer_commit(w);
    free(data);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "--offsets")) return print_offsets(argv + 2);
    if (argc == 4 && !strcmp(argv[1], "--read")) return read_to_file(argv[2], argv[3]);
    if (argc == 5 && !strcmp(argv[1], "--write")) return write_from_file(argv[2], argv[3], argv[4]);

    snprintf(tmp_root, sizeof tmp_root, "/tmp/ds_test_binidx_XXXXXX");
    if (!mkdtemp(tmp_root) || chdir(tmp_root) != 0) { perror("mkdtemp"); return 1; }
    test_round_trip();
    test_refusals();
    test_primes();
    test_offsets();
    test_sample_batch();
    test_open_data();
    test_data_paths();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return test_summary("test_binidx");
}
