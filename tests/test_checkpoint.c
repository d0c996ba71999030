/* Checkpoint container, checkpoint directory and safetensors tests. Expected byte layouts, sizes and
 * converted values are computed here independently (file sizes from stat, payload positions by searching
 * the file for the tensor's bytes, F16/BF16 constants worked out by hand).
 *
 * Extra mode for tests/ref/test_safetensors.py:
 *   test_checkpoint --roundtrip-safetensors IN OUT   loads every tensor of IN as fp32, re-saves to OUT. */
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "test.h"

#include <dirent.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/ds_test_ckpt_XXXXXX";

/* ---- helpers ---------------------------------------------------------------------------------- */

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { *len = 0; return NULL; }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*len + 1);
    if (fread(b, 1, *len, f) != *len) *len = 0;
    fclose(f);
    return b;
}

static void write_all(const char *path, const void *b, size_t len) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, len, f);
    fclose(f);
}

static void tmp_path(char *buf, const char *name) { snprintf(buf, 4096, "%s/%s", tmpdir, name); }

/* Number of entries in `dir` whose name contains ".tmp." (leftover atomic-write temp files). */
static int count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) n += strstr(de->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* Offset of the first occurrence of `needle` in `hay`, or -1. */
static long find_bytes(const uint8_t *hay, size_t n, const void *needle, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return (long)i;
    return -1;
}

/* ---- a small model table ---------------------------------------------------------------------- */

enum { NT = 6 };
typedef struct { ds_tensor t[NT]; float *buf[NT]; } model;

static void model_init(model *m, uint64_t seed) {
    static const char *names[NT] = {"emb.weight", "blocks.0.att.key.weight", "blocks.0.att.x_r",
                                    "blocks.0.att.r_k", "scale", "empty"};
    static const int ndims[NT] = {2, 2, 3, 2, 0, 2};
    static const int64_t shapes[NT][4] = {{64, 32}, {8, 8}, {1, 1, 8}, {2, 4}, {0}, {0, 3}};
    for (int i = 0; i < NT; i++) {
        m->t[i] = (ds_tensor){.name = names[i], .ndim = ndims[i]};
        memcpy(m->t[i].shape, shapes[i], sizeof shapes[i]);
        int64_t n = ds_tensor_numel(&m->t[i]);
        m->buf[i] = m->t[i].data = ds_alloc((size_t)(n ? n : 1) * sizeof(float));
        for (int64_t k = 0; k < n; k++) m->t[i].data[k] = (float)ds_rng_normal(seed, (uint64_t)i, (uint64_t)k);
    }
    /* bit patterns that a value-based comparison would miss: -0, a NaN payload, inf, a subnormal */
    uint32_t specials[4] = {0x80000000u, 0x7FC01234u, 0x7F800000u, 0x00000003u};
    memcpy(m->t[1].data, specials, sizeof specials);
}

static void model_free(model *m) {
    for (int i = 0; i < NT; i++) ds_free(m->buf[i]);
}

static int model_equal(const model *a, const model *b) {
    for (int i = 0; i < NT; i++)
        if (memcmp(a->t[i].data, b->t[i].data, (size_t)ds_tensor_numel(&a->t[i]) * sizeof(float)) != 0) return 0;
    return 1;
}

static const char *META = "step=123\ntokens=456789\nconfig_hash=0xdeadbeef\nrng=42\n";

/* ---- .ckpt container --------------------------------------------------------------------------- */

static void test_roundtrip(void) {
    char path[4096], err[DS_ERR_LEN];
    tmp_path(path, "rt.ckpt");
    model a, b;
    model_init(&a, 1);
    model_init(&b, 2);
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) == 0, "save: %s", err);
    char *meta = NULL;
    CHECK(ds_ckpt_load(path, &meta, NT, b.t, err) == 0, "load: %s", err);
    CHECK(model_equal(&a, &b), "round trip is not bit-exact");
    CHECK(meta && strcmp(meta, META) == 0, "metadata round trip: '%s'", meta ? meta : "(null)");
    free(meta);
    meta = NULL;
    CHECK(ds_ckpt_check(path, &meta, err) == 0 && meta && strcmp(meta, META) == 0, "check: %s", err);
    free(meta);

    /* Independent layout checks: the header's file_len (bytes 32..39) equals the real size, and every
     * payload sits at a 64-byte aligned offset. */
    size_t len;
    uint8_t *f = read_all(path, &len);
    uint64_t file_len;
    memcpy(&file_len, f + 32, 8);
    CHECK(memcmp(f, "DSCKPT01", 8) == 0 && file_len == len, "header magic/length (file_len %llu, size %zu)",
          (unsigned long long)file_len, len);
    for (int i = 0; i < 4; i++) {
        long off = find_bytes(f, len, a.t[i].data, (size_t)ds_tensor_numel(&a.t[i]) * 4);
        CHECK(off > 0 && off % 64 == 0, "payload of %s at offset %ld", a.t[i].name, off);
    }
    free(f);

    /* NULL metadata is stored as empty text */
    CHECK(ds_ckpt_save(path, NULL, NT, a.t, err) == 0, "save: %s", err);
    CHECK(ds_ckpt_load(path, &meta, NT, b.t, err) == 0 && meta && meta[0] == 0, "empty metadata: %s", err);
    free(meta);
    model_free(&a);
    model_free(&b);
}

/* Writes `len` bytes of `orig` (after an optional edit) to a scratch file and loads it. Returns the
 * error text of ds_ckpt_load, and checks that ds_ckpt_check reports the same, unless the damage is in a
 * payload: then load says DS_CKPT_DAMAGED and check (which reads no payload) passes. */
