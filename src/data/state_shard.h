/* The state shard format's reader and record writer, shared by single state files (state_file.c,
 * which defines them) and state datasets (state_index.c). Private to src/data. */
#ifndef DREAMSTATE_STATE_SHARD_H
#define DREAMSTATE_STATE_SHARD_H

#include "dreamstate/states.h"

#include <stddef.h>
#include <stdint.h>

/* A mapped, validated shard or state file. */
typedef struct state_shard {
    const uint8_t *map;
    size_t size;
    ds_state_shape shape;
    int64_t n, record_bytes;
    const char *meta;     /* not NUL-terminated: meta_bytes long */
    size_t meta_bytes;
} state_shard;

/* Maps and validates `path` (every check of the format in states.h): 0, or -1 with the reason in why. */
int state_shard_open(const char *path, state_shard *s, char *why, size_t why_len);
void state_shard_close(state_shard *s);
ds_state_record state_shard_record(const state_shard *s, int64_t i);
/* Value of `key` in the shard's metadata ("" if absent). */
void state_shard_meta(const state_shard *s, const char *key, char *out, size_t len);

/* The state of dims d holds what shape s describes (same L and C), else dies naming both. */
void state_check_model_shape(const char *path, const ds_state_shape *s, const ds_rwkv7_dims *d,
                             const ds_rwkv7_state *dst);

/* Writes a state file of one record (no condition) whose state is `state` ([ds_state_floats] in
 * record layout) or, when state is NULL, sequence b of `from`. */
void state_save_record(const char *path, ds_state_shape shape, int32_t label, int32_t context, const float *state,
                       const ds_rwkv7_state *from, int b, const char *meta);

#endif
