/* The state DiT's model file (format: include/dreamstate/state_dit_file.h): its signature, tensor
 * table and metadata, and the loader. */
#include "dreamstate/state_dit_file.h"
#include "dreamstate/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ds_state_dit_signature(const ds_state_dit *s, char *buf, size_t len) {
    const ds_dit_dims *d = &s->dit.d;
    int n = snprintf(buf, len, "statedit ch=%d p=%d d=%d depth=%d heads=%d mlp=%d K=%d cond=%s norm=%s pred=%s layers=",
                     d->in_channels, d->patch_size, d->hidden, d->depth, d->heads, d->mlp_ratio, d->num_classes,
                     ds_state_cond_kind_name(s->cond_kind), s->per_element ? "element" : "head",
                     s->v_prediction ? "v" : "eps");
    for (int i = 0; i < s->n_layers && n > 0 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - n, "%s%d", i ? "," : "", s->layers[i]);
}

int ds_state_dit_ckpt_tensors(ds_state_dit *s, ds_tensor *out, char (*names)[80]) {
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        ds_param_views(s->dit.n_tensors, s->dit.tensors, pass ? s->ema : s->dit.params, out + n);
        for (int i = 0; i < s->dit.n_tensors; i++, n++) {
            snprintf(names[n], sizeof names[n], "%s.%s", pass ? "ema" : "dit", out[n].name);
            out[n].name = names[n];
        }
    }
    out[n++] = (ds_tensor){.name = "norm.mean", .ndim = 1, .shape = {s->n_stats}, .data = s->mean};
    out[n++] = (ds_tensor){.name = "norm.std", .ndim = 1, .shape = {s->n_stats}, .data = s->std};
    return n;
}

void ds_state_dit_ckpt_meta(const ds_state_dit *s, const char *rwkv_model, const char *rwkv_checkpoint,
                            const char *tokenizer, char *buf, size_t len) {
    const ds_dit_dims *d = &s->dit.d;
    const ds_state_shape *sh = &s->shape;
    int n = snprintf(buf, len, "layers=");
    for (int i = 0; i < s->n_layers; i++) n += snprintf(buf + n, len - n, "%s%d", i ? "," : "", s->layers[i]);
    n += snprintf(buf + n, len - n, "\ncondition=%s\nnormalize=%s\nprediction=%s\nlabels=",
                  ds_state_cond_kind_name(s->cond_kind), s->per_element ? "element" : "head",
                  s->v_prediction ? "v" : "eps");
    for (int i = 0; i < s->n_labels && (size_t)n < len; i++) n += snprintf(buf + n, len - n, "%s%s", i ? "," : "", s->labels[i]);
    if ((size_t)n < len)
        n += snprintf(buf + n, len - n,
                      "\nschedule=%s\ndit=%d,%d,%d,%d,%d\nstate_shape=%d,%d,%d,%d,%d,%u\nrwkv_model=%s\n"
                      "rwkv_checkpoint=%s\ntokenizer=%s\n",
                      s->schedule == DS_SCHEDULE_COSINE ? "cosine" : "linear", d->hidden, d->depth, d->heads,
                      d->patch_size, d->mlp_ratio, sh->n_layer, sh->n_embd, sh->n_head, sh->head_size, sh->cond_dim,
                      sh->flags, rwkv_model, rwkv_checkpoint, tokenizer);
    if ((size_t)n >= len) ds_die(DS_EXIT_BAD_INPUT, "state DiT: metadata too long (too many labels?)");
}

static void meta_required(const char *path, const char *meta, const char *key, char *out, size_t len) {
    if (!ds_ckpt_meta_value(meta, key, out, len))
        ds_die(DS_EXIT_BAD_INPUT, "%s: not a state-diffusion checkpoint (no %s= in its metadata)", path, key);
}

void ds_state_dit_rwkv_dims(const char *path, const char *meta, ds_rwkv7_dims *d) {
    char v[256];
    meta_required(path, meta, "rwkv_model", v, sizeof v);
    memset(d, 0, sizeof *d);
    if (sscanf(v, "rwkv7 L=%d C=%d V=%d Dw=%d Da=%d Dv=%d Dg=%d", &d->n_layer, &d->n_embd, &d->vocab_size, &d->dim_w,
               &d->dim_a, &d->dim_v, &d->dim_g) != 7)
        ds_die(DS_EXIT_BAD_INPUT, "%s: rwkv_model '%s' is not an RWKV-7 signature", path, v);
}