static const char *load_variant(const uint8_t *bytes, size_t len, model *m) {
    static char err[DS_ERR_LEN];
    char path[4096], verr[DS_ERR_LEN];
    tmp_path(path, "variant.ckpt");
    write_all(path, bytes, len);
    char *meta = (char *)1;
    int rc = ds_ckpt_load(path, &meta, NT, m->t, err);
    if (rc == 0) return "(loaded)";
    CHECK(meta == NULL, "meta_out not cleared on failure");
    int vrc = ds_ckpt_check(path, NULL, verr);
    if (rc == DS_CKPT_DAMAGED)
        CHECK(vrc == 0 && contains(err, "checksum mismatch in tensor '"), "a damaged payload (%s): check %d", err, vrc);
    else
        CHECK(rc == -1 && vrc != 0 && strcmp(verr, err) == 0, "check disagrees with load: '%s' vs '%s'", verr, err);
    CHECK(strncmp(err, path, strlen(path)) == 0, "message does not start with the file name: %s", err);
    return err;
}

static void test_corruption(void) {
    char path[4096], err[DS_ERR_LEN], want[4200];
    tmp_path(path, "good.ckpt");
    model a, b;
    model_init(&a, 3);
    model_init(&b, 4);
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) == 0, "save: %s", err);
    size_t len;
    uint8_t *f = read_all(path, &len), *g = malloc(len + 1);
    size_t meta_at = 60, index_at = 60 + strlen(META);
    long key_at = find_bytes(f, len, a.t[1].data, 256);

    /* truncation: inside the header, inside the index, mid-payload, the last byte */
    const char *e = load_variant(f, 30, &b);
    CHECK(contains(e, "truncated (expected at least 60 bytes, found 30)"), "header cut: %s", e);
    size_t cuts[3] = {index_at + 10, (size_t)key_at + 100, len - 1};
    for (int i = 0; i < 3; i++) {
        e = load_variant(f, cuts[i], &b);
        snprintf(want, sizeof want, "truncated (expected %zu bytes, found %zu)", len, cuts[i]);
        CHECK(contains(e, want), "cut at %zu: %s", cuts[i], e);
    }
    e = load_variant(f, 5, &b);
    CHECK(contains(e, "truncated"), "5-byte file: %s", e);
    memcpy(g, f, len);
    g[len] = 0;
    e = load_variant(g, len + 1, &b);
    CHECK(contains(e, "trailing garbage"), "appended byte: %s", e);

    /* single flipped bytes, each named by area */
    struct { size_t at; const char *want; } flips[] = {
        {(size_t)key_at + 77, "checksum mismatch in tensor 'blocks.0.att.key.weight'"},
        {index_at + 5, "checksum mismatch in tensor index"},
        {meta_at + 3, "checksum mismatch in metadata"},
        {20, "checksum mismatch in header"},
        {2, "not a dreamstate checkpoint (bad magic)"},
        {len - 10, "corrupt trailer"},
    };
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(g, f, len);
        g[flips[i].at] ^= 0x10;
        e = load_variant(g, len, &b);
        CHECK(contains(e, flips[i].want), "flip at %zu: got '%s', want '%s'", flips[i].at, e, flips[i].want);
    }
    memcpy(g, f, len);
    g[8] = 7;  /* version field */
    e = load_variant(g, len, &b);
    CHECK(contains(e, "unsupported version 7"), "version: %s", e);

    /* a file that never received its tail (right length, zeros where the last payload and trailer go) */
    memcpy(g, f, len);
    memset(g + len - 200, 0, 200);
    e = load_variant(g, len, &b);
    CHECK(contains(e, "corrupt trailer"), "zero tail: %s", e);

    /* model/file mismatches */
    ds_tensor t[NT + 1];
    memcpy(t, a.t, sizeof a.t);
    float x[64];
    t[NT] = (ds_tensor){.name = "x", .ndim = 1, .shape = {4}, .data = x};
    CHECK(ds_ckpt_load(path, NULL, NT + 1, t, err) != 0 && contains(err, "missing tensor 'x'"), "missing: %s", err);
    CHECK(ds_ckpt_load(path, NULL, NT - 1, t, err) != 0 && contains(err, "unexpected tensor 'empty'"), "extra: %s",
          err);
    ds_tensor small = {.name = "x", .ndim = 2, .shape = {4, 8}, .data = x}, big = small;
    big.shape[0] = 8;
    char p2[4096];
    tmp_path(p2, "shape.ckpt");
    CHECK(ds_ckpt_save(p2, "", 1, &small, err) == 0, "save: %s", err);
    snprintf(want, sizeof want, "%s: shape mismatch for 'x': file [4,8], model [8,8]", p2);
    CHECK(ds_ckpt_load(p2, NULL, 1, &big, err) != 0 && strcmp(err, want) == 0, "shape: %s", err);

    /* invalid tables are refused before anything is written */
    ds_tensor dup[2] = {small, small};
    CHECK(ds_ckpt_save(p2, "", 2, dup, err) != 0 && contains(err, "duplicate tensor name 'x'"), "dup: %s", err);
    free(f);
    free(g);
    model_free(&a);
    model_free(&b);
}

/* ---- checkpoint directory ---------------------------------------------------------------------- */

