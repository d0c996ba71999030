/* Token shards: the atomic writer and the validating mmap reader (format in include/dreamstate/data.h),
 * and datasets: a shard, a directory of shards, or binidx data (binidx.c), read as one token stream. */
#include "dreamstate/data.h"
#include "dreamstate/common.h"
#include "segment.h"
#include "text_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token shards are little-endian and read by memcpy/mmap: a big-endian port needs byte swaps"
#endif

#define SHARD_MAGIC "DSTOKENS"
#define SHARD_VERSION 1u
#define SHARD_HEADER_BYTES 64
enum { DTYPE_U16 = 1, DTYPE_U32 = 2 };

typedef struct shard_header {
    char magic[8];
    uint32_t version, dtype, vocab_size, fingerprint;
    uint64_t n_tokens, n_docs;
    uint32_t payload_crc;
    uint8_t reserved[16];
    uint32_t header_crc;  /* of the 60 bytes above */
} shard_header;
_Static_assert(sizeof(shard_header) == SHARD_HEADER_BYTES, "shard header must be exactly 64 bytes");

static uint32_t dtype_width(uint32_t dtype) { return dtype == DTYPE_U16 ? 2 : 4; }

/* ---------------------------------------------------------------- writer */

struct ds_shard_writer {
    ds_atomic_file file;
    shard_header header;
    uint32_t payload_crc;
    uint8_t buf[1 << 16];
    size_t buf_len;
};

static void writer_flush(ds_shard_writer *w) {
    w->payload_crc = ds_crc32c(w->payload_crc, w->buf, w->buf_len);
    fwrite(w->buf, 1, w->buf_len, w->file.fp);  /* errors surface through ferror at commit */
    w->buf_len = 0;
}

static void writer_put(ds_shard_writer *w, uint32_t id) {
    if (id >= w->header.vocab_size)
        ds_die(DS_EXIT_FAIL, "%s: token id %u outside the vocabulary [0, %u)", w->file.path, id, w->header.vocab_size);
    uint32_t width = dtype_width(w->header.dtype);
    if (w->buf_len + width > sizeof w->buf) writer_flush(w);
    if (width == 2) { uint16_t v = (uint16_t)id; memcpy(w->buf + w->buf_len, &v, 2); }
    else memcpy(w->buf + w->buf_len, &id, 4);
    w->buf_len += width;
    w->header.n_tokens++;
}

ds_shard_writer *ds_shard_writer_open(const char *path, uint32_t vocab_size, uint32_t fingerprint) {
    if (vocab_size == 0) ds_die(DS_EXIT_FAIL, "%s: vocab_size must be positive", path);
    ds_shard_writer *w = ds_alloc(sizeof *w);
    if (ds_atomic_open(&w->file, path) != 0) ds_die(DS_EXIT_FAIL, "%s: cannot create: %s", path, strerror(errno));
    memcpy(w->header.magic, SHARD_MAGIC, 8);
    w->header.version = SHARD_VERSION;
    w->header.dtype = vocab_size <= 65536 ? DTYPE_U16 : DTYPE_U32;
    w->header.vocab_size = vocab_size;
    w->header.fingerprint = fingerprint;
    /* Placeholder header (zero magic) until commit rewrites it: the temp file is never valid early. */
    static const uint8_t zeros[SHARD_HEADER_BYTES];
    fwrite(zeros, 1, sizeof zeros, w->file.fp);
    return w;
}

void ds_shard_writer_add_document(ds_shard_writer *w, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) writer_put(w, (uint32_t)ids[i]);
    writer_put(w, 0);
    w->header.n_docs++;
}

void ds_shard_writer_commit(ds_shard_writer *w) {
    writer_flush(w);
    w->header.payload_crc = w->payload_crc;
    w->header.header_crc = ds_crc32c(0, &w->header, offsetof(shard_header, header_crc));
    FILE *fp = w->file.fp;
    int ok = fseek(fp, 0, SEEK_SET) == 0 && fwrite(&w->header, sizeof w->header, 1, fp) == 1 &&
             fflush(fp) == 0 && !ferror(fp);
    if (!ok || ds_atomic_commit(&w->file) != 0) {
        int e = errno;
        if (!ok) ds_atomic_abort(&w->file);
        ds_die(DS_EXIT_FAIL, "%s: write failed: %s", w->file.path, strerror(e));
    }
    ds_free(w);
}

void ds_shard_writer_abort(ds_shard_writer *w) {
    ds_atomic_abort(&w->file);
    ds_free(w);
}

