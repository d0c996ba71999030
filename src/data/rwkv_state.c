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

typedef char tensor_name[48];

/* Views of sequence b's WKV state of every layer as the file's tensors (names: [L] buffers). */
static ds_tensor *time_state_views(const ds_rwkv7_dims *d, const ds_rwkv7_state *s, int b, tensor_name *names) {
    int L = d->n_layer, H = d->n_embd / DS_HEAD_SIZE;
    int64_t per_seq = (int64_t)H * DS_HEAD_SIZE * DS_HEAD_SIZE;
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * L);
    for (int l = 0; l < L; l++) {
        snprintf(names[l], sizeof names[l], TIME_STATE, l);
        t[l] = (ds_tensor){.name = names[l], .ndim = 3, .shape = {H, DS_HEAD_SIZE, DS_HEAD_SIZE},
                           .data = s->wkv + ((int64_t)l * s->B + b) * per_seq};
    }
    return t;
}

int ds_rwkv_state_save(const char *path, const ds_rwkv7_dims *d, const ds_rwkv7_state *s, int b, const char *meta,
                       char *err) {
    /* "key=value\n" lines as (key, value) pairs: the copy's '=' and '\n' become NULs */
    char *text = strdup(meta ? meta : "");
    int cap = 2, n_meta = 1;
    for (const char *p = text; *p; p++) cap += *p == '\n';
    const char **kv = ds_alloc(sizeof(char *) * 2 * cap);
    kv[0] = "format";
    kv[1] = "rwkv-state";
    for (char *line = text, *end; *line; line = end) {
        end = line + strcspn(line, "\n");
        if (*end) *end++ = 0;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        kv[2 * n_meta] = line;
        kv[2 * n_meta++ + 1] = eq + 1;
    }
    tensor_name *names = ds_alloc(sizeof(*names) * d->n_layer);
    ds_tensor *t = time_state_views(d, s, b, names);
    int rc = ds_safetensors_save(path, n_meta, kv, d->n_layer, t, err);
    ds_free(t);
    ds_free(names);
    ds_free(kv);
    free(text);
    return rc;
}

/* The pairs a "key=value\n" line can hold. */
static int meta_pair_fits(const char *key, const char *value) {
    if (!*key || strchr(key, '=')) return 0;
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p < 0x20) return 0;
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20) return 0;
    return 1;
}

static char *meta_text(const ds_st_index *ix) {
    size_t len = 1;
    for (int i = 0; i < ix->n_meta; i++) len += strlen(ix->meta_keys[i]) + strlen(ix->meta_values[i]) + 2;
    char *text = malloc(len), *p = text;
    if (!text) ds_die(DS_EXIT_FAIL, "out of memory");
    *p = 0;
    for (int i = 0; i < ix->n_meta; i++)
        if (meta_pair_fits(ix->meta_keys[i], ix->meta_values[i]))
            p += sprintf(p, "%s=%s\n", ix->meta_keys[i], ix->meta_values[i]);
    return text;
}

int ds_rwkv_state_load(const char *path, const ds_rwkv7_dims *d, ds_rwkv7_state *dst, int b, char **meta_out,
                       char *err) {
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
    tensor_name *names = ds_alloc(sizeof(*names) * L);
    ds_tensor *t = time_state_views(d, dst, b, names);
    rc = ds_safetensors_load(path, L, t, err);
    ds_free(t);
    ds_free(names);
    if (rc == 0) {
        for (int l = 0; l < L; l++) {  /* no token-shift state in the format: start it at zero */
            memset(dst->att_x + ((int64_t)l * dst->B + b) * d->n_embd, 0, sizeof(float) * d->n_embd);
            memset(dst->ffn_x + ((int64_t)l * dst->B + b) * d->n_embd, 0, sizeof(float) * d->n_embd);
        }
        if (meta_out) *meta_out = meta_text(&ix);
    }
done:
    ds_st_index_free(&ix);
    return rc;
}
