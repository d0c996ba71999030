/* The state DiT's model file (src/checkpoint/state_dit_file.c): a training checkpoint of `dreamstate
 * train` with run.task = state_diffusion (CHECKPOINT_DIR/step-N.ckpt): tensors "dit.<DiT key>"
 * (trained weights), "ema.<DiT key>" (EMA weights, used for sampling), "norm.mean" / "norm.std"
 * [channels], and the AdamW moments; metadata lines task=state_diffusion, model=<signature>,
 * layers=0,1, condition=label, labels=a,b,c, schedule=linear, dit=hidden,depth,heads,patch,mlp_ratio,
 * state_shape=L,C,H,N,cond_dim,flags, rwkv_model=<RWKV-7 signature>, rwkv_checkpoint=<weights the
 * states came from>, tokenizer=byte. */
#ifndef DREAMSTATE_STATE_DIT_FILE_H
#define DREAMSTATE_STATE_DIT_FILE_H

#include "dreamstate/checkpoint.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/state_dit.h"

#include <stddef.h>

/* "statedit ..." signature of a model: architecture, condition and state geometry. */
void ds_state_dit_signature(const ds_state_dit *s, char *buf, size_t len);
/* The checkpoint's tensors without the moments (dit.*, ema.*, norm.*) into out (capacity
 * 2 * s->dit.n_tensors + 2), their names into names (same capacity); returns the count. */
int ds_state_dit_ckpt_tensors(ds_state_dit *s, ds_tensor *out, char (*names)[80]);
/* The model's metadata lines from layers= to tokenizer= (the training loop adds step=, model=, seed=
 * and task=); rwkv_model, rwkv_checkpoint and tokenizer describe the states it was trained on. Dies
 * (exit 2) if they do not fit in len. */
void ds_state_dit_ckpt_meta(const ds_state_dit *s, const char *rwkv_model, const char *rwkv_checkpoint,
                            const char *tokenizer, char *buf, size_t len);

/* Loads a state-diffusion checkpoint (verified; exit 2 with the reason if it is not one) into a new
 * model with the EMA weights in dit.params. meta_out (may be NULL) gets a malloc'd copy of the
 * metadata. */
void ds_state_dit_load(ds_state_dit *s, const char *path, char **meta_out);
/* The RWKV-7 dims of the states a model was trained on, from its metadata (rwkv_model=). */
void ds_state_dit_rwkv_dims(const char *path, const char *meta, ds_rwkv7_dims *d);

#endif
