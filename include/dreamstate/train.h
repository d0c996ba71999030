/* Training: the loop every task shares (src/train/loop.c, the rank-0 coordinator) and the tasks: `lm`
 * (RWKV-7 language model on token shards, src/train/train.c), `state_diffusion` (the state DiT of
 * part A on a state dataset, src/train/state_diffusion.c), `hybrid` (the part-B hybrid on the lm
 * task's data, src/train/hybrid_task.c) and `state_tuning` (initial WKV states of a frozen RWKV-7 on
 * labelled contexts, src/train/state_tuning.c). */
#ifndef DREAMSTATE_TRAIN_H
#define DREAMSTATE_TRAIN_H

#include "dreamstate/checkpoint.h"
#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/dit.h"
#include "dreamstate/hybrid.h"
#include "dreamstate/optim.h"
#include "dreamstate/rwkv7.h"

#include <stddef.h>

/* What a training task gives the shared loop (src/train/loop.c): its trainable parameters and
 * gradients as one flat array each, AdamW groups over them, the tensors a checkpoint stores (the loop
 * adds the AdamW moments), and callbacks. Every rank holds a full replica; global sample numbers
 * make every step a function of (seed, step) whatever the rank count. */
typedef struct ds_task {
    const char *name;              /* "lm", "state_diffusion", "hybrid", "state_tuning" */
    float *params, *grads;
    int64_t n_params;              /* trainable floats: allreduced, updated, checkpointed with moments */
    int n_groups;
    const ds_optim_group *groups;
    int n_tensors;
    ds_tensor *tensors;            /* everything a checkpoint holds besides the moments */
    char signature[256];           /* model=... in checkpoint metadata; resume refuses another */
    char meta[1024];               /* extra "key=value\n" metadata lines */
    const char *unit;              /* throughput unit: "tokens" or "samples" */
    double units_per_sample;
    double flops_per_unit;         /* training FLOPs per unit for MFU; 0 = not reported */
    double activation_bytes;
    void *ctx;
    /* Fills the parameters of a fresh run, on every rank; not called when a checkpoint is loaded (its
     * weights would overwrite them). May be NULL (the task initialised them itself). */
    void (*init_params)(void *ctx);
    /* Forward and backward of global samples first .. first + n - 1 of `step`; gradients accumulate
     * with the loss scaled by `weight` and each finished range is passed to ds_grad_sync_ready.
     * Returns the mean loss of these samples. */
    double (*micro_step)(void *ctx, int64_t step, uint64_t first, int n, float weight, ds_grad_sync *sync);
    /* After each optimiser update (e.g. EMA); may be NULL. */
    void (*after_update)(void *ctx, int64_t step);
    /* Held-out evaluation, called on every rank together; returns the main held-out loss and may
     * append ,"key":value pairs to json. */
    double (*eval)(void *ctx, char *json, size_t len);
    /* Extra fields of a step's JSON line (e.g. loss terms), appended as ,"key":value; may be NULL. */
    void (*step_fields)(void *ctx, char *json, size_t len);
} ds_task;

/* The loop: micro-batching, gradient allreduce (dist.h), clipping, AdamW with warm-up + cosine,
 * JSONL and human logs with ETA, held-out evaluation, atomic checkpoints, exact resume, stop on
 * SIGUSR1/SIGTERM/SIGINT after a checkpoint. Returns the process exit code. */
int ds_train_run(const ds_config *cfg, ds_task *task);

/* Installs the stop-signal handlers (first thing a task does, so a stop during setup still ends in a
 * checkpoint after one step). A second SIGTERM or SIGINT ends the process at once with status
 * 128 + the signal's number and a line saying that the last checkpoint is intact. */
void ds_train_catch_signals(void);
/* BLIS and OpenMP threads (run.threads, or this rank's share of the node's cores) and the kernel
 * table; before any model work. */
void ds_train_init_compute(const ds_config *cfg);

/* ---- what a task costs, without running it (`dreamstate plan`, src/train/plan.c) ---- */

typedef enum { DS_TASK_LM, DS_TASK_STATE_DIFFUSION, DS_TASK_HYBRID } ds_task_kind;

/* The model a task trains, as far as its cost goes, from the config and the headers of the task's
 * inputs alone (ds_plan_task_shape reads it). */
