/* safetensors import/export: u64 little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
 * then the data section, which the tensors' [b, e) ranges must tile exactly (no holes, no overlap).
 *
 * The header parser is schema-directed: it accepts exactly that structure (objects, arrays, strings
 * with escapes, non-negative integers) and rejects anything else with a reason and a byte position,
 * including unknown fields and trailing characters other than the space padding; duplicate names
 * are found once the header is read, by sorting. */
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HEADER_MAX (100u << 20)  /* the reference implementation's limit */
#define CHUNK_ELEMS (1 << 19)

static const struct { const char *name; int size; } dtypes[DS_ST_NDTYPES] = {
    [DS_ST_BOOL] = {"BOOL", 1}, [DS_ST_U8] = {"U8", 1},     [DS_ST_I8] = {"I8", 1},
    [DS_ST_F8_E4M3] = {"F8_E4M3", 1}, [DS_ST_F8_E5M2] = {"F8_E5M2", 1},
    [DS_ST_I16] = {"I16", 2}, [DS_ST_U16] = {"U16", 2},   [DS_ST_F16] = {"F16", 2},
    [DS_ST_BF16] = {"BF16", 2}, [DS_ST_I32] = {"I32", 4}, [DS_ST_U32] = {"U32", 4},
    [DS_ST_F32] = {"F32", 4}, [DS_ST_F64] = {"F64", 8},   [DS_ST_I64] = {"I64", 8},
    [DS_ST_U64] = {"U64", 8},
};

const char *ds_st_dtype_name(ds_st_dtype d) { return d < DS_ST_NDTYPES ? dtypes[d].name : "?"; }

/* ---- header parser ---------------------------------------------------------------------------- */

typedef struct {
    const char *begin, *p, *end;
    const char *path;
    char *err;
} json;

static int bad(json *j, const char *what) {
    return ckpt_fail(j->err, j->path, "malformed safetensors header: %s at byte %ld", what, (long)(j->p - j->begin));
}

static void skip_ws(json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* Skips whitespace and consumes `c` if it is next. */
static int accept(json *j, char c) {
    skip_ws(j);
    if (j->p < j->end && *j->p == c) { j->p++; return 1; }
    return 0;
}

static int expect(json *j, char c) {
    if (accept(j, c)) return 0;
    char what[32];
    snprintf(what, sizeof what, "expected '%c'", c);
    return bad(j, what);
}

/* Four hex digits of a \u escape; -1 if they are not. */
static int hex4(json *j, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++, j->p++) {
        char c = j->p < j->end ? *j->p : 0;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

static char *put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* Decodes the string body at j->p (its closing quote is known to exist) into o; NULL or a reason. */
static const char *decode_string(json *j, char *o) {
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) return "control character in string";
        j->p++;
        if (c != '\\') { *o++ = (char)c; continue; }
        const char *escapes = "\"\\/bfnrt", *values = "\"\\/\b\f\n\r\t", *e = strchr(escapes, *j->p);
        if (*j->p && e) { *o++ = values[e - escapes]; j->p++; continue; }
        if (*j->p != 'u') return "bad escape";
        j->p++;
        uint32_t cp, lo;
        if (hex4(j, &cp)) return "bad \\u escape";
        if (cp >= 0xDC00 && cp <= 0xDFFF) return "lone low surrogate";
        if (cp >= 0xD800 && cp <= 0xDBFF) {  /* high surrogate: a low one must follow */
            if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') return "lone high surrogate";
            j->p += 2;
            if (hex4(j, &lo)) return "bad \\u escape";
            if (lo < 0xDC00 || lo > 0xDFFF) return "bad surrogate pair";
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) return "\\u0000 in string";
        o = put_utf8(o, cp);
    }
    *o = 0;
    return NULL;
}

/* A JSON string into a malloc'd NUL-terminated UTF-8 copy (\u0000 is refused: names are C strings). */
static int parse_string(json *j, char **out) {
    *out = NULL;
    if (!accept(j, '"')) return bad(j, "expected a string");
    const char *start = j->p;
    while (j->p < j->end && *j->p != '"') j->p += *j->p == '\\' ? 2 : 1;
    if (j->p >= j->end) return bad(j, "unterminated string");
    char *s = malloc(j->p - start + 1);  /* escapes never expand */
    if (!s) return ckpt_fail(j->err, j->path, "out of memory");
    j->p = start;
    const char *why = decode_string(j, s);
    if (why) {
        free(s);
        return bad(j, why);
    }
    j->p++;
    *out = s;
    return 0;
}

