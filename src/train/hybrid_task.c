/* The `hybrid` task for the shared loop (loop.c): the part-B hybrid of include/dreamstate/hybrid.h
 * (src/hybrid/README.md) trained from the RWKV-7 weights of hybrid.init on the lm task's data.
 *
 * Data: global sample s is the window the lm task draws for s (ds_train_sample_batch), and the
 * hybrid's own draws (t, eps, eps*, condition drop) are keyed by the same sample number, so a step is
 * the same on any rank count. hybrid.lm_warmup_steps: the first steps train the DiT on L_pd alone.
 *
 * Trainable set: the hybrid's flat array (DiT, alpha logits, and with hybrid.train_static 1 the
 * RWKV-7), AdamW groups from its tensor table (lr_scale, weight-decay flag). hybrid.matrices none is
 * the static fine-tuning baseline: no DiT, the RWKV-7 trains on the same windows and scored positions.
 * Checkpoints hold that table (dit.*, alpha.logit, rwkv7.*) and the moments. Frozen static weights
 * are not stored: they are read from hybrid.init again on resume, and the signature (model= in the
 * metadata, which resume compares) carries their CRC-32C with the hybrid's layout, so a resume with
 * other init weights or another layout is refused.
 *
 * Throughput unit: tokens read, ctx_len per window (the LM loss scores the ctx_len - prefix of them
 * at positions >= prefix). FLOPs per token: the RWKV-7's training matmuls (with frozen static weights
 * without their weight gradients, src/rwkv7/README.md §3.4, but with the generated matrices') plus the
 * DiT's, about 3x the forward of its 2 samples per (sequence, targeted layer), spread over the window's
 * tokens.
 *
 * Held-out evaluation: train.eval_batches x batch_size windows spread evenly over the held-out stream
 * (as `dreamstate eval` places them), dealt out over ranks, sums allreduced: L_LM on positions >=
 * prefix (val_loss, val_ppl) and the eval-path L_pd (val_loss_pd), next to base_val_loss, the same
 * score of hybrid.init alone (the untouched RWKV-7, computed once at start), and the estimated
 * training FLOPs per token and per optimizer step (batch_size windows of ctx_len tokens). */
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/hybrid.h"
#include "dreamstate/train.h"
#include "dreamstate/weights.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { RNG_STREAM_HYBRID = 0x48594252 /* "HYBR": seed of the hybrid's draws */ };
static const char matrix_letter[] = "rkv";
static const char *const condition_names[] = {"first_token", "mean_prefix", "attn_prefix", "ln_out_prefix"};

typedef struct {
    const ds_config *cfg;
    ds_hybrid h;
    ds_dataset *train, *valid;
    ds_sample_order order;
    int micro, T;
    uint64_t draw_seed;
    int32_t *tokens, *targets, *window;
    int32_t *cond_tokens, *cond_scratch;  /* hybrid.shuffle_condition: the windows the conditions are read from */
    double step_sums[4];   /* this rank's lm_sum, lm_count, pd_sum, pd_count since the last step line */
    double base_loss;      /* held-out L_LM of hybrid.init alone */
    double flops_per_token;
} hybrid_task;

/* Appends one `,"key":value` field if it fits whole, so a full buffer still holds valid JSON. */
__attribute__((format(printf, 3, 4))) static void append_field(char *json, size_t len, const char *fmt, ...) {
    char field[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(field, sizeof field, fmt, ap);
    va_end(ap);
    size_t used = strlen(json);
    if (n > 0 && (size_t)n < sizeof field && used + (size_t)n < len) memcpy(json + used, field, (size_t)n + 1);
}

/* Ascending layer indices as ranges: "0-3,7". */
static void format_layers(const int *layers, int n, char *buf, size_t len) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n && used < len; i++) {
        int j = i;
        while (j + 1 < n && layers[j + 1] == layers[j] + 1) j++;
        used += (size_t)snprintf(buf + used, len - used, j > i ? "%s%d-%d" : "%s%d", i ? "," : "", layers[i], layers[j]);
        i = j;
    }
}

