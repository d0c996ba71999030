/* dreamstate checkpoint files and the checkpoint directory.
 *
 * File layout (all integers little-endian):
 *   header   60 bytes  "DSCKPT01", u32 version, u32 n_tensors, u64 meta_len, u64 index_len,
 *                      u64 file_len, u32 meta_crc, u32 index_crc, u64 data_start, u32 header_crc
 *   metadata meta_len bytes of text (no NUL)
 *   index    per tensor: u32 name_len, name, u32 ndim, i64 shape[ndim], u64 offset, u64 nbytes,
 *                        u32 crc32c(payload)
 *   payloads fp32, each at a 64-byte aligned file offset (zero padding between)
 *   trailer  24 bytes  "DSCKEND1", u64 file_len, u32 index_crc, u32 crc of the previous 20 bytes
 * The header's file_len detects truncation at any point; the trailer, written last, also rejects a
 * file of the right length whose tail was never written (preallocated or zero-filled copies) without
 * reading the payloads. */
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "internal.h"

#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "payloads are stored as host fp32");

#define CKPT_MAGIC "DSCKPT01"
#define CKPT_END_MAGIC "DSCKEND1"
#define CKPT_VERSION 1
#define HEADER_SIZE 60
#define TRAILER_SIZE 24
#define PAYLOAD_ALIGN 64
#define INDEX_ENTRY_MIN 29  /* a 0-d tensor with a 1-byte name */
#define DIM_MAX ((int64_t)1 << 40)

int ckpt_finish_write(ds_atomic_file *af, int ok, char *err, const char *path) {
    if (!ok) {
        int e = errno;
        ds_atomic_abort(af);
        return ckpt_fail(err, path, "write failed: %s", strerror(e));
    }
    if (ds_atomic_commit(af)) return ckpt_fail(err, path, "cannot commit: %s", strerror(errno));
    return 0;
}

int ckpt_fail(char *err, const char *path, const char *fmt, ...) {
    int k = snprintf(err, DS_ERR_LEN, "%s: ", path);
    if (k < 0 || k >= DS_ERR_LEN) k = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, DS_ERR_LEN - k, fmt, ap);
    va_end(ap);
    return -1;
}

static void shape_str(char *buf, int ndim, const int64_t *shape) {  /* "[4,8]"; 128 bytes suffice */
    int k = sprintf(buf, "[");
    for (int d = 0; d < ndim; d++) k += sprintf(buf + k, d ? ",%lld" : "%lld", (long long)shape[d]);
    sprintf(buf + k, "]");
}

int ckpt_check_shape(char *err, const char *path, const ds_tensor *t, int ndim, const int64_t *shape) {
    if (ndim == t->ndim && memcmp(shape, t->shape, ndim * sizeof *shape) == 0) return 0;
    char file[128], model[128];
    shape_str(file, ndim, shape);
    shape_str(model, t->ndim, t->shape);
    return ckpt_fail(err, path, "shape mismatch for '%s': file %s, model %s", t->name, file, model);
}

static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << 8 * i;
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << 8 * i;
    return v;
}
static uint64_t align_up(uint64_t x) { return (x + PAYLOAD_ALIGN - 1) & ~(uint64_t)(PAYLOAD_ALIGN - 1); }

int64_t ds_tensor_numel(const ds_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static const char *tensor_name(const void *t, int i) { return ((const ds_tensor *)t)[i].name; }

int ds_tensors_check(const char *path, int n, const ds_tensor *t, char *err) {
    if (n < 0) return ckpt_fail(err, path, "negative tensor count %d", n);
    for (int i = 0; i < n; i++) {
        const char *name = t[i].name;
        if (!name || !ckpt_name_length_ok(strlen(name)))
            return ckpt_fail(err, path, "tensor %d has an empty or over-long name", i);
        if (t[i].ndim < 0 || t[i].ndim > DS_TENSOR_MAX_DIMS)
            return ckpt_fail(err, path, "tensor '%s' has %d dims (0..%d allowed)", name, t[i].ndim,
                             DS_TENSOR_MAX_DIMS);
        double total = 1;  /* in double so a huge shape cannot overflow the check itself */
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0 || t[i].shape[d] > DIM_MAX)
                return ckpt_fail(err, path, "tensor '%s' has invalid dim %lld", name, (long long)t[i].shape[d]);
            total *= (double)t[i].shape[d];
        }
        if (total > (double)(INT64_MAX / 8)) return ckpt_fail(err, path, "tensor '%s' is too large", name);
        if (total > 0 && !t[i].data) return ckpt_fail(err, path, "tensor '%s' has no data", name);
    }
    int *order;
    const char *twice = ckpt_name_order(t, tensor_name, n, &order);
    int sorted = order != NULL;
    free(order);
    if (twice) return ckpt_fail(err, path, "duplicate tensor name '%s'", twice);
    return sorted ? 0 : ckpt_fail(err, path, "out of memory");
}

