/* A segment of a dataset's token stream: one mapped file of token ids, a token shard's payload
 * (shard.c) or a binidx .bin (binidx.c). Private to src/data. */
#ifndef DREAMSTATE_SEGMENT_H
#define DREAMSTATE_SEGMENT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* How ids are stored: little-endian integers of these types. */
typedef enum { IDS_U8, IDS_I8, IDS_I16, IDS_U16, IDS_I32, IDS_U32, IDS_I64 } ds_ids_type;

typedef struct ds_segment {
    const uint8_t *map;       /* the whole mapping (NULL for an empty file) */
    size_t map_len;
    const uint8_t *ids;       /* the first id, inside map */
    ds_ids_type type;
    uint64_t n_tokens, n_docs;
    uint32_t vocab_size;      /* every id is below it: a shard's declared vocabulary; binidx: largest id + 1 */
    uint32_t fingerprint;     /* tokenizer fingerprint of a shard; 0 for binidx (it records none) */
    uint64_t first;           /* index of its first token in the dataset stream */
} ds_segment;

/* Id i of the segment as stored (signed types may give negative values, which validation refuses). */
static inline int64_t ds_segment_id(const ds_segment *s, uint64_t i) {
    const uint8_t *p = s->ids;
    switch (s->type) {
    case IDS_U8: return p[i];
    case IDS_I8: return (int8_t)p[i];
    case IDS_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case IDS_U16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case IDS_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case IDS_U32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case IDS_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return v; }
    }
    return -1;
}

/* Formats the reason into why; returns -1 (for `return ds_data_fail(...)` in validators). */
int ds_data_fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Maps a whole regular file read-only (an empty file maps to NULL); 0, or -1 with the reason in why. */
int ds_map_file(const char *path, const uint8_t **map, size_t *len, char *why, size_t why_len);

/* Maps and validates the binidx pair bin_path / idx_path (format in include/dreamstate/data.h) into s.
 * On failure nothing stays mapped, `bad` receives the path of the file at fault and `why` the reason. */
int ds_binidx_open_segment(const char *bin_path, const char *idx_path, ds_segment *s, const char **bad, char *why,
                           size_t why_len);

#endif