static double hy_micro_step(void *ctx, int64_t step, uint64_t first, int n, float weight, ds_grad_sync *sync) {
    hybrid_task *k = ctx;
    ds_train_sample_batch(k->train, &k->order, first, n, k->T, k->tokens, k->targets, k->window);
    /* shuffle_condition: sample s reads its condition from the window of sample s + 1, a function of the
     * global sample number alone, so any rank count and a resume see the same pairs */
    if (k->cond_tokens)
        ds_train_sample_batch(k->train, &k->order, first + 1, n, k->T, k->cond_tokens, k->cond_scratch, k->window);
    /* the warm-up teaches the denoiser before its noisy early matrices reach the LM (src/hybrid/README.md §1.6); the static
     * baseline has no DiT and trains on L_LM from the first step */
    int warm = k->h.d.n_targets > 0 && step < k->cfg->hybrid.lm_warmup_steps;
    k->h.d.lambda_lm = warm ? 0.0 : k->cfg->hybrid.lambda_lm;
    ds_hybrid_losses L;
    double total = ds_hybrid_forward_backward(&k->h, n, k->T, k->tokens, k->targets, k->cond_tokens, k->draw_seed, first,
                                              weight, &L);
    ds_grad_sync_ready(sync, 0, k->h.n_params);
    k->step_sums[0] += L.lm_sum;
    k->step_sums[1] += L.lm_count;
    k->step_sums[2] += L.pd_sum;
    k->step_sums[3] += L.pd_count;
    return total;
}

static void hy_step_fields(void *ctx, char *json, size_t len) {
    hybrid_task *k = ctx;
    double *s = k->step_sums;
    ds_dist_sum_doubles(s, 4);
    append_field(json, len, ",\"loss_lm\":%.10f", s[1] > 0 ? s[0] / s[1] : 0.0);
    append_field(json, len, ",\"loss_pd\":%.10f", s[3] > 0 ? s[2] / s[3] : 0.0);
    memset(s, 0, sizeof k->step_sums);
    const ds_hybrid *h = &k->h;
    float alpha[DS_HYBRID_MAX_TARGETS * 3];
    ds_hybrid_alpha(h, alpha);
    for (int j = 0; j < h->d.n_targets; j++)
        for (int mi = 0; mi < h->n_mat; mi++)
            append_field(json, len, ",\"alpha_%d_%c\":%.6f", h->d.targets[j], matrix_letter[h->mats[mi]],
                         alpha[j * h->n_mat + mi]);
}

/* Window w of the W held-out windows, at offset span w / (W - 1) of the stream: tokens [T + 1] into window. */
static void read_held_out(hybrid_task *k, int64_t w, int64_t W) {
    uint64_t span = ds_dataset_num_tokens(k->valid) - (uint64_t)k->T - 1;
    ds_dataset_read(k->valid, W > 1 ? span * (uint64_t)w / (uint64_t)(W - 1) : 0, (size_t)k->T + 1, k->window);
}

/* Sums (lm nats, scored tokens, pd, pd samples) over all ranks of the held-out windows (read_held_out),
 * rank r taking w = r, r + ranks, ...; with shuffle_condition window w's condition is read from window
 * (w + 1) mod W, as in training from another window. `base`: hybrid.init alone (the RWKV-7 with its
 * static weights) instead of the hybrid. */