int ds_tensors_find_nonfinite(int n, const ds_tensor *t) {
    for (int i = 0; i < n; i++) {
        int64_t numel = ds_tensor_numel(&t[i]);
        const float *x = t[i].data;
        int bad = 0;  /* a branch-free scan (NaN fails the comparison too): vectorised, on every thread */
#pragma omp parallel for schedule(static) reduction(| : bad) if (numel >= (1 << 20))
        for (int64_t k = 0; k < numel; k++) bad |= !(fabsf(x[k]) <= FLT_MAX);
        if (bad) return i;
    }
    return -1;
}

/* ---- writing --------------------------------------------------------------------------------- */

/* The CRC-32C of each tensor's payload, tensors spread over the threads (a checkpoint's largest are the
 * two AdamW moments: one thread each). */
static void payload_crcs(int n, const ds_tensor *t, uint32_t *crcs) {
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < n; i++) crcs[i] = ds_crc32c(0, t[i].data, (size_t)ds_tensor_numel(&t[i]) * sizeof(float));
}

static uint64_t index_entry_size(const ds_tensor *t) { return 4 + strlen(t->name) + 4 + 8 * t->ndim + 8 + 8 + 4; }

int ds_ckpt_save(const char *path, const char *meta, int n, const ds_tensor *t, char *err) {
    if (ds_tensors_check(path, n, t, err)) return -1;
    if (!meta) meta = "";
    uint64_t meta_len = strlen(meta), index_len = 0;
    for (int i = 0; i < n; i++) index_len += index_entry_size(&t[i]);
    uint64_t data_start = align_up(HEADER_SIZE + meta_len + index_len);

    /* The index carries the payload CRCs, so it is built (one pass over the tensors) before anything
     * is written; the file is then written strictly front to back. */
    uint8_t *index = malloc(index_len ? index_len : 1);
    uint32_t *crcs = malloc(sizeof(uint32_t) * (size_t)(n > 0 ? n : 1));
    if (!index || !crcs) {
        free(index);
        free(crcs);
        return ckpt_fail(err, path, "out of memory");
    }
    payload_crcs(n, t, crcs);
    uint8_t *p = index;
    uint64_t end = data_start;
    for (int i = 0; i < n; i++) {
        uint32_t len = (uint32_t)strlen(t[i].name);
        uint64_t nbytes = (uint64_t)ds_tensor_numel(&t[i]) * sizeof(float);
        uint64_t offset = align_up(end);
        put_u32(p, len), p += 4;
        memcpy(p, t[i].name, len), p += len;
        put_u32(p, (uint32_t)t[i].ndim), p += 4;
        for (int d = 0; d < t[i].ndim; d++) put_u64(p, (uint64_t)t[i].shape[d]), p += 8;
        put_u64(p, offset), p += 8;
        put_u64(p, nbytes), p += 8;
        put_u32(p, crcs[i]), p += 4;
        end = offset + nbytes;
    }
    free(crcs);
    uint64_t file_len = end + TRAILER_SIZE;
    uint32_t index_crc = ds_crc32c(0, index, index_len);

    uint8_t header[HEADER_SIZE] = {0};
    memcpy(header, CKPT_MAGIC, 8);
    put_u32(header + 8, CKPT_VERSION);
    put_u32(header + 12, (uint32_t)n);
    put_u64(header + 16, meta_len);
    put_u64(header + 24, index_len);
    put_u64(header + 32, file_len);
    put_u32(header + 40, ds_crc32c(0, meta, meta_len));
    put_u32(header + 44, index_crc);
    put_u64(header + 48, data_start);
    put_u32(header + 56, ds_crc32c(0, header, 56));

    uint8_t trailer[TRAILER_SIZE];
    memcpy(trailer, CKPT_END_MAGIC, 8);
    put_u64(trailer + 8, file_len);
    put_u32(trailer + 16, index_crc);
    put_u32(trailer + 20, ds_crc32c(0, trailer, 20));

    static const uint8_t zeros[PAYLOAD_ALIGN];
    ds_atomic_file af;
    if (ds_atomic_open(&af, path)) {
        free(index);
        return ckpt_fail(err, path, "cannot create: %s", strerror(errno));
    }
    FILE *fp = af.fp;
    uint64_t pos = HEADER_SIZE + meta_len + index_len;
    int ok = fwrite(header, 1, HEADER_SIZE, fp) == HEADER_SIZE && fwrite(meta, 1, meta_len, fp) == meta_len &&
             fwrite(index, 1, index_len, fp) == index_len;
    for (int i = 0; ok && i < n; i++) {
        uint64_t nbytes = (uint64_t)ds_tensor_numel(&t[i]) * sizeof(float);
        uint64_t pad = align_up(pos) - pos;
        ok = fwrite(zeros, 1, pad, fp) == pad && fwrite(t[i].data, 1, nbytes, fp) == nbytes;
        pos += pad + nbytes;
    }
    ok = ok && fwrite(trailer, 1, TRAILER_SIZE, fp) == TRAILER_SIZE;
    free(index);
    return ckpt_finish_write(&af, ok, err, path);
}