/* A non-negative JSON integer (shapes and offsets); fractions, exponents and signs are refused. */
static int parse_uint(json *j, uint64_t *v) {
    skip_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return bad(j, "expected a non-negative integer");
    if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9') return bad(j, "leading zero");
    *v = 0;
    for (; j->p < j->end && *j->p >= '0' && *j->p <= '9'; j->p++) {
        if (*v > (UINT64_MAX - 9) / 10) return bad(j, "integer too large");
        *v = *v * 10 + (uint64_t)(*j->p - '0');
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) return bad(j, "expected an integer");
    return 0;
}

/* "[u, u, ...]" with at most `max` elements; *count receives how many. */
static int parse_uint_array(json *j, uint64_t *v, int max, int *count) {
    *count = 0;
    if (expect(j, '[')) return -1;
    if (accept(j, ']')) return 0;
    do {
        if (*count == max) return bad(j, "array too long");
        if (parse_uint(j, &v[(*count)++])) return -1;
    } while (accept(j, ','));
    return expect(j, ']');
}

static int parse_tensor_info(json *j, ds_st_entry *e) {
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    if (expect(j, '{')) return -1;
    if (accept(j, '}')) return bad(j, "empty tensor entry");
    do {
        char *key;
        if (parse_string(j, &key) || expect(j, ':')) { free(key); return -1; }
        int rc = 0;
        if (strcmp(key, "dtype") == 0 && !have_dtype) {
            char *name;
            rc = parse_string(j, &name);
            e->dtype = DS_ST_NDTYPES;
            for (int d = 0; !rc && d < DS_ST_NDTYPES; d++)
                if (strcmp(name, dtypes[d].name) == 0) e->dtype = (ds_st_dtype)d;
            if (!rc && e->dtype == DS_ST_NDTYPES) rc = bad(j, "unknown dtype");
            free(name);
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            uint64_t dims[DS_TENSOR_MAX_DIMS + 1];
            rc = parse_uint_array(j, dims, DS_TENSOR_MAX_DIMS + 1, &e->ndim);
            if (!rc && e->ndim > DS_TENSOR_MAX_DIMS) rc = bad(j, "more than 4 dims");
            for (int d = 0; !rc && d < e->ndim; d++) {
                if (dims[d] > ((uint64_t)1 << 40)) rc = bad(j, "dim too large");
                e->shape[d] = (int64_t)dims[d];
            }
            have_shape = 1;
        } else if (strcmp(key, "data_offsets") == 0 && !have_offsets) {
            uint64_t off[2];
            int count;
            rc = parse_uint_array(j, off, 2, &count);
            if (!rc && count != 2) rc = bad(j, "data_offsets needs 2 integers");
            if (!rc && off[0] > off[1]) rc = bad(j, "data_offsets begin > end");
            e->begin = off[0], e->end = off[1];
            have_offsets = 1;
        } else {
            rc = bad(j, "unknown or repeated key in tensor entry");
        }
        free(key);
        if (rc) return -1;
    } while (accept(j, ','));
    if (expect(j, '}')) return -1;
    if (!have_dtype || !have_shape || !have_offsets) return bad(j, "tensor entry lacks dtype, shape or data_offsets");
    return 0;
}

/* Room for one more element in a growing array (capacity doubles: a header of n entries costs O(n)). */
static int grow(void **array, int count, int *cap, size_t size) {
    if (count < *cap) return 0;
    int new_cap = *cap ? 2 * *cap : 64;
    void *grown = realloc(*array, (size_t)new_cap * size);
    if (!grown) return -1;
    *array = grown;
    *cap = new_cap;
    return 0;
}

static int parse_metadata(json *j, ds_st_index *ix) {
    if (expect(j, '{')) return -1;
    if (accept(j, '}')) return 0;
    int cap_keys = 0, cap_values = 0;
    do {
        if (grow((void **)&ix->meta_keys, ix->n_meta, &cap_keys, sizeof *ix->meta_keys) ||
            grow((void **)&ix->meta_values, ix->n_meta, &cap_values, sizeof *ix->meta_values))
            return ckpt_fail(j->err, j->path, "out of memory");
        char *key = NULL, *value = NULL;
        if (parse_string(j, &key) || expect(j, ':') || parse_string(j, &value)) {
            free(key), free(value);
            return -1;
        }
        ix->meta_keys[ix->n_meta] = key, ix->meta_values[ix->n_meta] = value;
        ix->n_meta++;
    } while (accept(j, ','));
    return expect(j, '}');
}

