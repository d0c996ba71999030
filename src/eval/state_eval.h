/* `dreamstate eval-states` inside src/eval: the run (state_eval.c) and its report (state_eval_report.c). */
#ifndef DREAMSTATE_EVAL_STATE_EVAL_H
#define DREAMSTATE_EVAL_STATE_EVAL_H

#include "dreamstate/eval.h"
#include "dreamstate/state_dit_file.h"
#include "dreamstate/states.h"

enum { N_KS = 2 };
extern const int eval_states_knn_ks[N_KS];   /* 1, 5 */

/* The initial states of the continuation loss, in their batch order; INIT_TUNED only with --tuned. */
enum { INIT_ZERO, INIT_MEAN, INIT_GEN, INIT_GEN_WRONG, INIT_TRUE, INIT_FULL, INIT_TUNED, N_INITS };
enum { CE_STRIDE = N_INITS + 1 };  /* per context: CE sums of each initial state, then the token count */

/* Fréchet distances of one modelled layer (src/eval/README.md §2), in the PCA space of its train states. */
typedef struct fd_layer {
    int layer;
    double explained;               /* share of the train variance the components hold */
    double generated, floor;        /* generated vs held-out; train subset vs held-out (all labels) */
    double *label_generated, *label_floor;  /* [K]; NaN where a set has fewer than 2 rows */
    int64_t *label_subset;          /* [K] train rows in the label's floor */
} fd_layer;

typedef struct eval_run {
    ds_eval_states_options o;
    char out[DS_PATH_MAX + 32];  /* o.out or its default */
    ds_state_dit sd;
    char rwkv_model[256], rwkv_checkpoint[DS_PATH_MAX], tokenizer[16];
    const char *weights;
    ds_states *train, *held;
    const ds_states_info *ti, *hi;
    int K, rank, ranks;
    int n_inits;         /* initial states scored: N_INITS with tuned states, else N_INITS - 1 */
    int64_t n_train, n_held, n_gen, n_eps_train;
    float *train_x;      /* [n_train][x_floats] kNN features */
    int *train_labels, *held_labels;
    float *gen_x;        /* [n_gen][x_floats] generated samples (normalised), on every rank */
    float *class_mean;   /* [K][state floats] mean train state of each label, modelled WKV only */
    float *tuned;        /* [K][state floats] the tuned state of each label (--tuned), or NULL */
    double eps_held[DS_STATE_DIT_EVAL_STEPS + 1], eps_train[DS_STATE_DIT_EVAL_STEPS + 1];  /* per step, mean */
    double *knn;         /* [n_held + n_gen][N_KS + 1]: the k-votes, distance to the nearest train state */
    double *ce;          /* [n_held][CE_STRIDE]; the INIT_TUNED column stays 0 without tuned states */
    int fd_components;   /* K of the Fréchet distances' PCA */
    int64_t fd_subset;   /* train rows of the pooled floor: min(n_gen, n_train) */
    fd_layer *fd;        /* [sd.n_layers], on rank 0 */
    double seconds[6];   /* denoising, features, generation, kNN, continuation, Fréchet */
} eval_run;

/* On rank 0 after the run: the summaries (kNN accuracies, bootstrap CIs of the continuation CE), the
 * JSON file r->out and the table on stdout. */
void eval_states_report(const eval_run *r, double seconds);

#endif
