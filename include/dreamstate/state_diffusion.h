/* DREAMSTATE part A around the state DiT: the model file the `state_diffusion` task writes, and the
 * commands that use it (sample-state, interpolate-state, edit-state, eval-states).
 *
 * Model file: a training checkpoint of `dreamstate train` with run.task = state_diffusion
 * (CHECKPOINT_DIR/step-N.ckpt): tensors "dit.<DiT key>" (trained weights), "ema.<DiT key>" (EMA
 * weights, used for sampling), "norm.mean" / "norm.std" [channels], and the AdamW moments; metadata
 * lines task=state_diffusion, model=<signature>, layers=0,1, condition=label, labels=a,b,c,
 * schedule=linear, dit=hidden,depth,heads,patch,mlp_ratio, state_shape=L,C,H,N,cond_dim,flags,
 * rwkv_model=<RWKV-7 signature>, rwkv_checkpoint=<weights the states came from>, tokenizer=byte. */
#ifndef DREAMSTATE_STATE_DIFFUSION_H
#define DREAMSTATE_STATE_DIFFUSION_H

#include "dreamstate/state_dit.h"

#include <stddef.h>

/* Loads a state-diffusion checkpoint (verified; exit 2 with the reason if it is not one) into a new
 * model with the EMA weights in dit.params. meta_out (may be NULL) gets a malloc'd copy of the
 * metadata. */
void ds_state_dit_load(ds_state_dit *s, const char *path, char **meta_out);
/* The RWKV-7 dims of the states a model was trained on, from its metadata (rwkv_model=). */
void ds_state_dit_rwkv_dims(const char *path, const char *meta, ds_rwkv7_dims *d);
/* "statedit ..." signature of a model: architecture, condition and state geometry. */
void ds_state_dit_signature(const ds_state_dit *s, char *buf, size_t len);

/* Held-out denoising loss (dreamstate.md 6.1 A2): the epsilon-MSE of the weights in dit.params at the
 * fixed base steps ds_state_dit_eval_steps, with one fixed noise draw per record (from seed and the
 * record's index) under the record's own condition. Scores n_records records spread evenly over `set`
 * (record j * N / n_records; all of them when n_records >= N) in batches of B; batch j is this
 * caller's when j mod parts == part. Adds the per-step loss sums (batch mean x batch size) into
 * sums[0 .. DS_STATE_DIT_EVAL_STEPS) and the records scored into sums[DS_STATE_DIT_EVAL_STEPS]; the
 * caller sums over parts and divides. */
#define DS_STATE_DIT_EVAL_STEPS 5
extern const int ds_state_dit_eval_steps[DS_STATE_DIT_EVAL_STEPS];   /* 49, 249, 499, 749, 949 */
void ds_state_dit_eps_mse(ds_state_dit *s, const ds_states *set, int64_t n_records, uint64_t seed, int part, int parts,
                          int B, double *sums);

#endif
