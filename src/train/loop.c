/* The training loop every task shares, and the rank-0 coordinator. Every rank holds a full replica;
 * the global batch of train.batch_size samples per step is dealt out by global sample number (rank r,
 * micro-step j takes samples step * B + (j * ranks + r) * micro ...), so the same config gives the
 * same samples per step, and the same loss curve up to summation order, on any rank count.
 * Everything a step does is a function of (seed, step): a resumed run replays exactly, and a
 * checkpoint written by N ranks resumes on M. Rank 0 alone logs and reads/writes checkpoints (and
 * broadcasts what it read). */
#include "dreamstate/blas.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/dist.h"
#include "dreamstate/kernels.h"
#include "dreamstate/optim.h"
#include "dreamstate/progress.h"
#include "dreamstate/train.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested, stepping;
static const char *blas_arch = "?", *kernels_name = "?", *products = "?";
static char interrupted_line[160], setup_line[160];
static size_t interrupted_len, setup_len;

/* The first stop signal ends the run after the current step and its checkpoint. A second SIGTERM or
 * SIGINT (a user pressing Ctrl-C again, a scheduler's follow-up) ends it at once: the checkpoint
 * files are only ever renamed into place whole, so the last one stays intact. Before the first step
 * there is no step to finish: a SIGTERM or SIGINT ends the run at once. That
 * is also how a rank waiting at a collective for a rank that died during set-up (a refused run
 * directory, a bad checkpoint) leaves when the launcher passes it the TERM, instead of hanging. */
static void on_stop_signal(int sig) {
    if (sig != SIGUSR1 && (stop_requested || !stepping)) {
        ssize_t ignored = stepping ? write(STDERR_FILENO, interrupted_line, interrupted_len)
                                   : write(STDERR_FILENO, setup_line, setup_len);
        (void)ignored;
        _exit(128 + sig);
    }
    stop_requested = sig;
}

