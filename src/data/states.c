/* State shards, state files and state-dataset indexes (formats: include/dreamstate/states.h): the
 * atomic writers, the validating mmap readers, and the record <-> ds_rwkv7_state layout mapping. */
#include "dreamstate/states.h"
#include "dreamstate/common.h"
#include "dreamstate/weights.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "state shards are little-endian and read by memcpy/mmap: a big-endian port needs byte swaps"
#endif

#define STATES_MAGIC "DSSTATES"
#define STATES_VERSION 1u
#define INDEX_MAGIC "dreamstate-states 1"
#define HEAD_SIZE 64

typedef struct states_header {
    char magic[8];
    uint32_t version, n_layer, n_embd, n_head, head_size, cond_dim, flags, meta_bytes;
    uint64_t n_records, record_bytes;
    uint32_t payload_crc;
    uint32_t header_crc;  /* of the 60 bytes above */
} states_header;
_Static_assert(sizeof(states_header) == 64, "state shard header must be exactly 64 bytes");

/* ---------------------------------------------------------------- shapes and layout */

ds_state_shape ds_state_shape_of(const ds_rwkv7_dims *d, uint32_t cond_flags) {
    ds_state_shape s = {d->n_layer, d->n_embd, d->n_embd / HEAD_SIZE, HEAD_SIZE, 0, cond_flags};
    s.cond_dim = d->n_embd * __builtin_popcount(cond_flags);
    return s;
}

int64_t ds_state_layer_floats(const ds_state_shape *s) {
    return 2 * (int64_t)s->n_embd + (int64_t)s->n_head * s->head_size * s->head_size;
}

int64_t ds_state_floats(const ds_state_shape *s) { return s->n_layer * ds_state_layer_floats(s); }

static int64_t record_bytes(const ds_state_shape *s) { return 8 + 4 * (s->cond_dim + ds_state_floats(s)); }

void ds_state_pack(const ds_state_shape *s, const ds_rwkv7_state *src, int b, float *state) {
    int64_t C = s->n_embd, W = (int64_t)s->n_head * s->head_size * s->head_size, B = src->B;
    for (int l = 0; l < s->n_layer; l++, state += 2 * C + W) {
        memcpy(state, src->att_x + (l * B + b) * C, sizeof(float) * C);
        memcpy(state + C, src->wkv + (l * B + b) * W, sizeof(float) * W);
        memcpy(state + C + W, src->ffn_x + (l * B + b) * C, sizeof(float) * C);
    }
}

void ds_state_unpack(const ds_state_shape *s, const float *state, ds_rwkv7_state *dst, int b) {
    int64_t C = s->n_embd, W = (int64_t)s->n_head * s->head_size * s->head_size, B = dst->B;
    for (int l = 0; l < s->n_layer; l++, state += 2 * C + W) {
        memcpy(dst->att_x + (l * B + b) * C, state, sizeof(float) * C);
        memcpy(dst->wkv + (l * B + b) * W, state + C, sizeof(float) * W);
        memcpy(dst->ffn_x + (l * B + b) * C, state + C + W, sizeof(float) * C);
    }
}

/* The state of dims d holds what shape s describes (same L and C), else dies naming both. */
static void check_model_shape(const char *path, const ds_state_shape *s, const ds_rwkv7_dims *d, const ds_rwkv7_state *dst) {
    if (s->n_layer != d->n_layer || s->n_embd != d->n_embd)
        ds_die(DS_EXIT_BAD_INPUT, "%s: state has L=%d C=%d, model has L=%d C=%d", path, s->n_layer, s->n_embd,
               d->n_layer, d->n_embd);
    if (dst->B < 1 || dst->numel != dst->B * ds_state_floats(s))
        ds_die(DS_EXIT_FAIL, "%s: destination state is not a state of L=%d C=%d", path, s->n_layer, s->n_embd);
}

/* ---------------------------------------------------------------- writer */

struct ds_state_writer {
    ds_atomic_file af;
    ds_state_shape shape;
    uint64_t n;
    uint32_t crc;
    uint8_t *record;   /* [record_bytes] */
};

