/* RWKV-7 ("x070") language model: parameters, forward, backward, initialisation, sampling (src/rwkv7/README.md). Parameters and gradients are each one allocation with a pointer table whose
 * tensor names, shapes and layouts are the official RWKV-LM checkpoint keys (src/rwkv7/README.md §5);
 * activations are one allocation sized for (B, T). Knows nothing about MPI, files or configs. */
#ifndef DREAMSTATE_RWKV7_H
#define DREAMSTATE_RWKV7_H

#include "dreamstate/tensor.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ds_rwkv7_dims {
    int n_layer, n_embd, vocab_size;     /* L, C, V; heads H = C / 64 */
    int dim_w, dim_a, dim_v, dim_g;      /* LoRA ranks Dw, Da, Dv, Dg */
} ds_rwkv7_dims;

/* LoRA ranks from the formulas of src/rwkv7/README.md §1: formula "released" or "current". */
void ds_rwkv7_default_ranks(ds_rwkv7_dims *d, const char *formula);

typedef struct ds_rwkv7_layer {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    float *x_r, *x_w, *x_k, *x_v, *x_a, *x_g;         /* [C] token-shift mixes */
    float *w0, *w1, *w2, *a0, *a1, *a2, *v0, *v1, *v2, *g1, *g2; /* LoRAs, [in,out] */
    float *k_k, *k_a, *r_k;                           /* [C], [C], [H,N] */
    float *Wr, *Wk, *Wv, *Wo;                         /* [C,C], applied as x W^T */
    float *lnx_w, *lnx_b;                             /* GroupNorm affine [C] */
    float *ffn_x_k, *Kf, *Vf;                         /* [C], [4C,C], [C,4C] */
} ds_rwkv7_layer;

typedef struct ds_rwkv7_weights {
    float *emb, *ln0_w, *ln0_b, *ln_out_w, *ln_out_b, *head;
    ds_rwkv7_layer *layers;  /* [L] */
} ds_rwkv7_weights;


/* Recurrent state for B sequences (src/rwkv7/README.md §6): per layer att x_prev [B,C], WKV [B,H,N,N],
 * ffn x_prev [B,C]. One allocation. */
typedef struct ds_rwkv7_state {
    int B;
    float *att_x;   /* [L, B, C] */
    float *wkv;     /* [L, B, H, N, N] */
    float *ffn_x;   /* [L, B, C] */
    float *data;
    int64_t numel;
} ds_rwkv7_state;

/* Per-sequence matrices of one time-mix projection (ds_rwkv7.seq_weights). */
typedef struct ds_rwkv7_seq_weight {
    const float *w;  /* [B, C, C]: sequence b's matrix at w + b C C, applied as x W^T (NULL: the model's own) */
    float *g;        /* [B, C, C]: the backward adds sequence b's gradient into g + b C C */
    int shared;      /* 1: w and g are one [C, C] matrix for every sequence (one product over the B T rows) */
} ds_rwkv7_seq_weight;

typedef struct ds_rwkv7 {
    ds_rwkv7_dims d;
    int n_tensors;
    ds_param_tensor *tensors;       /* the parameter table */
    int64_t n_params;
    float *params, *grads;          /* [n_params] each */
    int external;                   /* params and grads are the caller's (ds_rwkv7_create_in) */
    ds_rwkv7_weights w, g;          /* pointer tables into params and grads */
    int64_t *layer_begin;           /* [L+1]: flat offset of layer l's first tensor; [L]: of ln_out */
    /* Optional: called during backward each time a contiguous range of the gradient array is final
     * (head and ln_out first, then each layer from the last, then embedding and ln0), so that a
     * caller can start communicating it while backward goes on. */
    void (*grads_ready)(void *ctx, int64_t offset, int64_t numel);
    void *grads_ready_ctx;
    /* 1: activation checkpointing per block (src/rwkv7/README.md §3.6): the forward keeps each block's
     * input, the backward recomputes the block's internals just before its backward (same results bit
     * for bit, about one more forward of time, activations of one block instead of L). Set it before
     * ds_rwkv7_reserve or a forward. */
    int grad_checkpoint;
    /* 1: the weights are frozen (state tuning). The backward then skips the matrix products of the weight
     * gradients and the embedding part, so `grads` holds no meaningful values and grads_ready is not
     * called; what flows to the initial state is computed as usual. */
    int frozen;
    /* Optional per-sequence W_r, W_k, W_v (src/rwkv7/README.md §3.5): NULL, or [L][3] (r, k, v). Where
     * seq_weights[3 l + m].w is set, the forward multiplies each sequence's T rows by that sequence's own
     * matrix instead of the model's, and the backward adds each sequence's gradient into .g (also when
     * frozen) and nothing into grads for that matrix. The arrays hold at least the forward's B matrices. */
    ds_rwkv7_seq_weight *seq_weights;
    /* activations (allocated by ds_rwkv7_reserve for at most B x T) */
    int act_B, act_T;
    float *acts;
    int64_t acts_numel;
    void *act;                      /* internal pointer table */
} ds_rwkv7;

