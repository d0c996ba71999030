/* The `lm` task for the shared loop (loop.c): RWKV-7 language modelling on token shards or binidx.
 * Global sample s of a step is a window of ctx_len + 1 tokens at an offset drawn from (seed, s), or
 * RWKV-LM's window for s (data.sampler rwkv_lm). Rank 0 alone builds the default corpus. */
#include "dreamstate/train.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/eval.h"
#include "dreamstate/optim.h"
#include "dreamstate/plan.h"
#include "dreamstate/weights.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { RNG_STREAM_DATA = 0x44415441 /* "DATA" */ };

void ds_train_sample_batch(const ds_dataset *ds, const ds_sample_order *order, uint64_t first_sample, int B, int T,
                           int32_t *tokens, int32_t *targets, int32_t *window) {
    uint64_t span = ds_dataset_num_tokens(ds) - (uint64_t)T - 1;
    for (int b = 0; b < B; b++) {
        uint64_t g = first_sample + b;
        uint64_t off = order->magic_prime ? ds_rwkv_lm_offset(order->magic_prime, (uint64_t)T, g)
                                          : ds_rng_u64(order->seed, RNG_STREAM_DATA, g) % (span + 1);
        ds_dataset_read(ds, off, (size_t)T + 1, window);
        memcpy(tokens + (int64_t)b * T, window, sizeof(int32_t) * T);
        memcpy(targets + (int64_t)b * T, window + 1, sizeof(int32_t) * T);
    }
}

ds_optim_group *ds_train_optim_groups(const ds_rwkv7 *m) {
    ds_optim_group *groups = ds_alloc(sizeof(ds_optim_group) * m->n_tensors);
    for (int i = 0; i < m->n_tensors; i++)
        groups[i] = (ds_optim_group){m->tensors[i].offset, m->tensors[i].numel, m->tensors[i].lr_scale,
                                     m->tensors[i].weight_decay};
    return groups;
}

void ds_train_open_data(const ds_config *cfg, ds_dataset **train, ds_dataset **valid, ds_sample_order *order,
                        char *train_path, size_t len) {
    char valid_path[DS_PATH_MAX + 64];
    if (ds_data_paths(cfg, ds_dist_rank() == 0, train_path, len, valid_path, sizeof valid_path)) ds_dist_barrier();
    *train = ds_dataset_open(train_path);
    *valid = ds_dataset_open(valid_path);
    const char *paths[2] = {train_path, valid_path}, *roles[2] = {"training data", "held-out data"};
    const ds_dataset *sets[2] = {*train, *valid};
    ds_tokenizer *tok = ds_tokenizer_open(cfg->data.tokenizer, cfg->data.vocab_file);
    uint64_t need = (uint64_t)cfg->train.ctx_len + 2;
    for (int i = 0; i < 2; i++) {
        ds_dataset_check_tokenizer(sets[i], paths[i], tok);
        if ((int64_t)ds_dataset_vocab_size(sets[i]) > cfg->model.vocab_size)
            ds_die(DS_EXIT_BAD_INPUT, "%s: data vocabulary %u exceeds model.vocab_size %d (every token id must be "
                   "below it)", paths[i], ds_dataset_vocab_size(sets[i]), cfg->model.vocab_size);
        if (ds_dataset_num_tokens(sets[i]) < need)
            ds_die(DS_EXIT_BAD_INPUT, "%s: %llu tokens of %s, fewer than train.ctx_len + 2 = %llu; use more data or a "
                   "shorter train.ctx_len", paths[i], (unsigned long long)ds_dataset_num_tokens(sets[i]), roles[i],
                   (unsigned long long)need);
    }
    ds_tokenizer_free(tok);

    *order = (ds_sample_order){.seed = (uint64_t)cfg->run.seed};
    if (strcmp(cfg->data.sampler, "rwkv_lm") != 0) return;
    uint64_t n = ds_dataset_num_tokens(*train), T = (uint64_t)cfg->train.ctx_len;
    char why[256];
    if (cfg->data.magic_prime == 0) {
        order->magic_prime = ds_rwkv_lm_magic_prime(n, T);
        if (!order->magic_prime)
            ds_die(DS_EXIT_BAD_INPUT, "%s: data.sampler rwkv_lm: no prime P = 2 mod 3 has 0.9 < P / (tokens // "
                   "ctx_len) <= 1 for %llu tokens and ctx_len %llu; use more data or a shorter train.ctx_len",
                   train_path, (unsigned long long)n, (unsigned long long)T);
    } else if (ds_rwkv_lm_check_prime((uint64_t)cfg->data.magic_prime, n, T, why, sizeof why) != 0) {
        ds_die(DS_EXIT_BAD_INPUT, "%s: data.magic_prime %lld %s (the largest that fits is %llu)", train_path,
               (long long)cfg->data.magic_prime, why, (unsigned long long)ds_rwkv_lm_magic_prime(n, T));
    } else {
        order->magic_prime = (uint64_t)cfg->data.magic_prime;
    }
}

