/* Using a trained state DiT (src/dit/README.md §3.6): what sample-state, interpolate-state and
 * edit-state share (private to src/cli). States travel as state files (states.h; either format) of
 * the RWKV-7 the model was trained on; only the modelled layers' WKV matrices come from the DiT, the
 * rest of a generated state is zero (src/dit/README.md §3.7). */
#ifndef DREAMSTATE_CLI_STATE_MODEL_H
#define DREAMSTATE_CLI_STATE_MODEL_H

#include "dreamstate/state_dit_file.h"
#include "dreamstate/states.h"

/* The model, the RWKV-7 dims of its states, and the sampler options of one command. */
typedef struct {
    const char *cmd;
    ds_state_dit sd;
    ds_rwkv7_dims dims;
    ds_state_sampler sampler;
    double guidance;
    ds_state_file_format format;  /* of the files written */
} state_ctx;

/* Loads the state DiT of `path`; `format`: that of the state files the command writes (given as
 * cli_state_format(...), a bad --format is refused before the model is read). */
void open_model(state_ctx *c, const char *cmd, const char *path, ds_state_file_format format);
/* The values of --sampler, --steps, --eta, --guidance, --seed, --clip, --temperature (NULL = default). */
void sampler_options(state_ctx *c, const char *sampler, const char *steps, const char *eta, const char *guidance,
                     const char *seed, const char *clip, const char *temperature);
/* Condition terms of B samples under label `label` with guidance w (plus the null term when w != 1),
 * each scaled by `weight`; appended to terms, returns the new count. */
int label_terms(const state_ctx *c, int32_t *labels, int32_t *nulls, int B, int label, double weight, double guidance,
                int n, ds_state_cond_term *terms);
/* `path` numbered: path-<i>, or for a path ending in .safetensors, its stem-<i>.safetensors. */
void numbered_path(const char *path, int i, char *out, size_t len);
/* Decodes x [B, x_floats] and writes each sample as a state file in c->format (path, or
 * numbered_path(path, b) for B > 1). */
void write_states(const state_ctx *c, int B, const float *x, const char *path, int label, const char *meta);
/* A state file as the model's normalised x, and its label id from the metadata (-1 if none). */
int read_state(const state_ctx *c, const char *path, float *x);
/* The id of the label `name` given with `flag` (dies naming the known ones). */
int label_arg(const state_ctx *c, const char *flag, const char *name);

#endif
