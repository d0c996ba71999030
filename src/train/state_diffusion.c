/* The `state_diffusion` task (src/dit/README.md §3.5) for the shared loop. The model file it writes is
 * src/checkpoint/state_dit_file.c's, its held-out loss src/eval/state_dit_loss.c's.
 *
 * Coordinator: global sample g of the run is record perm_e(g mod N) of the train set, e = g / N its
 * epoch and perm_e a permutation drawn from (seed, e); rank r takes the global samples the loop deals
 * it, so the dataset is sharded by (seed, epoch, ranks) and a step trains on the same records on any
 * rank count. The timestep, the noise and the condition dropout of a sample are drawn from (seed, g).
 * Rank 0 computes the normalisation statistics over the whole train split (fixed order, float64)
 * and broadcasts them. Held-out evaluation (ds_state_dit_eps_mse, also used by eval-states): epsilon-MSE
 * of the EMA weights at the fixed steps of A2 (src/eval/README.md §2) with one fixed noise draw per record, over at most
 * eval_batches x batch_size records spread evenly over the set, batches dealt out over ranks and the
 * sums allreduced. */
#include "dreamstate/train.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/dist.h"
#include "dreamstate/eval.h"
#include "dreamstate/state_dit_file.h"
#include "dreamstate/states.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    RNG_STREAM_T = 0x54494d45,     /* "TIME" */
    RNG_STREAM_DROP = 0x44524f50,  /* "DROP" */
    RNG_STREAM_NOISE = 0x4e4f4953, /* "NOIS" */
    SEED_SHUFFLE = 0x53484643,     /* "SHFC": the shuffled-condition control's permutation */
};

typedef struct {
    const ds_config *cfg;
    ds_state_dit sd;
    ds_states *train, *valid;
    int64_t n_train;
    ds_epoch_order order;        /* global sample -> train record */
    ds_epoch_order shuffle;      /* diffusion.shuffle_condition: train record -> the record whose condition it takes */
    float *x0, *xt, *noise, *vec;
    int32_t *t, *labels;
    uint8_t *vec_null;
    int cap;                     /* samples the buffers above hold */
} sd_task;

static void reserve(sd_task *k, int n) {
    if (n <= k->cap) return;
    int64_t X = k->sd.x_floats, V = k->sd.dit.d.cond_dim ? k->sd.dit.d.cond_dim : 1;
    ds_free(k->x0); ds_free(k->xt); ds_free(k->noise); ds_free(k->vec); ds_free(k->t); ds_free(k->labels);
    ds_free(k->vec_null);
    k->x0 = ds_alloc(sizeof(float) * n * X);
    k->xt = ds_alloc(sizeof(float) * n * X);
    k->noise = ds_alloc(sizeof(float) * n * X);
    k->vec = ds_alloc(sizeof(float) * n * V);
    k->t = ds_alloc(sizeof(int32_t) * n);
    k->labels = ds_alloc(sizeof(int32_t) * n);
    k->vec_null = ds_alloc((size_t)n);
    k->cap = n;
}

/* Sample b of a batch: train record r's normalised state and condition (with the shuffled-condition
 * control, the condition of the record the permutation assigns to r). */
static void load_sample(sd_task *k, int64_t r, int b) {
    ds_state_record rec = ds_states_record(k->train, r);
    ds_state_record cond = k->cfg->diffusion.shuffle_condition
                               ? ds_states_record(k->train, ds_epoch_order_item(&k->shuffle, (uint64_t)r))
                               : rec;
    int64_t X = k->sd.x_floats;
    ds_state_dit_encode(&k->sd, rec.state, k->x0 + b * X);
    ds_state_dit_record_cond(&k->sd, &cond, &k->labels[b], k->vec + (int64_t)b * k->sd.dit.d.cond_dim);
    k->vec_null[b] = 0;
}

static ds_dit_cond batch_cond(sd_task *k) {
    return (ds_dit_cond){.labels = k->sd.dit.d.num_classes ? k->labels : NULL,
                         .vec = k->sd.dit.d.cond_dim ? k->vec : NULL, .vec_null = k->vec_null};
}

/* The micro-step on samples 0..n-1 loaded into x0, labels, vec: the timestep, condition drop and noise
 * of global sample first + b, the noised input and the target, forward and backward. */
