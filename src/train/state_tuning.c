/* The `state_tuning` task for the shared loop (loop.c): RWKV-PEFT's state tuning (src/rwkv7/README.md
 * §3.4) on labelled contexts. The RWKV-7 of state_tuning.init is frozen; the trainable floats are the
 * sets of initial WKV states, [sets][L][H][64][64], starting at zero: one set per label
 * (state_tuning.per_label true) or one for all contexts.
 *
 * Data: every context is tokenized once; its window is the ctx_len + 1 tokens after its first
 * state_tuning.skip_tokens (fewer for a short context: the rest of the batch row is padding, not
 * scored; a context with fewer than 2 tokens after the skip is not used). Global sample g reads the
 * window ds_epoch_order_item(g) of the train contexts, so a step trains on the same windows on any
 * rank count. A window starts from its label's set (or the one set), token-shift states zero.
 *
 * Loss: the summed cross-entropy of a step's scored tokens / (batch_size x ctx_len), so each scored
 * token weighs the same whatever the micro-batching (= the mean per token when every window is full),
 * with optim.l2wrap's L2Wrap on the gradient.
 *
 * Held-out evaluation: the mean CE per scored token over at most eval_batches x batch_size windows of
 * state_tuning.contexts_valid (else of the train contexts), spread evenly over them, from the tuned
 * states (val_loss) and once at start from the zero state (zero_state_val_loss). Batches of micro_batch
 * windows are dealt out over ranks and each batch's sums land in an array that is zero elsewhere and
 * is summed over ranks (exact), so the numbers do not depend on the rank count.
 *
 * Checkpoints hold the sets ("state.<label>" or "state.shared", [L, H, 64, 64]) and the moments; the
 * frozen weights are read from state_tuning.init again on resume, and the signature carries their
 * CRC-32C, the set count and the CRC of the label list, so a resume with other weights or labels is
 * refused. When the run has reached train.steps (also when a rerun finds it there), rank 0 writes the
 * tuned states to OUT/states/: a state dataset (index.txt and one shard; states.h) with one record per
 * label (its set, or the one set; context -1), which `eval-states --tuned` reads, and one RWKV-PEFT
 * state file per set, <label>.safetensors or shared.safetensors (src/data/rwkv_state.c). */
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/states.h"
#include "dreamstate/train.h"
#include "dreamstate/weights.h"

#include <stdio.h>
#include <string.h>

#define SHARED_NAME "shared"  /* the one set's name when state_tuning.per_label is false */

/* The usable contexts of a file as windows: window i is tokens[i (T + 1) ..] of which len[i] are real. */
typedef struct {
    int64_t n, unused;      /* windows; contexts with fewer than 2 tokens after the skip */
    int32_t *tokens, *len, *label;
} window_set;

typedef struct {
    const ds_config *cfg;
    ds_rwkv7 model;
    ds_rwkv7_tuner tuner;
    ds_contexts *contexts;  /* the train file: its label list names the sets */
    window_set train, valid;
    ds_epoch_order order;
    int T, micro, per_label, n_sets;
    float *params, *grads, *zero_states;
    int32_t *tokens, *targets, *set;  /* one micro-batch */
    double zero_loss;                 /* held-out loss from the zero state */
} tuning_task;

