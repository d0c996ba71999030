/* Run configuration: YAML (libyaml) into typed structs with defaults, `--set section.key=value`
 * overrides, range/consistency checks, and a resolved YAML dump written next to every run's outputs.
 * Errors name the place: "FILE:LINE: section.key: reason" (for --set: "--set section.key: reason").
 * Unknown keys, wrong types and out-of-range values are errors (exit code 2 via ds_die). */
#ifndef DREAMSTATE_CONFIG_H
#define DREAMSTATE_CONFIG_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#define DS_PATH_MAX 1024

typedef struct ds_run_config {
    char name[128];            /* run.name, default "run" */
    char out_dir[DS_PATH_MAX]; /* run.out_dir, default "runs/<name>" (resolved after parsing) */
    int64_t seed;              /* run.seed, default 1234 */
    int threads;               /* run.threads: BLIS/OpenMP threads per rank, 0 = all cores */
    char task[32];             /* run.task: "lm", "state_diffusion", "hybrid" or "state_tuning" */
} ds_run_config;

typedef struct ds_model_config {
    int n_layer;               /* >= 1, default 2 */
    int n_embd;                /* multiple of head_size, default 128 */
    int head_size;             /* must be 64 */
    int vocab_size;            /* default 256 (byte tokenizer); 65536 for the World tokenizer */
    int dim_w, dim_a, dim_v, dim_g;  /* LoRA ranks, 0 = from lora_formula (src/rwkv7/README.md §1) */
    char lora_formula[16];     /* "released" (default) or "current" */
} ds_model_config;

typedef struct ds_data_config {
    char tokenizer[16];        /* "byte" (default) or "world" */
    char vocab_file[DS_PATH_MAX]; /* World vocabulary file; "" = the built-in rwkv_vocab_v20230424.txt */
    char train[DS_PATH_MAX];   /* token shard file, directory of shards, or binidx data */
    char valid[DS_PATH_MAX];   /* held-out data; "" = data.train (or the default corpus's held-out part) */
    char sampler[16];          /* "random" (default) or "rwkv_lm" (RWKV-LM's magic-prime order) */
    int64_t magic_prime;       /* rwkv_lm's prime; 0 = the largest that fits the data */
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
    char precision[8];         /* matrix products: "fp32" (default) or "bf16" (blas.h, ds_blas_set_precision) */
    int skip_nonfinite;        /* steps with a NaN/Inf loss or gradient norm skipped in a row before the
                                * run stops (exit 1); default 0: stop at the first */
    int grad_checkpoint;       /* 1 (true): activation checkpointing per block (src/rwkv7/README.md §3.6) */
    double comm_timeout;       /* seconds a rank waits in one collective during training before it exits
                                * 1 with a message (a dead rank or network); 0 = forever; default 600 */
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
    char resume[16];           /* "auto" (default: resume from the newest valid one), "never" (start
                                * fresh) or "restart" (start fresh, moving an earlier run aside) */
} ds_checkpoint_config;

/* The Diffusion Transformer of either part (state DiT, parameter DiT); src/dit/README.md §1. */
typedef struct ds_dit_config {
    int hidden;                /* d, a multiple of heads and of 4; default 64 */
    int depth;                 /* DiT blocks, default 2 */
    int heads;                 /* default 2 */
    int patch_size;            /* p, divides 64; default 8 (T = 64 tokens) */
    int mlp_ratio;             /* default 4 */
} ds_dit_config;

/* Part A: the state-diffusion task (src/dit/README.md §3). */
typedef struct ds_diffusion_config {
    char states[DS_PATH_MAX];        /* train state-dataset index (extract-states), required */
    char states_valid[DS_PATH_MAX];  /* held-out index for the denoising loss; "" = none */
    char layers[64];                 /* "last" (default), "all", or a list "0,3" of RWKV-7 layers */
    char condition[16];              /* "label" (default), "first_token", "mean_token" */
    char schedule[8];                /* "linear" (default) or "cosine" */
    char normalize[8];               /* statistics per "head" (default) or per "element" */
    char prediction[4];              /* the DiT predicts "eps" (default, the paper) or "v" */
    double p_uncond;                 /* condition dropout for classifier-free guidance, 0.1 */
    double ema;                      /* EMA decay of the weights used for sampling/eval, 0.999 */
    int shuffle_condition;           /* 1: the shuffled-condition control (src/dit/README.md §3.4) */
} ds_diffusion_config;

