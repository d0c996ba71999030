/* binidx (Megatron's MMapIndexedDataset as RWKV-LM uses it, format in include/dreamstate/data.h): the
 * validating mmap reader behind ds_dataset_open and the atomic writer. */
#include "dreamstate/data.h"
#include "dreamstate/common.h"
#include "segment.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "binidx files are little-endian and read by memcpy/mmap: a big-endian port needs byte swaps"
#endif

static const char IDX_MAGIC[9] = "MMIDIDX\0\0";
enum { IDX_VERSION = 1, IDX_HEADER_BYTES = 9 + 8 + 1 + 8 + 8 };
enum { CODE_INT32 = 4, CODE_UINT16 = 8 };

/* Megatron's dtype codes that hold integers (6 and 7 are floating point). */
static const struct {
    uint8_t code;
    ds_ids_type type;
    unsigned width;
    const char *name;
} id_dtypes[] = {{1, IDS_U8, 1, "uint8"}, {2, IDS_I8, 1, "int8"},   {3, IDS_I16, 2, "int16"},
                 {4, IDS_I32, 4, "int32"}, {5, IDS_I64, 8, "int64"}, {8, IDS_U16, 2, "uint16"}};
enum { N_ID_DTYPES = sizeof id_dtypes / sizeof id_dtypes[0] };

static uint64_t read_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static int64_t read_i64(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return v; }
static int32_t read_i32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

static void unmap(const uint8_t *map, size_t len) {
    if (map) munmap((void *)map, len);
}

/* The index: header, sizes, pointers and document index; fills the token count and id type. */
static int check_index(const uint8_t *idx, size_t len, uint64_t *n_tokens, uint64_t *n_docs, int *dtype, char *why,
                       size_t why_len) {
    if (memcmp(idx, IDX_MAGIC, len < sizeof IDX_MAGIC ? len : sizeof IDX_MAGIC) != 0)  /* shorter: truncated */
        return ds_data_fail(why, why_len, "not a binidx index (bad magic; expected \"MMIDIDX\\0\\0\")");
    if (len < IDX_HEADER_BYTES)
        return ds_data_fail(why, why_len, "truncated: %zu bytes, the header alone needs %d", len, IDX_HEADER_BYTES);
    uint64_t version = read_u64(idx + 9);
    if (version != IDX_VERSION)
        return ds_data_fail(why, why_len, "unsupported binidx version %llu (expected %d)", (unsigned long long)version,
                            IDX_VERSION);
    uint8_t code = idx[17];
    *dtype = -1;
    for (int i = 0; i < N_ID_DTYPES; i++)
        if (id_dtypes[i].code == code) *dtype = i;
    if (*dtype < 0)
        return ds_data_fail(why, why_len, "dtype code %u is not an integer type (1 uint8, 2 int8, 3 int16, 4 int32, "
                            "5 int64, 8 uint16)", code);
    uint64_t count = read_u64(idx + 18), doc_count = read_u64(idx + 26);
    if (count > len || doc_count > len)  /* bounded first, so the expected length below cannot overflow */
        return ds_data_fail(why, why_len, "truncated: the header says %llu sequences and %llu document-index "
                            "entries, more than the file's %zu bytes hold", (unsigned long long)count,
                            (unsigned long long)doc_count, len);
    uint64_t expected = IDX_HEADER_BYTES + 12 * count + 8 * doc_count;
    if (expected != len)
        return ds_data_fail(why, why_len, "%s: the header says %llu sequences and %llu document-index entries "
                            "(%llu bytes), the file has %zu bytes", expected > len ? "truncated" : "trailing data",
                            (unsigned long long)count, (unsigned long long)doc_count, (unsigned long long)expected,
                            len);
    const uint8_t *sizes = idx + IDX_HEADER_BYTES, *pointers = sizes + 4 * count, *doc_idx = pointers + 8 * count;
    uint64_t tokens = 0, width = id_dtypes[*dtype].width;
    for (uint64_t k = 0; k < count; k++) {
        int32_t size = read_i32(sizes + 4 * k);
        int64_t pointer = read_i64(pointers + 8 * k);
        if (size < 0)
            return ds_data_fail(why, why_len, "sequence %llu has a negative size %d", (unsigned long long)k, size);
        if (pointer < 0 || (uint64_t)pointer != tokens * width)
            return ds_data_fail(why, why_len, "sequence %llu starts at byte %lld, but the sizes before it end at "
                                "byte %llu", (unsigned long long)k, (long long)pointer,
                                (unsigned long long)(tokens * width));
        tokens += (uint64_t)size;
    }
    if (doc_count == 0 || read_i64(doc_idx) != 0)
        return ds_data_fail(why, why_len, "the document index must start with 0");
    for (uint64_t k = 1; k < doc_count; k++) {
        int64_t a = read_i64(doc_idx + 8 * (k - 1)), b = read_i64(doc_idx + 8 * k);
        if (b < a || (uint64_t)b > count)
            return ds_data_fail(why, why_len, "document-index entry %llu is %lld: entries must rise from 0 to the "
                                "sequence count %llu", (unsigned long long)k, (long long)b, (unsigned long long)count);
    }
    if ((uint64_t)read_i64(doc_idx + 8 * (doc_count - 1)) != count)
        return ds_data_fail(why, why_len, "the document index ends at %lld, not at the sequence count %llu",
                            (long long)read_i64(doc_idx + 8 * (doc_count - 1)), (unsigned long long)count);
    *n_tokens = tokens;
    *n_docs = doc_count - 1;
    return 0;
}

