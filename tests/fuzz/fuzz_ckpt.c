/* dreamstate checkpoints (.ckpt, src/checkpoint/checkpoint.c): ds_ckpt_check, the metadata readers
 * (ds_ckpt_meta_value, ds_ckpt_meta_step, the model shape of ds_rwkv7_dims_of_file), and ds_ckpt_load
 * into the table the file itself lists (when the check passed, it must succeed or find a damaged
 * payload, DS_CKPT_DAMAGED) and into a fixed table of two tensors (missing, unexpected and misshapen
 * tensors).
 *
 * Input: a flag byte, then the file. Bit 0 sets the header's and trailer's file length and the data
 * offset to what the file's size and lengths make them, bit 1 recomputes every checksum (tensors,
 * metadata, index, header, trailer), so that mutations reach the checks behind them. */
#include "fuzz.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/weights.h"

#include <stdlib.h>
#include <string.h>

enum { HEADER = 60, TRAILER = 24, ALIGN = 64, MAX_FLOATS = 1 << 20 };

static void put_u64(uint8_t *p, uint64_t v) {
    fuzz_put_u32(p, (uint32_t)v);
    fuzz_put_u32(p + 4, (uint32_t)(v >> 32));
}

/* Reads the index entries as far as they lie within the file into out (names and shapes; at most cap)
 * and, when `fix` is set, rewrites the checksum of each payload that lies within the file. Returns the
 * number of entries put into out. */
typedef struct { char name[256]; int ndim; int64_t shape[4]; } listed;

static int walk_index(uint8_t *file, size_t size, int fix, listed *out, int cap) {
    if (size < HEADER) return 0;
    uint64_t meta_len = fuzz_get_u64(file + 16), index_len = fuzz_get_u64(file + 24);
    uint32_t n = fuzz_get_u32(file + 12);
    if (meta_len > size - HEADER || index_len > size - HEADER - meta_len) return 0;
    uint8_t *p = file + HEADER + meta_len, *end = p + index_len;
    int count = 0;
    for (uint32_t i = 0; i < n && end - p >= 4; i++) {
        uint32_t len = fuzz_get_u32(p);
        if (len == 0 || (uint64_t)(end - p) < 8 + (uint64_t)len) break;
        uint8_t *name = p + 4;
        p += 4 + len;
        uint32_t ndim = fuzz_get_u32(p);
        if (ndim > 4 || (uint64_t)(end - p) < 4 + 8 * (uint64_t)ndim + 20) break;
        p += 4;
        if (count < cap && len < sizeof out->name) {
            listed *e = &out[count++];
            memcpy(e->name, name, len);
            e->name[len] = 0;
            e->ndim = (int)ndim;
            for (uint32_t d = 0; d < ndim; d++) e->shape[d] = (int64_t)fuzz_get_u64(p + 8 * d);
        }
        p += 8 * ndim;
        uint64_t offset = fuzz_get_u64(p), nbytes = fuzz_get_u64(p + 8);
        if (fix && offset <= size && nbytes <= size - offset) fuzz_put_u32(p + 16, ds_crc32c(0, file + offset, nbytes));
        p += 20;
    }
    return count;
}

static void fix_up(uint8_t *file, size_t size, int flags) {
    if (size < HEADER) return;
    uint64_t meta_len = fuzz_get_u64(file + 16), index_len = fuzz_get_u64(file + 24);
    if (flags & 1) {
        put_u64(file + 32, size);
        if (meta_len < size && index_len < size)
            put_u64(file + 48, (HEADER + meta_len + index_len + ALIGN - 1) / ALIGN * ALIGN);
        if (size >= HEADER + TRAILER) put_u64(file + size - TRAILER + 8, size);
    }
    if (flags & 2) {
        walk_index(file, size, 1, NULL, 0);
        if (meta_len <= size - HEADER) {
            fuzz_put_u32(file + 40, ds_crc32c(0, file + HEADER, meta_len));
            if (index_len <= size - HEADER - meta_len)
                fuzz_put_u32(file + 44, ds_crc32c(0, file + HEADER + meta_len, index_len));
        }
        fuzz_put_u32(file + 56, ds_crc32c(0, file, 56));
        if (size >= HEADER + TRAILER) {
            uint8_t *t = file + size - TRAILER;
            memcpy(t + 16, file + 44, 4);
            fuzz_put_u32(t + 20, ds_crc32c(0, t, 20));
        }
    }
}

/* Loads into tensors of the given names and shapes (when they are small enough to allocate). */
static int load_as(const char *path, const listed *l, int n, char *err) {
    ds_tensor t[64];
    int64_t floats = 0;
    for (int i = 0; i < n; i++) {
        t[i] = (ds_tensor){.name = l[i].name, .ndim = l[i].ndim};
        double numel = 1;
        for (int d = 0; d < l[i].ndim; d++) numel *= (double)(t[i].shape[d] = l[i].shape[d]);
        if (numel < 0 || numel > MAX_FLOATS || (floats += (int64_t)numel) > MAX_FLOATS) return 1;
    }
    float *values = malloc(sizeof(float) * (size_t)(floats + 1));
    for (int i = 0, at = 0; i < n; at += (int)ds_tensor_numel(&t[i]), i++) t[i].data = values + at;
    int rc = ds_ckpt_load(path, NULL, n, t, err);
    free(values);
    return rc;
}

static void body(const uint8_t *data, size_t size) {
    if (size < 1) return;
    char path[512], err[DS_ERR_LEN], value[256];
    uint8_t *file = fuzz_copy(data + 1, size - 1);
    fix_up(file, size - 1, data[0]);
    fuzz_write(path, sizeof path, "step-00000007.ckpt", file, size - 1);
    static const listed fixed[2] = {{"a", 2, {2, 3}}, {"b", 1, {4}}};
    load_as(path, fixed, 2, err);
    ds_rwkv7_dims d;
    ds_rwkv7_dims_of_file(path, &d, err);
    char *meta = NULL;
    if (ds_ckpt_check(path, &meta, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);  /* as its callers do */
    ds_ckpt_meta_value(meta, "model", value, sizeof value);
    int64_t step;
    ds_ckpt_meta_step(path, meta, 7, &step, err);
    free(meta);
    listed own[64];
    int n = walk_index(file, size - 1, 0, own, 64);
    if (n == (int)fuzz_get_u32(file + 12) && load_as(path, own, n, err) == -1)
        fuzz_fail("a checkpoint that passes the check does not load into its own tensors: %s", err);
    free(file);
}

FUZZ_TARGET(body)