/* ---------------------------------------------------------------- reader */

struct ds_dataset {
    int n_segments;
    ds_segment *segments;
    uint64_t n_tokens, n_docs;
    uint32_t vocab_size, fingerprint;
    int records_tokenizer;  /* token shards do, binidx does not */
};

int ds_data_fail(char *why, size_t why_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return -1;
}

int ds_map_file(const char *path, const uint8_t **map, size_t *len, char *why, size_t why_len) {
    *map = NULL;
    int fd = ds_open_input(path, why, why_len);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return ds_data_fail(why, why_len, "cannot stat: %s", strerror(errno));
    }
    *len = (size_t)st.st_size;
    void *m = *len ? mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (m == MAP_FAILED) return ds_data_fail(why, why_len, "cannot mmap: %s", strerror(errno));
    *map = m;
    return 0;
}

/* The header's own fields, before any payload is touched. */
static int check_header(const shard_header *h, size_t file_len, char *why, size_t why_len) {
    if (h->header_crc != ds_crc32c(0, h, offsetof(shard_header, header_crc)))
        return ds_data_fail(why, why_len, "header checksum mismatch (file corrupt)");
    if (h->version != SHARD_VERSION)
        return ds_data_fail(why, why_len, "unsupported shard version %u (this build reads version %u)", h->version,
                            SHARD_VERSION);
    if (h->dtype != DTYPE_U16 && h->dtype != DTYPE_U32)
        return ds_data_fail(why, why_len, "unknown token dtype %u (expected 1 = uint16 or 2 = uint32)", h->dtype);
    if (h->vocab_size == 0 || (h->dtype == DTYPE_U16 && h->vocab_size > 65536))
        return ds_data_fail(why, why_len, "vocab_size %u does not fit token dtype %u", h->vocab_size, h->dtype);
    if (h->vocab_size > (uint32_t)INT32_MAX)  /* ids are read as int32_t, as binidx ids are */
        return ds_data_fail(why, why_len, "vocab_size %u exceeds %d, the most this build reads (token ids are 32-bit "
                            "signed)", h->vocab_size, INT32_MAX);
    for (size_t i = 0; i < sizeof h->reserved; i++)
        if (h->reserved[i]) return ds_data_fail(why, why_len, "reserved header bytes are not zero");
    uint64_t width = dtype_width(h->dtype);
    if (h->n_tokens > (UINT64_MAX - SHARD_HEADER_BYTES) / width)
        return ds_data_fail(why, why_len, "implausible token count %llu", (unsigned long long)h->n_tokens);
    uint64_t expected = SHARD_HEADER_BYTES + h->n_tokens * width;
    if (file_len < expected)
        return ds_data_fail(why, why_len, "truncated: header says %llu tokens (%llu bytes), file has %zu bytes",
                            (unsigned long long)h->n_tokens, (unsigned long long)expected, file_len);
    if (file_len > expected)
        return ds_data_fail(why, why_len, "trailing data: header says %llu tokens (%llu bytes), file has %zu bytes",
                            (unsigned long long)h->n_tokens, (unsigned long long)expected, file_len);
    if (h->n_docs > h->n_tokens)
        return ds_data_fail(why, why_len, "header says %llu documents but only %llu tokens",
                            (unsigned long long)h->n_docs, (unsigned long long)h->n_tokens);
    return 0;
}

/* The payload: checksum, id range, separators. */
static int check_payload(const ds_segment *s, const shard_header *h, char *why, size_t why_len) {
    size_t payload_bytes = h->n_tokens * dtype_width(h->dtype);
    if (ds_crc32c(0, s->ids, payload_bytes) != h->payload_crc)
        return ds_data_fail(why, why_len, "payload checksum mismatch (file corrupt)");
    uint64_t separators = 0;
    for (uint64_t i = 0; i < h->n_tokens; i++) {
        uint32_t t = (uint32_t)ds_segment_id(s, i);
        if (t >= h->vocab_size)
            return ds_data_fail(why, why_len, "token %u at index %llu is outside the vocabulary [0, %u)", t,
                                (unsigned long long)i, h->vocab_size);
        separators += t == 0;
    }
    if (h->n_tokens > 0 && ds_segment_id(s, h->n_tokens - 1) != 0)
        return ds_data_fail(why, why_len, "payload does not end with the document separator 0");
    if (separators < h->n_docs)
        return ds_data_fail(why, why_len, "header says %llu documents but the payload has %llu separators",
                            (unsigned long long)h->n_docs, (unsigned long long)separators);
    return 0;
}

