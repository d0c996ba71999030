/* State shards and single state files (format: include/dreamstate/states.h): the atomic writer and
 * the validating mmap reader. */
#include "dreamstate/states.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/weights.h"
#include "segment.h"
#include "state_shard.h"
#include "text_files.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "state shards are little-endian and read by memcpy/mmap: a big-endian port needs byte swaps"
#endif

#define STATES_MAGIC "DSSTATES"
#define STATES_VERSION 1u
#define HEADER_BYTES 64

typedef struct states_header {
    char magic[8];
    uint32_t version, n_layer, n_embd, n_head, head_size, cond_dim, flags, meta_bytes;
    uint64_t n_records, record_bytes;
    uint32_t payload_crc;
    uint32_t header_crc;  /* of the 60 bytes above */
} states_header;
_Static_assert(sizeof(states_header) == HEADER_BYTES, "state shard header must be exactly 64 bytes");

static int64_t record_bytes(const ds_state_shape *s) { return 8 + 4 * (s->cond_dim + ds_state_floats(s)); }

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
    static const uint8_t placeholder[HEADER_BYTES];  /* the header is written at commit */
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

void state_shard_close(state_shard *s) {
    if (s->map) munmap((void *)s->map, s->size);
    memset(s, 0, sizeof *s);
}