static void on_grads_ready(void *ctx, int64_t offset, int64_t numel) {
    ds_grad_sync_ready(ctx, offset, numel);
}

typedef struct {
    const ds_config *cfg;
    ds_rwkv7 model;
    ds_dataset *train, *valid;
    ds_sample_order order;
    int micro, T;
    int32_t *tokens, *targets, *window;
} lm_task;

static void lm_init_params(void *ctx) {
    lm_task *t = ctx;
    ds_rwkv7_init_weights(&t->model, (uint64_t)t->cfg->run.seed);
}

static double lm_micro_step(void *ctx, int64_t step, uint64_t first, int n, float weight, ds_grad_sync *sync) {
    (void)step;
    lm_task *t = ctx;
    ds_train_sample_batch(t->train, &t->order, first, n, t->T, t->tokens, t->targets, t->window);
    t->model.grads_ready_ctx = sync;
    double loss = ds_rwkv7_forward(&t->model, n, t->T, t->tokens, t->targets, weight, (float)t->cfg->optim.l2wrap, NULL,
                                   NULL, NULL);
    ds_rwkv7_backward(&t->model);
    return loss;
}

void ds_lm_workload(const ds_task_shape *s, int micro, ds_task_workload *w) {
    const ds_rwkv7_dims *d = &s->rwkv7;
    int T = s->ctx_len;
    double flops = ds_rwkv7_flops_per_token(d, T);
    /* the model's activations (with train.grad_checkpoint each block's input and one block's internals) and
     * its tokens / targets, and the task's batch buffers; the head's gradient is ready first (its share of
     * the FLOPs), then the layers' from the last, the embedding's last */
    *w = (ds_task_workload){.unit = "tokens", .units_per_sample = T, .n_params = ds_plan_n_params(d),
                            .flops_per_unit = flops,
                            .recompute_flops_per_unit = s->grad_checkpoint ? ds_rwkv7_recompute_flops_per_token(d) : 0,
                            .activation_bytes = 4.0 * ds_rwkv7_activation_floats(d, micro, T, s->grad_checkpoint) +
                                                16.0 * micro * T,
                            .bf16_operand_bytes = ds_rwkv7_bf16_operand_bytes(d, micro, T),
                            .head_begin = ds_plan_layer_begin(d, d->n_layer), .layer_begin = ds_plan_layer_begin(d, 0),
                            .n_layer = d->n_layer, .head_share = 6.0 * d->vocab_size * d->n_embd / flops,
                            .probe_depth = d->n_layer};
}

ds_probe_batch ds_probe_batch_random(int B, int T, int vocab_size) {
    ds_probe_batch b = {B, T, ds_alloc(sizeof(int32_t) * B * T), ds_alloc(sizeof(int32_t) * B * T)};
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        b.tokens[i] = (int32_t)(ds_rng_u64(2, 0, (uint64_t)i) % (uint64_t)vocab_size);
        b.targets[i] = (int32_t)(ds_rng_u64(2, 1, (uint64_t)i) % (uint64_t)vocab_size);
    }
    return b;
}

void ds_probe_batch_free(ds_probe_batch *b) {
    ds_free(b->tokens);
    ds_free(b->targets);
}

typedef struct {
    ds_rwkv7 model;
    ds_probe_batch in;
} lm_probe;

static void lm_probe_step(void *ctx) {
    lm_probe *p = ctx;
    ds_rwkv7_forward(&p->model, p->in.B, p->in.T, p->in.tokens, p->in.targets, 1.0f / ((float)p->in.B * p->in.T),
                     1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&p->model);
}

static void lm_probe_destroy(void *ctx) {
    lm_probe *p = ctx;
    ds_probe_batch_free(&p->in);
    ds_rwkv7_destroy(&p->model);
    ds_free(p);
}

void ds_lm_probe(const ds_task_shape *s, int micro, ds_task_probe *out) {
    lm_probe *p = ds_alloc(sizeof *p);
    ds_rwkv7_create(&p->model, &s->rwkv7);
    p->model.grad_checkpoint = s->grad_checkpoint;
    ds_fill_pattern(p->model.params, p->model.n_params, 0.1f);
    p->in = ds_probe_batch_random(micro, s->ctx_len, s->rwkv7.vocab_size);
    *out = (ds_task_probe){.ctx = p, .n_params = p->model.n_params, .grads = p->model.grads, .step = lm_probe_step,
                           .destroy = lm_probe_destroy};
}