static void test_directory(void) {
    char dir[2048], path[4096], err[DS_ERR_LEN];
    snprintf(dir, sizeof dir, "%s/ckpts", tmpdir);
    int64_t *steps;
    CHECK(ds_ckpt_list(dir, &steps) == 0, "missing dir lists as empty");
    free(steps);
    CHECK(ds_ckpt_latest_complete(dir, path, sizeof path, NULL) == 0, "missing dir has no latest");
    mkdir(dir, 0755);

    ds_ckpt_path(path, sizeof path, dir, 123);
    char want[4200];
    snprintf(want, sizeof want, "%s/step-00000123.ckpt", dir);
    CHECK(strcmp(path, want) == 0, "path format: %s", path);

    model a;
    model_init(&a, 5);
    const int64_t written[5] = {5, 100, 20, 3, 123456789};
    for (int i = 0; i < 5; i++) {
        ds_ckpt_path(path, sizeof path, dir, written[i]);
        a.t[0].data[0] = (float)written[i];
        CHECK(ds_ckpt_save(path, META, NT, a.t, err) == 0, "save: %s", err);
    }
    /* distractors that must not be listed */
    const char *junk[3] = {"step-00000200.ckpt.tmp.4242", "notes.txt", "step-abc.ckpt"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, junk[i]);
        write_all(path, "x", 1);
    }
    int n = ds_ckpt_list(dir, &steps);
    CHECK(n == 5 && steps[0] == 3 && steps[1] == 5 && steps[2] == 20 && steps[3] == 100 && steps[4] == 123456789,
          "list order (n=%d)", n);
    free(steps);

    /* keep the newest 2 */
    CHECK(ds_ckpt_prune(dir, 2, 123456789) == 3, "prune count");
    n = ds_ckpt_list(dir, &steps);
    CHECK(n == 2 && steps[0] == 100 && steps[1] == 123456789, "after prune (n=%d)", n);
    free(steps);
    /* a just-written older step survives pruning even though it is not among the newest */
    ds_ckpt_path(path, sizeof path, dir, 50);
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) == 0, "save: %s", err);
    CHECK(ds_ckpt_prune(dir, 1, 50) == 1, "prune with protect");
    n = ds_ckpt_list(dir, &steps);
    CHECK(n == 2 && steps[0] == 50 && steps[1] == 123456789, "protected step kept (n=%d)", n);
    free(steps);

    /* latest_complete: the newest whole file wins; a damaged payload is for ds_ckpt_load to find (the
     * trainer then falls back to the next older file: tests/e2e_train.sh) */
    int64_t step = -1;
    CHECK(ds_ckpt_latest_complete(dir, path, sizeof path, &step) == 1 && step == 123456789, "latest = %lld",
          (long long)step);
    char newest[4096];
    ds_ckpt_path(newest, sizeof newest, dir, 123456789);
    size_t len;
    uint8_t *f = read_all(newest, &len);
    f[find_bytes(f, len, a.t[1].data, 256) + 9] ^= 1;
    write_all(newest, f, len);
    CHECK(ds_ckpt_latest_complete(dir, path, sizeof path, &step) == 1 && step == 123456789, "a damaged payload: "
          "still complete");
    CHECK(ds_ckpt_load(newest, NULL, NT, a.t, err) == DS_CKPT_DAMAGED && contains(err, "checksum mismatch in tensor"),
          "damaged payload: %s", err);
    /* cut the newest short: it is skipped with a logged reason, and not deleted */
    write_all(newest, f, len - 1);
    char logpath[4096];
    tmp_path(logpath, "stderr.log");
    fflush(stderr);
    int saved = dup(2), fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    int found = ds_ckpt_latest_complete(dir, path, sizeof path, &step);
    fflush(stderr);
    dup2(saved, 2);
    close(fd);
    close(saved);
    ds_ckpt_path(want, sizeof want, dir, 50);
    CHECK(found == 1 && step == 50 && strcmp(path, want) == 0, "fallback to step 50: %lld %s", (long long)step, path);
    size_t loglen;
    char *log = (char *)read_all(logpath, &loglen);
    log[loglen] = 0;
    CHECK(contains(log, newest) && contains(log, "truncated"), "warning names file and reason: %s", log);
    free(log);
    CHECK(access(newest, F_OK) == 0, "corrupt checkpoint must not be deleted");
    free(f);
    model_free(&a);
}