void ds_state_dit_load(ds_state_dit *s, const char *path, char **meta_out) {
    char err[DS_ERR_LEN], v[4096];
    char *meta = NULL;
    if (ds_ckpt_check(path, &meta, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
    meta_required(path, meta, "task", v, sizeof v);
    if (strcmp(v, "state_diffusion") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: a checkpoint of task '%s', not state_diffusion", path, v);
    ds_state_shape sh;
    meta_required(path, meta, "state_shape", v, sizeof v);
    if (sscanf(v, "%d,%d,%d,%d,%d,%u", &sh.n_layer, &sh.n_embd, &sh.n_head, &sh.head_size, &sh.cond_dim, &sh.flags) != 6)
        ds_die(DS_EXIT_BAD_INPUT, "%s: bad state_shape '%s'", path, v);
    ds_dit_dims arch = {0};
    meta_required(path, meta, "dit", v, sizeof v);
    if (sscanf(v, "%d,%d,%d,%d,%d", &arch.hidden, &arch.depth, &arch.heads, &arch.patch_size, &arch.mlp_ratio) != 5)
        ds_die(DS_EXIT_BAD_INPUT, "%s: bad dit '%s'", path, v);
    int layers[DS_STATE_DIT_MAX_LAYERS], n_layers = 0;
    meta_required(path, meta, "layers", v, sizeof v);
    for (char *p = v; *p && n_layers < DS_STATE_DIT_MAX_LAYERS;) {
        layers[n_layers++] = (int)strtol(p, &p, 10);
        if (*p == ',') p++;
        else if (*p) ds_die(DS_EXIT_BAD_INPUT, "%s: bad layers '%s'", path, v);
    }
    char cond[64], sched[16], norm[16], pred[16];
    meta_required(path, meta, "condition", cond, sizeof cond);
    meta_required(path, meta, "schedule", sched, sizeof sched);
    meta_required(path, meta, "normalize", norm, sizeof norm);
    meta_required(path, meta, "prediction", pred, sizeof pred);
    meta_required(path, meta, "labels", v, sizeof v);
    char *labels[1024];
    int n_labels = 0;
    for (char *tok = strtok(v, ","); tok && n_labels < 1024; tok = strtok(NULL, ",")) labels[n_labels++] = tok;
    ds_state_dit_create(s, &sh, layers, n_layers, ds_state_cond_kind_parse(cond), n_labels, labels, &arch,
                        strcmp(sched, "cosine") == 0 ? DS_SCHEDULE_COSINE : DS_SCHEDULE_LINEAR);
    ds_state_dit_set_normalisation(s, strcmp(norm, "element") == 0);
    s->v_prediction = strcmp(pred, "v") == 0;
    char sig[512], got[512];
    ds_state_dit_signature(s, sig, sizeof sig);
    meta_required(path, meta, "model", got, sizeof got);
    if (strcmp(sig, got) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: metadata describes '%s' but model= says '%s'", path, sig, got);
    int cap = 2 * s->dit.n_tensors + 4;
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * cap);
    char (*names)[80] = ds_alloc(sizeof(*names) * cap);
    int n = ds_state_dit_ckpt_tensors(s, t, names);
    float *moments = ds_alloc(sizeof(float) * 2 * s->dit.n_params);
    t[n++] = (ds_tensor){.name = "optim.adamw.m", .ndim = 1, .shape = {s->dit.n_params}, .data = moments};
    t[n++] = (ds_tensor){.name = "optim.adamw.v", .ndim = 1, .shape = {s->dit.n_params}, .data = moments + s->dit.n_params};
    if (ds_ckpt_load(path, NULL, n, t, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
    int bad = ds_tensors_find_nonfinite(n, t);
    if (bad >= 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: tensor '%s' holds NaN or Inf values; use an earlier checkpoint of this run",
               path, t[bad].name);
    ds_free(moments); ds_free(t); ds_free(names);
    ds_state_dit_swap_ema(s);  /* sampling and evaluation use the EMA weights */
    if (meta_out) *meta_out = meta;
    else free(meta);
}