ds_state_writer *ds_state_writer_open(const char *path, const ds_state_shape *shape) {
    ds_state_writer *w = calloc(1, sizeof *w);
    w->shape = *shape;
    w->record = ds_alloc((size_t)record_bytes(shape));
    if (ds_atomic_open(&w->af, path) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot create: %s", path, strerror(errno));
    static const uint8_t placeholder[HEAD_SIZE];  /* the header is written at commit */
    fwrite(placeholder, 1, sizeof placeholder, w->af.fp);
    return w;
}

static void write_bytes(ds_state_writer *w, const void *p, size_t n) {
    w->crc = ds_crc32c(w->crc, p, n);
    fwrite(p, 1, n, w->af.fp);  /* errors surface through ferror at commit */
}

static float *record_state(ds_state_writer *w) { return (float *)(w->record + 8) + w->shape.cond_dim; }

/* Writes the record buffer, whose condition and state the caller has filled in. */
static void put_record(ds_state_writer *w, int32_t label, int32_t context) {
    memcpy(w->record, &label, 4);
    memcpy(w->record + 4, &context, 4);
    write_bytes(w, w->record, (size_t)record_bytes(&w->shape));
    w->n++;
}

void ds_state_writer_add(ds_state_writer *w, int32_t label, int32_t context, const float *cond,
                         const ds_rwkv7_state *s, int b) {
    if (b < 0 || b >= s->B || s->numel != s->B * ds_state_floats(&w->shape))
        ds_die(DS_EXIT_FAIL, "%s: state does not match the shard's shape", w->af.path);
    if (w->shape.cond_dim && !cond) ds_die(DS_EXIT_FAIL, "%s: a record needs its condition", w->af.path);
    if (w->shape.cond_dim) memcpy(w->record + 8, cond, sizeof(float) * w->shape.cond_dim);
    ds_state_pack(&w->shape, s, b, record_state(w));
    put_record(w, label, context);
}

void ds_state_writer_commit(ds_state_writer *w, const char *meta) {
    size_t meta_bytes = meta ? strlen(meta) : 0;
    write_bytes(w, meta, meta_bytes);
    states_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, STATES_MAGIC, 8);
    h.version = STATES_VERSION;
    h.n_layer = (uint32_t)w->shape.n_layer;
    h.n_embd = (uint32_t)w->shape.n_embd;
    h.n_head = (uint32_t)w->shape.n_head;
    h.head_size = (uint32_t)w->shape.head_size;
    h.cond_dim = (uint32_t)w->shape.cond_dim;
    h.flags = w->shape.flags;
    h.meta_bytes = (uint32_t)meta_bytes;
    h.n_records = w->n;
    h.record_bytes = (uint64_t)record_bytes(&w->shape);
    h.payload_crc = w->crc;
    h.header_crc = ds_crc32c(0, &h, offsetof(states_header, header_crc));
    int bad = fseek(w->af.fp, 0, SEEK_SET) != 0;
    bad = bad || fwrite(&h, sizeof h, 1, w->af.fp) != 1 || ferror(w->af.fp);
    if (bad || ds_atomic_commit(&w->af) != 0) {
        int e = errno;
        ds_atomic_abort(&w->af);
        ds_die(DS_EXIT_FAIL, "%s: write failed: %s", w->af.path, strerror(e));
    }
    ds_free(w->record);
    free(w);
}

void ds_state_writer_abort(ds_state_writer *w) {
    ds_atomic_abort(&w->af);
    ds_free(w->record);
    free(w);
}

/* ---------------------------------------------------------------- reader */

typedef struct shard_map {
    uint8_t *map;
    size_t size;
    ds_state_shape shape;
    int64_t n, record_bytes;
    const char *meta;     /* not NUL-terminated: meta_bytes long */
    size_t meta_bytes;
} shard_map;

/* printf into a malloc'd string. */
static char *format_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format_alloc(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *out = malloc((size_t)n + 1);
    if (!out) ds_die(DS_EXIT_FAIL, "out of memory");
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

static int why_fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int why_fail(char *why, size_t why_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return -1;
}

/* Metadata: "key=value\n" lines of printable text. */
static int meta_valid(const char *m, size_t n) {
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(m + i, '\n', n - i);
        if (!nl) return 0;
        size_t len = (size_t)(nl - (m + i));
        const char *eq = memchr(m + i, '=', len);
        if (!eq || eq == m + i) return 0;
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)m[i + k] < 0x20) return 0;
        i += len + 1;
    }
    return 1;
}

static void shard_unmap(shard_map *s) {
    if (s->map) munmap(s->map, s->size);
    memset(s, 0, sizeof *s);
}