/* step= of checkpoint metadata: digits only, and the file name's step for a file of a checkpoint dir */
static void test_meta_step(void) {
    char err[DS_ERR_LEN];
    int64_t step = -1;
    CHECK(ds_ckpt_meta_step("a.ckpt", META, -1, &step, err) == 0 && step == 123, "step=123: %lld", (long long)step);
    CHECK(ds_ckpt_meta_step("a.ckpt", META, 123, &step, err) == 0 && step == 123, "step=123 named step 123");
    CHECK(ds_ckpt_meta_step("a.ckpt", "model=x\nstep=0\n", 0, &step, err) == 0 && step == 0, "step=0");
    static const struct { const char *meta; int64_t name_step; const char *reason; } bad[] = {
        {"step=-5\n", -1, "step=-5 is not a step number"},
        {"step=abc\n", -1, "step=abc is not a step number"},
        {"step=12x\n", -1, "step=12x is not a step number"},
        {"step= 7\n", -1, "is not a step number"},
        {"step=99999999999999999999\n", -1, "is not a step number"},
        {"step=\n", -1, "step= is empty"},
        {"model=x\n", -1, "has no step="},
        {"step=4\n", 6, "step=4 does not match the file name (step 6)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        step = 77;
        int rc = ds_ckpt_meta_step("b.ckpt", bad[i].meta, bad[i].name_step, &step, err);
        CHECK(rc != 0 && step == 77 && contains(err, "b.ckpt: ") && contains(err, bad[i].reason), "'%s' -> %s",
              bad[i].meta, rc ? err : "accepted");
    }
}

/* ---- the run directory: one run per directory ------------------------------------------------- */

static char run_out[256], run_ckpts[320];
static void refuse_fresh_start(void *hint) { ds_run_dir_check_fresh(run_out, run_ckpts, 0, hint); }

static void test_run_dir(void) {
    char path[4096], err[DS_ERR_LEN], moved[1024], want[2048];
    snprintf(run_out, sizeof run_out, "%s/run", tmpdir);
    snprintf(run_ckpts, sizeof run_ckpts, "%s/checkpoints", run_out);
    CHECK(ds_run_dir_check_fresh(run_out, run_ckpts, 0, "") == 0, "no run directory: a fresh start");
    mkdir(run_out, 0777);
    mkdir(run_ckpts, 0777);
    snprintf(path, sizeof path, "%s/train.jsonl", run_out);
    write_all(path, "", 0);
    CHECK(ds_run_dir_check_fresh(run_out, run_ckpts, 0, "") == 0, "an empty train.jsonl is no earlier run");

    /* an earlier run: refused in one line saying how to proceed, nothing changed; restart: 1 */
    write_all(path, "{\"step\":1}\n{\"step\":2}", 22);
    snprintf(path, sizeof path, "%s/config.yaml", run_out);
    write_all(path, "run:\n", 5);
    model a;
    model_init(&a, 9);
    ds_ckpt_path(path, sizeof path, run_ckpts, 3);
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) == 0, "save: %s", err);
    int rc = test_run_in_child(refuse_fresh_start, "continue it, ", err, sizeof err);
    snprintf(want, sizeof want, "%s holds an earlier run (1 checkpoint(s) in %s, 2 line(s) in %s/train.jsonl); "
             "continue it, start over with --set checkpoint.resume=restart (moves its files to %s.old-1/)",
             run_out, run_ckpts, run_out, run_out);
    CHECK(rc == 2 && contains(err, want) && strchr(err, '\n') == err + strlen(err) - 1, "refused: exit %d: %s", rc,
          err);
    CHECK(ds_run_dir_check_fresh(run_out, run_ckpts, 1, "") == 1 && access(path, F_OK) == 0,
          "restart: to be moved aside, nothing moved yet");

    /* moved aside whole, into OUT.old-1/ and then OUT.old-2/ (a trailing slash makes no difference) */
    ds_run_dir_move_aside(run_out, run_ckpts, moved, sizeof moved);
    snprintf(want, sizeof want, "%s.old-1", run_out);
    CHECK(!strcmp(moved, want), "moved to %s", moved);
    const char *old_files[] = {"checkpoints/step-00000003.ckpt", "train.jsonl", "config.yaml"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", want, old_files[i]);
        CHECK(access(path, F_OK) == 0, "%s moved", old_files[i]);
        snprintf(path, sizeof path, "%s/%s", run_out, old_files[i]);
        CHECK(access(path, F_OK) != 0, "%s gone from the run directory", old_files[i]);
    }
    snprintf(path, sizeof path, "%s.old-1/checkpoints/step-00000003.ckpt", run_out);
    CHECK(ds_ckpt_check(path, NULL, err) == 0, "the moved checkpoint is whole: %s", err);
    CHECK(ds_run_dir_check_fresh(run_out, run_ckpts, 0, "") == 0, "after the move: a fresh start");
    ds_ckpt_path(path, sizeof path, run_ckpts, 8);
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) == 0, "save: %s", err);
    char slashed[300];
    snprintf(slashed, sizeof slashed, "%s/", run_out);
    ds_run_dir_move_aside(slashed, run_ckpts, moved, sizeof moved);
    snprintf(want, sizeof want, "%s.old-2", run_out);
    snprintf(path, sizeof path, "%s/checkpoints/step-00000008.ckpt", want);
    CHECK(!strcmp(moved, want) && access(path, F_OK) == 0, "second restart: %s", moved);
    model_free(&a);
}

/* ---- atomic writes ----------------------------------------------------------------------------- */

static void test_atomicity(void) {
    char path[4096], err[DS_ERR_LEN];
    model a, b;
    model_init(&a, 6);
    model_init(&b, 7);

    /* target directory does not exist: error, nothing created */
    snprintf(path, sizeof path, "%s/no/such/dir/x.ckpt", tmpdir);
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) != 0 && contains(err, "cannot create"), "missing dir: %s", err);

    /* a write that fails part-way (file size limit, as a full disk would) leaves the old file intact */
    tmp_path(path, "atomic.ckpt");
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) == 0, "save: %s", err);
    size_t len0, len1;
    uint8_t *before = read_all(path, &len0);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 2048;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = ds_ckpt_save(path, "different metadata", NT, b.t, err);
    char stpath[4096], st_err[DS_ERR_LEN];
    tmp_path(stpath, "atomic.safetensors");
    int st_rc = ds_safetensors_save(stpath, 0, NULL, NT, b.t, st_err);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(rc != 0, "save past the file size limit must fail");
    CHECK(st_rc != 0 && access(stpath, F_OK) != 0, "safetensors save past the limit: %s", st_err);
    uint8_t *after = read_all(path, &len1);
    CHECK(len0 == len1 && memcmp(before, after, len0) == 0, "old checkpoint changed by a failed save");
    CHECK(count_temp_files(tmpdir) == 0, "temp file left behind after a failed write");
    free(before);
    free(after);

    /* rename fails (the target is a directory): temp file removed */
    tmp_path(path, "is_a_dir.ckpt");
    mkdir(path, 0755);
    CHECK(ds_ckpt_save(path, META, NT, a.t, err) != 0 && contains(err, "cannot commit"), "rename onto dir: %s", err);
    CHECK(count_temp_files(tmpdir) == 0, "temp file left behind after a failed rename");
    model_free(&a);
    model_free(&b);
}

/* ---- safetensors ------------------------------------------------------------------------------- */

