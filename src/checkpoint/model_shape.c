/* RWKV-7 model shape read from a weights file, so that a user's checkpoint needs no shape in the config.
 * Released checkpoints and the current RWKV-LM trainer use different LoRA-rank formulas, so the ranks
 * are read from the tensor shapes, never derived. */
#include "dreamstate/weights.h"
#include "dreamstate/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Shape of `name` in the index as a 2-D [rows, cols]; 0 if absent or not 2-D. */
static int shape_2d(const ds_st_index *ix, const char *name, int64_t *rows, int64_t *cols) {
    const ds_st_entry *e = ds_st_find(ix, name);
    if (!e || e->ndim != 2) return 0;
    *rows = e->shape[0];
    *cols = e->shape[1];
    return 1;
}

static int dims_of_safetensors(const char *path, ds_rwkv7_dims *d, char *err) {
    ds_st_index ix;
    if (ds_safetensors_list(path, &ix, err) != 0) return -1;
    int rc = -1;
    int64_t V, C, rows, cols;
    char name[96];
    memset(d, 0, sizeof *d);
    if (!shape_2d(&ix, "emb.weight", &V, &C)) {
        snprintf(err, DS_ERR_LEN, "%s: no 2-D 'emb.weight': not RWKV-7 weights with official names", path);
        goto done;
    }
    int L = 0;
    for (;; L++) {
        snprintf(name, sizeof name, "blocks.%d.ln1.weight", L);
        if (!ds_st_find(&ix, name)) break;
    }
    if (L == 0) {
        snprintf(err, DS_ERR_LEN, "%s: no 'blocks.0.ln1.weight': not RWKV-7 weights with official names", path);
        goto done;
    }
    if (!shape_2d(&ix, "blocks.0.att.r_k", &rows, &cols)) {
        snprintf(err, DS_ERR_LEN, "%s: no 2-D 'blocks.0.att.r_k' [H, N]: not RWKV-7 (x070) weights", path);
        goto done;
    }
    if (cols != 64 || rows * cols != C) {
        snprintf(err, DS_ERR_LEN, "%s: head size %lld (blocks.0.att.r_k [%lld, %lld], n_embd %lld): dreamstate's kernels "
                 "need head size 64", path, (long long)cols, (long long)rows, (long long)cols, (long long)C);
        goto done;
    }
    if (!shape_2d(&ix, "blocks.0.ffn.key.weight", &rows, &cols) || rows != 4 * C || cols != C) {
        snprintf(err, DS_ERR_LEN, "%s: 'blocks.0.ffn.key.weight' is not [4*n_embd, n_embd] = [%lld, %lld]: dreamstate's "
                 "channel mix is 4x wide", path, 4 * (long long)C, (long long)C);
        goto done;
    }
    /* LoRA ranks: the inner dimension of each [C, D] down-projection. Official files may lack layer
     * 0's unused v LoRA, so v's rank comes from layer 1 (or layer 0 when present, e.g. our exports). */
    const char *v1 = ds_st_find(&ix, "blocks.1.att.v1") || !ds_st_find(&ix, "blocks.0.att.v1") ? "blocks.1.att.v1"
                                                                                               : "blocks.0.att.v1";
    const char *lora[] = {"blocks.0.att.w1", "blocks.0.att.a1", v1, "blocks.0.att.g1"};
    int *rank[] = {&d->dim_w, &d->dim_a, &d->dim_v, &d->dim_g};
    for (int i = 0; i < 4; i++) {
        if (i == 2 && L == 1 && !ds_st_find(&ix, "blocks.0.att.v1")) continue; /* unused: from the formula */
        if (!shape_2d(&ix, lora[i], &rows, &cols) || rows != C || cols < 1) {
            snprintf(err, DS_ERR_LEN, "%s: '%s' missing or not [n_embd=%lld, rank]", path, lora[i], (long long)C);
            goto done;
        }
        *rank[i] = (int)cols;
    }
    if (V < 1 || V > (1 << 24) || C > (1 << 16)) {
        snprintf(err, DS_ERR_LEN, "%s: implausible emb.weight shape [%lld, %lld]", path, (long long)V, (long long)C);
        goto done;
    }
    d->n_layer = L;
    d->n_embd = (int)C;
    d->vocab_size = (int)V;
    ds_rwkv7_default_ranks(d, "released");  /* fills only a rank the file could not give */
    rc = 0;
done:
    ds_st_index_free(&ix);
    return rc;
}

static int dims_of_ckpt(const char *path, ds_rwkv7_dims *d, char *err) {
    char *meta = NULL, sig[256];
    if (ds_ckpt_check(path, &meta, err) != 0) return -1;
    int ok = ds_ckpt_meta_value(meta, "model", sig, sizeof sig) &&
             sscanf(sig, "rwkv7 L=%d C=%d V=%d Dw=%d Da=%d Dv=%d Dg=%d", &d->n_layer, &d->n_embd, &d->vocab_size,
                    &d->dim_w, &d->dim_a, &d->dim_v, &d->dim_g) == 7;
    free(meta);
    if (!ok) snprintf(err, DS_ERR_LEN, "%s: not an RWKV-7 checkpoint (its metadata has no 'model=rwkv7 ...' line)", path);
    return ok ? 0 : -1;
}

int ds_rwkv7_dims_of_file(const char *path, ds_rwkv7_dims *d, char *err) {
    if (ends_with(path, ".safetensors")) return dims_of_safetensors(path, d, err);
    if (ends_with(path, ".pth") || ends_with(path, ".pt")) {
        snprintf(err, DS_ERR_LEN, "%s: a PyTorch file; convert it first: /usr/bin/python3 src/tools/pth_to_safetensors.py "
                 "%s OUT.safetensors", path, path);
        return -1;
    }
    return dims_of_ckpt(path, d, err);
}

ds_rwkv7_dims ds_model_dims_for_weights(const ds_config *cfg, const char *path) {
    char err[DS_ERR_LEN], where[DS_PATH_MAX + 64];
    ds_rwkv7_dims d;
    if (ds_rwkv7_dims_of_file(path, &d, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
    const struct { const char *key; int config, file; } pairs[] = {
        {"n_layer", cfg->model.n_layer, d.n_layer}, {"n_embd", cfg->model.n_embd, d.n_embd},
        {"vocab_size", cfg->model.vocab_size, d.vocab_size}, {"dim_w", cfg->model.dim_w, d.dim_w},
        {"dim_a", cfg->model.dim_a, d.dim_a}, {"dim_v", cfg->model.dim_v, d.dim_v},
        {"dim_g", cfg->model.dim_g, d.dim_g}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        if (ds_config_origin(cfg, "model", pairs[i].key, where, sizeof where) && pairs[i].config != pairs[i].file &&
            !(pairs[i].config == 0 && pairs[i].key[0] == 'd'))  /* a LoRA rank of 0 means "not given" */
            ds_die(DS_EXIT_BAD_INPUT, "%s is %d but %s has %s %d: drop the key (the shape is read from the weights) "
                   "or use matching weights", where, pairs[i].config, path, pairs[i].key, pairs[i].file);
    int min_vocab = strcmp(cfg->data.tokenizer, "world") == 0 ? 65536 : 256;
    if (d.vocab_size < min_vocab)
        ds_die(DS_EXIT_BAD_INPUT, "%s: vocabulary %d is smaller than data.tokenizer '%s' needs (%d)", path, d.vocab_size,
               cfg->data.tokenizer, min_vocab);
    return d;
}
