/* Weights in and out of files: training checkpoints and official-name safetensors. */
#include "dreamstate/weights.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <stdlib.h>
#include <string.h>

static void model_tensors(ds_rwkv7 *m, ds_tensor *out) { ds_param_views(m->n_tensors, m->tensors, m->params, out); }

int ds_weights_ckpt_tensors(ds_rwkv7 *m, float *adam_m, float *adam_v, ds_tensor *out) {
    model_tensors(m, out);
    out[m->n_tensors] = (ds_tensor){.name = "optim.adamw.m", .ndim = 1, .shape = {m->n_params}, .data = adam_m};
    out[m->n_tensors + 1] = (ds_tensor){.name = "optim.adamw.v", .ndim = 1, .shape = {m->n_params}, .data = adam_v};
    return m->n_tensors + 2;
}

void ds_weights_signature(const ds_rwkv7_dims *d, char *buf, size_t len) {
    snprintf(buf, len, "rwkv7 L=%d C=%d V=%d Dw=%d Da=%d Dv=%d Dg=%d", d->n_layer, d->n_embd, d->vocab_size,
             d->dim_w, d->dim_a, d->dim_v, d->dim_g);
}

void ds_weights_ckpt_meta(const ds_rwkv7_dims *d, int64_t step, const char *extra, char *buf, size_t len) {
    char sig[256];
    ds_weights_signature(d, sig, sizeof sig);
    snprintf(buf, len, "step=%lld\nmodel=%s\n%s", (long long)step, sig, extra ? extra : "");
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

void ds_weights_load(ds_rwkv7 *m, const char *path) {
    char err[DS_ERR_LEN];
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * (m->n_tensors + 2));
    if (ends_with(path, ".safetensors")) {
        model_tensors(m, t);
        /* a model file lacking layer-0's unused v-LoRA (some official releases) is fine: keep it zero */
        ds_st_index ix;
        if (ds_safetensors_list(path, &ix, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
        int n = 0, found = 0;
        for (int i = 0; i < m->n_tensors; i++) {
            int in_file = ds_st_find(&ix, t[i].name) != NULL;
            found += in_file;
            if (!in_file && strncmp(t[i].name, "blocks.0.att.v", 14) == 0) continue;
            t[n++] = t[i];
        }
        /* a tensor the model does not know is a mistake (another architecture, a file of more than
         * one model), never silently left out; file names are unique, so found < ix.n means one */
        for (int e = 0; found < ix.n && e < ix.n; e++) {
            if (ds_param_find(m->n_tensors, m->tensors, ix.entries[e].name)) continue;
            char sig[256];
            ds_weights_signature(&m->d, sig, sizeof sig);
            ds_die(DS_EXIT_BAD_INPUT, "%s: unexpected tensor '%s' (not in the model %s); the file holds %d tensor(s) "
                   "the model does not have", path, ix.entries[e].name, sig, ix.n - found);
        }
        ds_st_index_free(&ix);
        if (ds_safetensors_load(path, n, t, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
    } else {
        float *scratch = ds_alloc(sizeof(float) * 2 * m->n_params);
        int n = ds_weights_ckpt_tensors(m, scratch, scratch + m->n_params, t);
        char *meta = NULL, sig[256], got[256];
        if (ds_ckpt_check(path, &meta, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
        ds_weights_signature(&m->d, sig, sizeof sig);
        if (!ds_ckpt_meta_value(meta, "model", got, sizeof got) || strcmp(got, sig) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: checkpoint is for '%s', config describes '%s'", path,
                   ds_ckpt_meta_value(meta, "model", got, sizeof got) ? got : "?", sig);
        free(meta);
        if (ds_ckpt_load(path, NULL, n, t, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
        ds_free(scratch);
    }
    model_tensors(m, t);
    int bad = ds_tensors_find_nonfinite(m->n_tensors, t);
    if (bad >= 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: tensor '%s' holds NaN or Inf values; these weights are unusable (a diverged "
               "run?): use an earlier checkpoint", path, t[bad].name);
    ds_free(t);
}

/* A model of the shape of the weights in `path`, loaded from it. */
static ds_rwkv7_dims load_model(const ds_config *cfg, const char *path, ds_rwkv7 *m) {
    ds_blas_init(ds_check_threads(cfg->run.threads, "run.threads"));  /* 0: all the cores */
    ds_kernels_init();
    ds_rwkv7_dims d = ds_model_dims_for_weights(cfg, path);
    ds_rwkv7_create(m, &d);
    ds_weights_load(m, path);
    return d;
}

int ds_export_safetensors(const ds_config *cfg, const char *ckpt_path, const char *out_path) {
    ds_rwkv7 m;
    load_model(cfg, ckpt_path, &m);
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * m.n_tensors);
    model_tensors(&m, t);
    const char *meta[] = {"format", "rwkv7-x070", "source", ckpt_path};
    char err[DS_ERR_LEN];
    if (ds_safetensors_save(out_path, 2, meta, m.n_tensors, t, err) != 0) ds_die(DS_EXIT_FAIL, "%s", err);
    printf("wrote %s: %d tensors, %lld parameters\n", out_path, m.n_tensors, (long long)m.n_params);
    ds_free(t);
    ds_rwkv7_destroy(&m);
    return 0;
}

int ds_import_safetensors(const ds_config *cfg, const char *st_path) {
    /* a checkpoint of an earlier run would be resumed instead, and pruning would delete the import */
    int move_aside = ds_run_dir_check_fresh(cfg->run.out_dir, cfg->checkpoint.dir,
                                            strcmp(cfg->checkpoint.resume, "restart") == 0, "");
    ds_rwkv7 m;
    ds_rwkv7_dims d = load_model(cfg, st_path, &m);
    float *moments = ds_alloc(sizeof(float) * 2 * m.n_params);
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * (m.n_tensors + 2));
    int n = ds_weights_ckpt_tensors(&m, moments, moments + m.n_params, t);
    char path[DS_PATH_MAX + 64], meta[512], err[DS_ERR_LEN];
    if (move_aside) {
        ds_run_dir_move_aside(cfg->run.out_dir, cfg->checkpoint.dir, path, sizeof path);
        printf("moved the earlier run's files to %s/\n", path);
    }
    ds_mkdir_p(cfg->checkpoint.dir);
    ds_weights_ckpt_meta(&d, 0, "source=import\n", meta, sizeof meta);
    ds_ckpt_path(path, sizeof path, cfg->checkpoint.dir, 0);
    if (ds_ckpt_save(path, meta, n, t, err) != 0) ds_die(DS_EXIT_FAIL, "%s", err);
    printf("wrote %s from %s; 'dreamstate train' with this config starts from it\n", path, st_path);
    ds_free(t);
    ds_free(moments);
    ds_rwkv7_destroy(&m);
    return 0;
}