static void test_safetensors_roundtrip(void) {
    char path[4096], err[DS_ERR_LEN];
    tmp_path(path, "rt.safetensors");
    model a, b;
    model_init(&a, 8);
    model_init(&b, 9);
    const char *kv[4] = {"format", "rwkv7-x070", "note", "quote\" backslash\\ newline\n tab\t \x01 \xc3\xa9"};
    CHECK(ds_safetensors_save(path, 2, kv, NT, a.t, err) == 0, "save: %s", err);
    ds_st_index ix;
    CHECK(ds_safetensors_list(path, &ix, err) == 0, "list: %s", err);
    CHECK(ix.n == NT && ix.n_meta == 2, "list counts %d %d", ix.n, ix.n_meta);
    for (int i = 0; i < NT && i < ix.n; i++) {
        const ds_st_entry *e = ds_st_find(&ix, a.t[i].name);
        CHECK(e && e->dtype == DS_ST_F32 && e->ndim == a.t[i].ndim &&
                  memcmp(e->shape, a.t[i].shape, e->ndim * sizeof(int64_t)) == 0,
              "listed entry for %s", a.t[i].name);
    }
    CHECK(ds_st_meta(&ix, "format") && strcmp(ds_st_meta(&ix, "format"), kv[1]) == 0, "meta format");
    CHECK(ds_st_meta(&ix, "note") && strcmp(ds_st_meta(&ix, "note"), kv[3]) == 0, "meta escapes round trip");
    CHECK(ds_st_meta(&ix, "absent") == NULL && ds_st_find(&ix, "absent") == NULL, "absent lookups");
    ds_st_index_free(&ix);
    CHECK(ds_safetensors_load(path, NT, b.t, err) == 0, "load: %s", err);
    CHECK(model_equal(&a, &b), "safetensors round trip is not bit-exact");

    /* independent layout check: u64 header length, 8-aligned, data = sum of fp32 sizes */
    size_t len;
    uint8_t *f = read_all(path, &len);
    uint64_t hl;
    memcpy(&hl, f, 8);
    size_t data = 0;
    for (int i = 0; i < NT; i++) data += (size_t)ds_tensor_numel(&a.t[i]) * 4;
    CHECK(hl % 8 == 0 && f[8] == '{' && 8 + hl + data == len, "layout: header %llu, data %zu, file %zu",
          (unsigned long long)hl, data, len);
    free(f);

    /* loading a subset is allowed; a missing name or a wrong shape is not */
    CHECK(ds_safetensors_load(path, 2, b.t, err) == 0, "subset: %s", err);
    ds_tensor t = b.t[1];
    t.name = "nope";
    CHECK(ds_safetensors_load(path, 1, &t, err) != 0 && contains(err, "missing tensor 'nope'"), "missing: %s", err);
    t = b.t[1];
    t.shape[0] = 4, t.shape[1] = 16;
    CHECK(ds_safetensors_load(path, 1, &t, err) != 0 &&
              contains(err, "shape mismatch for 'blocks.0.att.key.weight': file [8,8], model [4,16]"),
          "shape: %s", err);
    model_free(&a);
    model_free(&b);
}

/* Writes a safetensors file from a header text and a data section. */
static void write_st(const char *path, const char *header, const void *data, size_t data_len) {
    FILE *fp = fopen(path, "wb");
    uint64_t hl = strlen(header);
    fwrite(&hl, 8, 1, fp);
    fwrite(header, 1, hl, fp);
    fwrite(data, 1, data_len, fp);
    fclose(fp);
}

static void test_safetensors_half(void) {
    char path[4096], err[DS_ERR_LEN];
    tmp_path(path, "half.safetensors");
    /* Data section order differs from header order, and the header ends in padding spaces. */
    const char *header =
        "{\"h\": {\"dtype\": \"F16\", \"shape\": [2, 5], \"data_offsets\": [12, 32]},\n"
        " \"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[32,40]},"
        " \"__metadata__\": {\"format\": \"pt\"},"
        " \"f\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 12]}}   ";
    uint8_t data[40];
    const float f32[3] = {1.5f, -0.0f, 3e38f};
    const uint16_t f16[10] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x8000, 0x7C00, 0x3555, 0xFC00, 0x7E00};
    const uint16_t bf16[4] = {0x3F80, 0xC0A0, 0x3EAB, 0x0001};
    memcpy(data, f32, 12);
    memcpy(data + 12, f16, 20);
    memcpy(data + 32, bf16, 8);
    write_st(path, header, data, sizeof data);

    /* F16: 1, -2, max normal 65504, min subnormal 2^-24, max subnormal 1023*2^-24, -0, inf,
     * 0x3555 = (1 + 341/1024) * 2^-2, -inf, nan. BF16: 1, -5, 0x3EAB = 0x3EAB0000 in fp32 =
     * (1 + 0x2B/128) * 2^-2, and the smallest bf16 subnormal 2^-133. */
    const float want_h[10] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 1023 * 0x1p-24f, -0.0f, INFINITY,
                              (1 + 341 / 1024.0f) * 0.25f, -INFINITY, NAN};
    const float want_b[4] = {1.0f, -5.0f, (1 + 43 / 128.0f) * 0.25f, 0x1p-133f};
    float h[10], b[4], f[3];
    ds_tensor t[3] = {{.name = "h", .ndim = 2, .shape = {2, 5}, .data = h},
                      {.name = "b", .ndim = 1, .shape = {4}, .data = b},
                      {.name = "f", .ndim = 1, .shape = {3}, .data = f}};
    CHECK(ds_safetensors_load(path, 3, t, err) == 0, "load half: %s", err);
    for (int i = 0; i < 9; i++)
        CHECK(memcmp(&h[i], &want_h[i], 4) == 0, "f16[%d] = %a, want %a", i, h[i], want_h[i]);
    CHECK(isnan(h[9]), "f16 nan");
    CHECK(memcmp(b, want_b, sizeof b) == 0, "bf16: %a %a %a %a", b[0], b[1], b[2], b[3]);
    CHECK(memcmp(f, f32, sizeof f) == 0, "f32 in a mixed file");

    ds_st_index ix;
    CHECK(ds_safetensors_list(path, &ix, err) == 0 && ix.n == 3 && ix.entries[0].dtype == DS_ST_F16 &&
              ix.entries[1].dtype == DS_ST_BF16 && ds_st_meta(&ix, "format") &&
              strcmp(ds_st_meta(&ix, "format"), "pt") == 0 && ix.data_start == 8 + strlen(header),
          "list half: %s", err);
    ds_st_index_free(&ix);

    /* non-float dtypes are listed but not loaded */
    write_st(path, "{\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data, 8);
    float one;
    ds_tensor ti = {.name = "i", .ndim = 1, .shape = {1}, .data = &one};
    CHECK(ds_safetensors_list(path, &ix, err) == 0 && ix.n == 1 && ix.entries[0].dtype == DS_ST_I64, "list I64: %s",
          err);
    ds_st_index_free(&ix);
    CHECK(ds_safetensors_load(path, 1, &ti, err) != 0 && contains(err, "dtype I64 (need F32, F16 or BF16)"),
          "I64: %s", err);

    /* \u escapes in names, including a surrogate pair, decode to UTF-8 */
    write_st(path, "{\"a\\u00e9\\ud83d\\ude00\\n\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", data,
             4);
    CHECK(ds_safetensors_list(path, &ix, err) == 0 && ix.n == 1 &&
              strcmp(ix.entries[0].name, "a\xc3\xa9\xf0\x9f\x98\x80\n") == 0 && ix.entries[0].ndim == 0,
          "unicode name: %s", err);
    ds_st_index_free(&ix);
}

