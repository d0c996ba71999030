/* `extract-states`: the frozen RWKV-7 over every labelled context, from the zero state, one context
 * per forward call (so a context's state does not depend on what it is batched with, or on the rank
 * count), writing each rank's share to its own shard and the index from rank 0 (src/dit/README.md §3.1). */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/kernels.h"
#include "dreamstate/progress.h"
#include "dreamstate/states.h"
#include "dreamstate/train.h"
#include "dreamstate/weights.h"

#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The condition of src/dit/README.md §3.1 before any trainable map: the input-embedding rows (before ln0)
 * of the first token (the paper's text condition) and their mean over the context (pooled text),
 * cond = [emb[tok_0] | mean_t emb[tok_t]]. The mean is summed in float64. With --ln-out a third part,
 * the last token's ln_out(x) (the head's input: what a linear readout of the model sees), for the
 * control of src/eval/README.md §1. */
#define EXTRACT_COND (DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN)

static void condition(const ds_rwkv7 *m, const int32_t *ids, int n, int ln_out, float *cond, double *acc) {
    int C = m->d.n_embd;
    memcpy(cond, m->w.emb + (int64_t)ids[0] * C, sizeof(float) * C);
    memset(acc, 0, sizeof(double) * C);
    for (int t = 0; t < n; t++) {
        const float *row = m->w.emb + (int64_t)ids[t] * C;
        for (int c = 0; c < C; c++) acc[c] += row[c];
    }
    for (int c = 0; c < C; c++) cond[C + c] = (float)(acc[c] / n);
    if (ln_out) memcpy(cond + 2 * C, ds_rwkv7_ln_out(m) + (int64_t)(n - 1) * C, sizeof(float) * C);
}

static void shard_name(char *buf, size_t len, int rank, int ranks) {
    snprintf(buf, len, "states-r%05d-of-%05d.bin", rank, ranks);
}

/* Context i's state as out_dir/rwkv-states/<i>-<label>.safetensors: an RWKV-PEFT state file for tools
 * outside dreamstate; '/' in a label becomes '_' (the context index alone makes the name unique). */
static void save_rwkv_state(const char *out_dir, int64_t i, const char *label, const char *checkpoint,
                            const char *contexts, const ds_rwkv7_dims *d, const ds_rwkv7_state *st) {
    char name[DS_LABEL_MAX], path[DS_PATH_MAX + 128], meta[2 * DS_PATH_MAX + 256];
    ds_label_file_name(label, name, sizeof name);
    snprintf(path, sizeof path, "%s/rwkv-states/%lld-%s.safetensors", out_dir, (long long)i, name);
    snprintf(meta, sizeof meta, "label=%s\ncheckpoint=%s\ncontexts=%s\ncontext=%lld\n", label, checkpoint, contexts,
             (long long)i);
    ds_state_file_save(path, DS_STATE_FILE_RWKV, d, st, 0, -1, meta);
}