void ds_rwkv7_create(ds_rwkv7 *m, const ds_rwkv7_dims *d);
/* The parameter table of a model of dims d into t (from {0}): official names and shapes, w0 at twice
 * the lr, bound to the fields of ds_rwkv7_weights. A larger trainable set takes it in with
 * ds_param_append. */
void ds_rwkv7_param_table(ds_param_table *t, const ds_rwkv7_dims *d);
/* Like ds_rwkv7_create, but the parameters and gradients live in the caller's arrays of the table's
 * n_floats floats each (e.g. a slice of a larger trainable set); destroy leaves them. */
void ds_rwkv7_create_in(ds_rwkv7 *m, const ds_rwkv7_dims *d, float *params, float *grads);
void ds_rwkv7_destroy(ds_rwkv7 *m);
/* Official "better init" of src/rwkv7/README.md §4.1 from a seed (deterministic, thread-count independent).
 * Unless m is frozen, its gradient buffer serves as the init's scratch and is left zeroed, resident. */
void ds_rwkv7_init_weights(ds_rwkv7 *m, uint64_t seed);
/* Makes activation storage available for batches up to B x T (reallocates if needed). */
void ds_rwkv7_reserve(ds_rwkv7 *m, int B, int T);
/* Floats that ds_rwkv7_reserve(B, T) allocates for activations and gradient scratch (acts_numel) with
 * m->grad_checkpoint == grad_checkpoint, without allocating them: for memory planning. */
int64_t ds_rwkv7_activation_floats(const ds_rwkv7_dims *d, int B, int T, int grad_checkpoint);
/* Bytes of the converted operands the bf16 products keep (train.precision bf16, src/blas/bf16.c): the
 * widest activation [B T, F] and weight [F, C] in bf16, F = max(vocab, 4 C) (the head or the FFN). */
double ds_rwkv7_bf16_operand_bytes(const ds_rwkv7_dims *d, int B, int T);

void ds_rwkv7_state_create(ds_rwkv7_state *s, const ds_rwkv7_dims *d, int B);
void ds_rwkv7_state_destroy(ds_rwkv7_state *s);

/* Forward over tokens [B,T]. state_in (NULL = zero) is read, state_out (NULL = not wanted) written;
 * they may be the same object. If logits_out is non-NULL it receives [B,T,V] logits.
 * If targets is non-NULL ([B,T], -1 = ignore), the loss is computed: returns the mean cross-entropy
 * over the non-ignored targets and leaves dlogits (scaled by loss_scale / count) ready for backward.
 * Returns 0 when targets is NULL. */
double ds_rwkv7_forward(ds_rwkv7 *m, int B, int T, const int32_t *tokens, const int32_t *targets,
                        float loss_scale, float l2wrap, const ds_rwkv7_state *state_in,
                        ds_rwkv7_state *state_out, float *logits_out);
/* The last forward's final hidden states, ln_out(x) before the head: [B, T, C], row b T + t. Valid until
 * the next forward or reserve. */
const float *ds_rwkv7_ln_out(const ds_rwkv7 *m);
/* Forward from the zero state over tokens [B,T] up to the final ln_out, without the head: returns the ln_out
 * output [B,T,C], which lives in the model's activations until its next forward (no backward of it). */
const float *ds_rwkv7_forward_hidden(ds_rwkv7 *m, int B, int T, const int32_t *tokens);
/* Backward of the last forward (which must have had targets; it may have started from a state_in);
 * accumulates into m->grads. */