static void test_safetensors_malformed(void) {
    char path[4096], err[DS_ERR_LEN];
    tmp_path(path, "bad.safetensors");
    uint8_t data[64] = {0};
#define T(x) "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}" x
    struct { const char *header; size_t data_len; const char *want;
    } cases[] = {
        {T(""), 8, "expected '}'"},
        {T("}x"), 8, "trailing characters"},
        {T(",}"), 8, "expected a string"},
        {T(",\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}"), 16, "duplicate tensor name"},
        {"{\"t\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "expected an integer"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 8, "expected an integer"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "non-negative integer"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, "leading zero"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8, "too large"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, "unknown or repeated key"},
        {"{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "unknown or repeated key"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "lacks dtype, shape or data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 8, "array too long"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "begin > end"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "more than 4 dims"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "do not match F32 shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "hole or overlap"},
        {T("}"), 16, "8 bytes after the last tensor"},
        {T("}"), 4, "truncated (expected "},
        {"{\"t\\q\":{}}", 0, "bad escape"},
        {"{\"t\\u12g4\":{}}", 0, "bad \\u escape"},
        {"{\"t\\ud800\":{}}", 0, "lone high surrogate"},
        {"{\"t\\u0000\":{}}", 0, "\\u0000 in string"},
        {"{\"t\n\":{}}", 0, "control character"},
        {"{\"t", 0, "unterminated string"},
        {"{\"__metadata__\":{\"a\":1}}", 0, "expected a string"},
        {"{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "duplicate metadata key"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "repeated __metadata__"},
        {" {}", 0, "does not start with '{'"},
        {"[]", 0, "does not start with '{'"},
        {"{\"t\":true}", 0, "expected '{'"},
        {"", 0, "does not start with '{'"},
    };
#undef T
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_st(path, cases[i].header, data, cases[i].data_len);
        ds_st_index ix;
        int rc = ds_safetensors_list(path, &ix, err);
        CHECK(rc != 0 && contains(err, cases[i].want), "case %zu (%s): got '%s', want '%s'", i, cases[i].header,
              rc ? err : "(accepted)", cases[i].want);
        float buf[2];
        ds_tensor t = {.name = "t", .ndim = 1, .shape = {2}, .data = buf};
        CHECK(ds_safetensors_load(path, 1, &t, err) != 0, "load accepted case %zu", i);
    }
    /* exact sizes in the truncation message */
    const char *hdr = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    char want[128];
    write_st(path, hdr, data, 4);
    snprintf(want, sizeof want, "truncated (expected %zu bytes, found %zu)", 8 + strlen(hdr) + 8,
             8 + strlen(hdr) + 4);
    ds_st_index ix;
    CHECK(ds_safetensors_list(path, &ix, err) != 0 && contains(err, want), "data cut: %s", err);
    /* the empty header "{}" with no data is valid */
    write_st(path, "{}      ", data, 0);
    CHECK(ds_safetensors_list(path, &ix, err) == 0 && ix.n == 0, "empty header: %s", err);
    ds_st_index_free(&ix);
    /* header length beyond the file */
    FILE *fp = fopen(path, "wb");
    uint64_t hl = 1000;
    fwrite(&hl, 8, 1, fp);
    fwrite("{}", 1, 2, fp);
    fclose(fp);
    CHECK(ds_safetensors_list(path, &ix, err) != 0 &&
              contains(err, "truncated (expected at least 1008 bytes, found 10)"),
          "header length: %s", err);
}

/* A header of 80,000 tensors and 20,000 metadata pairs is read in well under a second (a pairwise
 * duplicate check took 21 s): names are found by sorting, and a duplicate is still refused. */
static void test_safetensors_many(void) {
    enum { N = 80000, N_META = 20000 };
    char path[4096], err[DS_ERR_LEN];
    tmp_path(path, "many.safetensors");
    size_t cap = (size_t)N * 80 + (size_t)N_META * 40 + 64, len = 0;
    char *header = malloc(cap);
    len += (size_t)snprintf(header + len, cap - len, "{\"__metadata__\":{");
    for (int i = 0; i < N_META; i++)
        len += (size_t)snprintf(header + len, cap - len, "%s\"k%d\":\"v%d\"", i ? "," : "", i, i);
    len += (size_t)snprintf(header + len, cap - len, "}");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(header + len, cap - len,
                                ",\"t%d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%d,%d]}", i, 4 * i,
                                4 * i + 4);
    snprintf(header + len, cap - len, "}");
    float *data = calloc(N, sizeof(float));
    write_st(path, header, data, N * sizeof(float));
    ds_st_index ix;
    double t0 = ds_now_seconds();
    int rc = ds_safetensors_list(path, &ix, err);
    double dt = ds_now_seconds() - t0;
    CHECK(rc == 0 && ix.n == N && ix.n_meta == N_META, "many entries: %s", rc ? err : "");
    CHECK(dt < 5.0, "%d entries and %d metadata pairs read in %.2f s", N, N_META, dt);
    if (rc == 0) {
        const ds_st_entry *e = ds_st_find(&ix, "t12345");
        CHECK(e && e->begin == 4 * 12345 && !ds_st_find(&ix, "t80000") &&
                  strcmp(ds_st_meta(&ix, "k19999"), "v19999") == 0 && !ds_st_meta(&ix, "k20000"),
              "lookups in a large header");
        ds_st_index_free(&ix);
    }
    /* the last tensor named as the first: found, though 80,000 entries apart */
    char *last = strstr(header, "\"t79999\"");
    memcpy(last, "\"t0\"    ", 8);
    write_st(path, header, data, N * sizeof(float));
    CHECK(ds_safetensors_list(path, &ix, err) != 0 && contains(err, "duplicate tensor name 't0'"), "duplicate: %s", err);
    free(header);
    free(data);
}

/* A checkpoint of 80,000 tensors is saved, loaded (in another order) and refused with a duplicate name in
 * well under a second each (pairwise name checks took minutes): names are matched by sorting. */
static void test_ckpt_many(void) {
    enum { N = 80000 };
    char path[4096], err[DS_ERR_LEN];
    tmp_path(path, "many.ckpt");
    ds_tensor *t = calloc(N, sizeof *t), *back = calloc(N, sizeof *back);
    char (*names)[16] = malloc(sizeof(*names) * N);
    float *data = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        data[i] = (float)i;
        t[i] = (ds_tensor){.name = names[i], .ndim = 1, .shape = {1}, .data = &data[i]};
        back[N - 1 - i] = (ds_tensor){.name = names[i], .ndim = 1, .shape = {1}, .data = &got[i]};
    }
    double t0 = ds_now_seconds();
    int saved = ds_ckpt_save(path, META, N, t, err) == 0;
    int loaded = saved && ds_ckpt_load(path, NULL, N, back, err) == 0;
    double dt = ds_now_seconds() - t0;
    CHECK(saved && loaded && memcmp(data, got, sizeof(float) * N) == 0, "many tensors: %s", err);
    CHECK(dt < 5.0, "%d tensors saved and loaded in %.2f s", N, dt);
    t[N - 1].name = "t0";
    CHECK(ds_ckpt_save(path, META, N, t, err) != 0 && contains(err, "duplicate tensor name 't0'"), "duplicate: %s", err);
    back[0].name = "t0";  /* the file holds t0..t79999 once each; the model names t0 twice */
    CHECK(ds_ckpt_load(path, NULL, N, back, err) != 0 && contains(err, "duplicate tensor name 't0'"), "model duplicate: %s", err);
    free(t); free(back); free(names); free(data); free(got);
}

/* ---- --roundtrip-safetensors ------------------------------------------------------------------- */

static int roundtrip_safetensors(const char *in, const char *out) {
    char err[DS_ERR_LEN];
    ds_st_index ix;
    if (ds_safetensors_list(in, &ix, err)) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
    ds_tensor *t = calloc(ix.n + 1, sizeof *t);
    const char **kv = calloc(2 * ix.n_meta + 1, sizeof *kv);
    for (int i = 0; i < ix.n; i++) {
        t[i].name = ix.entries[i].name;
        t[i].ndim = ix.entries[i].ndim;
        memcpy(t[i].shape, ix.entries[i].shape, sizeof t[i].shape);
        t[i].data = ds_alloc((size_t)ds_tensor_numel(&t[i]) * sizeof(float));
    }
    for (int i = 0; i < ix.n_meta; i++) kv[2 * i] = ix.meta_keys[i], kv[2 * i + 1] = ix.meta_values[i];
    if (ds_safetensors_load(in, ix.n, t, err) || ds_safetensors_save(out, ix.n_meta, kv, ix.n, t, err))
        ds_die(DS_EXIT_BAD_INPUT, "%s", err);
    for (int i = 0; i < ix.n; i++) ds_free(t[i].data);
    free(t);
    free(kv);
    ds_st_index_free(&ix);
    return 0;
}

/* Temp files of a writer that died (SIGKILL mid-save) are removed; a live writer's are kept. */
static void test_clean_stale(void) {
    char dir[4200], dead[4300], live[4300], ckpt[4300];
    snprintf(dir, sizeof dir, "%s/stale", tmpdir);
    mkdir(dir, 0777);
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);  /* its pid now names no process */
    snprintf(dead, sizeof dead, "%s/step-00000005.ckpt.tmp.%ld", dir, (long)child);
    snprintf(live, sizeof live, "%s/step-00000006.ckpt.tmp.%ld", dir, (long)getpid());
    snprintf(ckpt, sizeof ckpt, "%s/step-00000004.ckpt", dir);
    const char *files[] = {dead, live, ckpt};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(files[i], "w");
        if (f) { fputs("x", f); fclose(f); }
    }
    int removed = ds_ckpt_clean_stale(dir);
    CHECK(removed == 1, "clean_stale removed %d files, want 1", removed);
    CHECK(access(dead, F_OK) != 0, "dead writer's temp file removed");
    CHECK(access(live, F_OK) == 0 && access(ckpt, F_OK) == 0, "live writer's temp file and checkpoints kept");
    char missing[4300];
    snprintf(missing, sizeof missing, "%s/nope", tmpdir);
    CHECK(ds_ckpt_clean_stale(missing) == 0, "missing directory: nothing to clean");
}

