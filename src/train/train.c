/* `lm` task driver and rank-0 coordinator. Every rank holds a full replica; the global batch of
 * train.batch_size sequences per step is dealt out by global sample number (rank r, micro-step j takes
 * samples (j * ranks + r) * micro_batch ...), so the same config gives the same samples per step, and
 * the same loss curve up to summation order, on any rank count. Everything a step does is a function
 * of (seed, step): a resumed run replays exactly, and a checkpoint written by N ranks resumes on M.
 * Rank 0 alone builds the default corpus, logs, evaluates the aggregate, and reads/writes checkpoints
 * (and broadcasts what it read). */
#include "dreamstate/train.h"
#include "dreamstate/blas.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/eval.h"
#include "dreamstate/kernels.h"
#include "dreamstate/optim.h"
#include "dreamstate/progress.h"
#include "dreamstate/weights.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { RNG_STREAM_DATA = 0x44415441 /* "DATA" */ };

static volatile sig_atomic_t stop_requested;
static void on_stop_signal(int sig) { stop_requested = sig; }

ds_rwkv7_dims ds_train_model_dims(const ds_config *cfg) {
    ds_rwkv7_dims d = {.n_layer = cfg->model.n_layer, .n_embd = cfg->model.n_embd,
                       .vocab_size = cfg->model.vocab_size, .dim_w = cfg->model.dim_w,
                       .dim_a = cfg->model.dim_a, .dim_v = cfg->model.dim_v, .dim_g = cfg->model.dim_g};
    ds_rwkv7_default_ranks(&d, cfg->model.lora_formula);
    return d;
}

void ds_train_data_paths(const ds_config *cfg, char *train, size_t train_len, char *valid, size_t valid_len) {
    if (cfg->data.train[0]) {
        if (train) snprintf(train, train_len, "%s", cfg->data.train);
        if (valid) snprintf(valid, valid_len, "%s", cfg->data.valid[0] ? cfg->data.valid : cfg->data.train);
        return;
    }
    const char *dir = strcmp(cfg->data.tokenizer, "world") == 0 ? "data/default-world" : "data/default-byte";
    if (ds_dist_rank() == 0) {
        ds_mkdir_p(dir);
        ds_corpus_default(dir, cfg->data.tokenizer, cfg->data.vocab_file);
    }
    ds_dist_barrier();
    if (train) snprintf(train, train_len, "%s/train.bin", dir);
    if (valid) snprintf(valid, valid_len, "%s/valid.bin", dir);
}

/* B windows of T+1 tokens at offsets drawn for global samples first_sample .. first_sample+B-1. */
static void sample_batch(const ds_dataset *ds, uint64_t seed, uint64_t first_sample, int B, int T,
                         int32_t *tokens, int32_t *targets, int32_t *window) {
    uint64_t span = ds_dataset_num_tokens(ds) - (uint64_t)T - 1;
    for (int b = 0; b < B; b++) {
        uint64_t off = ds_rng_u64(seed, RNG_STREAM_DATA, first_sample + b) % (span + 1);
        ds_dataset_read(ds, off, (size_t)T + 1, window);
        memcpy(tokens + (int64_t)b * T, window, sizeof(int32_t) * T);
        memcpy(targets + (int64_t)b * T, window + 1, sizeof(int32_t) * T);
    }
}

typedef struct {
    int n;
    ds_tensor *t;
} ckpt_table;

static void save_checkpoint(const ds_config *cfg, const ckpt_table *ct, const ds_rwkv7_dims *d, int64_t step) {
    char path[DS_PATH_MAX + 64], meta[512], extra[64], err[DS_ERR_LEN];
    snprintf(extra, sizeof extra, "seed=%lld\n", (long long)cfg->run.seed);
    ds_weights_ckpt_meta(d, step, extra, meta, sizeof meta);
    ds_ckpt_path(path, sizeof path, cfg->checkpoint.dir, step);
    if (ds_ckpt_save(path, meta, ct->n, ct->t, err) != 0) ds_die(DS_EXIT_FAIL, "checkpoint: %s", err);
    if (ds_ckpt_prune(cfg->checkpoint.dir, cfg->checkpoint.keep, step) < 0)
        ds_log("warning: pruning %s: %s", cfg->checkpoint.dir, strerror(errno));
}