static void eval_sums(hybrid_task *k, int base, double sums[4]) {
    const ds_config *cfg = k->cfg;
    int T = k->T, P = cfg->hybrid.prefix, ranks = ds_dist_size();
    int64_t W = (int64_t)cfg->train.eval_batches * cfg->train.batch_size;
    memset(sums, 0, 4 * sizeof(double));
    for (int64_t w = ds_dist_rank(); w < W;) {
        int nb = 0;
        for (; nb < k->micro && w < W; nb++, w += ranks) {
            if (k->cond_tokens && !base) {
                read_held_out(k, (w + 1) % W, W);
                memcpy(k->cond_tokens + (int64_t)nb * T, k->window, sizeof(int32_t) * T);
            }
            read_held_out(k, w, W);
            memcpy(k->tokens + (int64_t)nb * T, k->window, sizeof(int32_t) * T);
            memcpy(k->targets + (int64_t)nb * T, k->window + 1, sizeof(int32_t) * T);
        }
        if (base) {
            double count = 0;
            for (int64_t i = 0; i < (int64_t)nb * T; i++) {
                if (i % T < P) k->targets[i] = -1;
                count += k->targets[i] >= 0;
            }
            sums[0] += ds_rwkv7_forward(&k->h.model, nb, T, k->tokens, k->targets, 1.0f, 0.0f, NULL, NULL, NULL) * count;
            sums[1] += count;
        } else {
            ds_hybrid_losses L;
            ds_hybrid_eval(&k->h, nb, T, k->tokens, k->targets, k->cond_tokens, &L);
            sums[0] += L.lm_sum, sums[1] += L.lm_count, sums[2] += L.pd_sum, sums[3] += L.pd_count;
        }
    }
    ds_dist_sum_doubles(sums, 4);
}

static double hy_eval(void *ctx, char *json, size_t len) {
    hybrid_task *k = ctx;
    double s[4];
    eval_sums(k, 0, s);
    double lm = s[0] / s[1];
    append_field(json, len, ",\"val_ppl\":%.4f", exp(lm));
    if (s[3] > 0) append_field(json, len, ",\"val_loss_pd\":%.6f", s[2] / s[3]);  /* the diffusion generator's */
    append_field(json, len, ",\"base_val_loss\":%.6f,\"base_val_ppl\":%.4f", k->base_loss, exp(k->base_loss));
    /* the cost of a variant independent of the machine's other load (the step lines have tokens/s) */
    append_field(json, len, ",\"train_flops_per_token\":%.6g,\"train_flops_per_step\":%.6g", k->flops_per_token,
                 k->flops_per_token * k->T * k->cfg->train.batch_size);
    return lm;
}

/* model= of the checkpoints: everything that gives the trainable floats their meaning, and the CRC of
 * the static weights they were trained against. */
static void hybrid_signature(const ds_hybrid *h, int shuffle, uint32_t init_crc, char *buf, size_t len) {
    const ds_hybrid_dims *d = &h->d;
    char rwkv[256], layers[128], mats[4] = {0}, param[32] = "full", alpha[32] = "learned", scope[160] = "";
    ds_weights_signature(&d->model, rwkv, sizeof rwkv);
    const char *statics = d->train_static ? "trained" : "frozen";
    if (d->n_static_layers > 0) {  /* restricted: the signatures of the other runs stay as they were */
        char smats[4] = {0};
        for (int mat = 0, i = 0; mat < 3; mat++)
            if (d->static_matrices & (1 << mat)) smats[i++] = matrix_letter[mat];
        format_layers(d->static_layers, d->n_static_layers, layers, sizeof layers);
        snprintf(scope, sizeof scope, " targeted=%s:%s", layers, smats);
        statics = "targeted";
    }
    int n;
    if (d->n_targets == 0) {
        n = snprintf(buf, len, "hybrid %s static-baseline%s init=%08x", rwkv, scope, init_crc);
    } else {
        format_layers(d->targets, d->n_targets, layers, sizeof layers);
        for (int mi = 0; mi < h->n_mat; mi++) mats[mi] = matrix_letter[h->mats[mi]];
        if (d->param == DS_HYBRID_LOWRANK) snprintf(param, sizeof param, "lowrank:%d", d->rank);
        if (!d->learn_alpha) snprintf(alpha, sizeof alpha, "fixed:%g", d->alpha_init);
        n = snprintf(buf, len, "hybrid %s layers=%s mats=%s param=%s cond=%s%s P=%d alpha=%s t*=%d sched=%s static=%s "
                     "dit=%d,%d,%d,%d,%d%s init=%08x", rwkv, layers, mats, param, condition_names[d->condition],
                     shuffle ? ":shuffled" : "", d->prefix, alpha, d->t_star,
                     d->schedule == DS_SCHEDULE_COSINE ? "cosine" : "linear", statics, d->dit.hidden, d->dit.depth,
                     d->dit.heads, d->dit.patch_size, d->dit.mlp_ratio,
                     d->generator == DS_HYBRID_DIRECT ? " gen=direct" : "", init_crc);
    }
    if (n < 0 || (size_t)n >= len)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid: the model description does not fit a checkpoint signature (too many layers?)");
}