static int parse_header(json *j, ds_st_index *ix) {
    int have_meta = 0, cap = 0;
    if (j->p == j->end || *j->p != '{') return bad(j, "header does not start with '{'");
    j->p++;
    if (!accept(j, '}')) {
        do {
            char *key;
            if (parse_string(j, &key) || expect(j, ':')) { free(key); return -1; }
            if (strcmp(key, "__metadata__") == 0) {
                free(key);
                if (have_meta) return bad(j, "repeated __metadata__");
                have_meta = 1;
                if (parse_metadata(j, ix)) return -1;
                continue;
            }
            /* the checkpoint writer, the loaders and every error message need a name to show */
            if (!ckpt_name_length_ok(strlen(key))) {
                free(key);
                return bad(j, "a tensor name that is empty or longer than 4095 bytes");
            }
            if (grow((void **)&ix->entries, ix->n, &cap, sizeof *ix->entries)) {
                free(key);
                return ckpt_fail(j->err, j->path, "out of memory");
            }
            memset(&ix->entries[ix->n], 0, sizeof *ix->entries);
            ix->entries[ix->n++].name = key;
            if (parse_tensor_info(j, &ix->entries[ix->n - 1])) return -1;
        } while (accept(j, ','));
        if (expect(j, '}')) return -1;
    }
    skip_ws(j);
    return j->p == j->end ? 0 : bad(j, "trailing characters after the header object");
}

/* ---- lookup by name ----------------------------------------------------------------------------- */

static const char *entry_name(const void *ix, int i) { return ((const ds_st_index *)ix)->entries[i].name; }
static const char *meta_key(const void *ix, int i) { return ((const ds_st_index *)ix)->meta_keys[i]; }

static int index_names(ds_st_index *ix, const char *path, char *err) {
    const char *twice = ckpt_name_order(ix, entry_name, ix->n, &ix->by_name);
    if (twice) return ckpt_fail(err, path, "malformed safetensors header: duplicate tensor name '%s'", twice);
    twice = ckpt_name_order(ix, meta_key, ix->n_meta, &ix->meta_by_key);
    if (twice) return ckpt_fail(err, path, "malformed safetensors header: duplicate metadata key '%s'", twice);
    return ix->by_name && ix->meta_by_key ? 0 : ckpt_fail(err, path, "out of memory");
}

const ds_st_entry *ds_st_find(const ds_st_index *ix, const char *name) {
    int i = ckpt_name_find(ix, entry_name, ix->by_name, ix->n, name);
    return i < 0 ? NULL : &ix->entries[i];
}

const char *ds_st_meta(const ds_st_index *ix, const char *key) {
    int i = ckpt_name_find(ix, meta_key, ix->meta_by_key, ix->n_meta, key);
    return i < 0 ? NULL : ix->meta_values[i];
}

/* ---- listing ---------------------------------------------------------------------------------- */

static int cmp_begin(const void *a, const void *b) {
    uint64_t x = (*(ds_st_entry *const *)a)->begin, y = (*(ds_st_entry *const *)b)->begin;
    return (x > y) - (x < y);
}

/* The data ranges must have the dtype's size and tile [0, data_len) exactly. */
static int check_layout(const ds_st_index *ix, uint64_t data_len, const char *path, char *err) {
    for (int i = 0; i < ix->n; i++) {
        const ds_st_entry *e = &ix->entries[i];
        uint64_t bytes = (uint64_t)dtypes[e->dtype].size;
        for (int d = 0; d < e->ndim; d++) bytes *= (uint64_t)e->shape[d];  /* dims <= 2^40: check below */
        double approx = dtypes[e->dtype].size;
        for (int d = 0; d < e->ndim; d++) approx *= (double)e->shape[d];
        if (approx > 9e18 || bytes != e->end - e->begin)
            return ckpt_fail(err, path, "tensor '%s': data_offsets [%llu, %llu] do not match %s shape", e->name,
                             (unsigned long long)e->begin, (unsigned long long)e->end, dtypes[e->dtype].name);
    }
    const ds_st_entry **order = malloc(((size_t)(unsigned)ix->n + 1) * sizeof *order);
    if (!order) return ckpt_fail(err, path, "out of memory");
    for (int i = 0; i < ix->n; i++) order[i] = &ix->entries[i];
    qsort(order, ix->n, sizeof *order, cmp_begin);
    uint64_t pos = 0;
    int rc = 0;
    for (int i = 0; i < ix->n && !rc; i++) {
        if (order[i]->begin != pos)
            rc = ckpt_fail(err, path, "tensor '%s' data starts at %llu, expected %llu (hole or overlap)",
                           order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)pos);
        pos = order[i]->end;
    }
    free(order);
    if (!rc && pos > data_len)
        rc = ckpt_fail(err, path, "truncated (expected %llu bytes, found %llu)",
                       (unsigned long long)(ix->data_start + pos), (unsigned long long)(ix->data_start + data_len));
    if (!rc && pos < data_len)
        rc = ckpt_fail(err, path, "%llu bytes after the last tensor", (unsigned long long)(data_len - pos));
    return rc;
}