typedef struct ds_task_shape {
    ds_task_kind kind;
    const ds_config *cfg;        /* state_diffusion, hybrid: where their probes find the inputs' headers */
    int ctx_len;                 /* tokens per sample (lm, hybrid) */
    int grad_checkpoint;         /* train.grad_checkpoint: the RWKV-7 recomputes its blocks (lm, hybrid) */
    ds_rwkv7_dims rwkv7;         /* lm */
    ds_dit_dims dit;             /* state_diffusion: the state DiT (ds_state_dit_dims) */
    int64_t n_stats, n_records;  /* state_diffusion: normalisation statistics, train records */
    ds_hybrid_dims hybrid;       /* hybrid */
} ds_task_shape;

/* What a task holds and computes per rank with micro-batches of `micro` samples: the part of a run
 * that differs between tasks (the loop's own buffers, gradient reduction and optimiser are the same
 * for all). The tasks report these numbers too, so a plan and the run it sizes cannot drift apart. */
typedef struct ds_task_workload {
    const char *unit;            /* throughput unit: "tokens" or "samples" */
    double units_per_sample;
    int64_t n_params;            /* trainable floats: allreduced, AdamW moments */
    double flops_per_unit;       /* training (forward + backward) FLOPs */
    double recompute_flops_per_unit;  /* train.grad_checkpoint: FLOPs its second forward of the blocks adds (time,
                                       * not in MFU) */
    double activation_bytes;     /* of one micro-batch: the models' activations and the task's batch buffers */
    double held_bytes;           /* besides the trainable parameters, their gradients and the optimiser: frozen
                                  * weights, an EMA, work buffers */
    int64_t ema_params;          /* parameters averaged into an EMA after every step (state_diffusion) */
    double bf16_operand_bytes;   /* train.precision bf16: the converted product operands the bf16 backend keeps
                                  * (2 bytes x the largest activation and weight operands; src/blas/bf16.c) */
    /* When backward hands the gradient to ds_grad_sync_ready (the plan's overlap of communication):
     * [head_begin, n_params) after head_share of the backward, then n_layer equal ranges that end at
     * head_begin from layer_begin, the last first; [0, layer_begin) when backward ends. A task that
     * hands over everything at the end: head_begin = layer_begin = n_params, n_layer = 0. */
    int64_t head_begin, layer_begin;
    int n_layer;
    double head_share;
    int probe_depth;             /* layers (lm) or DiT blocks its cost is linear in (-1: none, probe it whole) */
} ds_task_workload;

/* A task's model built from a shape with patterned weights, and one micro-batch of random inputs of
 * the right shape (no data read beyond headers), so that `plan --measure` times the task's own
 * micro-step: forward + backward and what the task does around them, except reading the data. */
typedef struct ds_task_probe {
    void *ctx;
    int64_t n_params;            /* trainable floats of the probed model */
    const float *grads;          /* their gradient, accumulated by step */
    void (*step)(void *ctx);     /* one micro-step */
    void (*after_update)(void *ctx);  /* the task's work after each optimiser update (its EMA); may be NULL */
    void (*destroy)(void *ctx);
} ds_task_probe;

/* A probe's micro-batch of B sequences of T random token ids and targets below vocab_size. */
typedef struct ds_probe_batch {
    int B, T;
    int32_t *tokens, *targets;   /* [B, T] each */
} ds_probe_batch;
ds_probe_batch ds_probe_batch_random(int B, int T, int vocab_size);
void ds_probe_batch_free(ds_probe_batch *b);

/* Per task: the workload at micro-batch `micro`, and a probe of that micro-batch size. */
void ds_lm_workload(const ds_task_shape *s, int micro, ds_task_workload *w);
void ds_lm_probe(const ds_task_shape *s, int micro, ds_task_probe *p);
void ds_state_diffusion_workload(const ds_task_shape *s, int micro, ds_task_workload *w);
void ds_state_diffusion_probe(const ds_task_shape *s, int micro, ds_task_probe *p);
void ds_hybrid_workload(const ds_task_shape *s, int micro, ds_task_workload *w);
void ds_hybrid_probe(const ds_task_shape *s, int micro, ds_task_probe *p);
/* The shapes of the state_diffusion task (from the state dataset's index header) and of the hybrid
 * task (from hybrid.init's header); exit 2 on bad input, with train's messages. */
void ds_state_diffusion_shape(const ds_config *cfg, ds_task_shape *s);
void ds_hybrid_shape(const ds_config *cfg, ds_task_shape *s);