/* Extra metadata lines, for tools that rebuild the hybrid from a checkpoint. */
static void hybrid_meta(const ds_config *cfg, const ds_hybrid *h, char *buf, size_t len) {
    const ds_hybrid_config *hc = &cfg->hybrid;
    char rwkv[256], layers[128];
    ds_weights_signature(&h->d.model, rwkv, sizeof rwkv);
    format_layers(h->d.targets, h->d.n_targets, layers, sizeof layers);
    int n = snprintf(buf, len, "rwkv_model=%s\nhybrid_init=%s\nlayers=%s\nmatrices=%s\nparam=%s\ngenerator=%s\nrank=%d\n"
                     "condition=%s\nshuffle_condition=%d\nprefix=%d\nalpha=%s\nalpha_init=%.17g\nt_star=%d\nschedule=%s\n"
                     "train_static=%d\nstatic_scope=%s\ndit=%d,%d,%d,%d,%d\ntokenizer=%s\n", rwkv, hc->init, layers,
                     hc->matrices, hc->param, hc->generator, hc->rank, hc->condition, hc->shuffle_condition, hc->prefix,
                     hc->alpha, hc->alpha_init, hc->t_star, cfg->diffusion.schedule, hc->train_static, hc->static_scope,
                     cfg->dit.hidden, cfg->dit.depth, cfg->dit.heads, cfg->dit.patch_size, cfg->dit.mlp_ratio,
                     cfg->data.tokenizer);
    if (n < 0 || (size_t)n >= len) ds_die(DS_EXIT_BAD_INPUT, "%s: hybrid.init path too long for the checkpoint metadata", hc->init);
}

void ds_hybrid_shape(const ds_config *cfg, ds_task_shape *s) {
    if (!cfg->hybrid.init[0])
        ds_die(DS_EXIT_BAD_INPUT, "%s: hybrid.init: run.task hybrid starts from RWKV-7 weights (a .ckpt of `dreamstate "
               "train` or a .safetensors)", cfg->source);
    *s = (ds_task_shape){.kind = DS_TASK_HYBRID, .cfg = cfg, .ctx_len = cfg->train.ctx_len,
                         .grad_checkpoint = cfg->train.grad_checkpoint};
    ds_hybrid_dims_from_config(&s->hybrid, cfg);
}

void ds_hybrid_workload(const ds_task_shape *s, int micro, ds_task_workload *w) {
    const ds_hybrid_dims *d = &s->hybrid;
    int T = s->ctx_len;
    ds_hybrid_sizes z = ds_hybrid_sizes_of(d, micro, T);
    /* the RWKV-7 runs a micro-batch at once, in training and in the held-out scores (eval_sums: the hybrid
     * and hybrid.init alone), with its copies of tokens and targets; beside them the task's batch; the
     * gradient is handed over when the micro-batch is done */
    *w = (ds_task_workload){.unit = "tokens", .units_per_sample = T, .n_params = z.n_params,
                            .flops_per_unit = z.flops_per_sequence / T,
                            .recompute_flops_per_unit =
                                s->grad_checkpoint ? ds_rwkv7_recompute_flops_per_token(&d->model) : 0,
                            .activation_bytes = 4.0 * ((double)ds_rwkv7_activation_floats(&d->model, micro, T,
                                                                                          s->grad_checkpoint) +
                                                       (double)z.dit_activation_floats) +
                                                8.0 * micro * T + 8.0 * micro * T,
                            .held_bytes = 4.0 * ((double)z.model_floats + z.work_floats),
                            .bf16_operand_bytes = ds_rwkv7_bf16_operand_bytes(&d->model, micro, T), .head_begin = z.n_params,
                            .layer_begin = z.n_params, .probe_depth = d->n_targets > 0 ? d->dit.depth : -1};
}