static void load_windows(const tuning_task *k, const ds_contexts *ctx, const ds_tokenizer *tok, window_set *w) {
    int T = k->T, skip = k->cfg->state_tuning.skip_tokens;
    size_t longest = 1;
    for (int64_t i = 0; i < ctx->n; i++) longest = ctx->items[i].len > longest ? ctx->items[i].len : longest;
    int32_t *ids = ds_alloc(sizeof(int32_t) * longest);
    w->tokens = ds_alloc(sizeof(int32_t) * (ctx->n > 0 ? ctx->n : 1) * (T + 1));
    w->len = ds_alloc(sizeof(int32_t) * (ctx->n > 0 ? ctx->n : 1));
    w->label = ds_alloc(sizeof(int32_t) * (ctx->n > 0 ? ctx->n : 1));
    for (int64_t i = 0; i < ctx->n; i++) {
        int64_t n = (int64_t)ds_tokenizer_encode(tok, ctx->items[i].text, ctx->items[i].len, ids) - skip;
        if (n < 2) { w->unused++; continue; }
        w->len[w->n] = (int32_t)(n < T + 1 ? n : T + 1);
        w->label[w->n] = ctx->items[i].label;
        memcpy(w->tokens + w->n * (T + 1), ids + skip, sizeof(int32_t) * w->len[w->n]);
        w->n++;
    }
    ds_free(ids);
}

static void free_windows(window_set *w) { ds_free(w->tokens); ds_free(w->len); ds_free(w->label); }

/* Row b of the batch from window i: inputs, shifted targets, -1 on the padding; its set. */
static void fill_row(tuning_task *k, const window_set *w, int64_t i, int b) {
    int T = k->T, len = w->len[i];
    const int32_t *win = w->tokens + i * (T + 1);
    for (int t = 0; t < T; t++) {
        k->tokens[b * T + t] = t < len - 1 ? win[t] : 0;
        k->targets[b * T + t] = t < len - 1 ? win[t + 1] : -1;
    }
    k->set[b] = k->per_label ? w->label[i] : 0;
}

static double st_micro_step(void *ctx, int64_t step, uint64_t first, int n, float weight, ds_grad_sync *sync) {
    (void)step;
    tuning_task *k = ctx;
    for (int b = 0; b < n; b++) fill_row(k, &k->train, ds_epoch_order_item(&k->order, first + (uint64_t)b), b);
    float scale = weight / ((float)n * k->T);
    double ce = ds_rwkv7_tuner_run(&k->tuner, n, k->T, k->tokens, k->targets, k->set, k->params, k->grads, scale,
                                   (float)k->cfg->optim.l2wrap);
    ds_grad_sync_ready(sync, 0, k->tuner.set_floats * k->n_sets);
    return ce / ((double)n * k->T);
}

/* Mean CE per scored token of the held-out windows (src/train/state_tuning.c header) from `states`. */
static double eval_loss(tuning_task *k, const float *states) {
    const window_set *w = k->valid.n ? &k->valid : &k->train;
    int64_t cap = (int64_t)k->cfg->train.eval_batches * k->cfg->train.batch_size, n = w->n < cap ? w->n : cap;
    int64_t batches = (n + k->micro - 1) / k->micro;
    double *sums = ds_alloc(sizeof(double) * 2 * batches);  /* per batch: CE, scored tokens */
    for (int64_t j = ds_dist_rank(); j < batches; j += ds_dist_size()) {
        int rows = 0;
        for (int64_t q = j * k->micro; q < n && rows < k->micro; q++, rows++) fill_row(k, w, q * w->n / n, rows);
        for (int64_t i = 0; i < (int64_t)rows * k->T; i++) sums[2 * j + 1] += k->targets[i] >= 0;
        sums[2 * j] = ds_rwkv7_tuner_run(&k->tuner, rows, k->T, k->tokens, k->targets, k->set, states, NULL, 0, 0);
    }
    ds_dist_sum_doubles(sums, (int)(2 * batches));
    double ce = 0, count = 0;
    for (int64_t j = 0; j < batches; j++) ce += sums[2 * j], count += sums[2 * j + 1];
    ds_free(sums);
    return ce / count;
}

static double st_eval(void *ctx, char *json, size_t len) {
    tuning_task *k = ctx;
    size_t used = strlen(json);
    snprintf(json + used, len - used, ",\"zero_state_val_loss\":%.6f", k->zero_loss);
    return eval_loss(k, k->params);
}

static const char *set_name(const tuning_task *k, int s) { return k->per_label ? k->contexts->labels[s] : SHARED_NAME; }

