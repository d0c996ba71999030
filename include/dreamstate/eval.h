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

/* Held-out denoising loss (A2, src/eval/README.md §2): the epsilon-MSE of the weights in dit.params at the
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

/* `dreamstate eval-states` (src/eval/README.md §2, §3; src/eval/state_eval.c): the numbers of
 * DREAMSTATE part A for a state-diffusion checkpoint (EMA weights) and the state datasets of its
 * RWKV-7, on every rank of MPI_COMM_WORLD (ds_dist_init first; also alone): (1) epsilon-MSE at the
 * fixed steps on the held-out records and as many train records; (2) cosine kNN label accuracy of the
 * held-out states and of generated ones, and the memorisation check; (3) teacher-forced CE of each
 * held-out context's continuation from six initial states (seven with tuned ones), with bootstrap CIs. Rank 0 prints a table
 * and writes every number as JSON. Returns the exit code; bad input exits 2 with one line. */
#define DS_EVAL_STATES_MIN_CONTINUATION 16   /* tokens after the extracted part that make a context scorable */
typedef struct ds_eval_states_options {
    const char *model;            /* the state-diffusion checkpoint */
    const char *states, *held_out;  /* train and held-out state-dataset indexes */
    const char *checkpoint;       /* RWKV-7 weights; NULL (default): the model's rwkv_checkpoint= */
    const char *tuned;            /* tuned states (run.task state_tuning's OUT/states/index.txt): a seventh
                                   * initial state, its label's; NULL (default): none */
    const char *vocab;            /* the world tokenizer's vocab file */
    const char *out;              /* NULL (default): MODEL without .ckpt + .eval-states.json */
    int samples_per_label;        /* generated states per label (default 8) */
    int steps;                    /* DDIM steps (default 50) */
    double guidance;              /* classifier-free guidance (default 1: off) */
    double clip;                  /* of the sampler's predicted x0 (default 0: off) */
    double temperature;           /* of the sampler's initial noise (default 1) */
    uint64_t seed;                /* noise of (1), the samples, the bootstrap (default 1234) */
    int continuation_tokens;      /* at least DS_EVAL_STATES_MIN_CONTINUATION (default 128) */
    int fd_components;            /* PCA components of the Fréchet distances; 0 (default): min(32, train
                                   * records - 1, features of a modelled layer) */
    int threads;                  /* per rank; 0 (default): cores / ranks on the node */
} ds_eval_states_options;

ds_eval_states_options ds_eval_states_defaults(void);
int ds_eval_states(const ds_eval_states_options *o);

#endif