typedef struct {
    ds_hybrid h;
    ds_probe_batch in;
} hybrid_probe;

static void probe_step(void *ctx) {
    hybrid_probe *p = ctx;
    ds_hybrid_forward_backward(&p->h, p->in.B, p->in.T, p->in.tokens, p->in.targets, NULL, 2, 0, 1.0f / (float)p->in.B,
                               NULL);
}

static void probe_destroy(void *ctx) {
    hybrid_probe *p = ctx;
    ds_probe_batch_free(&p->in);
    ds_hybrid_destroy(&p->h);
    ds_free(p);
}

void ds_hybrid_probe(const ds_task_shape *s, int micro, ds_task_probe *out) {
    hybrid_probe *p = ds_alloc(sizeof *p);
    ds_hybrid_create(&p->h, &s->hybrid);
    p->h.model.grad_checkpoint = s->grad_checkpoint;
    ds_fill_pattern(p->h.params, p->h.n_params, 0.1f);
    if (!s->hybrid.train_static || s->hybrid.n_static_layers > 0) ds_fill_pattern(p->h.model.params, p->h.model.n_params, 0.1f);
    p->in = ds_probe_batch_random(micro, s->ctx_len, s->hybrid.model.vocab_size);
    *out = (ds_task_probe){.ctx = p, .n_params = p->h.n_params, .grads = p->h.grads, .step = probe_step,
                           .destroy = probe_destroy};
}