/* Maps and validates one shard; on failure nothing stays mapped and `why` says what is wrong. */
static int shard_open(const char *path, ds_segment *s, char *why, size_t why_len) {
    memset(s, 0, sizeof *s);
    const uint8_t *map;
    size_t len;
    if (ds_map_file(path, &map, &len, why, why_len) != 0) return -1;
    int rc = 0;
    shard_header h;
    if (len < sizeof h.magic || memcmp(map, SHARD_MAGIC, sizeof h.magic) != 0)
        rc = ds_data_fail(why, why_len, "not a dreamstate token shard (bad magic)");
    else if (len < SHARD_HEADER_BYTES)
        rc = ds_data_fail(why, why_len, "truncated: file has %zu bytes, the header alone needs %d", len,
                          SHARD_HEADER_BYTES);
    if (rc == 0) {
        memcpy(&h, map, sizeof h);
        *s = (ds_segment){.map = map, .map_len = len, .ids = map + SHARD_HEADER_BYTES,
                          .type = h.dtype == DTYPE_U16 ? IDS_U16 : IDS_U32, .n_tokens = h.n_tokens,
                          .n_docs = h.n_docs, .vocab_size = h.vocab_size, .fingerprint = h.fingerprint};
        rc = check_header(&h, len, why, why_len) != 0 || check_payload(s, &h, why, why_len) != 0 ? -1 : 0;
    }
    if (rc != 0) {
        if (map) munmap((void *)map, len);
        memset(s, 0, sizeof *s);
    }
    return rc;
}