static double lm_eval(void *ctx, char *json, size_t len) {
    (void)json; (void)len;
    lm_task *t = ctx;
    ds_eval_result part = ds_eval_windows(&t->model, t->valid, NULL,
                                          (int64_t)t->cfg->train.eval_batches * t->cfg->train.batch_size,
                                          ds_dist_rank(), ds_dist_size(), t->micro, t->T);
    ds_dist_sum_doubles(part.sums, 3);
    return ds_eval_finish(&part).loss;
}

int ds_train_lm(const ds_config *cfg) {
    ds_train_catch_signals();
    ds_train_init_compute(cfg);
    lm_task t = {.cfg = cfg, .T = cfg->train.ctx_len};
    int accum;
    ds_train_batching(cfg, &t.micro, &accum);
    int T = t.T;
    char train_path[DS_PATH_MAX + 64];
    ds_train_open_data(cfg, &t.train, &t.valid, &t.order, train_path, sizeof train_path);
    double unigram = ds_dist_rank() == 0 ? ds_unigram_entropy_nats(t.train) : 0.0;

    /* A run that resumes (e.g. from weights brought in by `import`) has the shape of its checkpoint. */
    char resume_path[DS_PATH_MAX + 64];
    int resumes = strcmp(cfg->checkpoint.resume, "auto") == 0 &&
                  ds_ckpt_latest_complete(cfg->checkpoint.dir, resume_path, sizeof resume_path, NULL);
    ds_rwkv7_dims d = resumes ? ds_model_dims_for_weights(cfg, resume_path) : ds_rwkv7_dims_from_config(cfg);
    ds_task_shape shape = {.kind = DS_TASK_LM, .cfg = cfg, .ctx_len = T, .grad_checkpoint = cfg->train.grad_checkpoint,
                           .rwkv7 = d};
    ds_task_workload work;
    ds_lm_workload(&shape, t.micro, &work);
    ds_rwkv7_create(&t.model, &d);
    t.model.grad_checkpoint = cfg->train.grad_checkpoint;
    ds_rwkv7_reserve(&t.model, t.micro, T);
    t.model.grads_ready = on_grads_ready;
    ds_optim_group *groups = ds_train_optim_groups(&t.model);
    ds_tensor *tensors = ds_alloc(sizeof(ds_tensor) * (t.model.n_tensors + 2));
    ds_weights_ckpt_tensors(&t.model, NULL, NULL, tensors);  /* the loop adds the moments itself */
    ds_task task = {.name = "lm", .params = t.model.params, .grads = t.model.grads, .n_params = t.model.n_params,
                    .n_groups = t.model.n_tensors, .groups = groups, .n_tensors = t.model.n_tensors,
                    .tensors = tensors, .unit = work.unit, .units_per_sample = work.units_per_sample,
                    .flops_per_unit = work.flops_per_unit, .activation_bytes = work.activation_bytes,
                    .ctx = &t, .init_params = lm_init_params, .micro_step = lm_micro_step, .eval = lm_eval};
    ds_weights_signature(&d, task.signature, sizeof task.signature);
    int64_t n_weights = 0;
    for (int i = 0; i < t.model.n_tensors; i++) n_weights += t.model.tensors[i].numel;
    ds_log("dreamstate train: task lm, %s, %.2fM parameters", cfg->run.name, n_weights / 1e6);
    ds_log("  data %s: %llu tokens (valid %llu), unigram entropy %.4f nats/token", train_path,
           (unsigned long long)ds_dataset_num_tokens(t.train), (unsigned long long)ds_dataset_num_tokens(t.valid),
           unigram);
    if (t.order.magic_prime)
        ds_log("  sampler rwkv_lm: magic prime %llu (RWKV-LM's windows)", (unsigned long long)t.order.magic_prime);
    t.tokens = ds_alloc(sizeof(int32_t) * t.micro * T);
    t.targets = ds_alloc(sizeof(int32_t) * t.micro * T);
    t.window = ds_alloc(sizeof(int32_t) * (T + 1));
    int rc = ds_train_run(cfg, &task);
    ds_free(t.tokens); ds_free(t.targets); ds_free(t.window); ds_free(tensors); ds_free(groups);
    ds_rwkv7_destroy(&t.model);
    ds_dataset_close(t.train);
    ds_dataset_close(t.valid);
    return rc;
}