int state_shard_open(const char *path, state_shard *s, char *why, size_t why_len) {
    memset(s, 0, sizeof *s);
    const uint8_t *map;
    size_t size;
    if (ds_map_file(path, &map, &size, why, why_len) != 0) return -1;
    if (size < HEADER_BYTES) {
        if (map) munmap((void *)map, size);
        return why_fail(why, why_len, "truncated header (%zu of %d bytes)", size, HEADER_BYTES);
    }
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
    else if (h.head_size != DS_STATE_HEAD_SIZE || h.n_layer < 1 || h.n_layer > 4096 || h.n_head < 1 || h.n_head > 4096 ||
             h.n_embd != h.n_head * h.head_size)
        reason = (snprintf(buf, sizeof buf, "bad shape L=%u C=%u H=%u N=%u (need N=64, C=H*N)", h.n_layer, h.n_embd,
                           h.n_head, h.head_size), buf);
    else if (h.flags & ~(uint32_t)DS_COND_ALL)
        reason = (snprintf(buf, sizeof buf, "unknown condition flags 0x%x", h.flags), buf);
    else if (h.cond_dim != h.n_embd * (uint32_t)__builtin_popcount(h.flags))
        reason = (snprintf(buf, sizeof buf, "cond_dim %u does not match flags 0x%x and C=%u", h.cond_dim, h.flags, h.n_embd), buf);
    if (!reason) {
        s->shape = (ds_state_shape){(int)h.n_layer, (int)h.n_embd, (int)h.n_head, (int)h.head_size, (int)h.cond_dim, h.flags};
        s->record_bytes = record_bytes(&s->shape);
        size_t have = size - HEADER_BYTES;
        if (h.record_bytes != (uint64_t)s->record_bytes)
            reason = (snprintf(buf, sizeof buf, "record size %" PRIu64 " does not match the shape (%" PRId64 ")",
                               h.record_bytes, s->record_bytes), buf);
        else if (h.n_records > have / (uint64_t)s->record_bytes ||
                 h.n_records * (uint64_t)s->record_bytes + h.meta_bytes != have) {
            unsigned long long want = (unsigned long long)HEADER_BYTES + h.n_records * (unsigned long long)s->record_bytes + h.meta_bytes;
            reason = (snprintf(buf, sizeof buf, "%s (expected %llu bytes, found %zu)",
                               want > size ? "truncated" : "wrong size", want, size), buf);
        } else if (ds_crc32c(0, s->map + HEADER_BYTES, have) != h.payload_crc) {
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
        state_shard_close(s);
        return why_fail(why, why_len, "%s", reason);
    }
    return 0;
}

ds_state_record state_shard_record(const state_shard *s, int64_t i) {
    const uint8_t *p = s->map + HEADER_BYTES + i * s->record_bytes;
    ds_state_record r;
    memcpy(&r.label, p, 4);
    memcpy(&r.context, p + 4, 4);
    r.cond = (const float *)(p + 8);
    r.state = r.cond + s->shape.cond_dim;
    return r;
}

void state_shard_meta(const state_shard *s, const char *key, char *out, size_t len) {
    char *m = malloc(s->meta_bytes + 1);
    memcpy(m, s->meta, s->meta_bytes);
    m[s->meta_bytes] = 0;
    if (!ds_ckpt_meta_value(m, key, out, len)) out[0] = 0;
    free(m);
}

int ds_state_file_check(const char *path, char *why, size_t why_len) {
    state_shard s;
    if (state_shard_open(path, &s, why, why_len) != 0) return -1;
    state_shard_close(&s);
    return 0;
}

/* ---------------------------------------------------------------- single state files */

void state_check_model_shape(const char *path, const ds_state_shape *s, const ds_rwkv7_dims *d,
                             const ds_rwkv7_state *dst) {
    if (s->n_layer != d->n_layer || s->n_embd != d->n_embd)
        ds_die(DS_EXIT_BAD_INPUT, "%s: state has L=%d C=%d, model has L=%d C=%d", path, s->n_layer, s->n_embd,
               d->n_layer, d->n_embd);
    if (dst->B < 1 || dst->numel != dst->B * ds_state_floats(s))
        ds_die(DS_EXIT_FAIL, "%s: destination state is not a state of L=%d C=%d", path, s->n_layer, s->n_embd);
}

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

void state_save_record(const char *path, ds_state_shape shape, int32_t label, int32_t context, const float *state,
                       const ds_rwkv7_state *from, int b, const char *meta) {
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

static const char *const FORMAT_NAMES[] = {[DS_STATE_FILE_DREAMSTATE] = "dreamstate",
                                           [DS_STATE_FILE_RWKV] = "rwkv-state"};

int ds_state_file_format_of(const char *name, const char *path, ds_state_file_format *out, char *why, size_t why_len) {
    int by_extension = -1;
    if (path && ds_has_suffix(path, ".safetensors")) by_extension = DS_STATE_FILE_RWKV;
    else if (path && ds_has_suffix(path, ".state")) by_extension = DS_STATE_FILE_DREAMSTATE;
    if (!name) {
        *out = by_extension == DS_STATE_FILE_RWKV ? DS_STATE_FILE_RWKV : DS_STATE_FILE_DREAMSTATE;
        return 0;
    }
    if (strcmp(name, "dreamstate") == 0) *out = DS_STATE_FILE_DREAMSTATE;
    else if (strcmp(name, "rwkv-state") == 0) *out = DS_STATE_FILE_RWKV;
    else return why_fail(why, why_len, "format '%s' is not dreamstate or rwkv-state", name);
    if (by_extension >= 0 && by_extension != (int)*out)
        return why_fail(why, why_len, "format %s contradicts the extension of %s (a %s file): drop the format or "
                        "rename the file", name, path, FORMAT_NAMES[by_extension]);
    return 0;
}

void ds_state_file_save(const char *path, ds_state_file_format f, const ds_rwkv7_dims *d, const ds_rwkv7_state *s,
                        int b, int32_t label, const char *meta) {
    char sig[256];
    ds_weights_signature(d, sig, sizeof sig);
    char *text = format_alloc("model=%s\n%s", sig, meta ? meta : "");
    if (!meta_valid(text, strlen(text))) ds_die(DS_EXIT_FAIL, "%s: metadata must be \"key=value\\n\" lines", path);
    if (f == DS_STATE_FILE_RWKV) {
        char err[DS_ERR_LEN];
        if (ds_rwkv_state_save(path, d, s, b, text, err) != 0) ds_die(DS_EXIT_FAIL, "%s", err);
    } else {
        state_save_record(path, ds_state_shape_of(d, 0), label, -1, NULL, s, b, text);
    }
    free(text);
}

/* A file torch.save wrote: a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2+). */
static int is_pytorch_file(const char *path, const uint8_t *head, size_t n) {
    return ds_has_suffix(path, ".pth") || ds_has_suffix(path, ".pt") || (n >= 4 && memcmp(head, "PK\3\4", 4) == 0) ||
           (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5);
}

/* A safetensors file starts with its header length (u64) and the header's opening '{'. */
static int is_safetensors_file(const uint8_t *head, size_t n) { return n >= 9 && head[8] == '{'; }

static void load_rwkv_state(const char *path, const ds_rwkv7_dims *d, ds_rwkv7_state *dst, char **meta_out) {
    char err[DS_ERR_LEN];
    if (dst->B < 1) ds_die(DS_EXIT_FAIL, "%s: no sequence to load the state into", path);
    if (ds_rwkv_state_load(path, d, dst, 0, meta_out, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
}

void ds_state_file_load(const char *path, const ds_rwkv7_dims *d, ds_rwkv7_state *dst, char **meta_out) {
    uint8_t head[9];
    size_t n = 0;
    char unreadable[256];
    FILE *fp = ds_fopen_input(path, unreadable, sizeof unreadable);  /* why is reported by the shard reader */
    int readable = fp != NULL;
    if (fp) {
        n = fread(head, 1, sizeof head, fp);
        fclose(fp);
    }
    if (readable && (n < 8 || memcmp(head, STATES_MAGIC, 8) != 0)) {
        if (is_pytorch_file(path, head, n))
            ds_die(DS_EXIT_BAD_INPUT, "%s: a PyTorch file; convert an RWKV-PEFT state first: /usr/bin/python3 "
                   "src/tools/pth_to_safetensors.py %s OUT.safetensors", path, path);
        if (is_safetensors_file(head, n)) {
            load_rwkv_state(path, d, dst, meta_out);
            return;
        }
    }
    state_shard s;
    char why[512];
    if (state_shard_open(path, &s, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", path, why);
    if (s.n != 1)
        ds_die(DS_EXIT_BAD_INPUT, "%s: holds %" PRId64 " states; a state file holds one (take one record of a state "
               "dataset)", path, s.n);
    state_check_model_shape(path, &s.shape, d, dst);
    ds_state_unpack(&s.shape, state_shard_record(&s, 0).state, dst, 0);
    if (meta_out) {
        *meta_out = malloc(s.meta_bytes + 1);
        memcpy(*meta_out, s.meta, s.meta_bytes);
        (*meta_out)[s.meta_bytes] = 0;
    }
    state_shard_close(&s);
}