/* ---- reading ---------------------------------------------------------------------------------- */

typedef struct {
    const char *name;  /* NUL-terminated copy stored after the raw index */
    int ndim;
    int64_t shape[DS_TENSOR_MAX_DIMS];
    uint64_t offset, nbytes;
    uint32_t crc;
} ckpt_entry;

typedef struct {
    FILE *fp;
    char *meta;        /* NUL-terminated copy */
    uint8_t *index;    /* raw index, followed by NUL-terminated copies of the names */
    ckpt_entry *entries;
    uint32_t n;
    int *by_name;      /* entry numbers sorted by name */
} ckpt_reader;

static void reader_close(ckpt_reader *r) {
    if (r->fp) fclose(r->fp);
    free(r->meta);
    free(r->index);
    free(r->entries);
    free(r->by_name);
    memset(r, 0, sizeof *r);
}

static int read_at(FILE *fp, uint64_t offset, void *buf, size_t n) {
    return fseeko(fp, (off_t)offset, SEEK_SET) == 0 && fread(buf, 1, n, fp) == n ? 0 : -1;
}

static const char *entry_name(const void *entries, int i) { return ((const ckpt_entry *)entries)[i].name; }

/* Parses the index into entries, checking every field against the file's geometry. Names are copied
 * into a separate NUL-terminated area so the raw index stays intact. */
