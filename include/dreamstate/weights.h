/* Model files: moving RWKV-7 weights between files and a model (this project's checkpoints (.ckpt)
 * and safetensors with the official RWKV-LM key names and layouts, src/rwkv7/README.md §5), and the model
 * shapes a run configuration describes (src/checkpoint/weights.c, model_config.c). */
#ifndef DREAMSTATE_WEIGHTS_H
#define DREAMSTATE_WEIGHTS_H

#include "dreamstate/checkpoint.h"
#include "dreamstate/config.h"
#include "dreamstate/hybrid.h"
#include "dreamstate/rwkv7.h"

/* A training checkpoint holds every model tensor under its official name plus the AdamW moments
 * "optim.adamw.m" and "optim.adamw.v" ([n_params] each, in the flat parameter layout). Fills `out`
 * (capacity m->n_tensors + 2) and returns the count. */
int ds_weights_ckpt_tensors(ds_rwkv7 *m, float *adam_m, float *adam_v, ds_tensor *out);
/* "rwkv7 L=.. C=.. V=.. Dw=.. Da=.. Dv=.. Dg=..": stored in checkpoint metadata as model=..., so a
 * checkpoint is never loaded into a model of another shape. */
void ds_weights_signature(const ds_rwkv7_dims *d, char *buf, size_t len);
/* Checkpoint metadata: "step=N\nmodel=SIGNATURE\n" plus `extra` lines. */
void ds_weights_ckpt_meta(const ds_rwkv7_dims *d, int64_t step, const char *extra, char *buf, size_t len);

/* Loads model weights from a .ckpt (optimiser state ignored) or a .safetensors file (by extension).
 * Any problem (missing file, corruption, missing tensor, shape mismatch, a tensor the model does not
 * have, a NaN or Inf value) exits with code 2. A safetensors file may lack layer 0's unused v0/v1/v2
 * (they stay zero). */
void ds_weights_load(ds_rwkv7 *m, const char *path);

/* Model shape of a weights file: a .safetensors with official names (from the tensor shapes: layers,
 * width, vocabulary, every LoRA rank; head size 64 and a 4x channel mix are checked) or a .ckpt (from
 * its model= metadata). Returns 0, or -1 with a one-line reason in err (DS_ERR_LEN bytes). */
int ds_rwkv7_dims_of_file(const char *path, ds_rwkv7_dims *d, char *err);
/* The shape of the weights in `path` for a command given cfg: model.* keys that the config gives
 * must agree with the file (else one line naming both values, exit 2); the others are not used. */
ds_rwkv7_dims ds_model_dims_for_weights(const ds_config *cfg, const char *path);
/* `dreamstate export`: checkpoint -> safetensors (F32, official names and shapes). */
int ds_export_safetensors(const ds_config *cfg, const char *ckpt_path, const char *out_path);
/* `dreamstate import`: safetensors -> the step-0 checkpoint of the configured run (zero optimiser
 * state), from which `train` starts. Refused (exit 2) where an earlier run's files are, unless
 * checkpoint.resume is restart: then they are moved aside first (ds_run_dir_move_aside). */
int ds_import_safetensors(const ds_config *cfg, const char *st_path);

/* The RWKV-7 of cfg->model (LoRA ranks resolved). */
ds_rwkv7_dims ds_rwkv7_dims_from_config(const ds_config *cfg);
/* The hybrid of cfg->model (the shape of hybrid.init's weights when set, from their header), hybrid,
 * dit, diffusion.schedule and p_uncond, optim.l2wrap (layer list parsed and checked; exit 2 with a
 * reason on bad input); hybrid.matrices none (the static baseline) targets no layer. */
void ds_hybrid_dims_from_config(ds_hybrid_dims *d, const ds_config *cfg);

#endif
