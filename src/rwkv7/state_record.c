/* One sequence's RWKV-7 state as a flat record (layout: include/dreamstate/state_record.h). */
#include "dreamstate/state_record.h"

#include <string.h>

ds_state_shape ds_state_shape_of(const ds_rwkv7_dims *d, uint32_t cond_flags) {
    ds_state_shape s = {d->n_layer, d->n_embd, d->n_embd / DS_STATE_HEAD_SIZE, DS_STATE_HEAD_SIZE, 0, cond_flags};
    s.cond_dim = d->n_embd * __builtin_popcount(cond_flags);
    return s;
}

int64_t ds_state_layer_floats(const ds_state_shape *s) {
    return 2 * (int64_t)s->n_embd + (int64_t)s->n_head * s->head_size * s->head_size;
}

int64_t ds_state_floats(const ds_state_shape *s) { return s->n_layer * ds_state_layer_floats(s); }

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