static int read_index(FILE *fp, const char *path, ds_st_index *ix, char *err) {
    memset(ix, 0, sizeof *ix);
    struct stat st;
    if (fstat(fileno(fp), &st)) return ckpt_fail(err, path, "cannot stat: %s", strerror(errno));
    uint64_t size = (uint64_t)st.st_size;
    uint8_t len8[8];
    if (fread(len8, 1, 8, fp) != 8)
        return ckpt_fail(err, path, "truncated (expected at least 8 bytes, found %llu)", (unsigned long long)size);
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)len8[i] << 8 * i;
    if (header_len > HEADER_MAX)
        return ckpt_fail(err, path, "not a safetensors file (header length %llu)", (unsigned long long)header_len);
    if (header_len > size - 8)
        return ckpt_fail(err, path, "truncated (expected at least %llu bytes, found %llu)",
                         (unsigned long long)(8 + header_len), (unsigned long long)size);
    char *text = malloc(header_len ? header_len : 1);
    if (!text) return ckpt_fail(err, path, "out of memory");
    int rc = fread(text, 1, header_len, fp) == header_len ? 0 : ckpt_fail(err, path, "read error");
    json j = {text, text, text + header_len, path, err};
    if (!rc) rc = parse_header(&j, ix);
    if (!rc) rc = index_names(ix, path, err);
    free(text);
    ix->data_start = 8 + header_len;  /* before check_layout, which reports file sizes */
    if (!rc) rc = check_layout(ix, size - ix->data_start, path, err);
    if (rc) ds_st_index_free(ix);
    return rc;
}

int ds_safetensors_list(const char *path, ds_st_index *ix, char *err) {
    memset(ix, 0, sizeof *ix);
    char why[256];
    FILE *fp = ds_fopen_input(path, why, sizeof why);
    if (!fp) return ckpt_fail(err, path, "%s", why);
    int rc = read_index(fp, path, ix, err);
    fclose(fp);
    return rc;
}

void ds_st_index_free(ds_st_index *ix) {
    for (int i = 0; i < ix->n; i++) free(ix->entries[i].name);
    for (int i = 0; i < ix->n_meta; i++) free(ix->meta_keys[i]), free(ix->meta_values[i]);
    free(ix->entries);
    free(ix->meta_keys);
    free(ix->meta_values);
    free(ix->by_name);
    free(ix->meta_by_key);
    memset(ix, 0, sizeof *ix);
}