static double train_batch(sd_task *k, uint64_t first, int n, float weight) {
    uint64_t seed = (uint64_t)k->cfg->run.seed;
    int64_t X = k->sd.x_floats;
    for (int b = 0; b < n; b++) {
        uint64_t g = first + (uint64_t)b;
        k->t[b] = (int32_t)(ds_rng_u64(seed, RNG_STREAM_T, g) % DS_DIFFUSION_STEPS);
        if (ds_rng_uniform(seed, RNG_STREAM_DROP, g) < k->cfg->diffusion.p_uncond) {
            k->labels[b] = k->sd.n_labels;  /* the null label; vector models use vec_null */
            k->vec_null[b] = 1;
        }
        ds_fill_normal_at(k->noise + b * X, X, 1.0, seed, RNG_STREAM_NOISE, g * (uint64_t)X);
    }
    ds_q_sample(&k->sd.process, n, X, k->t, k->x0, k->noise, k->xt);
    ds_state_dit_target(&k->sd, n, k->t, k->x0, k->noise);
    ds_dit_cond cond = batch_cond(k);
    double loss = ds_dit_forward(&k->sd.dit, n, k->xt, k->t, &cond, k->noise, NULL);
    ds_dit_scale_loss(&k->sd.dit, weight);
    ds_dit_backward(&k->sd.dit, NULL);
    return loss;
}

static double sd_micro_step(void *ctx, int64_t step, uint64_t first, int n, float weight, ds_grad_sync *sync) {
    (void)step;
    sd_task *k = ctx;
    reserve(k, n);
    for (int b = 0; b < n; b++) load_sample(k, ds_epoch_order_item(&k->order, first + (uint64_t)b), b);
    double loss = train_batch(k, first, n, weight);
    ds_grad_sync_ready(sync, 0, k->sd.dit.n_params);
    return loss;
}

static void sd_after_update(void *ctx, int64_t step) {
    sd_task *k = ctx;
    /* the EMA starts as a copy, and early on averages over the steps so far (DiT's update_ema uses a
     * fixed decay from a copy; the warm-up keeps short runs from being dominated by the init) */
    double decay = fmin(k->cfg->diffusion.ema, (1.0 + step) / (10.0 + step));
    ds_state_dit_update_ema(&k->sd, decay);
}

static double eval_set(sd_task *k, const ds_states *set, double *per_step) {
    int64_t n = ds_states_get_info(set)->n_records, cap = (int64_t)k->cfg->train.eval_batches * k->cfg->train.batch_size;
    double sums[DS_STATE_DIT_EVAL_STEPS + 1] = {0};
    ds_state_dit_eps_mse(&k->sd, set, n < cap ? n : cap, (uint64_t)k->cfg->run.seed, ds_dist_rank(), ds_dist_size(),
                         k->cap > 0 ? k->cap : 1, sums);
    ds_dist_sum_doubles(sums, DS_STATE_DIT_EVAL_STEPS + 1);
    double mean = 0;
    for (int s = 0; s < DS_STATE_DIT_EVAL_STEPS; s++)
        mean += (per_step[s] = sums[s] / sums[DS_STATE_DIT_EVAL_STEPS]) / DS_STATE_DIT_EVAL_STEPS;
    return mean;
}

static double sd_eval(void *ctx, char *json, size_t len) {
    sd_task *k = ctx;
    double per_step[DS_STATE_DIT_EVAL_STEPS];
    ds_state_dit_swap_ema(&k->sd);
    double train_mse = eval_set(k, k->train, per_step), val = NAN;
    size_t n = strlen(json);
    n += snprintf(json + n, len - n, ",\"train_eps_mse\":%.6f", train_mse);
    if (k->valid) {
        val = eval_set(k, k->valid, per_step);
        for (int s = 0; s < DS_STATE_DIT_EVAL_STEPS && n < len; s++)
            n += snprintf(json + n, len - n, ",\"val_eps_mse_t%d\":%.6f", ds_state_dit_eval_steps[s], per_step[s]);
    }
    ds_state_dit_swap_ema(&k->sd);
    return k->valid ? val : train_mse;
}

