/* Writes the generated seeds of the fuzzing corpus (tests/fuzz/README.md): small valid files made by
 * the project's own writers, in each harness's input format, as OUT/<harness>/gen-*. `make
 * fuzz-corpus` runs it into tests/fuzz/corpus; other files there (regression seeds) are left alone.
 *
 *   build/fuzz/make_corpus OUT */
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/states.h"
#include "dreamstate/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *out_dir;
static char scratch[256];

static void fail(const char *what) {
    fprintf(stderr, "make_corpus: %s\n", what);
    exit(1);
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail(path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc(*len + 1);
    if (fread(data, 1, *len, f) != *len) fail(path);
    data[*len] = 0;
    fclose(f);
    return data;
}

/* OUT/harness/name: `prefix` (n_prefix bytes), then the bytes of file `from` (NULL: none), then
 * `suffix` (n_suffix bytes). */
static void seed(const char *harness, const char *name, const void *prefix, size_t n_prefix, const char *from,
                 const void *suffix, size_t n_suffix) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_dir, harness);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, harness, name);
    FILE *f = fopen(path, "wb");
    if (!f) fail(path);
    fwrite(prefix, 1, n_prefix, f);
    if (from) {
        size_t len;
        uint8_t *data = slurp(from, &len);
        fwrite(data, 1, len, f);
        free(data);
    }
    fwrite(suffix, 1, n_suffix, f);
    if (fclose(f) != 0) fail(path);
}

/* A flag byte (0: as written, 3: the harness's fix-ups on) before the file. */
static void flagged_seeds(const char *harness, const char *name, const char *from) {
    char both[256];
    for (uint8_t flags = 0; flags <= 3; flags += 3) {
        snprintf(both, sizeof both, "gen-%s-flags%d", name, flags);
        seed(harness, both, &flags, 1, from, NULL, 0);
    }
}

static const char *tmp(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", scratch, name);
    return p;
}

static void config_seeds(void) {
    ds_config cfg;
    ds_config_load(&cfg, "configs/tiny.yaml", 0, NULL);
    if (ds_config_write(&cfg, tmp("resolved.yaml")) != 0) fail("resolved.yaml");
    seed("config", "gen-resolved.yaml", NULL, 0, tmp("resolved.yaml"), NULL, 0);
    const char *configs[] = {"tiny.yaml", "tiny-states.yaml", "tiny-hybrid.yaml", "from-weights.yaml"};
    for (int i = 0; i < 4; i++) {
        char from[256], name[256];
        snprintf(from, sizeof from, "configs/%s", configs[i]);
        snprintf(name, sizeof name, "gen-%s", configs[i]);
        seed("config", name, NULL, 0, from, NULL, 0);
    }
}

static void safetensors_seeds(void) {
    float a[6] = {1, -2, 0.5f, 3, 0, 1e-3f}, b[4] = {4, 5, 6, 7};
    ds_tensor t[2] = {{"a", 2, {2, 3}, a}, {"b.weight", 1, {4}, b}};
    const char *meta[] = {"format", "pt", "note", "x\"y\\u00e9"};
    char err[DS_ERR_LEN];
    if (ds_safetensors_save(tmp("t.safetensors"), 2, meta, 2, t, err) != 0) fail(err);
    seed("safetensors", "gen-f32", NULL, 0, tmp("t.safetensors"), NULL, 0);
    /* the other dtypes, written by hand: BF16 and F16 convert, I32 is refused */
    const char *header = "{\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                         "\"f\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[4,8]},"
                         "\"i\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[8,12]},"
                         "\"__metadata__\":{\"k\":\"\\ud83d\\ude00\"}}  ";
    uint64_t len = strlen(header);
    uint8_t file[512] = {0}, data[12] = {0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3c, 0x00, 0x7c, 7, 0, 0, 0};
    memcpy(file, &len, 8);
    memcpy(file + 8, header, len);
    memcpy(file + 8 + len, data, sizeof data);
    seed("safetensors", "gen-dtypes", file, 8 + len + sizeof data, NULL, NULL, 0);
}

/* An RWKV-7 of L layers, C = 64, V = 2 and LoRA ranks 8 in official-name safetensors, as the
 * weights harness takes it: u32 length, then the header and the first 256 bytes of weights. */
