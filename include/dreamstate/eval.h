/* Held-out evaluation: of RWKV-7 language models (src/eval/eval.c) and of the state DiT's denoising
 * (src/eval/state_dit_loss.c). */
#ifndef DREAMSTATE_EVAL_H
#define DREAMSTATE_EVAL_H

#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/state_dit.h"
#include "dreamstate/states.h"

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

/* Held-out denoising loss (dreamstate.md 6.1 A2): the epsilon-MSE of the weights in dit.params at the
 * fixed base steps ds_state_dit_eval_steps, with one fixed noise draw per record (from seed and the
 * record's index) under the record's own condition. Scores n_records records spread evenly over `set`
 * (record j * N / n_records; all of them when n_records >= N) in batches of B; batch j is this
 * caller's when j mod parts == part. Adds the per-step loss sums (batch mean x batch size) into
 * sums[0 .. DS_STATE_DIT_EVAL_STEPS) and the records scored into sums[DS_STATE_DIT_EVAL_STEPS]; the
 * caller sums over parts and divides. */
#define DS_STATE_DIT_EVAL_STEPS 5
extern const int ds_state_dit_eval_steps[DS_STATE_DIT_EVAL_STEPS];   /* 49, 249, 499, 749, 949 */
void ds_state_dit_eps_mse(ds_state_dit *s, const ds_states *set, int64_t n_records, uint64_t seed, int part, int parts,
                          int B, double *sums);

#endif