static int parse_index(ckpt_reader *r, const char *path, uint64_t index_len, uint64_t data_start,
                       uint64_t data_end, char *err) {
    const uint8_t *p = r->index, *end = r->index + index_len;
    char *names = (char *)r->index + index_len;  /* extra room allocated by the caller */
    uint64_t prev_end = data_start;
    for (uint32_t i = 0; i < r->n; i++) {
        ckpt_entry *e = &r->entries[i];
        if (end - p < 4) return ckpt_fail(err, path, "corrupt tensor index (entry %u cut short)", i);
        uint32_t len = get_u32(p);
        p += 4;
        /* a NUL would cut the name short: the checkpoint would verify but no table could load it */
        if (!ckpt_name_length_ok(len) || (uint64_t)(end - p) < len + 4 || memchr(p, 0, len))
            return ckpt_fail(err, path, "corrupt tensor index (entry %u name)", i);
        memcpy(names, p, len);
        names[len] = 0;
        e->name = names;
        names += len + 1;
        p += len;
        e->ndim = (int)get_u32(p);
        p += 4;
        if (e->ndim < 0 || e->ndim > DS_TENSOR_MAX_DIMS || end - p < 8 * e->ndim + 20)
            return ckpt_fail(err, path, "corrupt tensor index (entry '%s' ndim)", e->name);
        double numel = 1;
        for (int d = 0; d < e->ndim; d++, p += 8) {
            e->shape[d] = (int64_t)get_u64(p);
            if (e->shape[d] < 0 || e->shape[d] > DIM_MAX)
                return ckpt_fail(err, path, "corrupt tensor index (entry '%s' shape)", e->name);
            numel *= (double)e->shape[d];
        }
        e->offset = get_u64(p), p += 8;
        e->nbytes = get_u64(p), p += 8;
        e->crc = get_u32(p), p += 4;
        if (numel * sizeof(float) != (double)e->nbytes || e->offset % PAYLOAD_ALIGN || e->offset < prev_end ||
            e->offset > data_end || e->nbytes > data_end - e->offset)
            return ckpt_fail(err, path, "corrupt tensor index (entry '%s' extent)", e->name);
        prev_end = e->offset + e->nbytes;
    }
    if (p != end || prev_end != data_end)
        return ckpt_fail(err, path, "corrupt tensor index (does not match file layout)");
    const char *twice = ckpt_name_order(r->entries, entry_name, (int)r->n, &r->by_name);
    if (twice) return ckpt_fail(err, path, "corrupt tensor index (duplicate '%s')", twice);
    return r->by_name ? 0 : ckpt_fail(err, path, "out of memory");
}

/* Opens a checkpoint and validates everything except the payload checksums. */
static int reader_open(ckpt_reader *r, const char *path, char *err) {
    memset(r, 0, sizeof *r);
    char why[256];
    r->fp = ds_fopen_input(path, why, sizeof why);
    if (!r->fp) return ckpt_fail(err, path, "%s", why);
    struct stat st;
    if (fstat(fileno(r->fp), &st)) return ckpt_fail(err, path, "cannot stat: %s", strerror(errno));
    uint64_t size = (uint64_t)st.st_size;

    uint8_t h[HEADER_SIZE];
    size_t got = fread(h, 1, HEADER_SIZE, r->fp);
    if (got >= 8 && memcmp(h, CKPT_MAGIC, 8) != 0)
        return ckpt_fail(err, path, "not a dreamstate checkpoint (bad magic)");
    if (got < HEADER_SIZE)
        return ckpt_fail(err, path, "truncated (expected at least %d bytes, found %llu)", HEADER_SIZE,
                         (unsigned long long)size);
    if (get_u32(h + 8) != CKPT_VERSION) return ckpt_fail(err, path, "unsupported version %u", get_u32(h + 8));
    if (get_u32(h + 56) != ds_crc32c(0, h, 56)) return ckpt_fail(err, path, "checksum mismatch in header");
    r->n = get_u32(h + 12);
    uint64_t meta_len = get_u64(h + 16), index_len = get_u64(h + 24), file_len = get_u64(h + 32);
    uint32_t meta_crc = get_u32(h + 40), index_crc = get_u32(h + 44);
    uint64_t data_start = get_u64(h + 48);
    if (size < file_len)
        return ckpt_fail(err, path, "truncated (expected %llu bytes, found %llu)", (unsigned long long)file_len,
                         (unsigned long long)size);
    if (size > file_len)
        return ckpt_fail(err, path, "trailing garbage (expected %llu bytes, found %llu)",
                         (unsigned long long)file_len, (unsigned long long)size);
    /* The header CRC passed, so these only fail for a writer bug or a forged file. */
    if (meta_len > file_len || index_len > file_len || r->n > INT32_MAX || (uint64_t)r->n * INDEX_ENTRY_MIN > index_len ||
        data_start != align_up(HEADER_SIZE + meta_len + index_len) || data_start + TRAILER_SIZE > file_len)
        return ckpt_fail(err, path, "corrupt header (inconsistent lengths)");

    uint8_t t[TRAILER_SIZE];
    if (read_at(r->fp, file_len - TRAILER_SIZE, t, TRAILER_SIZE)) return ckpt_fail(err, path, "read error");
    if (memcmp(t, CKPT_END_MAGIC, 8) != 0 || get_u32(t + 20) != ds_crc32c(0, t, 20) || get_u64(t + 8) != file_len ||
        get_u32(t + 16) != index_crc)
        return ckpt_fail(err, path, "corrupt trailer (file incompletely written)");

    r->meta = malloc(meta_len + 1);
    r->index = malloc(2 * index_len + 1);  /* raw index, then the NUL-terminated names */
    r->entries = calloc(r->n ? r->n : 1, sizeof *r->entries);
    if (!r->meta || !r->index || !r->entries) return ckpt_fail(err, path, "out of memory");
    if (read_at(r->fp, HEADER_SIZE, r->meta, meta_len) || fread(r->index, 1, index_len, r->fp) != index_len)
        return ckpt_fail(err, path, "read error");
    r->meta[meta_len] = 0;
    if (ds_crc32c(0, r->meta, meta_len) != meta_crc || strlen(r->meta) != meta_len)
        return ckpt_fail(err, path, "checksum mismatch in metadata");
    if (ds_crc32c(0, r->index, index_len) != index_crc)
        return ckpt_fail(err, path, "checksum mismatch in tensor index");
    return parse_index(r, path, index_len, data_start, file_len - TRAILER_SIZE, err);
}