/* OUT/states/: the dataset of one record per label, and one RWKV state file per set. */
static void write_states(const tuning_task *k, const char *sig) {
    const ds_config *cfg = k->cfg;
    const ds_rwkv7_dims *d = &k->model.d;
    char dir[DS_PATH_MAX + 16], path[DS_PATH_MAX + 320], file[DS_LABEL_MAX], meta[3 * DS_PATH_MAX + 512];
    snprintf(dir, sizeof dir, "%s/states", cfg->run.out_dir);
    ds_mkdir_p(dir);
    ds_states_info info;
    memset(&info, 0, sizeof info);
    info.shape = ds_state_shape_of(d, 0);
    info.n_records = k->contexts->n_labels;
    info.n_labels = k->contexts->n_labels;
    info.labels = k->contexts->labels;
    info.n_shards = 1;
    info.max_tokens = cfg->state_tuning.skip_tokens + k->T;  /* what the tuning read of each context */
    snprintf(info.model, sizeof info.model, "%s", sig);
    snprintf(info.tokenizer, sizeof info.tokenizer, "%s", cfg->data.tokenizer);
    ds_absolute_path(cfg->state_tuning.init, info.checkpoint, sizeof info.checkpoint);
    ds_absolute_path(cfg->state_tuning.contexts, info.contexts, sizeof info.contexts);
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, d, 1);
    memset(st.data, 0, sizeof(float) * st.numel);
    int64_t per_layer = (int64_t)d->n_embd * 64;
    ds_states_shard shard = {.records = info.n_records};
    snprintf(shard.file, sizeof shard.file, "states-r00000-of-00001.bin");
    snprintf(path, sizeof path, "%s/%s", dir, shard.file);
    ds_state_writer *w = ds_state_writer_open(path, &info.shape);
    for (int s = 0; s < k->n_sets; s++) {  /* sets in label order: each set's records are written with it */
        for (int l = 0; l < d->n_layer; l++)
            memcpy(st.wkv + l * per_layer, k->params + s * k->tuner.set_floats + l * per_layer, sizeof(float) * per_layer);
        for (int label = 0; label < k->contexts->n_labels; label++)
            if (!k->per_label || label == s) ds_state_writer_add(w, label, -1, NULL, &st, 0);
        ds_label_file_name(set_name(k, s), file, sizeof file);
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, file);
        snprintf(meta, sizeof meta, "%s%s%scheckpoint=%s\ncontexts=%s\ntask=state_tuning\n", k->per_label ? "label=" : "",
                 k->per_label ? set_name(k, s) : "", k->per_label ? "\n" : "", info.checkpoint, info.contexts);
        ds_state_file_save(path, DS_STATE_FILE_RWKV, d, &st, 0, -1, meta);
    }
    snprintf(meta, sizeof meta, "model=%s\ncheckpoint=%s\ncontexts=%s\ntask=state_tuning\n", sig, info.checkpoint,
             info.contexts);
    ds_state_writer_commit(w, meta);
    snprintf(path, sizeof path, "%s/index.txt", dir);
    ds_states_write_index(path, &info, &shard);
    ds_rwkv7_state_destroy(&st);
    ds_log("tuned states: %s (%d record(s) for eval-states --tuned) and %d RWKV state file(s) in %s/", path,
           info.n_labels, k->n_sets, dir);
}