int ds_binidx_open_segment(const char *bin_path, const char *idx_path, ds_segment *s, const char **bad, char *why,
                           size_t why_len) {
    memset(s, 0, sizeof *s);
    const uint8_t *idx;
    size_t idx_len;
    uint64_t n_tokens = 0, n_docs = 0;
    int dtype = -1;
    *bad = idx_path;
    if (ds_map_file(idx_path, &idx, &idx_len, why, why_len) != 0) return -1;
    int rc = check_index(idx ? idx : (const uint8_t *)"", idx_len, &n_tokens, &n_docs, &dtype, why, why_len);
    unmap(idx, idx_len);
    if (rc != 0) return -1;

    *bad = bin_path;
    const uint8_t *bin;
    size_t bin_len;
    if (ds_map_file(bin_path, &bin, &bin_len, why, why_len) != 0) return -1;
    uint64_t width = id_dtypes[dtype].width, need = n_tokens * width;
    if (bin_len != need) {
        unmap(bin, bin_len);
        return ds_data_fail(why, why_len, "%s than its index says: %zu bytes, the index has %llu tokens of %s "
                            "(%llu bytes)", bin_len < need ? "shorter" : "longer", bin_len,
                            (unsigned long long)n_tokens, id_dtypes[dtype].name, (unsigned long long)need);
    }
    *s = (ds_segment){.map = bin, .map_len = bin_len, .ids = bin, .type = id_dtypes[dtype].type,
                      .n_tokens = n_tokens, .n_docs = n_docs};
    int64_t largest = 0;
    for (uint64_t i = 0; i < n_tokens; i++) {
        int64_t t = ds_segment_id(s, i);
        if (t < 0 || t >= INT32_MAX) {
            unmap(bin, bin_len);
            memset(s, 0, sizeof *s);
            return ds_data_fail(why, why_len, "token %lld at index %llu is %s", (long long)t, (unsigned long long)i,
                                t < 0 ? "negative" : "too large for a token id");
        }
        if (t > largest) largest = t;
    }
    s->vocab_size = (uint32_t)largest + 1;
    return 0;
}

/* ---------------------------------------------------------------- writer */

struct ds_binidx_writer {
    ds_atomic_file bin, idx;
    uint32_t vocab_size;
    unsigned width;            /* 2 (uint16) or 4 (int32) */
    int32_t *sizes;            /* tokens of each document, its separator included */
    size_t n_docs, cap;
    uint8_t buf[1 << 16];
    size_t buf_len;
};

static void writer_flush(ds_binidx_writer *w) {
    fwrite(w->buf, 1, w->buf_len, w->bin.fp);  /* errors surface through ferror at commit */
    w->buf_len = 0;
}

static void writer_put(ds_binidx_writer *w, uint32_t id) {
    if (id >= w->vocab_size)
        ds_die(DS_EXIT_FAIL, "%s: token id %u outside the vocabulary [0, %u)", w->bin.path, id, w->vocab_size);
    if (w->buf_len + w->width > sizeof w->buf) writer_flush(w);
    if (w->width == 2) { uint16_t v = (uint16_t)id; memcpy(w->buf + w->buf_len, &v, 2); }
    else memcpy(w->buf + w->buf_len, &id, 4);
    w->buf_len += w->width;
}