void ds_rwkv7_backward(ds_rwkv7 *m);
/* The same, and the gradient of the loss with respect to the forward's initial state (state_in, or the
 * zero state when it was NULL) written into d_state, a state for the forward's B sequences (every part:
 * att x_prev, WKV, ffn x_prev; src/rwkv7/README.md §3.4). */
void ds_rwkv7_backward_state(ds_rwkv7 *m, ds_rwkv7_state *d_state);
void ds_rwkv7_zero_grad(ds_rwkv7 *m);

/* ---- state tuning (src/rwkv7/state_tuning.c, src/rwkv7/README.md §3.4) ----
 * RWKV-PEFT's method: trainable initial WKV states of a frozen model. A set of states is one [H, N, N]
 * matrix per layer, [L][H][N][N] floats ([head][value][key], as RWKV state files store them); a batch
 * starts each sequence from one of several sets (e.g. one set per label), with zero token-shift states. */
typedef struct ds_rwkv7_tuner {
    ds_rwkv7 *model;
    int64_t set_floats;        /* L H N N */
    ds_rwkv7_state in, d_in;   /* the batch's initial state and its gradient */
} ds_rwkv7_tuner;

/* Binds a tuner to m and marks m frozen (m->frozen = 1). */
void ds_rwkv7_tuner_init(ds_rwkv7_tuner *t, ds_rwkv7 *m);
void ds_rwkv7_tuner_destroy(ds_rwkv7_tuner *t);
/* Forward over n sequences tokens/targets [n, T] (target -1: not scored, e.g. padding after a short
 * text); sequence b starts from the set states + set[b] * set_floats. Returns the summed cross-entropy
 * of the scored tokens. With grads != NULL also the backward of (summed CE) x scale, with L2Wrap
 * (src/rwkv7/README.md §4.4) at l2wrap x scale per scored token: its gradient with respect to the
 * states of set s is added to grads + s * set_floats. */
double ds_rwkv7_tuner_run(ds_rwkv7_tuner *t, int n, int T, const int32_t *tokens, const int32_t *targets,
                          const int32_t *set, const float *states, float *grads, float scale, float l2wrap);

/* FLOPs of one training step (forward + backward) per token, matrix products only (6 x matmul
 * parameters incl. head; the WKV recurrence is counted separately), for MFU. */
double ds_rwkv7_flops_per_token(const ds_rwkv7_dims *d, int T);
/* The same for a step with frozen weights (state tuning): forward and the dx products, no dW (4x). */
double ds_rwkv7_frozen_flops_per_token(const ds_rwkv7_dims *d);
/* What m->grad_checkpoint adds per token, not counted in the two above (MFU counts the model's FLOPs):
 * the blocks' forward once more, 2 per block matrix parameter and the WKV forward; the same is the cost
 * of ds_rwkv7_forward_hidden per token. */
double ds_rwkv7_recompute_flops_per_token(const ds_rwkv7_dims *d);

/* ---- token sampling (src/rwkv7/sampling.c) ---- */

/* Bytes of scratch memory ds_sample_token needs for V logits. */
size_t ds_sample_scratch_bytes(int V);

/* Draws one token id from logits[0..V) with the uniform number u in [0, 1); pure (no state, no I/O).
 *   temperature 0: the argmax (the lowest id on ties); top_p and u are then not used.
 *   temperature > 0: weights w_i = exp((logit_i - max logit) / temperature) in double (the softmax
 *     before normalising). Tokens are ranked by logit, descending, ties by lower id. The nucleus is
 *     the shortest prefix of that ranking whose weight reaches top_p * sum(w) (sums in double, so up
 *     to rounding); top_p = 1 keeps every token. The result is the first nucleus token, in id order,
 *     whose cumulative weight exceeds u * (nucleus weight): token i is drawn with probability
 *     w_i / (nucleus weight), the renormalised softmax of the nucleus, and the draw is a
 *     deterministic function of u. O(V) time plus sorting a small part of the vocabulary.
 * Returns -1 (and draws nothing) on bad arguments: V < 1, temperature negative or not finite, top_p
 * outside (0, 1], u outside [0, 1), a logit that is not finite. `scratch`: ds_sample_scratch_bytes(V)
 * bytes, aligned for double. */
int32_t ds_sample_token(const float *logits, int V, double temperature, double top_p, double u, void *scratch);

#endif