int ds_shard_check(const char *path, char *why, size_t why_len) {
    ds_segment s;
    if (shard_open(path, &s, why, why_len) != 0) return -1;
    munmap((void *)s.map, s.map_len);
    return 0;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The "*.bin" files of a directory, sorted by name. */
static char **list_shards(const char *dir, int *count) {
    DIR *d = opendir(dir);
    if (!d) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot open dataset directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".bin") != 0) continue;
        if (n == cap) names = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names);
        size_t plen = strlen(dir) + len + 2;
        names[n] = malloc(plen);
        snprintf(names[n++], plen, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (n == 0) ds_die(DS_EXIT_BAD_INPUT, "%s: dataset directory has no *.bin shards", dir);
    qsort(names, n, sizeof *names, compare_strings);
    *count = n;
    return names;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int starts_with_shard_magic(const char *path) {
    char magic[8] = {0}, why[256];
    FILE *f = ds_fopen_input(path, why, sizeof why);  /* a non-regular file: refused when opened as a shard */
    int yes = f && fread(magic, 1, sizeof magic, f) == sizeof magic && memcmp(magic, SHARD_MAGIC, 8) == 0;
    if (f) fclose(f);
    return yes;
}

/* Whether `path` names binidx data (rules in data.h); if so, the paths of its two files. */
static int binidx_paths(const char *path, char *bin, char *idx, size_t len) {
    size_t n = strlen(path);
    int has_ext = ds_has_suffix(path, ".bin") || ds_has_suffix(path, ".idx");
    const char *ext = has_ext ? path + n - 4 : "";
    snprintf(bin, len, "%.*s.bin", (int)(n - strlen(ext)), path);
    snprintf(idx, len, "%.*s.idx", (int)(n - strlen(ext)), path);
    if (strcmp(ext, ".idx") == 0) return 1;
    if (strcmp(ext, ".bin") == 0) return !starts_with_shard_magic(path) && file_exists(idx);
    return !file_exists(path) && (file_exists(idx) || file_exists(bin));
}

ds_dataset *ds_dataset_open(const char *path) {
    char bin[4096], idx[4096], why[256];
    if (strlen(path) + 5 > sizeof bin) ds_die(DS_EXIT_BAD_INPUT, "%s: dataset path too long", path);
    ds_dataset *ds = ds_alloc(sizeof *ds);
    if (binidx_paths(path, bin, idx, sizeof bin)) {
        ds->n_segments = 1;
        ds->segments = ds_alloc(sizeof *ds->segments);
        const char *bad;
        if (ds_binidx_open_segment(bin, idx, ds->segments, &bad, why, sizeof why) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: %s", bad, why);
    } else {
        ds->records_tokenizer = 1;
        struct stat st;
        if (stat(path, &st) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot open dataset: %s", path, strerror(errno));
        int n = 1;
        char **paths = S_ISDIR(st.st_mode) ? list_shards(path, &n) : NULL;
        ds->n_segments = n;
        ds->segments = ds_alloc(n * sizeof *ds->segments);
        for (int i = 0; i < n; i++) {
            const char *p = paths ? paths[i] : path;
            ds_segment *s = &ds->segments[i];
            if (shard_open(p, s, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", p, why);
            if (i > 0 && (s->vocab_size != ds->segments[0].vocab_size || s->fingerprint != ds->segments[0].fingerprint))
                ds_die(DS_EXIT_BAD_INPUT, "%s: tokenizer differs from %s (vocab_size %u vs %u, fingerprint %08x vs "
                       "%08x)", p, paths[0], s->vocab_size, ds->segments[0].vocab_size, s->fingerprint,
                       ds->segments[0].fingerprint);
        }
        for (int i = 0; paths && i < n; i++) free(paths[i]);
        free(paths);
    }
    ds->vocab_size = ds->segments[0].vocab_size;
    ds->fingerprint = ds->segments[0].fingerprint;
    for (int i = 0; i < ds->n_segments; i++) {
        ds->segments[i].first = ds->n_tokens;
        ds->n_tokens += ds->segments[i].n_tokens;
        ds->n_docs += ds->segments[i].n_docs;
    }
    return ds;
}

void ds_dataset_close(ds_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n_segments; i++)
        if (ds->segments[i].map) munmap((void *)ds->segments[i].map, ds->segments[i].map_len);
    ds_free(ds->segments);
    ds_free(ds);
}

uint64_t ds_dataset_num_tokens(const ds_dataset *ds) { return ds->n_tokens; }
uint64_t ds_dataset_num_docs(const ds_dataset *ds) { return ds->n_docs; }
uint32_t ds_dataset_vocab_size(const ds_dataset *ds) { return ds->vocab_size; }
uint32_t ds_dataset_fingerprint(const ds_dataset *ds) { return ds->fingerprint; }

void ds_dataset_check_tokenizer(const ds_dataset *ds, const char *path, const ds_tokenizer *tok) {
    if (!ds->records_tokenizer || ds->fingerprint == ds_tokenizer_fingerprint(tok)) return;
    char made_by[96];
    ds_tokenizer_fingerprint_name(ds->fingerprint, made_by, sizeof made_by);
    ds_die(DS_EXIT_BAD_INPUT, "%s: tokenized with %s, but data.tokenizer is %s; set data.tokenizer (and "
           "data.vocab_file) to the data's, or prepare the data again with this tokenizer", path, made_by,
           ds_tokenizer_name(tok));
}

/* The segment holding stream index i: the last one whose first token is <= i. */
static int find_segment(const ds_dataset *ds, uint64_t i) {
    int a = 0, b = ds->n_segments - 1;
    while (a < b) {
        int m = (a + b + 1) / 2;
        if (ds->segments[m].first <= i) a = m;
        else b = m - 1;
    }
    return a;
}

void ds_dataset_read(const ds_dataset *ds, uint64_t start, size_t n, int32_t *out) {
    if (start > ds->n_tokens || n > ds->n_tokens - start)
        ds_die(DS_EXIT_FAIL, "dataset read of tokens [%llu, %llu) past its end (%llu tokens)",
               (unsigned long long)start, (unsigned long long)(start + n), (unsigned long long)ds->n_tokens);
    if (n == 0) return;
    for (int k = find_segment(ds, start); n > 0; k++) {
        const ds_segment *s = &ds->segments[k];
        uint64_t i = start - s->first, end = s->n_tokens;
        for (; i < end && n > 0; i++, n--, start++) *out++ = (int32_t)ds_segment_id(s, i);
    }
}

int32_t ds_dataset_token(const ds_dataset *ds, uint64_t i) {
    int32_t t;
    ds_dataset_read(ds, i, 1, &t);
    return t;
}

double ds_unigram_entropy_nats(const ds_dataset *ds) {
    uint64_t *counts = ds_alloc(ds->vocab_size * sizeof *counts);
    for (int k = 0; k < ds->n_segments; k++) {
        const ds_segment *s = &ds->segments[k];
        for (uint64_t i = 0; i < s->n_tokens; i++) counts[ds_segment_id(s, i)]++;
    }
    double h = 0;
    for (uint32_t v = 0; v < ds->vocab_size; v++) {
        if (!counts[v]) continue;
        double p = (double)counts[v] / (double)ds->n_tokens;
        h -= p * log(p);
    }
    ds_free(counts);
    return h;
}