ds_binidx_writer *ds_binidx_writer_open(const char *prefix, uint32_t vocab_size) {
    if (vocab_size == 0 || vocab_size > INT32_MAX)
        ds_die(DS_EXIT_FAIL, "%s: vocab_size %u out of range", prefix, vocab_size);
    ds_binidx_writer *w = ds_alloc(sizeof *w);
    char path[sizeof w->bin.path];
    if ((size_t)snprintf(path, sizeof path, "%s.bin", prefix) >= sizeof path)
        ds_die(DS_EXIT_FAIL, "%s: binidx prefix too long", prefix);
    if (ds_atomic_open(&w->bin, path) != 0) ds_die(DS_EXIT_FAIL, "%s: cannot create: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s.idx", prefix);
    if (ds_atomic_open(&w->idx, path) != 0) {
        int e = errno;
        ds_atomic_abort(&w->bin);
        ds_die(DS_EXIT_FAIL, "%s: cannot create: %s", path, strerror(e));
    }
    w->vocab_size = vocab_size;
    w->width = vocab_size <= 65536 ? 2 : 4;
    return w;
}

void ds_binidx_writer_add_document(ds_binidx_writer *w, const int32_t *ids, size_t n) {
    if (n >= INT32_MAX)
        ds_die(DS_EXIT_FAIL, "%s: a document of %zu tokens exceeds binidx's int32 sizes", w->bin.path, n);
    for (size_t i = 0; i < n; i++) writer_put(w, (uint32_t)ids[i]);
    writer_put(w, 0);
    if (w->n_docs == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 1024;
        w->sizes = realloc(w->sizes, w->cap * sizeof *w->sizes);
        if (!w->sizes) ds_die(DS_EXIT_FAIL, "out of memory writing %s", w->bin.path);
    }
    w->sizes[w->n_docs++] = (int32_t)(n + 1);
}

/* The index: header, sizes, byte pointers, and the document index 0, 1, ..., n (one sequence per document). */
static void write_index(const ds_binidx_writer *w) {
    FILE *fp = w->idx.fp;
    uint64_t version = IDX_VERSION, count = w->n_docs, doc_count = count + 1;
    uint8_t code = w->width == 2 ? CODE_UINT16 : CODE_INT32;
    fwrite(IDX_MAGIC, 1, sizeof IDX_MAGIC, fp);
    fwrite(&version, 8, 1, fp);
    fwrite(&code, 1, 1, fp);
    fwrite(&count, 8, 1, fp);
    fwrite(&doc_count, 8, 1, fp);
    fwrite(w->sizes, 4, count, fp);
    int64_t pointer = 0;
    for (size_t k = 0; k < count; k++) {
        fwrite(&pointer, 8, 1, fp);
        pointer += (int64_t)w->sizes[k] * w->width;
    }
    for (int64_t k = 0; k <= (int64_t)count; k++) fwrite(&k, 8, 1, fp);
}

/* The .bin is renamed into place before the .idx: a reader that meets the new .bin with an old .idx
 * finds their lengths disagree and refuses the pair. */
void ds_binidx_writer_commit(ds_binidx_writer *w) {
    writer_flush(w);
    write_index(w);
    int ok = fflush(w->bin.fp) == 0 && !ferror(w->bin.fp) && fflush(w->idx.fp) == 0 && !ferror(w->idx.fp);
    int e = errno;
    if (!ok) {
        ds_atomic_abort(&w->bin);
        ds_atomic_abort(&w->idx);
        ds_die(DS_EXIT_FAIL, "%s: write failed: %s", w->bin.path, strerror(e));
    }
    if (ds_atomic_commit(&w->bin) != 0) {
        e = errno;
        ds_atomic_abort(&w->idx);
        ds_die(DS_EXIT_FAIL, "%s: write failed: %s", w->bin.path, strerror(e));
    }
    if (ds_atomic_commit(&w->idx) != 0) ds_die(DS_EXIT_FAIL, "%s: write failed: %s", w->idx.path, strerror(errno));
    free(w->sizes);
    ds_free(w);
}

void ds_binidx_writer_abort(ds_binidx_writer *w) {
    ds_atomic_abort(&w->bin);
    ds_atomic_abort(&w->idx);
    free(w->sizes);
    ds_free(w);
}