/* Tasks. Each runs the whole job described by cfg and returns the process exit code. */
int ds_train_lm(const ds_config *cfg);
int ds_train_state_diffusion(const ds_config *cfg);
/* run.task hybrid (src/train/hybrid_task.c): the Part-B hybrid fine-tuned from hybrid.init. */
int ds_train_hybrid(const ds_config *cfg);
/* run.task state_tuning (src/train/state_tuning.c): RWKV-PEFT state tuning of the frozen RWKV-7 of
 * state_tuning.init on labelled contexts; writes the tuned states to OUT/states/ at the end. */
int ds_train_state_tuning(const ds_config *cfg);

/* The item that global sample g reads from a set of n items (state records, contexts): position g mod n
 * of a permutation of the items drawn for epoch g / n from (seed, epoch), so every epoch visits each
 * item once, whatever the rank count. *perm (n entries) caches the permutation of epoch *perm_epoch
 * (-1: none yet). */
typedef struct ds_epoch_order {
    uint64_t seed;
    int64_t n, perm_epoch;
    int64_t *perm;
} ds_epoch_order;

void ds_epoch_order_init(ds_epoch_order *o, uint64_t seed, int64_t n);
void ds_epoch_order_free(ds_epoch_order *o);
int64_t ds_epoch_order_item(ds_epoch_order *o, uint64_t g);

/* Rank count, micro-batch and accumulation of cfg.train (dies with a reason if they do not fit). */
void ds_train_batching(const ds_config *cfg, int *micro, int *accum);

/* Which window global sample number g reads (data.sampler). */
typedef struct ds_sample_order {
    uint64_t seed;         /* random: offset drawn from (run.seed, g) over every start that fits */
    uint64_t magic_prime;  /* rwkv_lm (non-zero): RWKV-LM's window for g, ds_rwkv_lm_offset in data.h */
} ds_sample_order;

/* B windows of T + 1 tokens (tokens [B, T], targets [B, T] shifted by one; window: T + 1 scratch) for
 * global samples first_sample .. first_sample + B - 1: a sample's window depends on nothing else, so any
 * rank count sees the same data. */
void ds_train_sample_batch(const ds_dataset *ds, const ds_sample_order *order, uint64_t first_sample, int B, int T,
                           int32_t *tokens, int32_t *targets, int32_t *window);

/* Opens the train and held-out token datasets of cfg (ds_data_paths), checks them against the
 * model (vocabulary) and train.ctx_len, and resolves the sample order (data.sampler; data.magic_prime
 * 0 = the largest fitting prime, else checked against the train data); train_path receives the train
 * path. Exit 2 on bad data. */
void ds_train_open_data(const ds_config *cfg, ds_dataset **train, ds_dataset **valid, ds_sample_order *order,
                        char *train_path, size_t len);

/* AdamW parameter groups of the model's tensors (lr scale, weight decay), malloc'd; n_tensors entries. */
ds_optim_group *ds_train_optim_groups(const ds_rwkv7 *m);

/* `extract-states` (src/train/extract.c): the state dataset (states.h) of a model over labelled contexts. */
typedef struct ds_extract_options {
    const char *checkpoint;   /* weights: .ckpt or .safetensors */
    const char *contexts;     /* JSONL contexts file */
    const char *out_dir;      /* gets states-rRRRRR-of-SSSSS.bin per rank and index.txt */
    const char *labels_from;  /* NULL, or a state-dataset index whose label list (and ids) to use */
    int max_tokens;           /* each context is cut to its first max_tokens tokens */
    int rwkv_state_files;     /* also each record as out_dir/rwkv-states/<context>-<label>.safetensors, an
                               * RWKV-PEFT state file ('/' in a label becomes '_') */
    int random_init;          /* 1: no checkpoint (checkpoint must be NULL): the model of cfg's model.* keys
                               * with the initialisation of run.seed (ds_rwkv7_init_weights), a control of
                               * analyze-states; the index's checkpoint reads "random-init:seed=S" */
    int ln_out;               /* 1: cond also holds DS_COND_LAST_HIDDEN, ln_out(x) of the last token */
} ds_extract_options;

/* Runs the frozen model over every context from the zero state and writes the state dataset. Under
 * MPI rank r takes contexts r, r+R, ... and writes its own shard; rank 0 writes the index after a
 * barrier. Returns the exit code. */
int ds_extract_states(const ds_config *cfg, const ds_extract_options *opt);

#endif