static void hand_out_meta(ckpt_reader *r, char **meta_out) {
    if (!meta_out) return;
    *meta_out = r->meta;
    r->meta = NULL;
}

int ds_ckpt_check(const char *path, char **meta_out, char *err) {
    if (meta_out) *meta_out = NULL;
    ckpt_reader r;
    int rc = reader_open(&r, path, err);
    if (!rc) hand_out_meta(&r, meta_out);
    reader_close(&r);
    return rc;
}

int ds_ckpt_load(const char *path, char **meta_out, int n, const ds_tensor *t, char *err) {
    if (meta_out) *meta_out = NULL;
    if (ds_tensors_check(path, n, t, err)) return -1;
    ckpt_reader r;
    int rc = reader_open(&r, path, err);
    /* Name matching first, so a model/file mismatch is reported before any payload is read. */
    int *match = rc ? NULL : malloc((n ? n : 1) * sizeof *match);
    if (!rc && !match) rc = ckpt_fail(err, path, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        match[i] = ckpt_name_find(r.entries, entry_name, r.by_name, (int)r.n, t[i].name);
        if (match[i] < 0) { rc = ckpt_fail(err, path, "missing tensor '%s'", t[i].name); break; }
        const ckpt_entry *e = &r.entries[match[i]];
        rc = ckpt_check_shape(err, path, &t[i], e->ndim, e->shape);
    }
    if (!rc && (uint32_t)n != r.n) {  /* names are unique on both sides, so some file entry is unmatched */
        char *used = calloc(r.n, 1);
        if (!used) rc = ckpt_fail(err, path, "out of memory");
        for (int i = 0; !rc && i < n; i++) used[match[i]] = 1;
        for (uint32_t j = 0; j < r.n && !rc; j++)
            if (!used[j]) rc = ckpt_fail(err, path, "unexpected tensor '%s' (not in the model)", r.entries[j].name);
        free(used);
    }
    /* the payloads, then their checksums on every thread */
    uint32_t *crcs = rc ? NULL : malloc(sizeof(uint32_t) * (size_t)(n > 0 ? n : 1));
    if (!rc && !crcs) rc = ckpt_fail(err, path, "out of memory");
    int damaged = 0;
    for (int i = 0; !rc && i < n; i++)
        if (read_at(r.fp, r.entries[match[i]].offset, t[i].data, r.entries[match[i]].nbytes))
            rc = ckpt_fail(err, path, "read error"), damaged = 1;
    if (!rc) payload_crcs(n, t, crcs);
    for (int i = 0; !rc && i < n; i++)
        if (crcs[i] != r.entries[match[i]].crc)
            rc = ckpt_fail(err, path, "checksum mismatch in tensor '%s'", r.entries[match[i]].name), damaged = 1;
    if (damaged) rc = DS_CKPT_DAMAGED;
    free(crcs);
    free(match);
    if (!rc) hand_out_meta(&r, meta_out);
    reader_close(&r);
    return rc;
}

const char *ds_ckpt_meta_value(const char *meta, const char *key, char *out, size_t len) {
    size_t kl = strlen(key);
    for (const char *p = meta; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
            size_t n = strcspn(p + kl + 1, "\n");
            snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), p + kl + 1);
            return out;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