/* Part B: the hybrid task (src/hybrid/README.md). */
typedef struct ds_hybrid_config {
    char init[DS_PATH_MAX];          /* RWKV-7 weights to start from (.ckpt or .safetensors), required */
    char layers[64];                 /* targeted layers: "last" (default), "all", or a list "0,3" */
    char matrices[8];                /* generated time-mix matrices: "rkv" (default), "r", "kv", ...;
                                      * "none": the static fine-tuning baseline (with train_static 1) */
    char param[8];                   /* "full" (A1, default) or "lowrank" (A2) */
    char generator[16];              /* "diffusion" (default) or "direct" (deterministic hypernetwork, no L_pd) */
    int rank;                        /* r of the low-rank variant, default 32 */
    char condition[16];              /* "first_token" (default), "mean_prefix", "attn_prefix" or "ln_out_prefix" */
    int shuffle_condition;           /* 1: each sequence's condition is read from the next window (a control) */
    int prefix;                      /* P: the LM loss is scored from position P; mean_prefix pools tokens < P */
    char alpha[8];                   /* "learned" (default) or "fixed" */
    double alpha_init;               /* alpha at the start (learned) or throughout (fixed), 0.9 */
    double alpha_lr_scale;           /* lr multiplier of the alpha logits, 10 */
    double lambda_lm, lambda_pd;     /* loss weights, 1 and 0.1 */
    int t_star;                      /* step of the one-step generation path, 199 */
    int train_static;                /* 1: static RWKV-7 weights train too; 0 (default): frozen */
    char static_scope[16];           /* with train_static 1: "all" (default) or "targeted" (W_r, W_k, W_v of
                                      * hybrid.layers only: the generated ones, or all three with matrices none) */
    int64_t lm_warmup_steps;         /* first steps with lambda_lm = 0 (diffusion only), default 0 */
} ds_hybrid_config;

/* RWKV-PEFT state tuning (src/rwkv7/README.md §3.4): trainable initial WKV states of a frozen RWKV-7,
 * trained on labelled contexts (include/dreamstate/states.h). */
typedef struct ds_state_tuning_config {
    char init[DS_PATH_MAX];            /* the frozen RWKV-7 weights (.ckpt or .safetensors), required */
    char contexts[DS_PATH_MAX];        /* train contexts (JSONL), required */
    char contexts_valid[DS_PATH_MAX];  /* held-out contexts for val_loss; "" = the train contexts */
    int per_label;                     /* 1 (true): one set of states per label; 0 (false, default): one set */
    int skip_tokens;                   /* tokens at the start of each context that are not read, default 0 */
} ds_state_tuning_config;

#define DS_CONFIG_MAX_KEYS 128

typedef struct ds_config {
    char source[DS_PATH_MAX];  /* the file it was read from */
    /* Where each key's value came from (indexed like the key table): its line in `source`, or
     * set by --set; neither = the default. Read it through ds_config_origin. */
    int key_line[DS_CONFIG_MAX_KEYS];
    unsigned char key_from_set[DS_CONFIG_MAX_KEYS];
    ds_run_config run;
    ds_model_config model;
    ds_data_config data;
    ds_train_config train;
    ds_optim_config optim;
    ds_checkpoint_config checkpoint;
    ds_dit_config dit;
    ds_diffusion_config diffusion;
    ds_hybrid_config hybrid;
    ds_state_tuning_config state_tuning;
} ds_config;

/* Parses a layer list ("last", "all", or comma-separated indices "0,3") for a model of n_layer layers:
 * fills out (room for n_layer entries, ascending, distinct) and returns the count, or -1 with the
 * reason in why. */
int ds_config_parse_layers(const char *text, int n_layer, int *out, char *why, size_t why_len);

/* Fills defaults, parses `path`, applies the n_overrides "section.key=value" strings in order,
 * then validates (ranges and cross-field rules, e.g. n_embd % head_size) and resolves derived
 * defaults (out_dir, checkpoint.dir). Dies with exit code 2 and a one-line reason on any error. */
void ds_config_load(ds_config *cfg, const char *path, int n_overrides, char **overrides);
/* Defaults only (used by tests and tools). */
void ds_config_defaults(ds_config *cfg);
/* Whether section.name was given (in the file or by --set) rather than defaulted; if so, `where`
 * receives "FILE:LINE: section.name" or "--set section.name" for error messages. */
int ds_config_origin(const ds_config *cfg, const char *section, const char *name, char *where, size_t len);
/* Dies (exit 2, naming where the key came from) unless run.out_dir and checkpoint.dir are directories
 * this process can write in or can be made ones (ds_dir_creatable): `train` checks this first, so a bad
 * path is refused before any work rather than when the first file is written. */
void ds_config_check_run_dirs(const ds_config *cfg);
/* Writes the resolved config as YAML (atomically). Returns 0 on success. */
int ds_config_write(const ds_config *cfg, const char *path);
/* Lists every key with its type, bounds, default and a one-line help (for `--help`). */
void ds_config_print_help(FILE *fp);

#endif