/* CRC-32C against the published check value and the iSCSI test vectors (RFC 3720, B.4), and a
 * checksum continued over pieces at odd offsets equals the whole buffer's. */
static void test_crc32c(void) {
    uint8_t zeros[32] = {0}, ones[32], up[32], down[32], buf[1003];
    for (int i = 0; i < 32; i++) { ones[i] = 0xff; up[i] = (uint8_t)i; down[i] = (uint8_t)(31 - i); }
    CHECK(ds_crc32c(0, "123456789", 9) == 0xE3069283u, "check value: %08x", ds_crc32c(0, "123456789", 9));
    CHECK(ds_crc32c(0, zeros, 32) == 0x8A9136AAu && ds_crc32c(0, ones, 32) == 0x62A8AB43u &&
          ds_crc32c(0, up, 32) == 0x46DD794Eu && ds_crc32c(0, down, 32) == 0x113FDB5Cu, "iSCSI vectors");
    for (int i = 0; i < 1003; i++) buf[i] = (uint8_t)ds_rng_u64(5, 0, i);
    uint32_t whole = ds_crc32c(0, buf + 1, 1002);
    uint32_t pieces = ds_crc32c(ds_crc32c(ds_crc32c(0, buf + 1, 13), buf + 14, 500), buf + 514, 489);
    CHECK(whole == pieces && ds_crc32c(whole, buf, 0) == whole, "continued over pieces: %08x vs %08x", pieces, whole);
}

