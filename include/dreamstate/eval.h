/* Evaluation of language models on held-out data. */
#ifndef DREAMSTATE_EVAL_H
#define DREAMSTATE_EVAL_H

#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/rwkv7.h"

typedef struct ds_eval_result {
    double loss;              /* mean cross-entropy, nats per token */
    double perplexity;        /* exp(loss) */
    double bits_per_byte;     /* loss * tokens / bytes / ln 2 */
    int64_t tokens, bytes;
} ds_eval_result;

/* Scores `windows` windows of T tokens spread evenly over the stream, B at a time (the last batch may be
 * partial). Every target token counts once. tok (NULL for byte data) gives the byte length per token. */
ds_eval_result ds_eval_windows(ds_rwkv7 *m, const ds_dataset *ds, const ds_tokenizer *tok, int64_t windows,
                               int B, int T);

/* `dreamstate eval`: loads the weights of a .ckpt or official-name .safetensors into the configured
 * model and reports held-out loss, perplexity and bits per byte. Bad files exit with code 2. */
int ds_eval_lm(const ds_config *cfg, const char *weights_path);

#endif
