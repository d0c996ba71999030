/* One RWKV-7 state as a flat record: the layout that state shards and state files store
 * (states.h) and that the state DiT reads (state_dit.h). A record is a label, a context index, the
 * condition floats and the state of every layer in the order of src/rwkv7/README.md §6: att x_prev [C], WKV [H][N][N]
 * as S[h][i = value][j = key], ffn x_prev [C]. Knows nothing about files. */
#ifndef DREAMSTATE_STATE_RECORD_H
#define DREAMSTATE_STATE_RECORD_H

#include "dreamstate/rwkv7.h"

#include <stdint.h>

#define DS_STATE_HEAD_SIZE 64   /* N: every RWKV-7 head is 64 wide */

/* The parts of a record's condition, in this order, each C floats. */
enum { DS_COND_FIRST_TOKEN = 1u << 0, DS_COND_MEAN_TOKEN = 1u << 1, DS_COND_LAST_HIDDEN = 1u << 2 };
#define DS_COND_ALL (DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN | DS_COND_LAST_HIDDEN)

typedef struct ds_state_shape {
    int n_layer, n_embd, n_head, head_size;  /* L, C, H, N */
    int cond_dim;
    uint32_t flags;                          /* DS_COND_* parts of cond */
} ds_state_shape;

typedef struct ds_state_record {
    int32_t label, context;
    const float *cond;    /* [cond_dim] */
    const float *state;   /* [ds_state_floats], layout above */
} ds_state_record;

/* The shape of a model's state with the given condition parts. */
ds_state_shape ds_state_shape_of(const ds_rwkv7_dims *d, uint32_t cond_flags);
/* Floats of one layer (2C + H*N*N) and of a whole record's state. */
int64_t ds_state_layer_floats(const ds_state_shape *s);
int64_t ds_state_floats(const ds_state_shape *s);
/* Parts of layer l inside a record's state. */
static inline const float *ds_state_att_x(const ds_state_shape *s, const float *state, int l) {
    return state + l * ds_state_layer_floats(s);
}
static inline const float *ds_state_wkv(const ds_state_shape *s, const float *state, int l) {
    return state + l * ds_state_layer_floats(s) + s->n_embd;
}
static inline const float *ds_state_ffn_x(const ds_state_shape *s, const float *state, int l) {
    return state + (l + 1) * ds_state_layer_floats(s) - s->n_embd;
}

/* Record layout <-> the model's batch state: sequence b of `src` into a record's state, and back. */
void ds_state_pack(const ds_state_shape *s, const ds_rwkv7_state *src, int b, float *state);
void ds_state_unpack(const ds_state_shape *s, const float *state, ds_rwkv7_state *dst, int b);

#endif