int ds_train_hybrid(const ds_config *cfg) {
    ds_train_catch_signals();
    ds_train_init_compute(cfg);
    const ds_hybrid_config *hc = &cfg->hybrid;
    ds_task_shape shape;
    ds_hybrid_shape(cfg, &shape);
    hybrid_task k = {.cfg = cfg, .T = cfg->train.ctx_len};
    int accum, T = k.T;
    ds_train_batching(cfg, &k.micro, &accum);
    char train_path[DS_PATH_MAX + 64];
    ds_train_open_data(cfg, &k.train, &k.valid, &k.order, train_path, sizeof train_path);

    const ds_hybrid_dims d = shape.hybrid;
    ds_task_workload work;
    ds_hybrid_workload(&shape, k.micro, &work);
    ds_hybrid_create(&k.h, &d);
    k.h.model.grad_checkpoint = cfg->train.grad_checkpoint;
    ds_weights_load(&k.h.model, hc->init);
    ds_hybrid_init_weights(&k.h, (uint64_t)cfg->run.seed);
    k.draw_seed = ds_rng_u64((uint64_t)cfg->run.seed, RNG_STREAM_HYBRID, 0);
    uint32_t init_crc = ds_crc32c(0, k.h.model.params, sizeof(float) * (size_t)k.h.model.n_params);
    k.tokens = ds_alloc(sizeof(int32_t) * k.micro * T);
    k.targets = ds_alloc(sizeof(int32_t) * k.micro * T);
    k.window = ds_alloc(sizeof(int32_t) * (T + 1));
    if (hc->shuffle_condition) {
        k.cond_tokens = ds_alloc(sizeof(int32_t) * k.micro * T);
        k.cond_scratch = ds_alloc(sizeof(int32_t) * k.micro * T);
    }

    ds_hybrid *h = &k.h;
    ds_optim_group *groups = ds_alloc(sizeof(ds_optim_group) * h->n_tensors);
    ds_tensor *tensors = ds_alloc(sizeof(ds_tensor) * h->n_tensors);
    for (int i = 0; i < h->n_tensors; i++) {
        const ds_param_tensor *t = &h->tensors[i];
        groups[i] = (ds_optim_group){t->offset, t->numel, t->lr_scale, t->weight_decay};
    }
    ds_param_views(h->n_tensors, h->tensors, h->params, tensors);
    int64_t nm = (int64_t)d.n_targets * h->n_mat;
    ds_task task = {.name = "hybrid", .params = h->params, .grads = h->grads, .n_params = h->n_params,
                    .n_groups = h->n_tensors, .groups = groups, .n_tensors = h->n_tensors, .tensors = tensors,
                    .unit = work.unit, .units_per_sample = work.units_per_sample,
                    .flops_per_unit = work.flops_per_unit, .activation_bytes = work.activation_bytes, .ctx = &k,
                    .micro_step = hy_micro_step, .eval = hy_eval, .step_fields = hy_step_fields};
    k.flops_per_token = task.flops_per_unit;
    hybrid_signature(h, hc->shuffle_condition, init_crc, task.signature, sizeof task.signature);
    hybrid_meta(cfg, h, task.meta, sizeof task.meta);

    double base[4];
    eval_sums(&k, 1, base);
    k.base_loss = base[0] / base[1];
    char rwkv[256], layers[128];
    ds_weights_signature(&d.model, rwkv, sizeof rwkv);
    format_layers(d.targets, d.n_targets, layers, sizeof layers);
    int64_t n_dit = d.n_targets > 0 ? h->dit.n_params : 0;
    const char *statics = h->n_static > 0 ? ", W_r/W_k/W_v of the RWKV-7" : d.train_static ? ", the RWKV-7" : "";
    ds_log("dreamstate train: task hybrid, %s, %.3fM trainable parameters (DiT %.3fM, %lld alpha logit(s)%s)",
           cfg->run.name, h->n_params / 1e6, n_dit / 1e6, (long long)nm, statics);
    if (h->n_static > 0)
        ds_log("  init %s: %s, only %d matrices W_r/W_k/W_v of layer(s) %s trained (stored in checkpoints), the rest "
               "frozen (re-read from hybrid.init on resume)", hc->init, rwkv, h->n_static, hc->layers);
    else
        ds_log("  init %s: %s, %s", hc->init, rwkv,
               d.train_static ? "trained (stored in checkpoints)" : "frozen (re-read from hybrid.init on resume)");
    if (d.n_targets > 0)
        ds_log("  generates W_%s of layer(s) %s (%s, %s generator), condition %s%s, alpha %s (init %g), lambda_lm %g (0 "
               "for the first %lld steps), lambda_pd %g, t* %d", hc->matrices, layers, hc->param, hc->generator,
               hc->condition, hc->shuffle_condition ? " read from another window (shuffled)" : "", hc->alpha,
               hc->alpha_init, hc->lambda_lm, (long long)hc->lm_warmup_steps, hc->lambda_pd, hc->t_star);
    else
        ds_log("  static baseline: no generated matrices, the RWKV-7 fine-tunes on the same windows");
    ds_log("  data %s: %llu tokens (valid %llu); L_LM on positions >= %d (%d of %d tokens per window)", train_path,
           (unsigned long long)ds_dataset_num_tokens(k.train), (unsigned long long)ds_dataset_num_tokens(k.valid),
           hc->prefix, T - hc->prefix, T);
    if (k.order.magic_prime)
        ds_log("  sampler rwkv_lm: magic prime %llu (RWKV-LM's windows)", (unsigned long long)k.order.magic_prime);
    ds_log("  held-out L_LM of hybrid.init alone on those positions: %.4f (perplexity %.2f)", k.base_loss,
           exp(k.base_loss));
    int rc = ds_train_run(cfg, &task);
    ds_free(tensors); ds_free(groups);
    ds_free(k.tokens); ds_free(k.targets); ds_free(k.window); ds_free(k.cond_tokens); ds_free(k.cond_scratch);
    ds_hybrid_destroy(&k.h);
    ds_dataset_close(k.train);
    ds_dataset_close(k.valid);
    return rc;
}