static int shard_map_open(const char *path, shard_map *s, char *why, size_t why_len) {
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return why_fail(why, why_len, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return why_fail(why, why_len, "not a regular file");
    }
    size_t size = (size_t)st.st_size;
    if (size < HEAD_SIZE) {
        close(fd);
        return why_fail(why, why_len, "truncated header (%zu of %d bytes)", size, HEAD_SIZE);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return why_fail(why, why_len, "cannot mmap: %s", strerror(errno));
    s->map = map;
    s->size = size;
    states_header h;
    memcpy(&h, map, sizeof h);
    const char *reason = NULL;
    char buf[200];
    if (memcmp(h.magic, STATES_MAGIC, 8) != 0) reason = "not a state file (bad magic)";
    else if (h.header_crc != ds_crc32c(0, &h, offsetof(states_header, header_crc))) reason = "header checksum mismatch";
    else if (h.version != STATES_VERSION)
        reason = (snprintf(buf, sizeof buf, "unsupported version %u (this build reads %u)", h.version, STATES_VERSION), buf);
    else if (h.head_size != HEAD_SIZE || h.n_layer < 1 || h.n_layer > 4096 || h.n_head < 1 || h.n_head > 4096 ||
             h.n_embd != h.n_head * h.head_size)
        reason = (snprintf(buf, sizeof buf, "bad shape L=%u C=%u H=%u N=%u (need N=64, C=H*N)", h.n_layer, h.n_embd,
                           h.n_head, h.head_size), buf);
    else if (h.flags & ~(uint32_t)(DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN))
        reason = (snprintf(buf, sizeof buf, "unknown condition flags 0x%x", h.flags), buf);
    else if (h.cond_dim != h.n_embd * (uint32_t)__builtin_popcount(h.flags))
        reason = (snprintf(buf, sizeof buf, "cond_dim %u does not match flags 0x%x and C=%u", h.cond_dim, h.flags, h.n_embd), buf);
    if (!reason) {
        s->shape = (ds_state_shape){(int)h.n_layer, (int)h.n_embd, (int)h.n_head, (int)h.head_size, (int)h.cond_dim, h.flags};
        s->record_bytes = record_bytes(&s->shape);
        size_t have = size - HEAD_SIZE;
        if (h.record_bytes != (uint64_t)s->record_bytes)
            reason = (snprintf(buf, sizeof buf, "record size %" PRIu64 " does not match the shape (%" PRId64 ")",
                               h.record_bytes, s->record_bytes), buf);
        else if (h.n_records > have / (uint64_t)s->record_bytes ||
                 h.n_records * (uint64_t)s->record_bytes + h.meta_bytes != have) {
            unsigned long long want = (unsigned long long)HEAD_SIZE + h.n_records * (unsigned long long)s->record_bytes + h.meta_bytes;
            reason = (snprintf(buf, sizeof buf, "%s (expected %llu bytes, found %zu)",
                               want > size ? "truncated" : "wrong size", want, size), buf);
        } else if (ds_crc32c(0, s->map + HEAD_SIZE, have) != h.payload_crc) {
            reason = "payload checksum mismatch (corrupted)";
        }
    }
    if (!reason) {
        s->n = (int64_t)h.n_records;
        s->meta_bytes = h.meta_bytes;
        s->meta = (const char *)s->map + size - h.meta_bytes;
        if (!meta_valid(s->meta, s->meta_bytes)) reason = "metadata is not \"key=value\" lines";
    }
    if (reason) {
        shard_unmap(s);
        return why_fail(why, why_len, "%s", reason);
    }
    return 0;
}

static ds_state_record shard_record(const shard_map *s, int64_t i) {
    const uint8_t *p = s->map + HEAD_SIZE + i * s->record_bytes;
    ds_state_record r;
    memcpy(&r.label, p, 4);
    memcpy(&r.context, p + 4, 4);
    r.cond = (const float *)(p + 8);
    r.state = r.cond + s->shape.cond_dim;
    return r;
}

/* Value of `key` in the shard's metadata ("" if absent). */
static void shard_meta(const shard_map *s, const char *key, char *out, size_t len) {
    char *m = malloc(s->meta_bytes + 1);
    memcpy(m, s->meta, s->meta_bytes);
    m[s->meta_bytes] = 0;
    if (!ds_weights_meta_value(m, key, out, len)) out[0] = 0;
    free(m);
}

int ds_state_file_check(const char *path, char *why, size_t why_len) {
    shard_map s;
    if (shard_map_open(path, &s, why, why_len) != 0) return -1;
    shard_unmap(&s);
    return 0;
}

/* ---------------------------------------------------------------- single state files */

static void save_packed(const char *path, ds_state_shape shape, int32_t label, int32_t context,
                        const float *state, const ds_rwkv7_state *from, int b, const char *meta) {
    shape.cond_dim = 0;
    shape.flags = 0;
    ds_state_writer *w = ds_state_writer_open(path, &shape);
    if (state) {
        memcpy(record_state(w), state, sizeof(float) * ds_state_floats(&shape));
        put_record(w, label, context);
    } else {
        ds_state_writer_add(w, label, context, NULL, from, b);
    }
    ds_state_writer_commit(w, meta);
}

void ds_state_file_save(const char *path, const ds_rwkv7_dims *d, const ds_rwkv7_state *s, int b, int32_t label,
                        const char *meta) {
    char sig[256];
    ds_weights_signature(d, sig, sizeof sig);
    char *text = format_alloc("model=%s\n%s", sig, meta ? meta : "");
    if (!meta_valid(text, strlen(text))) ds_die(DS_EXIT_FAIL, "%s: metadata must be \"key=value\\n\" lines", path);
    save_packed(path, ds_state_shape_of(d, 0), label, -1, NULL, s, b, text);
    free(text);
}

void ds_state_file_load(const char *path, const ds_rwkv7_dims *d, ds_rwkv7_state *dst, char **meta_out) {
    shard_map s;
    char why[512];
    if (shard_map_open(path, &s, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", path, why);
    if (s.n != 1)
        ds_die(DS_EXIT_BAD_INPUT, "%s: holds %" PRId64 " states; a state file holds one (take one record of a state "
               "dataset)", path, s.n);
    check_model_shape(path, &s.shape, d, dst);
    ds_state_unpack(&s.shape, shard_record(&s, 0).state, dst, 0);
    if (meta_out) {
        *meta_out = malloc(s.meta_bytes + 1);
        memcpy(*meta_out, s.meta, s.meta_bytes);
        (*meta_out)[s.meta_bytes] = 0;
    }
    shard_unmap(&s);
}

/* ---------------------------------------------------------------- index */

static int has_newline(const char *s) { return strchr(s, '\n') != NULL || strchr(s, '\r') != NULL; }

void ds_states_write_index(const char *path, const ds_states_info *info, const ds_states_shard *shards) {
    int64_t sum = 0;
    for (int i = 0; i < info->n_shards; i++) sum += shards[i].records;
    if (sum != info->n_records) ds_die(DS_EXIT_FAIL, "%s: shard counts sum to %" PRId64 ", not %" PRId64, path, sum, info->n_records);
    if (has_newline(info->checkpoint) || has_newline(info->contexts))
        ds_die(DS_EXIT_BAD_INPUT, "%s: paths with line breaks cannot be recorded in the index", path);
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot create: %s", path, strerror(errno));
    const ds_state_shape *s = &info->shape;
    FILE *fp = af.fp;
    fprintf(fp, "%s\nmodel %s\nshape L=%d C=%d H=%d N=%d cond_dim=%d flags=%u\n", INDEX_MAGIC, info->model, s->n_layer,
            s->n_embd, s->n_head, s->head_size, s->cond_dim, s->flags);
    fprintf(fp, "checkpoint %s\ncontexts %s\ntokenizer %s\nmax_tokens %d\nrecords %" PRId64 "\nlabels %d\n",
            info->checkpoint, info->contexts, info->tokenizer, info->max_tokens, info->n_records, info->n_labels);
    for (int i = 0; i < info->n_labels; i++) fprintf(fp, "label %s\n", info->labels[i]);
    fprintf(fp, "shards %d\n", info->n_shards);
    for (int i = 0; i < info->n_shards; i++) fprintf(fp, "shard %s %" PRId64 "\n", shards[i].file, shards[i].records);
    if (ferror(fp) || ds_atomic_commit(&af) != 0) {
        int e = errno;
        ds_atomic_abort(&af);
        ds_die(DS_EXIT_FAIL, "%s: write failed: %s", path, strerror(e));
    }
}

struct ds_states {
    char path[DS_PATH_MAX];
    ds_states_info info;
    ds_states_shard *listed;
    shard_map *shards;
    int64_t *first;        /* [n_shards + 1]: number of the first record of each shard */
};

typedef struct index_reader {
    const char *path;
    char *text, *next;
    int line;
} index_reader;

static _Noreturn void index_fail(index_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void index_fail(index_reader *r, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ds_die(DS_EXIT_BAD_INPUT, "%s:%d: %s", r->path, r->line, msg);
}

/* The value of the next line, which must be "<key> <value>" (or exactly `key` when key has a space). */
static char *index_line(index_reader *r, const char *key) {
    r->line++;
    if (!r->next || !*r->next) index_fail(r, "file ends before '%s'", key);
    char *line = r->next, *nl = strchr(line, '\n');
    if (!nl) index_fail(r, "line does not end in a newline");
    *nl = 0;
    r->next = nl + 1;
    size_t k = strlen(key);
    if (strchr(key, ' ')) {
        if (strcmp(line, key) != 0) index_fail(r, "expected '%s' (not a state-dataset index?)", key);
        return line + k;
    }
    if (strncmp(line, key, k) != 0 || line[k] != ' ' || line[k + 1] == 0) index_fail(r, "expected '%s VALUE'", key);
    return line + k + 1;
}

static int64_t index_int(index_reader *r, const char *key, int64_t lo, int64_t hi) {
    char *v = index_line(r, key), *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        index_fail(r, "%s '%s' must be an integer in [%" PRId64 ", %" PRId64 "]", key, v, lo, hi);
    return x;
}

static void index_copy(index_reader *r, char *dst, size_t cap, const char *key) {
    const char *v = index_line(r, key);
    if (strlen(v) >= cap) index_fail(r, "%s is too long", key);
    strcpy(dst, v);
}

static void parse_index(ds_states *s) {
    index_reader r = {s->path, NULL, NULL, 0};
    FILE *fp = fopen(s->path, "rb");
    if (!fp) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot open: %s", s->path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    r.text = malloc(cap + 1);
    while ((got = fread(r.text + n, 1, cap - n, fp)) > 0)
        if ((n += got) == cap) r.text = realloc(r.text, (cap *= 2) + 1);
    fclose(fp);
    r.text[n] = 0;
    if (strlen(r.text) != n) ds_die(DS_EXIT_BAD_INPUT, "%s: not a state-dataset index (binary data)", s->path);
    r.next = r.text;

    ds_states_info *in = &s->info;
    index_line(&r, INDEX_MAGIC);
    index_copy(&r, in->model, sizeof in->model, "model");
    ds_state_shape *sh = &in->shape;
    const char *shape = index_line(&r, "shape");
    int used = -1;
    if (sscanf(shape, "L=%d C=%d H=%d N=%d cond_dim=%d flags=%u%n", &sh->n_layer, &sh->n_embd, &sh->n_head,
               &sh->head_size, &sh->cond_dim, &sh->flags, &used) != 6 || shape[used] != 0)
        index_fail(&r, "expected 'shape L=.. C=.. H=.. N=.. cond_dim=.. flags=..'");
    index_copy(&r, in->checkpoint, sizeof in->checkpoint, "checkpoint");
    index_copy(&r, in->contexts, sizeof in->contexts, "contexts");
    index_copy(&r, in->tokenizer, sizeof in->tokenizer, "tokenizer");
    in->max_tokens = (int)index_int(&r, "max_tokens", 1, INT32_MAX);
    in->n_records = index_int(&r, "records", 0, INT64_MAX);
    in->n_labels = (int)index_int(&r, "labels", 1, 1 << 20);
    in->labels = calloc((size_t)in->n_labels, sizeof(char *));
    for (int i = 0; i < in->n_labels; i++) {
        const char *name = index_line(&r, "label");
        if (!ds_label_valid(name)) index_fail(&r, "label '%s' must be 1-63 characters of [A-Za-z0-9._/+-]", name);
        for (int j = 0; j < i; j++)
            if (strcmp(in->labels[j], name) == 0) index_fail(&r, "label '%s' listed twice", name);
        in->labels[i] = strdup(name);
    }
    in->n_shards = (int)index_int(&r, "shards", 1, 1 << 20);
    s->listed = calloc((size_t)in->n_shards, sizeof *s->listed);
    int64_t sum = 0;
    for (int i = 0; i < in->n_shards; i++) {
        char *v = index_line(&r, "shard"), *space = strrchr(v, ' '), *end;
        if (!space) index_fail(&r, "expected 'shard FILE RECORDS'");
        *space = 0;
        errno = 0;
        long long count = strtoll(space + 1, &end, 10);
        if (end == space + 1 || *end || errno || count < 0) index_fail(&r, "bad record count '%s'", space + 1);
        if (!*v || strchr(v, '/') || strlen(v) >= sizeof s->listed[i].file)
            index_fail(&r, "shard file '%s' must be a plain file name in the index's directory", v);
        strcpy(s->listed[i].file, v);
        s->listed[i].records = count;
        sum += count;
    }
    r.line++;
    if (*r.next) index_fail(&r, "unexpected text after the last shard");
    if (sum != in->n_records)
        ds_die(DS_EXIT_BAD_INPUT, "%s: shards hold %" PRId64 " records, the index says %" PRId64, s->path, sum,
               in->n_records);
    free(r.text);
}

ds_states *ds_states_open(const char *index_path) {
    ds_states *s = calloc(1, sizeof *s);
    if (snprintf(s->path, sizeof s->path, "%s", index_path) >= (int)sizeof s->path)
        ds_die(DS_EXIT_BAD_INPUT, "%s: path too long", index_path);
    parse_index(s);
    ds_states_info *in = &s->info;
    char copy[DS_PATH_MAX], dir[DS_PATH_MAX], path[2 * DS_PATH_MAX], why[512], model[256];
    snprintf(copy, sizeof copy, "%s", index_path);
    snprintf(dir, sizeof dir, "%s", dirname(copy));
    s->shards = calloc((size_t)in->n_shards, sizeof *s->shards);
    s->first = calloc((size_t)in->n_shards + 1, sizeof *s->first);
    for (int i = 0; i < in->n_shards; i++) {
        shard_map *m = &s->shards[i];
        snprintf(path, sizeof path, "%s/%s", dir, s->listed[i].file);
        if (shard_map_open(path, m, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", path, why);
        const ds_state_shape *a = &m->shape, *b = &in->shape;
        if (a->n_layer != b->n_layer || a->n_embd != b->n_embd || a->n_head != b->n_head ||
            a->head_size != b->head_size || a->cond_dim != b->cond_dim || a->flags != b->flags)
            ds_die(DS_EXIT_BAD_INPUT, "%s: shape L=%d C=%d cond_dim=%d differs from the index's L=%d C=%d cond_dim=%d",
                   path, a->n_layer, a->n_embd, a->cond_dim, b->n_layer, b->n_embd, b->cond_dim);
        if (m->n != s->listed[i].records)
            ds_die(DS_EXIT_BAD_INPUT, "%s: holds %" PRId64 " records, the index says %" PRId64, path, m->n,
                   s->listed[i].records);
        shard_meta(m, "model", model, sizeof model);
        if (strcmp(model, in->model) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: made by model '%s', the index says '%s'", path, model, in->model);
        for (int64_t k = 0; k < m->n; k++) {
            ds_state_record rec = shard_record(m, k);
            if (rec.label < 0 || rec.label >= in->n_labels || rec.context < 0)
                ds_die(DS_EXIT_BAD_INPUT, "%s: record %" PRId64 " has label %d (of %d) and context %d", path, k,
                       rec.label, in->n_labels, rec.context);
        }
        s->first[i + 1] = s->first[i] + m->n;
    }
    return s;
}

void ds_states_close(ds_states *s) {
    if (!s) return;
    for (int i = 0; i < s->info.n_shards; i++) shard_unmap(&s->shards[i]);
    for (int i = 0; i < s->info.n_labels; i++) free(s->info.labels[i]);
    free(s->info.labels);
    free(s->shards);
    free(s->listed);
    free(s->first);
    free(s);
}

const ds_states_info *ds_states_get_info(const ds_states *s) { return &s->info; }

ds_state_record ds_states_record(const ds_states *s, int64_t i) {
    if (i < 0 || i >= s->info.n_records)
        ds_die(DS_EXIT_FAIL, "%s: record %" PRId64 " out of range [0, %" PRId64 ")", s->path, i, s->info.n_records);
    int lo = 0, hi = s->info.n_shards - 1;  /* the shard with first[k] <= i < first[k + 1] */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->first[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return shard_record(&s->shards[lo], i - s->first[lo]);
}

void ds_states_load_rwkv7(const ds_states *s, int64_t i, const ds_rwkv7_dims *d, ds_rwkv7_state *dst) {
    check_model_shape(s->path, &s->info.shape, d, dst);
    ds_state_unpack(&s->info.shape, ds_states_record(s, i).state, dst, 0);
}

void ds_states_save_record(const ds_states *s, int64_t i, const char *path) {
    ds_state_record rec = ds_states_record(s, i);
    char *meta = format_alloc("model=%s\nlabel=%s\ncheckpoint=%s\ncontexts=%s\ncontext=%d\n", s->info.model,
                              s->info.labels[rec.label], s->info.checkpoint, s->info.contexts, rec.context);
    save_packed(path, s->info.shape, rec.label, rec.context, rec.state, NULL, 0, meta);
    free(meta);
}