int ds_ckpt_meta_step(const char *path, const char *meta, int64_t name_step, int64_t *step, char *err) {
    char text[64];
    if (!ds_ckpt_meta_value(meta, "step", text, sizeof text))
        return ckpt_fail(err, path, "checkpoint metadata has no step=");
    int64_t v = 0;
    int digits = 0;
    for (const char *p = text; *p; p++, digits++) {
        if (*p < '0' || *p > '9' || digits == 18)
            return ckpt_fail(err, path, "checkpoint metadata step=%s is not a step number (an integer >= 0)", text);
        v = v * 10 + (*p - '0');
    }
    if (digits == 0) return ckpt_fail(err, path, "checkpoint metadata step= is empty");
    if (name_step >= 0 && v != name_step)
        return ckpt_fail(err, path, "checkpoint metadata step=%lld does not match the file name (step %lld)",
                         (long long)v, (long long)name_step);
    *step = v;
    return 0;
}

/* ---- checkpoint directory --------------------------------------------------------------------- */

void ds_ckpt_path(char *buf, size_t len, const char *dir, int64_t step) {
    int k = snprintf(buf, len, "%s/step-%08lld.ckpt", dir, (long long)step);
    if (k < 0 || (size_t)k >= len) ds_die(DS_EXIT_BAD_INPUT, "checkpoint path too long: %s", dir);
}

/* "step-<digits>.ckpt" exactly; temp files ("....ckpt.tmp.PID") and anything else do not match. */
static int parse_step_name(const char *name, int64_t *step) {
    if (strncmp(name, "step-", 5) != 0) return 0;
    const char *p = name + 5;
    int64_t v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits == 18) return 0;
        v = v * 10 + (*p - '0');
    }
    if (digits == 0 || strcmp(p, ".ckpt") != 0) return 0;
    *step = v;
    return 1;
}

static int cmp_step(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int ds_ckpt_list(const char *dir, int64_t **steps) {
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t s;
        if (!parse_step_name(de->d_name, &s)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *grown = realloc(*steps, cap * sizeof **steps);
            if (!grown) { free(*steps); *steps = NULL; closedir(d); errno = ENOMEM; return -1; }
            *steps = grown;
        }
        (*steps)[n++] = s;
    }
    closedir(d);
    if (n) qsort(*steps, n, sizeof **steps, cmp_step);
    return n;
}

int ds_ckpt_clean_stale(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        /* "<name>.tmp.<pid>" from ds_atomic_open: stale once its writer is gone */
        const char *tag = strstr(de->d_name, ".tmp.");
        if (!tag) continue;
        char *end;
        long pid = strtol(tag + 5, &end, 10);
        if (*end || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  /* its writer is still alive */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (remove(path) == 0) removed++;
    }
    closedir(d);
    return removed;
}

int ds_ckpt_prune(const char *dir, int keep, int64_t protect_step) {
    if (keep < 1) keep = 1;
    int64_t *steps;
    int n = ds_ckpt_list(dir, &steps);
    if (n < 0) return -1;
    int removed = 0, rc = 0;
    for (int i = 0; i < n - keep; i++) {
        if (steps[i] == protect_step) continue;
        char path[4096];
        ds_ckpt_path(path, sizeof path, dir, steps[i]);
        if (remove(path) == 0) removed++;
        else rc = -1;
    }
    free(steps);
    return rc ? -1 : removed;
}

int ds_ckpt_latest_complete(const char *dir, char *path, size_t len, int64_t *step) {
    int64_t *steps;
    int n = ds_ckpt_list(dir, &steps);
    if (n < 0) ds_log("warning: cannot list checkpoint directory %s: %s", dir, strerror(errno));
    int found = 0;
    for (int i = n - 1; i >= 0 && !found; i--) {
        char err[DS_ERR_LEN];
        ds_ckpt_path(path, len, dir, steps[i]);
        if (ds_ckpt_check(path, NULL, err) == 0) {
            found = 1;
            if (step) *step = steps[i];
        } else {
            ds_log("warning: skipping checkpoint %s", err);
        }
    }
    free(steps);
    return found;
}
