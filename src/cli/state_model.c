/* What sample-state, interpolate-state and edit-state share (see state_model.h). */
#include "state_model.h"

#include "args.h"

#include "dreamstate/common.h"
#include "dreamstate/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void open_model(state_ctx *c, const char *cmd, const char *path, ds_state_file_format format) {
    c->cmd = cmd;
    c->format = format;
    char *meta;
    ds_state_dit_load(&c->sd, path, &meta);
    ds_state_dit_rwkv_dims(path, meta, &c->dims);
    free(meta);
}

void sampler_options(state_ctx *c, const char *sampler, const char *steps, const char *eta, const char *guidance,
                     const char *seed, const char *clip, const char *temperature) {
    c->sampler = (ds_state_sampler){.steps = 50, .seed = 1234, .temperature = 1.0};
    if (clip) c->sampler.clip_x0 = cli_parse_number(c->cmd, "--clip", clip, 0, 1e6);
    if (temperature) c->sampler.temperature = cli_parse_number(c->cmd, "--temperature", temperature, 0, 1e6);
    if (sampler && strcmp(sampler, "ddpm") == 0) c->sampler.ddpm = 1;
    else if (sampler && strcmp(sampler, "ddim") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: --sampler '%s' is not ddim or ddpm", c->cmd, sampler);
    if (c->sampler.ddpm) c->sampler.steps = 250;
    if (steps) c->sampler.steps = (int)cli_parse_int(c->cmd, "--steps", steps, 2, DS_DIFFUSION_STEPS);
    if (eta) c->sampler.eta = cli_parse_number(c->cmd, "--eta", eta, 0, 1);
    c->guidance = guidance ? cli_parse_number(c->cmd, "--guidance", guidance, -100, 100) : 1.0;
    if (seed) c->sampler.seed = cli_parse_seed(c->cmd, "--seed", seed);
}

int label_terms(const state_ctx *c, int32_t *labels, int32_t *nulls, int B, int label, double weight, double guidance,
                int n, ds_state_cond_term *terms) {
    if (c->sd.cond_kind != DS_STATE_COND_LABEL)
        ds_die(DS_EXIT_BAD_INPUT, "%s: the model is conditioned on %s vectors, not labels", c->cmd,
               ds_state_cond_kind_name(c->sd.cond_kind));
    for (int b = 0; b < B; b++) {
        labels[b] = label;
        nulls[b] = c->sd.n_labels;
    }
    terms[n++] = (ds_state_cond_term){.labels = labels, .weight = weight * guidance};
    if (guidance != 1.0) terms[n++] = (ds_state_cond_term){.labels = nulls, .weight = weight * (1.0 - guidance)};
    return n;
}

void numbered_path(const char *path, int i, char *out, size_t len) {
    static const char ext[] = ".safetensors";
    size_t n = strlen(path), e = sizeof ext - 1;
    if (n > e && strcmp(path + n - e, ext) == 0) snprintf(out, len, "%.*s-%d%s", (int)(n - e), path, i, ext);
    else snprintf(out, len, "%s-%d", path, i);
}

void write_states(const state_ctx *c, int B, const float *x, const char *path, int label, const char *meta) {
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &c->dims, 1);
    float *rec = ds_alloc(sizeof(float) * ds_state_floats(&c->sd.shape));
    for (int b = 0; b < B; b++) {
        ds_state_dit_decode(&c->sd, x + b * c->sd.x_floats, rec);
        ds_state_unpack(&c->sd.shape, rec, &st, 0);
        char file[DS_PATH_MAX + 32], text[512];
        if (B > 1) numbered_path(path, b, file, sizeof file);
        else snprintf(file, sizeof file, "%s", path);
        if (label >= 0) snprintf(text, sizeof text, "label=%s\n%s\n", c->sd.labels[label], meta);
        else snprintf(text, sizeof text, "%s\n", meta);
        ds_state_file_save(file, c->format, &c->dims, &st, 0, label, text);
    }
    ds_free(rec);
    ds_rwkv7_state_destroy(&st);
}

int read_state(const state_ctx *c, const char *path, float *x) {
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &c->dims, 1);
    char *meta = NULL, name[DS_LABEL_MAX];
    ds_state_file_load(path, &c->dims, &st, &meta);
    float *rec = ds_alloc(sizeof(float) * ds_state_floats(&c->sd.shape));
    ds_state_pack(&c->sd.shape, &st, 0, rec);
    ds_state_dit_encode(&c->sd, rec, x);
    int label = -1;
    if (ds_ckpt_meta_value(meta, "label", name, sizeof name))
        label = ds_label_lookup(path, name, c->sd.n_labels, c->sd.labels);
    ds_free(rec);
    free(meta);
    ds_rwkv7_state_destroy(&st);
    return label;
}

int label_arg(const state_ctx *c, const char *flag, const char *name) {
    char where[96];
    snprintf(where, sizeof where, "%s: %s", c->cmd, flag);
    return ds_label_lookup(where, name, c->sd.n_labels, c->sd.labels);
}