/* ---- loading ---------------------------------------------------------------------------------- */

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;  /* bf16 is the top half of an fp32 */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = h >> 10 & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000 | man << 13;  /* inf, or nan with its payload */
    } else if (exp) {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    } else {
        float f = (float)man * 0x1p-24f;  /* zero or subnormal: exact in fp32 */
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int read_tensor(FILE *fp, const char *path, const ds_st_index *ix, const ds_st_entry *e, float *out,
                       char *err) {
    if (fseeko(fp, (off_t)(ix->data_start + e->begin), SEEK_SET)) return ckpt_fail(err, path, "read error");
    uint64_t n = (e->end - e->begin) / dtypes[e->dtype].size;
    if (e->dtype == DS_ST_F32) return fread(out, 4, n, fp) == n ? 0 : ckpt_fail(err, path, "read error");
    uint16_t *buf = malloc(CHUNK_ELEMS * sizeof *buf);
    if (!buf) return ckpt_fail(err, path, "out of memory");
    int rc = 0;
    for (uint64_t done = 0; done < n && !rc;) {
        size_t k = n - done < CHUNK_ELEMS ? (size_t)(n - done) : CHUNK_ELEMS;
        if (fread(buf, 2, k, fp) != k) { rc = ckpt_fail(err, path, "read error"); break; }
        for (size_t i = 0; i < k; i++)
            out[done + i] = e->dtype == DS_ST_F16 ? f16_to_f32(buf[i]) : bf16_to_f32(buf[i]);
        done += k;
    }
    free(buf);
    return rc;
}

int ds_safetensors_load(const char *path, int n, const ds_tensor *t, char *err) {
    if (ds_tensors_check(path, n, t, err)) return -1;
    char why[256];
    FILE *fp = ds_fopen_input(path, why, sizeof why);
    if (!fp) return ckpt_fail(err, path, "%s", why);
    ds_st_index ix;
    int rc = read_index(fp, path, &ix, err);
    if (rc) { fclose(fp); return rc; }
    /* All names, dtypes and shapes are checked before any data is read. */
    for (int i = 0; i < n && !rc; i++) {
        const ds_st_entry *e = ds_st_find(&ix, t[i].name);
        if (!e) { rc = ckpt_fail(err, path, "missing tensor '%s'", t[i].name); break; }
        if (e->dtype != DS_ST_F32 && e->dtype != DS_ST_F16 && e->dtype != DS_ST_BF16)
            rc = ckpt_fail(err, path, "tensor '%s' has dtype %s (need F32, F16 or BF16)", e->name,
                           dtypes[e->dtype].name);
        else
            rc = ckpt_check_shape(err, path, &t[i], e->ndim, e->shape);
    }
    for (int i = 0; i < n && !rc; i++) rc = read_tensor(fp, path, &ix, ds_st_find(&ix, t[i].name), t[i].data, err);
    ds_st_index_free(&ix);
    fclose(fp);
    return rc;
}

/* ---- saving ----------------------------------------------------------------------------------- */

typedef struct { char *s; size_t len, cap; int oom; } strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->s, cap);
        if (!grown) { b->oom = 1; return; }
        b->s = grown, b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
}

static void sb_str(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)k);
}

static void sb_json_string(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') sb_put(b, "\\", 1), sb_put(b, s, 1);
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_put(b, s, 1);
    }
    sb_put(b, "\"", 1);
}

int ds_safetensors_save(const char *path, int n_meta, const char *const *meta_kv, int n, const ds_tensor *t,
                        char *err) {
    if (ds_tensors_check(path, n, t, err)) return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, "__metadata__") == 0)
            return ckpt_fail(err, path, "a tensor cannot be named __metadata__");
    for (int i = 0; i < n_meta; i++) {
        if (!meta_kv[2 * i] || !meta_kv[2 * i + 1])
            return ckpt_fail(err, path, "metadata pair %d has a NULL string", i);
        for (int k = 0; k < i; k++)
            if (strcmp(meta_kv[2 * k], meta_kv[2 * i]) == 0)
                return ckpt_fail(err, path, "duplicate metadata key '%s'", meta_kv[2 * i]);
    }

    strbuf h = {0};
    sb_put(&h, "{", 1);
    if (n_meta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_put(&h, ",", 1);
            sb_json_string(&h, meta_kv[2 * i]);
            sb_put(&h, ":", 1);
            sb_json_string(&h, meta_kv[2 * i + 1]);
        }
        sb_put(&h, "}", 1);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        if (i || n_meta > 0) sb_put(&h, ",", 1);
        sb_json_string(&h, t[i].name);
        sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) sb_printf(&h, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        uint64_t bytes = (uint64_t)ds_tensor_numel(&t[i]) * sizeof(float);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                  (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    sb_put(&h, "}", 1);
    while (!h.oom && h.len % 8) sb_put(&h, " ", 1);  /* space padding keeps the data 8-byte aligned */
    if (h.oom) { free(h.s); return ckpt_fail(err, path, "out of memory"); }

    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> 8 * i);
    ds_atomic_file af;
    if (ds_atomic_open(&af, path)) { free(h.s); return ckpt_fail(err, path, "cannot create: %s", strerror(errno)); }
    int ok = fwrite(len8, 1, 8, af.fp) == 8 && fwrite(h.s, 1, h.len, af.fp) == h.len;
    for (int i = 0; ok && i < n; i++) {
        size_t count = (size_t)ds_tensor_numel(&t[i]);
        ok = fwrite(t[i].data, sizeof(float), count, af.fp) == count;
    }
    free(h.s);
    return ckpt_finish_write(&af, ok, err, path);
}
