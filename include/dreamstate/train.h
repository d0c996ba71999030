/* The `lm` training task: RWKV-7 language-model training on token shards with AdamW, periodic
 * held-out evaluation, JSONL + human progress logging, atomic checkpoints and exact resume. */
#ifndef DREAMSTATE_TRAIN_H
#define DREAMSTATE_TRAIN_H

#include "dreamstate/config.h"
#include "dreamstate/optim.h"
#include "dreamstate/rwkv7.h"

#include <stddef.h>

/* Runs the whole job described by cfg; returns the process exit code. */
int ds_train_lm(const ds_config *cfg);

/* Train and held-out dataset paths: data.train / data.valid, or the built-in default corpus (built
 * under data/default-<tokenizer>/ on first use). Either output may be NULL. */
void ds_train_data_paths(const ds_config *cfg, char *train, size_t train_len, char *valid, size_t valid_len);

/* AdamW parameter groups of the model's tensors (lr scale, weight decay), malloc'd; n_tensors entries. */
ds_optim_group *ds_train_optim_groups(const ds_rwkv7 *m);

/* Model dimensions from the config (LoRA ranks resolved). */
ds_rwkv7_dims ds_train_model_dims(const ds_config *cfg);

#endif
