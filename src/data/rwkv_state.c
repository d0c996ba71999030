/* RWKV state files as RWKV-PEFT's state tuning writes them: safetensors holding, for every layer i,
 * "blocks.{i}.att.time_state" [H, 64, 64] laid out [head][value][key], the orientation of our
 * S[h][value][key]. They carry only the WKV state: the token-shift states (att x_prev, ffn x_prev)
 * are not part of the format, so a loaded state has them zero and a saved one drops them. */
#include "dreamstate/states.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIME_STATE "blocks.%d.att.time_state"

int ds_rwkv_state_save(const char *path, const ds_rwkv7_dims *d, const ds_rwkv7_state *s, int b, const char *model,
                       char *err) {
    int L = d->n_layer, H = d->n_embd / DS_HEAD_SIZE;
    int64_t per_seq = (int64_t)H * DS_HEAD_SIZE * DS_HEAD_SIZE;
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * L);
    char (*names)[48] = ds_alloc(sizeof(*names) * L);
    for (int l = 0; l < L; l++) {
        snprintf(names[l], sizeof names[l], TIME_STATE, l);
        t[l] = (ds_tensor){.name = names[l], .ndim = 3, .shape = {H, DS_HEAD_SIZE, DS_HEAD_SIZE},
                           .data = s->wkv + ((int64_t)l * s->B + b) * per_seq};
    }
    const char *meta[] = {"format", "rwkv-state", "model", model};
    int rc = ds_safetensors_save(path, 2, meta, L, t, err);
    ds_free(names);
    ds_free(t);
    return rc;
}

int ds_rwkv_state_load(const char *path, const ds_rwkv7_dims *d, ds_rwkv7_state *dst, int b, char *err) {
    ds_st_index ix;
    if (ds_safetensors_list(path, &ix, err) != 0) return -1;
    int L = d->n_layer, H = d->n_embd / DS_HEAD_SIZE, rc = -1, layers = 0;
    char name[48];
    while (snprintf(name, sizeof name, TIME_STATE, layers), ds_st_find(&ix, name)) layers++;
    if (layers == 0 || layers != ix.n) {
        snprintf(err, DS_ERR_LEN, "%s: not an RWKV state file: expected only blocks.0..N.att.time_state tensors, "
                 "found %d such among %d", path, layers, ix.n);
        goto done;
    }
    if (layers != L) {
        snprintf(err, DS_ERR_LEN, "%s: state of %d layers, the model has %d", path, layers, L);
        goto done;
    }
    for (int l = 0; l < L; l++) {
        snprintf(name, sizeof name, TIME_STATE, l);
        const ds_st_entry *e = ds_st_find(&ix, name);
        if (e->ndim != 3 || e->shape[1] != DS_HEAD_SIZE || e->shape[2] != DS_HEAD_SIZE) {
            snprintf(err, DS_ERR_LEN, "%s: '%s' is not [heads, 64, 64]", path, name);
            goto done;
        }
        if (e->shape[0] != H) {
            snprintf(err, DS_ERR_LEN, "%s: state of %lld heads, the model has %d (n_embd %d)", path,
                     (long long)e->shape[0], H, d->n_embd);
            goto done;
        }
    }
    int64_t per_seq = (int64_t)H * DS_HEAD_SIZE * DS_HEAD_SIZE;
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * L);
    char (*names)[48] = ds_alloc(sizeof(*names) * L);
    for (int l = 0; l < L; l++) {
        snprintf(names[l], sizeof names[l], TIME_STATE, l);
        t[l] = (ds_tensor){.name = names[l], .ndim = 3, .shape = {H, DS_HEAD_SIZE, DS_HEAD_SIZE},
                           .data = dst->wkv + ((int64_t)l * dst->B + b) * per_seq};
    }
    rc = ds_safetensors_load(path, L, t, err);
    ds_free(names);
    ds_free(t);
    if (rc == 0)
        for (int l = 0; l < L; l++) {  /* no token-shift state in the format: start it at zero */
            memset(dst->att_x + ((int64_t)l * dst->B + b) * d->n_embd, 0, sizeof(float) * d->n_embd);
            memset(dst->ffn_x + ((int64_t)l * dst->B + b) * d->n_embd, 0, sizeof(float) * d->n_embd);
        }
done:
    ds_st_index_free(&ix);
    return rc;
}