/* ds_alloc: large arrays come zero-filled and 64-byte aligned (mappings of their own, on 2 MiB
 * boundaries), also after ones written and freed, and ds_free takes them and small ones in any order. */
static void test_alloc(void) {
    enum { N = 12 };
    size_t sizes[N];
    uint8_t *p[N];
    int zero = 1, aligned = 1;
    for (int i = 0; i < N; i++) {
        sizes[i] = i % 3 == 0 ? (size_t)100 + i : ((size_t)32 << 20) + (size_t)i * 4097;
        p[i] = ds_alloc(sizes[i]);
        aligned &= (uintptr_t)p[i] % 64 == 0 && (sizes[i] < ((size_t)32 << 20) || (uintptr_t)p[i] % (2 << 20) == 0);
        for (size_t k = 0; k < sizes[i]; k += 4093) zero &= p[i][k] == 0;
        zero &= p[i][sizes[i] - 1] == 0;
        memset(p[i], 0xab, sizes[i]);
    }
    for (int i = 0; i < N; i += 2) ds_free(p[i]);
    for (int i = 0; i < N; i += 2) {
        p[i] = ds_alloc(sizes[i]);
        for (size_t k = 0; k < sizes[i]; k += 4093) zero &= p[i][k] == 0;
    }
    for (int i = N - 1; i >= 0; i--) ds_free(p[i]);
    ds_free(NULL);
    CHECK(zero && aligned, "ds_alloc: zero-filled %d, aligned %d", zero, aligned);
}

/* ds_tensors_find_nonfinite: the first tensor holding a NaN or an infinity, wherever it sits in a
 * large tensor (the threaded scan); FLT_MAX, subnormals and -0 are finite. */
static void test_find_nonfinite(void) {
    int64_t big = (1 << 21) + 3;
    float *a = calloc(big, sizeof(float)), *b = calloc(5, sizeof(float));
    a[0] = FLT_MAX; a[1] = -FLT_MAX; a[2] = 1e-45f; a[3] = -0.0f;
    ds_tensor t[2] = {{.name = "a", .ndim = 1, .shape = {big}, .data = a}, {.name = "b", .ndim = 1, .shape = {5}, .data = b}};
    CHECK(ds_tensors_find_nonfinite(2, t) == -1, "finite extremes are finite");
    float bad[4] = {INFINITY, -INFINITY, NAN, -NAN};
    int64_t where[3] = {0, big / 2 + 7, big - 1};
    for (int v = 0; v < 4; v++)
        for (int w = 0; w < 3; w++) {
            a[where[w]] = bad[v];
            CHECK(ds_tensors_find_nonfinite(2, t) == 0, "value %d at %lld found", v, (long long)where[w]);
            a[where[w]] = 0;
            b[4] = bad[v];
            CHECK(ds_tensors_find_nonfinite(2, t) == 1, "value %d in the second tensor found", v);
            b[4] = 0;
        }
    free(a);
    free(b);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--roundtrip-safetensors") == 0) return roundtrip_safetensors(argv[2], argv[3]);
    if (!mkdtemp(tmpdir)) ds_die(DS_EXIT_FAIL, "mkdtemp failed");
    test_crc32c();
    test_alloc();
    test_find_nonfinite();
    test_roundtrip();
    test_corruption();
    test_directory();
    test_meta_step();
    test_run_dir();
    test_atomicity();
    test_clean_stale();
    test_safetensors_roundtrip();
    test_safetensors_half();
    test_safetensors_malformed();
    test_safetensors_many();
    test_ckpt_many();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary("test_checkpoint");
}