static void weights_seeds(void) {
    for (int L = 1; L <= 2; L++) {
        ds_rwkv7_dims d = {.n_layer = L, .n_embd = 64, .vocab_size = 2, .dim_w = 8, .dim_a = 8, .dim_v = 8, .dim_g = 8};
        ds_rwkv7 m;
        ds_rwkv7_create(&m, &d);
        ds_rwkv7_init_weights(&m, 1);
        ds_tensor *t = ds_alloc(sizeof(ds_tensor) * m.n_tensors);
        ds_param_views(m.n_tensors, m.tensors, m.params, t);
        char err[DS_ERR_LEN];
        if (ds_safetensors_save(tmp("w.safetensors"), 0, NULL, m.n_tensors, t, err) != 0) fail(err);
        size_t len;
        uint8_t *file = slurp(tmp("w.safetensors"), &len);
        uint64_t header_len;
        memcpy(&header_len, file, 8);
        uint32_t total = (uint32_t)len;
        size_t kept = 8 + header_len + 256 < len ? 8 + header_len + 256 : len;
        char name[64];
        snprintf(name, sizeof name, "gen-rwkv7-L%d", L);
        seed("weights", name, &total, 4, NULL, file, kept);
        free(file);
        ds_free(t);
        ds_rwkv7_destroy(&m);
    }
}

static void ckpt_seeds(void) {
    float a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {-1, 0, 1, 2};
    ds_tensor t[2] = {{"a", 2, {2, 3}, a}, {"b", 1, {4}, b}};
    char err[DS_ERR_LEN];
    const char *meta = "step=7\nmodel=rwkv7 L=1 C=64 V=2 Dw=8 Da=8 Dv=8 Dg=8\nsource=fuzz\n";
    if (ds_ckpt_save(tmp("a.ckpt"), meta, 2, t, err) != 0) fail(err);
    flagged_seeds("ckpt", "two-tensors", tmp("a.ckpt"));
    if (ds_ckpt_save(tmp("e.ckpt"), "step=0\n", 0, NULL, err) != 0) fail(err);
    flagged_seeds("ckpt", "empty", tmp("e.ckpt"));
}

static void token_seeds(void) {
    static const int32_t doc1[] = {72, 101, 108, 108, 111}, doc2[] = {1, 255, 7}, wide[] = {65535, 70000, 3};
    ds_shard_writer *w = ds_shard_writer_open(tmp("t.bin"), 256, 0);
    ds_shard_writer_add_document(w, doc1, 5);
    ds_shard_writer_add_document(w, doc2, 3);
    ds_shard_writer_commit(w);
    flagged_seeds("shard", "u16", tmp("t.bin"));
    w = ds_shard_writer_open(tmp("w.bin"), 70001, 0x1234abcd);
    ds_shard_writer_add_document(w, wide, 3);
    ds_shard_writer_commit(w);
    flagged_seeds("shard", "u32", tmp("w.bin"));

    /* binidx: flag byte, u16 index length, index, data */
    for (int wide_ids = 0; wide_ids <= 1; wide_ids++) {
        ds_binidx_writer *b = ds_binidx_writer_open(tmp("b"), wide_ids ? 70001 : 256);
        ds_binidx_writer_add_document(b, wide_ids ? wide : doc1, wide_ids ? 3 : 5);
        ds_binidx_writer_add_document(b, doc2, 3);
        ds_binidx_writer_commit(b);
        size_t idx_len, bin_len;
        uint8_t *idx = slurp(tmp("b.idx"), &idx_len), *bin = slurp(tmp("b.bin"), &bin_len);
        uint8_t *input = malloc(3 + idx_len + bin_len);
        input[0] = 0;
        input[1] = (uint8_t)idx_len;
        input[2] = (uint8_t)(idx_len >> 8);
        memcpy(input + 3, idx, idx_len);
        memcpy(input + 3 + idx_len, bin, bin_len);
        seed("binidx", wide_ids ? "gen-int32" : "gen-uint16", input, 3 + idx_len + bin_len, NULL, NULL, 0);
        free(input);
        free(idx);
        free(bin);
    }
}

#define MODEL "rwkv7 L=1 C=64 V=2 Dw=8 Da=8 Dv=8 Dg=8"