int ds_extract_states(const ds_config *cfg, const ds_extract_options *opt) {
    int rank = ds_dist_rank(), ranks = ds_dist_size();
    if (opt->max_tokens < 1) ds_die(DS_EXIT_BAD_INPUT, "extract-states: --max-tokens must be at least 1");
    if (opt->random_init == (opt->checkpoint != NULL))
        ds_die(DS_EXIT_BAD_INPUT, "extract-states: give either --checkpoint FILE or --random-init%s",
               opt->random_init ? ", not both" : "");
    int threads = ds_dist_threads(cfg->run.threads, "run.threads");
    ds_blas_init(threads);
    ds_kernels_init();
    omp_set_num_threads(threads);  /* ranks sharing a node do not oversubscribe its cores */

    /* Check every input before the model does any work. */
    ds_states *ref = opt->labels_from ? ds_states_open(opt->labels_from) : NULL;
    const ds_states_info *ref_info = ref ? ds_states_get_info(ref) : NULL;
    ds_contexts *ctx = ds_contexts_load(opt->contexts, ref ? ref_info->n_labels : 0, ref ? ref_info->labels : NULL);
    ds_tokenizer *tok = ds_tokenizer_open(cfg->data.tokenizer, cfg->data.vocab_file);
    ds_rwkv7_dims d = opt->random_init ? ds_rwkv7_dims_from_config(cfg) : ds_model_dims_for_weights(cfg, opt->checkpoint);
    if (ds_tokenizer_vocab_size(tok) > (uint32_t)d.vocab_size)
        ds_die(DS_EXIT_BAD_INPUT, "extract-states: the %s tokenizer has %u ids, the model only %d (model.vocab_size)",
               cfg->data.tokenizer, ds_tokenizer_vocab_size(tok), d.vocab_size);
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d);
    m.frozen = 1;  /* inference only: no gradients */
    if (opt->random_init) ds_rwkv7_init_weights(&m, (uint64_t)cfg->run.seed);
    else ds_weights_load(&m, opt->checkpoint);

    char sig[256], shard[64], path[DS_PATH_MAX + 80];
    ds_weights_signature(&d, sig, sizeof sig);
    ds_mkdir_p(opt->out_dir);
    shard_name(shard, sizeof shard, rank, ranks);
    snprintf(path, sizeof path, "%s/%s", opt->out_dir, shard);
    ds_state_shape shape = ds_state_shape_of(&d, EXTRACT_COND | (opt->ln_out ? DS_COND_LAST_HIDDEN : 0));
    ds_state_writer *w = ds_state_writer_open(path, &shape);

    size_t longest = 1;
    for (int64_t i = 0; i < ctx->n; i++) longest = ctx->items[i].len > longest ? ctx->items[i].len : longest;
    int32_t *ids = ds_alloc(sizeof(int32_t) * longest);
    float *cond = ds_alloc(sizeof(float) * shape.cond_dim);
    double *acc = ds_alloc(sizeof(double) * d.n_embd);
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &d, 1);
    ds_rwkv7_reserve(&m, 1, (int)(longest < (size_t)opt->max_tokens ? longest : (size_t)opt->max_tokens));

    char checkpoint[DS_PATH_MAX], contexts[DS_PATH_MAX], meta[3 * DS_PATH_MAX + 512];
    if (opt->random_init) snprintf(checkpoint, sizeof checkpoint, "random-init:seed=%lld", (long long)cfg->run.seed);
    else ds_absolute_path(opt->checkpoint, checkpoint, sizeof checkpoint);
    ds_absolute_path(opt->contexts, contexts, sizeof contexts);
    if (opt->rwkv_state_files) {
        snprintf(path, sizeof path, "%s/rwkv-states", opt->out_dir);
        ds_mkdir_p(path);
    }
    double t0 = ds_now_seconds(), stats[3] = {0, 0, 0};  /* contexts, tokens, truncated */
    ds_log("extract-states: %lld contexts, %d labels, %d ranks, model %s, max %d tokens", (long long)ctx->n,
           ctx->n_labels, ranks, sig, opt->max_tokens);
    ds_progress prog;   /* over rank 0's share: contexts 0, R, 2R, ... */
    ds_progress_begin(&prog, "extract-states", "contexts (rank 0)", (ctx->n + ranks - 1) / ranks);
    for (int64_t i = rank; i < ctx->n; i += ranks) {
        const ds_context *c = &ctx->items[i];
        size_t n = ds_tokenizer_encode(tok, c->text, c->len, ids);
        if (n > (size_t)opt->max_tokens) { n = (size_t)opt->max_tokens; stats[2]++; }
        ds_rwkv7_forward(&m, 1, (int)n, ids, NULL, 1.0f, 0.0f, NULL, &st, NULL);
        condition(&m, ids, (int)n, opt->ln_out, cond, acc);
        ds_state_writer_add(w, c->label, (int32_t)i, cond, &st, 0);
        if (opt->rwkv_state_files)
            save_rwkv_state(opt->out_dir, i, ctx->labels[c->label], checkpoint, contexts, &d, &st);
        stats[0]++;
        stats[1] += (double)n;
        ds_progress_update(&prog, (int64_t)stats[0]);
    }
    ds_progress_end(&prog);
    snprintf(meta, sizeof meta, "model=%s\ncheckpoint=%s\ncontexts=%s\nrank=%d\nranks=%d\n", sig, checkpoint, contexts,
             rank, ranks);
    ds_state_writer_commit(w, meta);
    double seconds = ds_now_seconds() - t0;
    ds_dist_sum_doubles(stats, 3);
    ds_dist_barrier();  /* every shard is in place before the index names it */

    if (rank == 0) {
        ds_states_info info;
        memset(&info, 0, sizeof info);
        info.shape = shape;
        info.n_records = ctx->n;
        info.n_labels = ctx->n_labels;
        info.labels = ctx->labels;
        info.n_shards = ranks;
        info.max_tokens = opt->max_tokens;
        snprintf(info.model, sizeof info.model, "%s", sig);
        snprintf(info.tokenizer, sizeof info.tokenizer, "%s", cfg->data.tokenizer);
        snprintf(info.checkpoint, sizeof info.checkpoint, "%s", checkpoint);
        snprintf(info.contexts, sizeof info.contexts, "%s", contexts);
        ds_states_shard *shards = calloc((size_t)ranks, sizeof *shards);
        for (int r = 0; r < ranks; r++) {
            shard_name(shards[r].file, sizeof shards[r].file, r, ranks);
            shards[r].records = r < ctx->n ? (ctx->n - r + ranks - 1) / ranks : 0;  /* contexts r, r+R, ... */
        }
        snprintf(path, sizeof path, "%s/index.txt", opt->out_dir);
        ds_states_write_index(path, &info, shards);
        free(shards);
        printf("{\"index\":\"%s\",\"records\":%.0f,\"labels\":%d,\"shards\":%d,\"tokens\":%.0f,\"truncated\":%.0f,"
               "\"seconds\":%.3f,\"contexts_per_s\":%.2f,\"tokens_per_s\":%.1f}\n",
               path, stats[0], ctx->n_labels, ranks, stats[1], stats[2], seconds, stats[0] / seconds,
               stats[1] / seconds);
    }
    ds_rwkv7_state_destroy(&st);
    ds_free(ids); ds_free(cond); ds_free(acc);
    ds_rwkv7_destroy(&m);
    ds_tokenizer_free(tok);
    ds_contexts_free(ctx);
    ds_states_close(ref);
    return 0;
}