int ds_train_state_tuning(const ds_config *cfg) {
    ds_train_catch_signals();
    ds_train_init_compute(cfg);
    const ds_state_tuning_config *sc = &cfg->state_tuning;
    if (!sc->init[0])
        ds_die(DS_EXIT_BAD_INPUT, "%s: state_tuning.init: run.task state_tuning tunes the states of RWKV-7 weights (a "
               ".ckpt of `dreamstate train` or a .safetensors)", cfg->source);
    if (!sc->contexts[0])
        ds_die(DS_EXIT_BAD_INPUT, "%s: state_tuning.contexts: run.task state_tuning needs labelled contexts "
               "(build-contexts)", cfg->source);
    tuning_task k = {.cfg = cfg, .T = cfg->train.ctx_len, .per_label = sc->per_label};
    int accum;
    ds_train_batching(cfg, &k.micro, &accum);

    ds_rwkv7_dims d = ds_model_dims_for_weights(cfg, sc->init);
    ds_tokenizer *tok = ds_tokenizer_open(cfg->data.tokenizer, cfg->data.vocab_file);
    if (ds_tokenizer_vocab_size(tok) > (uint32_t)d.vocab_size)
        ds_die(DS_EXIT_BAD_INPUT, "%s: the %s tokenizer has %u ids, the model of %s only %d", cfg->source,
               cfg->data.tokenizer, ds_tokenizer_vocab_size(tok), sc->init, d.vocab_size);
    k.contexts = ds_contexts_load(sc->contexts, 0, NULL);
    load_windows(&k, k.contexts, tok, &k.train);
    if (k.train.n == 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: no context has 2 tokens after the first state_tuning.skip_tokens (%d); lower it",
               sc->contexts, sc->skip_tokens);
    if (sc->contexts_valid[0]) {
        ds_contexts *held = ds_contexts_load(sc->contexts_valid, k.contexts->n_labels, k.contexts->labels);
        load_windows(&k, held, tok, &k.valid);
        ds_contexts_free(held);
        if (k.valid.n == 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: no context has 2 tokens after the first state_tuning.skip_tokens (%d)",
                   sc->contexts_valid, sc->skip_tokens);
    }
    ds_tokenizer_free(tok);

    ds_rwkv7_create(&k.model, &d);
    ds_weights_load(&k.model, sc->init);
    uint32_t init_crc = ds_crc32c(0, k.model.params, sizeof(float) * (size_t)k.model.n_params);
    ds_rwkv7_tuner_init(&k.tuner, &k.model);
    k.model.grad_checkpoint = cfg->train.grad_checkpoint;
    ds_rwkv7_reserve(&k.model, k.micro, k.T);
    k.n_sets = k.per_label ? k.contexts->n_labels : 1;
    int64_t n_params = k.tuner.set_floats * k.n_sets;
    k.params = ds_alloc(sizeof(float) * n_params);  /* zero: RWKV-PEFT's initial time_state */
    k.grads = ds_alloc(sizeof(float) * n_params);
    k.zero_states = ds_alloc(sizeof(float) * n_params);
    k.tokens = ds_alloc(sizeof(int32_t) * k.micro * k.T);
    k.targets = ds_alloc(sizeof(int32_t) * k.micro * k.T);
    k.set = ds_alloc(sizeof(int32_t) * k.micro);
    ds_epoch_order_init(&k.order, (uint64_t)cfg->run.seed, k.train.n);

    ds_tensor *tensors = ds_alloc(sizeof(ds_tensor) * k.n_sets);
    char (*names)[DS_LABEL_MAX + 8] = ds_alloc(sizeof(*names) * k.n_sets);
    int64_t *train_per_set = ds_alloc(sizeof(int64_t) * k.n_sets);
    for (int s = 0; s < k.n_sets; s++) {
        snprintf(names[s], sizeof names[s], "state.%s", set_name(&k, s));
        tensors[s] = (ds_tensor){.name = names[s], .ndim = 4, .shape = {d.n_layer, d.n_embd / 64, 64, 64},
                                 .data = k.params + s * k.tuner.set_floats};
    }
    for (int64_t i = 0; i < k.train.n; i++) train_per_set[k.per_label ? k.train.label[i] : 0]++;
    ds_optim_group group = {0, n_params, 1.0f, 0};  /* states are not decayed towards zero */
    ds_task task = {.name = "state_tuning", .params = k.params, .grads = k.grads, .n_params = n_params, .n_groups = 1,
                    .groups = &group, .n_tensors = k.n_sets, .tensors = tensors, .unit = "tokens",
                    .units_per_sample = k.T, .flops_per_unit = ds_rwkv7_frozen_flops_per_token(&d),
                    .activation_bytes = k.model.acts_numel * 4.0, .ctx = &k, .micro_step = st_micro_step,
                    .eval = st_eval};
    char rwkv[128], init_abs[DS_PATH_MAX], contexts_abs[DS_PATH_MAX];
    ds_weights_signature(&d, rwkv, sizeof rwkv);
    uint32_t labels_crc = 0;
    for (int i = 0; i < k.contexts->n_labels; i++)
        labels_crc = ds_crc32c(labels_crc, k.contexts->labels[i], strlen(k.contexts->labels[i]) + 1);
    snprintf(task.signature, sizeof task.signature, "state_tuning %s sets=%d labels=%d:%08x init=%08x", rwkv, k.n_sets,
             k.contexts->n_labels, labels_crc, init_crc);
    ds_absolute_path(sc->init, init_abs, sizeof init_abs);
    ds_absolute_path(sc->contexts, contexts_abs, sizeof contexts_abs);
    int n = snprintf(task.meta, sizeof task.meta, "rwkv_model=%s\nrwkv_checkpoint=%s\ncontexts=%s\ntokenizer=%s\n"
                     "per_label=%s\nskip_tokens=%d\n", rwkv, init_abs, contexts_abs, cfg->data.tokenizer,
                     sc->per_label ? "true" : "false", sc->skip_tokens);
    if (n < 0 || (size_t)n >= sizeof task.meta)
        ds_die(DS_EXIT_BAD_INPUT, "%s, %s: paths too long for the checkpoint metadata", sc->init, sc->contexts);

    k.zero_loss = eval_loss(&k, k.zero_states);
    ds_log("dreamstate train: task state_tuning, %s, %lld trainable floats (%d set(s) of %d x [%d, 64, 64] initial WKV "
           "states)", cfg->run.name, (long long)n_params, k.n_sets, d.n_layer, d.n_embd / 64);
    ds_log("  init %s: %s, frozen (re-read from state_tuning.init on resume)", sc->init, rwkv);
    ds_log("  contexts %s: %lld windows of up to %d tokens after the first %d (%lld context(s) too short), %d labels",
           sc->contexts, (long long)k.train.n, k.T + 1, sc->skip_tokens, (long long)k.train.unused, k.contexts->n_labels);
    for (int s = 0; s < k.n_sets; s++)
        if (train_per_set[s] == 0)
            ds_log("  warning: no train window of label '%s': its states stay zero", set_name(&k, s));
    if (k.valid.n)
        ds_log("  held-out %s: %lld windows (%lld too short)", sc->contexts_valid, (long long)k.valid.n,
               (long long)k.valid.unused);
    ds_log("  held-out loss from the zero state: %.4f", k.zero_loss);
    int rc = ds_train_run(cfg, &task);

    char path[DS_PATH_MAX + 64];
    int64_t last = -1;
    if (rc == DS_EXIT_OK && ds_dist_rank() == 0 && ds_ckpt_latest_complete(cfg->checkpoint.dir, path, sizeof path, &last) &&
        last == cfg->train.steps)
        write_states(&k, rwkv);
    ds_dist_barrier();  /* the states are on disk before any rank exits */
    ds_free(tensors); ds_free(names); ds_free(train_per_set);
    ds_free(k.params); ds_free(k.grads); ds_free(k.zero_states);
    ds_free(k.tokens); ds_free(k.targets); ds_free(k.set);
    ds_epoch_order_free(&k.order);
    free_windows(&k.train);
    free_windows(&k.valid);
    ds_contexts_free(k.contexts);
    ds_rwkv7_tuner_destroy(&k.tuner);
    ds_rwkv7_destroy(&k.model);
    return rc;
}