void ds_train_catch_signals(void) {
    int ranks = ds_dist_size();
    char rank[32] = "";
    if (ranks > 1) snprintf(rank, sizeof rank, "[rank %d]", ds_dist_rank());
    interrupted_len = (size_t)snprintf(interrupted_line, sizeof interrupted_line,
                                       "dreamstate%s: interrupted by a second signal inside a step; the last "
                                       "checkpoint is intact\n", rank);
    setup_len = (size_t)snprintf(setup_line, sizeof setup_line,
                                 "dreamstate%s: stopped by a signal before the first step; the last checkpoint is "
                                 "intact\n", rank);
    signal(SIGUSR1, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    signal(SIGINT, on_stop_signal);
}

void ds_train_init_compute(const ds_config *cfg) {
    blas_arch = ds_blas_init(ds_dist_threads(cfg->run.threads, "run.threads"));
    kernels_name = ds_kernels_init();
    products = ds_blas_set_precision(strcmp(cfg->train.precision, "bf16") == 0 ? DS_PRECISION_BF16 : DS_PRECISION_FP32);
}

void ds_train_batching(const ds_config *cfg, int *micro_out, int *accum_out) {
    int B = cfg->train.batch_size, ranks = ds_dist_size();
    int micro = cfg->train.micro_batch ? cfg->train.micro_batch : B / ranks;
    if (micro < 1 || B % (ranks * micro) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: train.batch_size (%d) must be a multiple of ranks (%d) x train.micro_batch (%d)",
               cfg->source, B, ranks, micro ? micro : 1);
    *micro_out = micro;
    *accum_out = B / (ranks * micro);
}

typedef struct {
    int n;
    ds_tensor *t;
} ckpt_table;

/* Writes the checkpoint of `step` and prunes older ones; weights or moments holding a NaN or an
 * infinity are never written, so pruning never removes the last finite checkpoint. */
static void save_checkpoint(const ds_config *cfg, const ds_task *task, const ckpt_table *ct, int64_t step) {
    char path[DS_PATH_MAX + 64], meta[2048], err[DS_ERR_LEN];
    int bad = ds_tensors_find_nonfinite(ct->n, ct->t);
    if (bad >= 0)
        ds_die(DS_EXIT_FAIL, "step %lld: tensor '%s' holds NaN or Inf: checkpoint not written, the older ones are "
               "kept; lower optim.lr", (long long)step, ct->t[bad].name);
    snprintf(meta, sizeof meta, "step=%lld\nmodel=%s\nseed=%lld\ntask=%s\n%s", (long long)step, task->signature,
             (long long)cfg->run.seed, task->name, task->meta);
    ds_ckpt_path(path, sizeof path, cfg->checkpoint.dir, step);
    if (ds_ckpt_save(path, meta, ct->n, ct->t, err) != 0) ds_die(DS_EXIT_FAIL, "checkpoint: %s", err);
    if (ds_ckpt_prune(cfg->checkpoint.dir, cfg->checkpoint.keep, step) < 0)
        ds_log("warning: pruning %s: %s", cfg->checkpoint.dir, strerror(errno));
}

/* Loads the newest checkpoint of checkpoint.dir that is whole into ct and returns 1 with its step in
 * *step, or returns 0 when there is none. A damaged file (incomplete, or a payload failing its
 * checksum) is skipped with a warning for the next older one; one of another model, with an invalid
 * step or holding NaN/Inf stops the run. Each file is read once: its payloads are checked as they load. */
static int load_newest(const ds_config *cfg, const ds_task *task, const ckpt_table *ct, int64_t *step) {
    char path[DS_PATH_MAX + 64], err[DS_ERR_LEN], got[256];
    int64_t *steps;
    int n = ds_ckpt_list(cfg->checkpoint.dir, &steps);
    if (n < 0) ds_log("warning: cannot list checkpoint directory %s: %s", cfg->checkpoint.dir, strerror(errno));
    int loaded = 0;
    for (int i = n - 1; i >= 0 && !loaded; i--) {
        ds_ckpt_path(path, sizeof path, cfg->checkpoint.dir, steps[i]);
        char *meta = NULL;
        if (ds_ckpt_check(path, &meta, err) != 0) {
            ds_log("warning: skipping checkpoint %s", err);
            continue;
        }
        if (!ds_ckpt_meta_value(meta, "model", got, sizeof got) || strcmp(got, task->signature) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: checkpoint is for '%s', config describes '%s'", path, got, task->signature);
        if (ds_ckpt_meta_step(path, meta, steps[i], step, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
        free(meta);
        int rc = ds_ckpt_load(path, NULL, ct->n, ct->t, err);
        if (rc == DS_CKPT_DAMAGED) {
            ds_log("warning: skipping checkpoint %s", err);
            continue;
        }
        if (rc != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);
        int bad = ds_tensors_find_nonfinite(ct->n, ct->t);
        if (bad >= 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: tensor '%s' holds NaN or Inf values; move this checkpoint away to "
                   "resume from an earlier one", path, ct->t[bad].name);
        ds_log("resumed from %s (step %lld)", path, (long long)*step);
        loaded = 1;
    }
    free(steps);
    return loaded;
}

/* Returns the step to continue from (0 for a fresh run) and sets *resumed when a checkpoint was read.
 * Rank 0 reads the newest whole checkpoint and broadcasts step and tensors, whatever the step (an
 * imported step-0 checkpoint holds weights too); the caller scatters the moments (the last two). A
 * fresh start refuses a run directory holding an earlier run, or (checkpoint.resume restart) sets
 * *move_aside on rank 0. */
static int64_t maybe_resume(const ds_config *cfg, const ds_task *task, const ckpt_table *ct, int *resumed,
                            int *move_aside) {
    int64_t head[2] = {0, 0};  /* step, resumed */
    *move_aside = 0;
    if (ds_dist_rank() == 0) {
        const char *mode = cfg->checkpoint.resume;
        if (strcmp(mode, "auto") == 0 && load_newest(cfg, task, ct, &head[0])) {
            head[1] = 1;
        } else {
            const char *hint = strcmp(mode, "never") == 0 ? "continue it with checkpoint.resume: auto, " : "";
            *move_aside = ds_run_dir_check_fresh(cfg->run.out_dir, cfg->checkpoint.dir, strcmp(mode, "restart") == 0,
                                                 hint);
        }
    }
    ds_dist_bcast(head, sizeof head, 0);
    if (head[1])
        for (int i = 0; i < ct->n - 2; i++) ds_dist_bcast(ct->t[i].data, sizeof(float) * ds_tensor_numel(&ct->t[i]), 0);
    *resumed = (int)head[1];
    return head[0];
}

/* OUT/train.jsonl, one line appended per step. A failed write (a full disk) stops the run: the file is
 * cut back to its last whole line and the checkpoints are left as they are, so rerunning resumes. */
typedef struct {
    int fd;
    off_t whole;  /* bytes up to the end of the last whole line */
    char path[DS_PATH_MAX + 64];
} run_log;

static void run_log_open(run_log *log, const char *path) {
    snprintf(log->path, sizeof log->path, "%s", path);
    log->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (log->fd < 0) ds_die(DS_EXIT_FAIL, "%s: cannot open: %s", path, strerror(errno));
    log->whole = lseek(log->fd, 0, SEEK_END);
}

static void run_log_append(run_log *log, const char *line, int64_t step) {
    size_t len = strlen(line), done = 0;
    while (done < len) {
        ssize_t k = write(log->fd, line + done, len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            int cut = ftruncate(log->fd, log->whole) == 0;
            ds_die(DS_EXIT_FAIL, "%s: cannot write the line of step %lld: %s%s; stopped, checkpoints untouched: free "
                   "space and rerun the same command to resume", log->path, (long long)step, strerror(e),
                   cut ? "" : " (its last line may be cut short)");
        }
        done += (size_t)k;
    }
    log->whole += (off_t)len;
}

static void run_log_close(run_log *log) {
    if (fsync(log->fd) != 0 || close(log->fd) != 0)
        ds_die(DS_EXIT_FAIL, "%s: cannot write: %s; checkpoints untouched: free space and rerun to resume", log->path,
               strerror(errno));
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

int ds_train_run(const ds_config *cfg, ds_task *task) {
    int rank = ds_dist_rank(), ranks = ds_dist_size();
    int threads = ds_blas_threads();
    char path[DS_PATH_MAX + 64];
    int B = cfg->train.batch_size, micro, accum;
    ds_train_batching(cfg, &micro, &accum);
    /* start-up phases, for the "ready in" line: what the task did before, optimizer state, weights
     * (read or initialised), the peak probe */
    double t_setup = ds_now_seconds(), t_optim, t_weights, t_probe;

    ds_grad_sync *sync = ds_grad_sync_create(task->grads, task->n_params, 8 << 20,
                                             strcmp(cfg->train.grad_reduce, "fp64") == 0, cfg->train.zero_stage == 1);
    int64_t *own_begin = ds_alloc(sizeof(int64_t) * ds_grad_sync_n_buckets(sync));
    int64_t *own_len = ds_alloc(sizeof(int64_t) * ds_grad_sync_n_buckets(sync));
    int n_own = ds_grad_sync_owned_ranges(sync, own_begin, own_len);
    ds_adamw opt;
    ds_adamw_create(&opt, n_own, own_begin, own_len, task->n_groups, task->groups, cfg->optim.beta1, cfg->optim.beta2,
                    cfg->optim.eps, cfg->optim.weight_decay);
    ds_free(own_begin); ds_free(own_len);
    /* checkpoints hold the full moments: rank 0 gathers the shards (ZeRO-1) into full arrays */
    int sharded = opt.owned_len != task->n_params;
    float *full_moments = sharded && rank == 0 ? ds_alloc(sizeof(float) * 2 * task->n_params) : NULL;
    float *full_m = sharded ? full_moments : opt.m;
    float *full_v = sharded ? (full_moments ? full_moments + task->n_params : NULL) : opt.v;
    ckpt_table ct = {task->n_tensors + 2, ds_alloc(sizeof(ds_tensor) * (task->n_tensors + 2))};
    memcpy(ct.t, task->tensors, sizeof(ds_tensor) * task->n_tensors);
    ct.t[task->n_tensors] = (ds_tensor){.name = "optim.adamw.m", .ndim = 1, .shape = {task->n_params}, .data = full_m};
    ct.t[task->n_tensors + 1] = (ds_tensor){.name = "optim.adamw.v", .ndim = 1, .shape = {task->n_params}, .data = full_v};
    t_optim = ds_now_seconds();
    int resumed, move_aside;
    int64_t start = maybe_resume(cfg, task, &ct, &resumed, &move_aside);
    if (resumed) {
        ds_grad_sync_scatter(sync, full_m, opt.m);
        ds_grad_sync_scatter(sync, full_v, opt.v);
    } else if (task->init_params) {
        task->init_params(task->ctx);
    }
    /* the weights' scratch, freed (the init's double-precision matrices, allocated after the run's own
     * arrays), would otherwise stay resident at the top of the heap through the whole run */
    malloc_trim(0);
    t_weights = ds_now_seconds();
    /* inputs are all validated: only now touch the run directory */
    run_log log = {.fd = -1};
    if (rank == 0) {
        if (move_aside) {
            ds_run_dir_move_aside(cfg->run.out_dir, cfg->checkpoint.dir, path, sizeof path);
            ds_log("checkpoint.resume restart: the earlier run's files are now in %s/", path);
        }
        ds_mkdir_p(cfg->run.out_dir);
        ds_mkdir_p(cfg->checkpoint.dir);
        int stale = ds_ckpt_clean_stale(cfg->checkpoint.dir);
        if (stale > 0) ds_log("removed %d temp file(s) of an interrupted checkpoint write", stale);
        snprintf(path, sizeof path, "%s/config.yaml", cfg->run.out_dir);
        if (ds_config_write(cfg, path) != 0) ds_die(DS_EXIT_FAIL, "%s: cannot write: %s", path, strerror(errno));
        snprintf(path, sizeof path, "%s/train.jsonl", cfg->run.out_dir);
        if (resumed) truncate_log(path, start);
        else remove(path);
        run_log_open(&log, path);
    }

    /* every rank measures its share of the machine at once; the job's peak is the sum. MFU divides by the
     * peak of the precision of the matrix products. */
    int bf16 = ds_blas_precision() == DS_PRECISION_BF16;
    t_probe = ds_now_seconds();
    double peak = ds_dist_sum_double(bf16 ? ds_measure_bf16_peak(threads, 0.3) : ds_measure_fma_peak(threads, 0.3));
    t_probe = ds_now_seconds() - t_probe;
    ds_log("  %d rank(s) x %d thread(s) (rank 0 may run on %d core(s)), kernels %s, BLIS arch %s, measured %s peak "
           "%.0f GFLOP/s", ranks, threads, ds_affinity_cores(), kernels_name, blas_arch, bf16 ? "bf16" : "FP32", peak);
    ds_log("  matrix products: %s", products);
    int accumulator = ds_grad_sync_accumulates(sync, accum);
    double bytes_per_param = 8.0 + (accumulator ? 8.0 : 0.0) + 8.0 * opt.owned_len / task->n_params;
    ds_log("  per rank: %.1f bytes/trainable parameter (params 4, grads 4%s, AdamW %.1f%s), activations %.2f GB",
           bytes_per_param, accumulator ? ", fp64 accumulator 8" : "", 8.0 * opt.owned_len / task->n_params,
           sharded ? " sharded: ZeRO-1" : "", task->activation_bytes * 1e-9);
    ds_log("  batch %d samples per step (%d per rank per micro-step, %d micro-steps), %lld steps, out %s", B, micro, accum,
           (long long)cfg->train.steps, cfg->run.out_dir);
    double age = ds_process_seconds(), in_loop = ds_now_seconds() - t_setup;
    char weights[64] = "";
    if (resumed || task->init_params)
        snprintf(weights, sizeof weights, ", weights %s %.1f s", resumed ? "read" : "initialised", t_weights - t_optim);
    stepping = 1;
    ds_log("  ready in %.1f s%s: task setup (data, model) %.1f s, optimizer state %.1f s%s, %s peak probe %.1f s",
           age >= 0 ? age : in_loop, age >= 0 ? " since the program started" : "", age >= 0 ? age - in_loop : 0.0,
           t_optim - t_setup, weights, bf16 ? "bf16" : "FMA", t_probe);

    /* from here on a dead rank or network ends the run with a message instead of a hang */
    ds_dist_set_comm_timeout(cfg->train.comm_timeout);
    double t_begin = ds_now_seconds(), last_loss = NAN, last_gnorm = NAN, last_eval = NAN, comm_wait = 0;
    char json[2048], step_json[1024], line[4096], clean[4096];
    int64_t step = start, newest_ckpt = resumed ? start : -1;
    int stop = 0, nonfinite_in_row = 0;
    for (; step < cfg->train.steps && !stop; step++) {
        double t0 = ds_now_seconds();
        double loss = 0;
        for (int j = 0; j < accum; j++) {
            if (j == 0 || ds_grad_sync_is_fp64(sync)) ds_zero_floats(task->grads, task->n_params);
            uint64_t first = (uint64_t)step * B + (uint64_t)(j * ranks + rank) * micro;
            ds_grad_sync_micro_begin(sync, j == 0, j == accum - 1);
            loss += task->micro_step(task->ctx, step, first, micro, (float)micro / B, sync) * micro / B;
        }
        comm_wait = ds_grad_sync_finish(sync);
        loss = ds_dist_sum_double(loss);
        double gnorm = sqrt(sharded ? ds_dist_sum_double(ds_adamw_grad_sumsq(&opt, task->grads))
                                    : ds_adamw_grad_sumsq(&opt, task->grads));
        double lr = ds_lr_schedule(step, cfg->train.steps, cfg->optim.warmup_steps, cfg->optim.lr, cfg->optim.lr_final);
        /* A NaN or Inf (divergence, an overflow) never reaches the weights: the step is skipped, and the
         * run stops after train.skip_nonfinite of them in a row (every rank decides alike). */
        int skip = ds_dist_max_int(!isfinite(loss) || !isfinite(gnorm));
        nonfinite_in_row = skip ? nonfinite_in_row + 1 : 0;
        last_loss = loss;
        last_gnorm = gnorm;
        if (nonfinite_in_row > cfg->train.skip_nonfinite) break;
        if (skip) {
            ds_log("step %lld: loss %g, grad_norm %g: not finite, update skipped (%d in a row, train.skip_nonfinite "
                   "%d)", (long long)step + 1, loss, gnorm, nonfinite_in_row, cfg->train.skip_nonfinite);
        } else {
            if (cfg->optim.grad_clip > 0 && gnorm > cfg->optim.grad_clip)
                ds_adamw_scale_grads(&opt, task->grads, (float)(cfg->optim.grad_clip / gnorm));
            ds_adamw_step(&opt, task->params, task->grads, lr, step + 1);
            ds_grad_sync_share_params(sync, task->params);
            if (task->after_update) task->after_update(task->ctx, step);
        }
        double dt = ds_now_seconds() - t0;
        double units_s = (double)B * task->units_per_sample / dt, mfu = task->flops_per_unit * units_s / (peak * 1e9);
        int64_t done = step + 1;
        int last = done == cfg->train.steps;
        int do_eval = last || (cfg->train.eval_every > 0 && done % cfg->train.eval_every == 0);
        json[0] = step_json[0] = 0;
        if (task->step_fields) task->step_fields(task->ctx, step_json, sizeof step_json);
        if (do_eval) last_eval = task->eval(task->ctx, json, sizeof json);
        stop = ds_dist_max_int(stop_requested != 0);
        if (rank == 0) {
            int k = snprintf(line, sizeof line, "{\"step\":%lld,\"loss\":%.10f,\"lr\":%.6e,\"grad_norm\":%.6f,"
                             "\"%s_per_s\":%.1f,\"mfu\":%.4f,\"comm_wait_s\":%.4f%s", (long long)done, loss, lr, gnorm,
                             task->unit, units_s, mfu, comm_wait, step_json);
            if (do_eval) k += snprintf(line + k, sizeof line - k, ",\"val_loss\":%.6f%s", last_eval, json);
            snprintf(line + k, sizeof line - k, "%s}\n", skip ? ",\"skipped\":true" : "");
            ds_json_null_nonfinite(line, clean, sizeof clean);  /* a NaN is logged as null */
            run_log_append(&log, clean, done);
        }
        if (done % cfg->train.log_every == 0 || last || do_eval) {
            char eta[32];
            double per_step = (ds_now_seconds() - t_begin) / (double)(done - start);
            ds_format_duration(per_step * (double)(cfg->train.steps - done), eta, sizeof eta);
            if (rank == 0) {
                fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f %s/s", (long long)done,
                        (long long)cfg->train.steps, loss, lr, gnorm, units_s, task->unit);
                if (task->flops_per_unit > 0) fprintf(stderr, " | MFU %.1f%%", 100 * mfu);
                fprintf(stderr, " | ETA %s", eta);
                if (do_eval) fprintf(stderr, " | val %.4f", last_eval);
                fputc('\n', stderr);
            }
        }
        if (last || (cfg->checkpoint.every > 0 && done % cfg->checkpoint.every == 0) || stop) {
            ds_grad_sync_gather(sync, opt.m, full_m);
            ds_grad_sync_gather(sync, opt.v, full_v);
            if (rank == 0) save_checkpoint(cfg, task, &ct, done);
            newest_ckpt = done;
        }
    }
    if (rank == 0) run_log_close(&log);
    int diverged = nonfinite_in_row > cfg->train.skip_nonfinite;
    if (diverged) {
        char newest[DS_PATH_MAX + 64] = "none written";
        if (newest_ckpt >= 0) ds_ckpt_path(newest, sizeof newest, cfg->checkpoint.dir, newest_ckpt);
        char in_row[96] = "";
        if (cfg->train.skip_nonfinite > 0)
            snprintf(in_row, sizeof in_row, ", %d steps in a row (train.skip_nonfinite %d)", nonfinite_in_row,
                     cfg->train.skip_nonfinite);
        ds_log("dreamstate: step %lld: loss %g, grad_norm %g: not finite%s; stopped without applying it (exit 1), "
               "newest checkpoint: %s; lower optim.lr, or raise train.skip_nonfinite to skip such steps",
               (long long)step + 1, last_loss, last_gnorm, in_row, newest);
    } else if (stop && step < cfg->train.steps) {
        ds_log("stopped by a signal after step %lld; checkpoint written, rerun the same command to resume",
               (long long)step);
    } else if (start < cfg->train.steps) {
        ds_log("done: final train loss %.4f, held-out loss %.4f", last_loss, last_eval);
    } else {
        ds_log("nothing to do: checkpoint already at step %lld of %lld", (long long)start, (long long)cfg->train.steps);
    }
    ds_dist_barrier();  /* the checkpoint is on disk before any rank exits */
    ds_dist_set_comm_timeout(0);
    ds_grad_sync_free(sync);
    ds_free(ct.t);
    ds_free(full_moments);
    ds_adamw_destroy(&opt);
    return diverged ? DS_EXIT_FAIL : DS_EXIT_OK;
}