static void state_seeds(void) {
    ds_rwkv7_dims d = {.n_layer = 1, .n_embd = 64, .vocab_size = 2, .dim_w = 8, .dim_a = 8, .dim_v = 8, .dim_g = 8};
    ds_rwkv7_state s;
    ds_rwkv7_state_create(&s, &d, 2);
    for (int64_t i = 0; i < s.numel; i++) s.data[i] = (float)(i % 7) * 0.25f - 0.5f;
    ds_state_file_save(tmp("one.state"), DS_STATE_FILE_DREAMSTATE, &d, &s, 0, 1, "label=c-header\n");
    flagged_seeds("state_file", "one", tmp("one.state"));

    /* a two-record shard with both condition parts, and its index (text, NUL, shard) */
    ds_state_shape shape = ds_state_shape_of(&d, DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN);
    ds_state_writer *w = ds_state_writer_open(tmp("s.bin"), &shape);
    float cond[128];
    for (int i = 0; i < 128; i++) cond[i] = (float)i / 128;
    ds_state_writer_add(w, 0, 0, cond, &s, 0);
    ds_state_writer_add(w, 1, 5, cond, &s, 1);
    ds_state_writer_commit(w, "model=" MODEL "\n");
    flagged_seeds("state_file", "shard", tmp("s.bin"));
    char *labels[] = {"a", "b"};
    ds_states_info info = {.shape = shape, .n_records = 2, .n_labels = 2, .labels = labels, .n_shards = 1,
                           .max_tokens = 64, .model = MODEL, .tokenizer = "byte", .checkpoint = "model.ckpt",
                           .contexts = "contexts.jsonl"};
    ds_states_shard shard = {.file = "s.bin", .records = 2};
    ds_states_write_index(tmp("index.txt"), &info, &shard);
    size_t len;
    uint8_t *index = slurp(tmp("index.txt"), &len);
    seed("state_index", "gen-two-records", index, len + 1, tmp("s.bin"), NULL, 0);  /* + its NUL */
    free(index);

    char err[DS_ERR_LEN];
    if (ds_rwkv_state_save(tmp("r.safetensors"), &d, &s, 1, "label=b\nnote=a=b\n", err) != 0) fail(err);
    seed("rwkv_state", "gen-L1", NULL, 0, tmp("r.safetensors"), NULL, 0);
    seed("state_file", "gen-rwkv-state", "\0", 1, tmp("r.safetensors"), NULL, 0);
    ds_rwkv7_state_destroy(&s);
}

static void jsonl_seeds(void) {
    ds_contexts_writer *w = ds_contexts_writer_open(tmp("c.jsonl"));
    const char *texts[] = {"#include <stdio.h>\n", "caf\xc3\xa9 \"quoted\"\t\\", "\xf0\x9f\x98\x80 emoji"};
    ds_contexts_writer_add(w, "c-header", texts[0], strlen(texts[0]), "/usr/include/x.h");
    ds_contexts_writer_add(w, "a", texts[1], strlen(texts[1]), NULL);
    ds_contexts_writer_add(w, "b", texts[2], strlen(texts[2]), "doc");
    ds_contexts_writer_commit(w);
    seed("jsonl", "gen-contexts", "\0", 1, tmp("c.jsonl"), NULL, 0);
    seed("jsonl", "gen-contexts-given-labels", "\1", 1, tmp("c.jsonl"), NULL, 0);
    const char *docs = "{\"text\": \"first document\\n\", \"meta\": {\"n\": [1, 2.5e3, true, null]}}\n"
                       "\n"
                       "{\"id\": -3, \"text\": \"second \\u00e9\\ud83d\\ude00 \\u0000 doc\"}\n";
    seed("jsonl", "gen-documents", "\2", 1, NULL, docs, strlen(docs));
}

/* A World vocabulary: every single byte (as Python's repr writes it) and a few longer tokens. */
static void vocab_seeds(void) {
    char text[8192];
    size_t n = 0;
    for (int b = 0; b < 256; b++) {
        char literal[16];
        if (b == '\'' || b == '\\') snprintf(literal, sizeof literal, "'\\%c'", b);
        else if (b >= 0x20 && b < 0x7f) snprintf(literal, sizeof literal, "'%c'", b);
        else if (b == '\n') snprintf(literal, sizeof literal, "'\\n'");
        else snprintf(literal, sizeof literal, b < 0x80 ? "'\\x%02x'" : "b'\\x%02x'", b);
        n += (size_t)snprintf(text + n, sizeof text - n, "%d %s 1\n", b + 1, literal);
    }
    n += (size_t)snprintf(text + n, sizeof text - n, "300 'ab' 2\n301 \"it's\" 4\n302 '\\u00e9t\\u00e9' 5\n"
                          "303 b'\\xff\\xfe' 2\n304 '\\U0001f600' 4\n");
    seed("vocab", "gen-vocab.txt", NULL, 0, NULL, text, n);
}

int main(int argc, char **argv) {
    if (argc != 2) fail("usage: make_corpus OUT");
    out_dir = argv[1];
    mkdir(out_dir, 0755);
    snprintf(scratch, sizeof scratch, "/tmp/ds-make-corpus.%ld", (long)getpid());
    mkdir(scratch, 0700);
    config_seeds();
    safetensors_seeds();
    weights_seeds();
    ckpt_seeds();
    token_seeds();
    state_seeds();
    jsonl_seeds();
    vocab_seeds();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", scratch);
    return system(cmd) == 0 ? 0 : 1;
}