/* Returns the step to continue from (0 for a fresh run). Rank 0 reads the newest valid checkpoint and
 * broadcasts step and parameters. */
static int64_t maybe_resume(const ds_config *cfg, const ckpt_table *ct, const ds_rwkv7_dims *d) {
    int64_t step = 0;
    if (ds_dist_rank() == 0 && strcmp(cfg->checkpoint.resume, "never") != 0) {
        char path[DS_PATH_MAX + 64], err[DS_ERR_LEN], sig[256], got[256], stepbuf[64];
        if (ds_ckpt_latest_valid(cfg->checkpoint.dir, path, sizeof path, &step)) {
            char *meta = NULL;
            if (ds_ckpt_verify(path, &meta, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
            ds_weights_signature(d, sig, sizeof sig);
            if (!ds_weights_meta_value(meta, "model", got, sizeof got) || strcmp(got, sig) != 0)
                ds_die(DS_EXIT_BAD_INPUT, "%s: checkpoint is for '%s', config describes '%s'", path, got, sig);
            if (!ds_weights_meta_value(meta, "step", stepbuf, sizeof stepbuf))
                ds_die(DS_EXIT_BAD_INPUT, "%s: checkpoint metadata has no step", path);
            free(meta);
            if (ds_ckpt_load(path, NULL, ct->n, ct->t, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
            step = atoll(stepbuf);
            ds_log("resumed from %s (step %lld)", path, (long long)step);
        }
    }
    ds_dist_bcast(&step, sizeof step, 0);
    if (step > 0)  /* parameters; the caller scatters the optimiser moments (the last two tensors) */
        for (int i = 0; i < ct->n - 2; i++) ds_dist_bcast(ct->t[i].data, sizeof(float) * ds_tensor_numel(&ct->t[i]), 0);
    return step;
}

/* On resume, keep only the log lines of steps that the checkpoint covers, so the log of a resumed run
 * reads like an uninterrupted one. */
static void truncate_log(const char *path, int64_t last_step) {
    FILE *in = fopen(path, "r");
    if (!in) return;
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) ds_die(DS_EXIT_FAIL, "%s: %s", path, strerror(errno));
    char line[4096];
    while (fgets(line, sizeof line, in)) {
        const char *s = strstr(line, "\"step\":");
        if (s && atoll(s + 7) > last_step) continue;
        fputs(line, af.fp);
    }
    fclose(in);
    if (ds_atomic_commit(&af) != 0) ds_die(DS_EXIT_FAIL, "%s: %s", path, strerror(errno));
}

ds_optim_group *ds_train_optim_groups(const ds_rwkv7 *m) {
    ds_optim_group *groups = ds_alloc(sizeof(ds_optim_group) * m->n_tensors);
    for (int i = 0; i < m->n_tensors; i++)
        groups[i] = (ds_optim_group){m->tensors[i].offset, m->tensors[i].numel, m->tensors[i].lr_scale,
                                     m->tensors[i].weight_decay};
    return groups;
}

static void on_grads_ready(void *ctx, int64_t offset, int64_t numel) {
    ds_grad_sync_ready(ctx, offset, numel);
}

int ds_train_lm(const ds_config *cfg) {
    /* installed first, so that a stop request during setup still ends in a checkpoint after one step */
    signal(SIGUSR1, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    signal(SIGINT, on_stop_signal);
    int rank = ds_dist_rank(), ranks = ds_dist_size();
    int threads_wanted = cfg->run.threads > 0 ? cfg->run.threads : ds_dist_cores_per_local_rank();
    const char *arch = ds_blas_init(threads_wanted);
    const char *kern = ds_kernels_init();
    int threads = ds_blas_threads();
    char path[DS_PATH_MAX + 64];

    int B = cfg->train.batch_size, T = cfg->train.ctx_len;
    int micro = cfg->train.micro_batch ? cfg->train.micro_batch : B / ranks;
    if (micro < 1 || B % (ranks * micro) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: train.batch_size (%d) must be a multiple of ranks (%d) x train.micro_batch (%d)",
               cfg->source, B, ranks, micro ? micro : 1);
    int accum = B / (ranks * micro);

    char train_path[DS_PATH_MAX + 64], valid_path[DS_PATH_MAX + 64];
    ds_train_data_paths(cfg, train_path, sizeof train_path, valid_path, sizeof valid_path);
    ds_dataset *train = ds_dataset_open(train_path), *valid = ds_dataset_open(valid_path);
    if ((int64_t)ds_dataset_vocab_size(train) > cfg->model.vocab_size)
        ds_die(DS_EXIT_BAD_INPUT, "%s: data vocabulary %u exceeds model.vocab_size %d", train_path,
               ds_dataset_vocab_size(train), cfg->model.vocab_size);
    if (ds_dataset_num_tokens(train) < (uint64_t)T + 2 || ds_dataset_num_tokens(valid) < (uint64_t)T + 2)
        ds_die(DS_EXIT_BAD_INPUT, "%s: fewer tokens than train.ctx_len + 2", train_path);
    double unigram = rank == 0 ? ds_unigram_entropy_nats(train) : 0.0;

    ds_rwkv7_dims d = ds_train_model_dims(cfg);
    ds_rwkv7 model;
    ds_rwkv7_create(&model, &d);
    ds_rwkv7_init_weights(&model, (uint64_t)cfg->run.seed);
    ds_rwkv7_reserve(&model, micro, T);
    ds_grad_sync *sync = ds_grad_sync_create(model.grads, model.n_params, 8 << 20,
                                             strcmp(cfg->train.grad_reduce, "fp64") == 0, cfg->train.zero_stage == 1);
    model.grads_ready = on_grads_ready;
    model.grads_ready_ctx = sync;
    ds_optim_group *groups = ds_train_optim_groups(&model);
    int64_t *own_begin = ds_alloc(sizeof(int64_t) * ds_grad_sync_n_buckets(sync));
    int64_t *own_len = ds_alloc(sizeof(int64_t) * ds_grad_sync_n_buckets(sync));
    int n_own = ds_grad_sync_owned_ranges(sync, own_begin, own_len);
    ds_adamw opt;
    ds_adamw_create(&opt, n_own, own_begin, own_len, model.n_tensors, groups, cfg->optim.beta1, cfg->optim.beta2,
                    cfg->optim.eps, cfg->optim.weight_decay);
    ds_free(groups); ds_free(own_begin); ds_free(own_len);
    /* checkpoints hold the full moments: rank 0 gathers the shards (ZeRO-1) into full arrays */
    int sharded = opt.owned_len != model.n_params;
    float *full_moments = sharded && rank == 0 ? ds_alloc(sizeof(float) * 2 * model.n_params) : NULL;
    float *full_m = sharded ? full_moments : opt.m, *full_v = sharded ? (full_moments ? full_moments + model.n_params : NULL) : opt.v;
    ckpt_table ct = {0, ds_alloc(sizeof(ds_tensor) * (model.n_tensors + 2))};
    ct.n = ds_weights_ckpt_tensors(&model, full_m, full_v, ct.t);
    int64_t start = maybe_resume(cfg, &ct, &d);
    if (start > 0) {
        ds_grad_sync_scatter(sync, full_m, opt.m);
        ds_grad_sync_scatter(sync, full_v, opt.v);
    }
    /* inputs are all validated: only now touch the run directory */
    FILE *jsonl = NULL;
    if (rank == 0) {
        ds_mkdir_p(cfg->run.out_dir);
        ds_mkdir_p(cfg->checkpoint.dir);
        int stale = ds_ckpt_clean_stale(cfg->checkpoint.dir);
        if (stale > 0) ds_log("removed %d temp file(s) of an interrupted checkpoint write", stale);
        snprintf(path, sizeof path, "%s/config.yaml", cfg->run.out_dir);
        if (ds_config_write(cfg, path) != 0) ds_die(DS_EXIT_FAIL, "%s: cannot write: %s", path, strerror(errno));
        snprintf(path, sizeof path, "%s/train.jsonl", cfg->run.out_dir);
        if (start > 0) truncate_log(path, start);
        else remove(path);
        jsonl = fopen(path, "a");
        if (!jsonl) ds_die(DS_EXIT_FAIL, "%s: %s", path, strerror(errno));
    }

    /* every rank measures its share of the machine at once; the job's peak is the sum */
    double peak = ds_dist_sum_double(ds_measure_fma_peak(threads, 0.3));
    double flops_tok = ds_rwkv7_flops_per_token(&d, T);
    int64_t n_weights = 0;
    for (int i = 0; i < model.n_tensors; i++) n_weights += model.tensors[i].numel;
    ds_log("dreamstate train: task lm, %s, %.2fM parameters", cfg->run.name, n_weights / 1e6);
    ds_log("  %d rank(s) x %d thread(s), kernels %s, BLIS arch %s, measured FP32 peak %.0f GFLOP/s", ranks, threads,
           kern, arch, peak);
    ds_log("  data %s: %llu tokens (valid %llu), unigram entropy %.4f nats/token", train_path,
           (unsigned long long)ds_dataset_num_tokens(train), (unsigned long long)ds_dataset_num_tokens(valid), unigram);
    double bytes_per_param = 8.0 + (ds_grad_sync_is_fp64(sync) ? 8.0 : 0.0) + 8.0 * opt.owned_len / model.n_params;
    ds_log("  per rank: %.1f bytes/parameter (params 4, grads 4%s, AdamW %.1f%s), activations %.2f GB",
           bytes_per_param, ds_grad_sync_is_fp64(sync) ? ", fp64 accumulator 8" : "", 8.0 * opt.owned_len / model.n_params,
           sharded ? " sharded: ZeRO-1" : "", model.acts_numel * 4e-9);
    ds_log("  batch %d sequences x %d tokens per step (%d per rank per micro-step, %d micro-steps), %lld steps, out %s",
           B, T, micro, accum, (long long)cfg->train.steps, cfg->run.out_dir);

    int32_t *tokens = ds_alloc(sizeof(int32_t) * micro * T), *targets = ds_alloc(sizeof(int32_t) * micro * T);
    int32_t *window = ds_alloc(sizeof(int32_t) * (T + 1));
    double t_begin = ds_now_seconds(), last_loss = NAN, last_eval = NAN, comm_wait = 0;
    int64_t step = start;
    int stop = 0;
    for (; step < cfg->train.steps && !stop; step++) {
        double t0 = ds_now_seconds();
        double loss = 0;
        for (int j = 0; j < accum; j++) {
            if (j == 0 || ds_grad_sync_is_fp64(sync)) ds_rwkv7_zero_grad(&model);
            uint64_t first = (uint64_t)step * B + (uint64_t)(j * ranks + rank) * micro;
            sample_batch(train, (uint64_t)cfg->run.seed, first, micro, T, tokens, targets, window);
            loss += ds_rwkv7_forward(&model, micro, T, tokens, targets, (float)micro / B, (float)cfg->optim.l2wrap,
                                     NULL, NULL, NULL) * micro / B;
            ds_grad_sync_micro_begin(sync, j == 0, j == accum - 1);
            ds_rwkv7_backward(&model);
        }
        comm_wait = ds_grad_sync_finish(sync);
        loss = ds_dist_sum_double(loss);
        double gnorm = sqrt(sharded ? ds_dist_sum_double(ds_adamw_grad_sumsq(&opt, model.grads))
                                    : ds_adamw_grad_sumsq(&opt, model.grads));
        if (cfg->optim.grad_clip > 0 && gnorm > cfg->optim.grad_clip)
            ds_adamw_scale_grads(&opt, model.grads, (float)(cfg->optim.grad_clip / gnorm));
        double lr = ds_lr_schedule(step, cfg->train.steps, cfg->optim.warmup_steps, cfg->optim.lr, cfg->optim.lr_final);
        ds_adamw_step(&opt, model.params, model.grads, lr, step + 1);
        ds_grad_sync_share_params(sync, model.params);
        double dt = ds_now_seconds() - t0;
        double tok_s = (double)B * T / dt, mfu = flops_tok * tok_s / (peak * 1e9);
        int64_t done = step + 1;
        int last = done == cfg->train.steps;
        int do_eval = last || (cfg->train.eval_every > 0 && done % cfg->train.eval_every == 0);
        if (do_eval) {
            ds_eval_result part = ds_eval_windows(&model, valid, NULL, (int64_t)cfg->train.eval_batches * B, rank, ranks,
                                                  micro, T);
            ds_dist_sum_doubles(part.sums, 3);
            last_eval = ds_eval_finish(&part).loss;
        }
        stop = ds_dist_max_int(stop_requested != 0);
        if (rank == 0) {
            fprintf(jsonl, "{\"step\":%lld,\"loss\":%.10f,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                    "\"mfu\":%.4f,\"comm_wait_s\":%.4f", (long long)done, loss, lr, gnorm, tok_s, mfu, comm_wait);
            if (do_eval) fprintf(jsonl, ",\"val_loss\":%.6f", last_eval);
            fprintf(jsonl, "}\n");
            fflush(jsonl);
        }
        last_loss = loss;
        if (done % cfg->train.log_every == 0 || last || do_eval) {
            char eta[32];
            double per_step = (ds_now_seconds() - t_begin) / (double)(done - start);
            ds_format_duration(per_step * (double)(cfg->train.steps - done), eta, sizeof eta);
            if (rank == 0) {
                fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | MFU %.1f%% | ETA %s",
                        (long long)done, (long long)cfg->train.steps, loss, lr, gnorm, tok_s, 100 * mfu, eta);
                if (do_eval) fprintf(stderr, " | val %.4f", last_eval);
                fputc('\n', stderr);
            }
        }
        if (last || (cfg->checkpoint.every > 0 && done % cfg->checkpoint.every == 0) || stop) {
            ds_grad_sync_gather(sync, opt.m, full_m);
            ds_grad_sync_gather(sync, opt.v, full_v);
            if (rank == 0) save_checkpoint(cfg, &ct, &d, done);
        }
    }
    if (jsonl) fclose(jsonl);
    if (stop && step < cfg->train.steps) {
        ds_log("stopped by a signal after step %lld; checkpoint written, rerun the same command to resume",
               (long long)step);
    } else if (start < cfg->train.steps) {
        ds_log("done: final train loss %.4f, held-out loss %.4f (unigram entropy %.4f)", last_loss, last_eval, unigram);
    } else {
        ds_log("nothing to do: checkpoint already at step %lld of %lld", (long long)start, (long long)cfg->train.steps);
    }
    ds_dist_barrier();  /* the checkpoint is on disk before any rank exits */
    ds_grad_sync_free(sync);
    ds_free(tokens); ds_free(targets); ds_free(window); ds_free(ct.t); ds_free(full_moments);
    ds_adamw_destroy(&opt);
    ds_rwkv7_destroy(&model);
    ds_dataset_close(train);
    ds_dataset_close(valid);
    return DS_EXIT_OK;
}
