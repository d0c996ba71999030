/* Run configuration: YAML (libyaml) into typed structs with defaults, `--set section.key=value`
 * overrides, range/consistency checks, and a resolved YAML dump written next to every run's outputs.
 * Errors name the place: "FILE:LINE: section.key: reason" (for --set: "--set section.key: reason").
 * Unknown keys, wrong types and out-of-range values are errors (exit code 2 via ds_die). */
#ifndef DREAMSTATE_CONFIG_H
#define DREAMSTATE_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define DS_PATH_MAX 1024

typedef struct ds_run_config {
    char name[128];            /* run.name, default "run" */
    char out_dir[DS_PATH_MAX]; /* run.out_dir, default "runs/<name>" (resolved after parsing) */
    int64_t seed;              /* run.seed, default 1234 */
    int threads;               /* run.threads: BLIS/OpenMP threads per rank, 0 = all cores */
    char task[32];             /* run.task: "lm" (later "state_diffusion", "hybrid") */
} ds_run_config;

typedef struct ds_model_config {
    int n_layer;               /* >= 1, default 2 */
    int n_embd;                /* multiple of head_size, default 128 */
    int head_size;             /* must be 64 */
    int vocab_size;            /* default 256 (byte tokenizer); 65536 for the World tokenizer */
    int dim_w, dim_a, dim_v, dim_g;  /* LoRA ranks, 0 = from lora_formula (rwkv7.md 1.1) */
    char lora_formula[16];     /* "released" (default) or "current" */
} ds_model_config;

typedef struct ds_data_config {
    char tokenizer[16];        /* "byte" (default) or "world" */
    char vocab_file[DS_PATH_MAX]; /* rwkv_vocab_v20230424.txt, required for "world" */
    char train[DS_PATH_MAX];   /* token shard file or directory of shards */
    char valid[DS_PATH_MAX];   /* held-out shard file or directory */
} ds_data_config;

typedef struct ds_train_config {
    int ctx_len;               /* T, default 64 */
    int batch_size;            /* global batch: sequences per optimiser step over all ranks, default 8 */
    int micro_batch;           /* sequences per rank per forward/backward; 0 = batch_size / ranks.
                                * Gradient accumulation steps = batch_size / (ranks * micro_batch). */
    int64_t steps;             /* optimiser steps, default 200 */
    int eval_every;            /* steps between held-out evaluations, 0 = only at the end */
    int eval_batches;          /* held-out windows per evaluation = eval_batches x batch_size */
    int log_every;             /* default 1 */
    char grad_reduce[8];       /* "fp64" (default: rank-count independent) or "fp32"; see dist.h */
    int zero_stage;            /* 0: replicated AdamW; 1: moments sharded over ranks (ZeRO-1) */
} ds_train_config;

typedef struct ds_optim_config {
    double lr, lr_final;       /* default 6e-4 -> 6e-5, cosine after warm-up */
    int64_t warmup_steps;      /* default 10 */
    double beta1, beta2, eps;  /* 0.9, 0.99, 1e-18 */
    double weight_decay;       /* 0.001, matrices only */
    double grad_clip;          /* global L2 norm, 1.0; 0 disables */
    double l2wrap;             /* 1e-4 */
} ds_optim_config;

typedef struct ds_checkpoint_config {
    char dir[DS_PATH_MAX];     /* default "<out_dir>/checkpoints" */
    int every;                 /* steps between checkpoints, default 50; 0 = only at the end */
    int keep;                  /* last K kept, default 3 */
    char resume[16];           /* "auto" (default: resume from the newest valid one) or "never" */
} ds_checkpoint_config;

typedef struct ds_config {
    char source[DS_PATH_MAX];  /* the file it was read from */
    ds_run_config run;
    ds_model_config model;
    ds_data_config data;
    ds_train_config train;
    ds_optim_config optim;
    ds_checkpoint_config checkpoint;
} ds_config;

/* Fills defaults, parses `path`, applies the n_overrides "section.key=value" strings in order,
 * then validates (ranges and cross-field rules, e.g. n_embd % head_size) and resolves derived
 * defaults (out_dir, checkpoint.dir). Dies with exit code 2 and a one-line reason on any error. */
void ds_config_load(ds_config *cfg, const char *path, int n_overrides, char **overrides);
/* Defaults only (used by tests and tools). */
void ds_config_defaults(ds_config *cfg);
/* Writes the resolved config as YAML (atomically). Returns 0 on success. */
int ds_config_write(const ds_config *cfg, const char *path);
/* Lists every key with its type, bounds, default and a one-line help (for `--help`). */
void ds_config_print_help(FILE *fp);

#endif
