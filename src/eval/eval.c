/* Held-out evaluation: loss, perplexity, bits per byte. */
#include "dreamstate/eval.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/dist.h"
#include "dreamstate/kernels.h"
#include "dreamstate/progress.h"
#include "dreamstate/weights.h"

#include <math.h>
#include <string.h>

ds_eval_result ds_eval_windows(ds_rwkv7 *m, const ds_dataset *ds, const ds_tokenizer *tok, int64_t windows,
                               int part, int parts, int B, int T) {
    uint64_t span = ds_dataset_num_tokens(ds) - (uint64_t)T - 1;
    int32_t *tokens = ds_alloc(sizeof(int32_t) * B * T), *targets = ds_alloc(sizeof(int32_t) * B * T);
    int32_t *window = ds_alloc(sizeof(int32_t) * (T + 1));
    ds_eval_result r;
    memset(&r, 0, sizeof r);
    /* progress lines only while an evaluation runs longer than the interval: no final line, so that
     * short validations during training stay quiet */
    ds_progress prog;
    ds_progress_begin(&prog, "eval", "windows", windows > part ? (windows - part + parts - 1) / parts : 0);
    int64_t w = part, done = 0;
    while (w < windows) {
        int nb = 0;
        for (; nb < B && w < windows; nb++, w += parts) {
            uint64_t off = windows > 1 ? span * (uint64_t)w / (uint64_t)(windows - 1) : 0;
            ds_dataset_read(ds, off, (size_t)T + 1, window);
            memcpy(tokens + (int64_t)nb * T, window, sizeof(int32_t) * T);
            memcpy(targets + (int64_t)nb * T, window + 1, sizeof(int32_t) * T);
            for (int t = 1; t <= T; t++) {
                size_t len = 1;  /* the separator (id 0) counts as one byte, like a newline */
                if (tok && window[t] != 0) ds_tokenizer_token(tok, window[t], &len);
                r.sums[2] += (double)len;
            }
        }
        r.sums[0] += ds_rwkv7_forward(m, nb, T, tokens, targets, 1.0f, 0.0f, NULL, NULL, NULL) * nb * T;
        r.sums[1] += (double)nb * T;
        ds_progress_update(&prog, done += nb);
    }
    ds_free(tokens); ds_free(targets); ds_free(window);
    return r;
}

ds_eval_result ds_eval_finish(ds_eval_result *r) {
    r->loss = r->sums[1] > 0 ? r->sums[0] / r->sums[1] : NAN;
    r->perplexity = exp(r->loss);
    r->bits_per_byte = r->sums[2] > 0 ? r->sums[0] / r->sums[2] / log(2.0) : NAN;
    return *r;
}

int ds_eval_lm(const ds_config *cfg, const char *weights_path) {
    ds_blas_init(ds_dist_threads(cfg->run.threads, "run.threads"));
    ds_kernels_init();
    ds_rwkv7_dims d = ds_model_dims_for_weights(cfg, weights_path);
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d);
    ds_weights_load(&m, weights_path);
    char valid[DS_PATH_MAX + 64];
    if (ds_data_paths(cfg, ds_dist_rank() == 0, NULL, 0, valid, sizeof valid)) ds_dist_barrier();
    ds_dataset *ds = ds_dataset_open(valid);
    ds_tokenizer *tok = ds_tokenizer_open(cfg->data.tokenizer, cfg->data.vocab_file);
    ds_dataset_check_tokenizer(ds, valid, tok);
    if ((int64_t)ds_dataset_vocab_size(ds) > d.vocab_size)
        ds_die(DS_EXIT_BAD_INPUT, "%s: data vocabulary %u exceeds the model's %d (every token id must be below it)",
               valid, ds_dataset_vocab_size(ds), d.vocab_size);
    int B = cfg->train.batch_size, T = cfg->train.ctx_len, rank = ds_dist_rank(), ranks = ds_dist_size();
    int micro = (B + ranks - 1) / ranks;
    int64_t windows = (int64_t)cfg->train.eval_batches * B;
    double t0 = ds_now_seconds();
    ds_eval_result r = ds_eval_windows(&m, ds, tok, windows, rank, ranks, micro, T);
    ds_dist_sum_doubles(r.sums, 3);
    ds_eval_finish(&r);
    double dt = ds_now_seconds() - t0;
    if (rank == 0)
        printf("{\"checkpoint\":\"%s\",\"data\":\"%s\",\"ranks\":%d,\"tokens\":%.0f,\"loss\":%.6f,"
               "\"perplexity\":%.4f,\"bits_per_byte\":%.6f,\"tokens_per_s\":%.1f}\n",
               weights_path, valid, ranks, r.sums[1], r.loss, r.perplexity, r.bits_per_byte, r.sums[1] / dt);
    ds_tokenizer_free(tok);
    ds_dataset_close(ds);
    ds_rwkv7_destroy(&m);
    return 0;
}
