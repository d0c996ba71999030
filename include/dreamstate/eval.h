/* Evaluation of language models on held-out data. */
#ifndef DREAMSTATE_EVAL_H
#define DREAMSTATE_EVAL_H

#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/rwkv7.h"

typedef struct ds_eval_result {
    double sums[3];           /* nats, target tokens, target bytes: summable over parts (ranks) */
    double loss;              /* mean cross-entropy, nats per token            (set by ds_eval_finish) */
    double perplexity;        /* exp(loss) */
    double bits_per_byte;     /* nats / bytes / ln 2; the separator counts as one byte */
} ds_eval_result;

/* Scores part `part` of `parts` (windows part, part + parts, ...) of `windows` windows of T tokens
 * spread evenly over the stream, B at a time. tok (NULL for byte data) gives each token's byte length.
 * Returns the sums only; add the parts' sums, then call ds_eval_finish. */
ds_eval_result ds_eval_windows(ds_rwkv7 *m, const ds_dataset *ds, const ds_tokenizer *tok, int64_t windows,
                               int part, int parts, int B, int T);
/* Fills loss, perplexity and bits_per_byte from sums; returns *r. */
ds_eval_result ds_eval_finish(ds_eval_result *r);

/* `dreamstate eval`: loads the weights of a .ckpt or official-name .safetensors into the configured
 * model and reports held-out loss, perplexity and bits per byte. Bad files exit with code 2. */
int ds_eval_lm(const ds_config *cfg, const char *weights_path);

#endif