static void check_same_dataset(const char *path, const ds_states_info *a, const ds_states_info *b) {
    const ds_state_shape *x = &a->shape, *y = &b->shape;
    if (x->n_layer != y->n_layer || x->n_embd != y->n_embd || x->cond_dim != y->cond_dim || x->flags != y->flags ||
        strcmp(a->model, b->model) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: held-out states of another model or shape than diffusion.states", path);
    if (a->n_labels != b->n_labels) ds_die(DS_EXIT_BAD_INPUT, "%s: another label list than diffusion.states", path);
    for (int i = 0; i < a->n_labels; i++)
        if (strcmp(a->labels[i], b->labels[i]) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: label %d is '%s', diffusion.states has '%s' (extract it with --labels-from)",
                   path, i, b->labels[i], a->labels[i]);
}

/* The layers and DiT architecture that cfg chooses for a dataset of this header. */
static int model_choice(const ds_config *cfg, const ds_states_info *info, int *layers, ds_dit_dims *arch) {
    char why[256];
    int n_layers = ds_config_parse_layers(cfg->diffusion.layers, info->shape.n_layer, layers, why, sizeof why);
    if (n_layers < 0) ds_die(DS_EXIT_BAD_INPUT, "%s: diffusion.layers: %s", cfg->source, why);
    *arch = (ds_dit_dims){.hidden = cfg->dit.hidden, .depth = cfg->dit.depth, .heads = cfg->dit.heads,
                          .patch_size = cfg->dit.patch_size, .mlp_ratio = cfg->dit.mlp_ratio};
    return n_layers;
}

/* The header of the state dataset's index. */
static void read_header(const ds_config *cfg, ds_states_info *info) {
    if (!cfg->diffusion.states[0])
        ds_die(DS_EXIT_BAD_INPUT, "%s: diffusion.states: run.task state_diffusion needs a state dataset (extract-states)",
               cfg->source);
    ds_states_read_info(cfg->diffusion.states, info);
}

void ds_state_diffusion_shape(const ds_config *cfg, ds_task_shape *s) {
    if (cfg->train.grad_checkpoint)
        ds_die(DS_EXIT_BAD_INPUT, "%s: train.grad_checkpoint: activation checkpointing is the RWKV-7's (run.task lm, "
               "hybrid, state_tuning); the state DiT keeps all its activations: set it false", cfg->source);
    ds_states_info info;
    read_header(cfg, &info);
    int layers[DS_STATE_DIT_MAX_LAYERS];
    ds_dit_dims arch;
    int n_layers = model_choice(cfg, &info, layers, &arch);
    *s = (ds_task_shape){.kind = DS_TASK_STATE_DIFFUSION, .cfg = cfg, .n_records = info.n_records,
                         .dit = ds_state_dit_dims(&info.shape, layers, n_layers,
                                                  ds_state_cond_kind_parse(cfg->diffusion.condition), info.n_labels,
                                                  &arch)};
    int64_t channels = s->dit.in_channels;
    s->n_stats = strcmp(cfg->diffusion.normalize, "element") == 0 ? channels * 64 * 64 : channels;
    ds_states_info_free(&info);
}

void ds_state_diffusion_workload(const ds_task_shape *s, int micro, ds_task_workload *w) {
    const ds_dit_dims *d = &s->dit;
    int64_t n = ds_dit_n_params(d), I = d->input_size, G = I / d->patch_size, X = d->in_channels * I * I;
    int64_t V = d->cond_dim ? d->cond_dim : 1;
    /* per sample: reserve's x0, xt, noise, vec, t, labels, vec_null and the DiT's copy of the condition;
     * held: the EMA, the position table, mean and std, the epoch's permutation */
    *w = (ds_task_workload){.unit = "samples", .units_per_sample = 1, .n_params = n,
                            .flops_per_unit = 3 * ds_dit_forward_flops(d),
                            .activation_bytes = 4.0 * ds_dit_activation_floats(d, micro) +
                                                micro * (4.0 * (3 * X + 2 * V) + 14.0),
                            .held_bytes = 4.0 * n + 4.0 * G * G * d->hidden + 8.0 * s->n_stats + 8.0 * s->n_records,
                            /* widest products: the MLP's [micro G^2, 4 hidden] and adaLN's [6 hidden, hidden] */
                            .bf16_operand_bytes = 2.0 * ((double)micro * G * G * 4 * d->hidden + 6.0 * d->hidden * d->hidden),
                            .ema_params = n, .head_begin = n, .layer_begin = n, .probe_depth = d->depth};
}

/* The task's state DiT for cfg and a dataset of this header, with `depth` blocks (< 0: dit.depth),
 * normalisation and prediction as configured (weights and statistics not yet set). */
static void create_model(const ds_config *cfg, const ds_states_info *info, int depth, ds_state_dit *sd) {
    int layers[DS_STATE_DIT_MAX_LAYERS];
    ds_dit_dims arch;
    int n_layers = model_choice(cfg, info, layers, &arch);
    if (depth >= 0) arch.depth = depth;
    ds_state_dit_create(sd, &info->shape, layers, n_layers, ds_state_cond_kind_parse(cfg->diffusion.condition),
                        info->n_labels, info->labels, &arch,
                        strcmp(cfg->diffusion.schedule, "cosine") == 0 ? DS_SCHEDULE_COSINE : DS_SCHEDULE_LINEAR);
    ds_state_dit_set_normalisation(sd, strcmp(cfg->diffusion.normalize, "element") == 0);
    sd->v_prediction = strcmp(cfg->diffusion.prediction, "v") == 0;
}

static void probe_step(void *ctx) {
    sd_task *k = ctx;
    train_batch(k, 0, k->cap, 1.0f / (float)k->cap);
}

static void probe_after_update(void *ctx) {
    sd_task *k = ctx;
    ds_state_dit_update_ema(&k->sd, k->cfg->diffusion.ema);
}

static void free_buffers(sd_task *k) {
    ds_epoch_order_free(&k->order);
    ds_epoch_order_free(&k->shuffle);
    ds_free(k->x0); ds_free(k->xt); ds_free(k->noise); ds_free(k->vec);
    ds_free(k->t); ds_free(k->labels); ds_free(k->vec_null);
    ds_state_dit_destroy(&k->sd);
}

static void probe_destroy(void *ctx) {
    free_buffers(ctx);
    ds_free(ctx);
}

void ds_state_diffusion_probe(const ds_task_shape *s, int micro, ds_task_probe *p) {
    const ds_config *cfg = s->cfg;
    ds_states_info info;
    read_header(cfg, &info);
    sd_task *k = ds_alloc(sizeof *k);
    *k = (sd_task){.cfg = cfg};
    create_model(cfg, &info, s->dit.depth, &k->sd);
    ds_states_info_free(&info);
    ds_fill_pattern(k->sd.dit.params, k->sd.dit.n_params, 0.1f);
    reserve(k, micro);
    ds_fill_normal(k->x0, micro * k->sd.x_floats, 1.0, 2, 0);  /* normalised states; label 0 */
    ds_fill_normal(k->vec, (int64_t)micro * k->sd.dit.d.cond_dim, 1.0, 2, 1);
    ds_dit_reserve(&k->sd.dit, micro);
    *p = (ds_task_probe){.ctx = k, .n_params = k->sd.dit.n_params, .grads = k->sd.dit.grads,
                         .step = probe_step,
                         .after_update = probe_after_update, .destroy = probe_destroy};
}

int ds_train_state_diffusion(const ds_config *cfg) {
    ds_train_catch_signals();
    ds_train_init_compute(cfg);
    ds_task_shape shape;
    ds_state_diffusion_shape(cfg, &shape);  /* checks cfg against the dataset's header */
    sd_task k = {.cfg = cfg};
    k.train = ds_states_open(cfg->diffusion.states);
    const ds_states_info *info = ds_states_get_info(k.train);
    if (cfg->diffusion.states_valid[0]) {
        k.valid = ds_states_open(cfg->diffusion.states_valid);
        check_same_dataset(cfg->diffusion.states_valid, info, ds_states_get_info(k.valid));
    }
    k.n_train = info->n_records;
    if (k.n_train < 1) ds_die(DS_EXIT_BAD_INPUT, "%s: no records", cfg->diffusion.states);
    create_model(cfg, info, -1, &k.sd);
    ds_dit_init_weights(&k.sd.dit, (uint64_t)cfg->run.seed);
    memcpy(k.sd.ema, k.sd.dit.params, sizeof(float) * k.sd.dit.n_params);
    /* normalisation statistics: rank 0 over the whole train split in a fixed order */
    double *sums = ds_alloc(sizeof(double) * 2 * k.sd.n_stats);
    if (ds_dist_rank() == 0)
        for (int64_t i = 0; i < k.n_train; i++) ds_state_dit_norm_accumulate(&k.sd, ds_states_record(k.train, i).state, sums);
    ds_dist_bcast(sums, sizeof(double) * 2 * k.sd.n_stats, 0);
    ds_state_dit_norm_finish(&k.sd, sums, k.n_train);
    ds_free(sums);
    ds_epoch_order_init(&k.order, (uint64_t)cfg->run.seed, k.n_train);
    ds_epoch_order_init(&k.shuffle, (uint64_t)cfg->run.seed ^ SEED_SHUFFLE, k.n_train);  /* its epoch 0 */
    int micro, accum;
    ds_train_batching(cfg, &micro, &accum);
    ds_task_workload work;
    ds_state_diffusion_workload(&shape, micro, &work);
    reserve(&k, micro);
    ds_dit_reserve(&k.sd.dit, micro);

    int cap = 2 * k.sd.dit.n_tensors + 2;
    ds_tensor *tensors = ds_alloc(sizeof(ds_tensor) * cap);
    char (*names)[80] = ds_alloc(sizeof(*names) * cap);
    int n_tensors = ds_state_dit_ckpt_tensors(&k.sd, tensors, names);
    ds_optim_group *groups = ds_alloc(sizeof(ds_optim_group) * k.sd.dit.n_tensors);
    for (int i = 0; i < k.sd.dit.n_tensors; i++)
        groups[i] = (ds_optim_group){k.sd.dit.tensors[i].offset, k.sd.dit.tensors[i].numel, 1.0f,
                                     k.sd.dit.tensors[i].weight_decay};
    ds_task task = {.name = "state_diffusion", .params = k.sd.dit.params, .grads = k.sd.dit.grads,
                    .n_params = k.sd.dit.n_params, .n_groups = k.sd.dit.n_tensors, .groups = groups,
                    .n_tensors = n_tensors, .tensors = tensors, .unit = work.unit,
                    .units_per_sample = work.units_per_sample, .flops_per_unit = work.flops_per_unit,
                    .activation_bytes = work.activation_bytes, .ctx = &k, .micro_step = sd_micro_step,
                    .after_update = sd_after_update, .eval = sd_eval};
    ds_state_dit_signature(&k.sd, task.signature, sizeof task.signature);
    ds_state_dit_ckpt_meta(&k.sd, info->model, info->checkpoint, info->tokenizer, task.meta, sizeof task.meta);
    int64_t n_weights = 0;
    for (int i = 0; i < k.sd.dit.n_tensors; i++) n_weights += k.sd.dit.tensors[i].numel;
    ds_log("dreamstate train: task state_diffusion, %s, %.2fM DiT parameters", cfg->run.name, n_weights / 1e6);
    ds_log("  states %s: %lld records, %d labels; model %s", cfg->diffusion.states, (long long)k.n_train,
           info->n_labels, task.signature);
    ds_log("  %d channel(s) of 64x64 (layers %s x %d heads), %d tokens of %d, condition %s, schedule %s, EMA %g",
           k.sd.channels, cfg->diffusion.layers, info->shape.n_head, k.sd.dit.tokens, k.sd.dit.patch_dim,
           cfg->diffusion.condition, cfg->diffusion.schedule, cfg->diffusion.ema);
    if (k.sd.dit.patch_dim > cfg->dit.hidden)
        ds_log("  warning: patch vectors of %d floats are wider than dit.hidden (%d): the DiT cannot pass a noisy state "
               "through, and the loss at large t stays high; use a smaller dit.patch_size or a wider DiT",
               k.sd.dit.patch_dim, cfg->dit.hidden);
    if (cfg->diffusion.shuffle_condition)
        ds_log("  control: shuffled conditions (each train state paired with the condition of another record)");
    if (k.valid)
        ds_log("  held-out %s: %lld records", cfg->diffusion.states_valid,
               (long long)ds_states_get_info(k.valid)->n_records);
    int rc = ds_train_run(cfg, &task);
    ds_free(tensors); ds_free(names); ds_free(groups);
    free_buffers(&k);
    ds_states_close(k.train);
    if (k.valid) ds_states_close(k.valid);
    return rc;
}
