/* Conditional Diffusion Transformer with adaLN-Zero (src/dit/README.md §1, §2; the state DiT of §3.2-3.5):
 * parameters, forward, backward, initialisation. Like the RWKV-7 model, parameters and gradients are
 * each one allocation with a pointer table of named tensors (the facebookresearch/DiT state-dict keys,
 * plus "c_embedder.*" for the continuous condition of src/dit/README.md §1.2), and activations are one allocation sized
 * for a batch. Input and output are "images" [B, C, I, I] (a WKV state: C = heads, I = head size);
 * the output is the epsilon prediction (no learned variance). Knows nothing about MPI or files.
 *
 * Condition (src/dit/README.md §1.2): y = label_table[label] (row K = the learned null label) and/or, with cond_dim > 0,
 * y = cond_w vec + cond_b (or the learned null vector cond_null); both summed if both are present.
 * c = t_emb + y drives every block's adaLN modulation through SiLU(c). */
#ifndef DREAMSTATE_DIT_H
#define DREAMSTATE_DIT_H

#include "dreamstate/tensor.h"

#include <stdint.h>

#define DS_DIT_FREQ_DIM 256   /* sinusoidal timestep features (src/dit/README.md §1.2) */
#define DS_DIT_LN_EPS 1e-6f

typedef struct ds_dit_dims {
    int in_channels;   /* C (= output channels) */
    int input_size;    /* I: input [C, I, I] */
    int patch_size;    /* p, divides I; tokens T = (I/p)^2 */
    int hidden;        /* d: a multiple of heads and of 4 (2-D sin-cos position table) */
    int depth;         /* DiT blocks (0 is allowed: embeddings + final layer) */
    int heads;
    int mlp_ratio;     /* MLP width = mlp_ratio * d (DiT: 4) */
    int num_classes;   /* K: label table of K + 1 rows, row K = null label; 0 = no label condition */
    int cond_dim;      /* continuous condition vector length; 0 = none */
} ds_dit_dims;

typedef struct ds_dit_block {
    float *ada_w, *ada_b;      /* adaLN_modulation.1: [6d, d], [6d]; chunks shift/scale/gate msa, mlp */
    float *qkv_w, *qkv_b;      /* attn.qkv: [3d, d], [3d] (q, k, v; heads contiguous inside each) */
    float *proj_w, *proj_b;    /* attn.proj: [d, d], [d] */
    float *fc1_w, *fc1_b;      /* mlp.fc1: [r d, d], [r d] */
    float *fc2_w, *fc2_b;      /* mlp.fc2: [d, r d], [d] */
} ds_dit_block;

typedef struct ds_dit_weights {
    float *patch_w, *patch_b;          /* x_embedder.proj: [d, C, p, p] (a conv, kernel = stride = p), [d] */
    float *t_w1, *t_b1, *t_w2, *t_b2;  /* t_embedder.mlp.0: [d, 256], [d]; mlp.2: [d, d], [d] */
    float *label_table;                /* y_embedder.embedding_table: [K + 1, d] (NULL if K = 0) */
    float *cond_w, *cond_b, *cond_null; /* c_embedder.proj: [d, cond_dim], [d]; c_embedder.null: [d] */
    ds_dit_block *blocks;              /* [depth] */
    float *final_ada_w, *final_ada_b;  /* final_layer.adaLN_modulation.1: [2d, d], [2d] (shift, scale) */
    float *final_w, *final_b;          /* final_layer.linear: [p p C, d], [p p C]; rows (u, v, c) */
} ds_dit_weights;


/* The condition of a batch of B samples. Set exactly the parts the model has. */
typedef struct ds_dit_cond {
    const int32_t *labels;    /* [B] in [0, K]; K = null (num_classes > 0) */
    const float *vec;         /* [B, cond_dim] (cond_dim > 0) */
    const uint8_t *vec_null;  /* [B] non-zero: use cond_null for this sample (NULL: none dropped) */
} ds_dit_cond;

typedef struct ds_dit {
    ds_dit_dims d;
    int grid, tokens, patch_dim;   /* G = I/p, T = G^2, C p p */
    int n_tensors;
    ds_param_tensor *tensors;      /* the parameter table */
    int64_t n_params;
    float *params, *grads;         /* [n_params] each */
    int external;                  /* params and grads are the caller's (ds_dit_create_in) */
    ds_dit_weights w, g;           /* pointer tables into params and grads */
    float *pos_embed;              /* [T, d] fixed 2-D sin-cos table (not a parameter) */
    int act_B;                     /* activations allocated for batches up to act_B */
    float *acts;
    int64_t acts_numel;
    void *act;                     /* internal pointer table */
} ds_dit;

/* Validates the dims (exit 2 with a reason) and allocates. */
void ds_dit_create(ds_dit *m, const ds_dit_dims *d);
/* The parameter table of a DiT of dims d into t (from {0}; dims validated as by create): the DiT
 * state-dict names and shapes, bound to the fields of ds_dit_weights. A larger trainable set takes
 * it in with ds_param_append. */
void ds_dit_param_table(ds_param_table *t, const ds_dit_dims *d);
/* Like ds_dit_create, but the parameters and gradients live in the caller's arrays of the table's
 * n_floats floats each (e.g. a slice of a larger trainable set); destroy leaves them. */
void ds_dit_create_in(ds_dit *m, const ds_dit_dims *d, float *params, float *grads);
void ds_dit_destroy(ds_dit *m);
/* DiT initialisation (src/dit/README.md §1.5) from a seed: Xavier-uniform Linear and patch weights, zero biases,
 * N(0, 0.02^2) timestep-MLP weights, label table and null vector, and zero adaLN and final layers
 * (so every block starts as the identity and the output as exactly 0). */
void ds_dit_init_weights(ds_dit *m, uint64_t seed);
void ds_dit_reserve(ds_dit *m, int B);
/* Floats that ds_dit_reserve(B) allocates for activations and gradient scratch (acts_numel), and the
 * parameter floats of a DiT of dims d (n_params), without allocating the model (dims complete). */
int64_t ds_dit_activation_floats(const ds_dit_dims *d, int B);
int64_t ds_dit_n_params(const ds_dit_dims *d);
void ds_dit_zero_grad(ds_dit *m);

/* Forward of x_t [B, C, I, I] at network timesteps t[B] (the integer index, src/dit/README.md §1.2) under cond.
 * eps_out (may be NULL) receives the prediction [B, C, I, I]. With noise (the true epsilon, [B, C, I,
 * I]) it returns the loss mean((eps_hat - noise)^2) and keeps what the backward needs; without, 0. */
double ds_dit_forward(ds_dit *m, int B, const float *x_t, const int32_t *t, const ds_dit_cond *cond,
                      const float *noise, float *eps_out);
/* Backward of the last forward (which must have had noise): accumulates every parameter gradient
 * into m->grads; dx (may be NULL) receives (=) dL/dx_t [B, C, I, I]. */
void ds_dit_backward(ds_dit *m, float *dx);
/* The same from a caller-given output gradient d_eps = dL/d(eps_hat) [B, C, I, I], for losses other
 * than the epsilon MSE (the forward may have been run without noise). d_vec (may be NULL; cond_dim > 0)
 * receives (=) dL/d(cond->vec) [B, cond_dim], zero rows for the samples that used the null vector. */
void ds_dit_backward_from(ds_dit *m, const float *d_eps, float *dx, float *d_vec);
/* Multiplies the loss of the last forward by `scale` as far as the next backward is concerned (e.g.
 * a micro-batch's share of a larger batch). */
void ds_dit_scale_loss(ds_dit *m, float scale);

/* Patch layouts (src/dit/README.md §1.1), for one image [C, I, I] <-> [T, C p p] patch vectors, tokens row-major over
 * the patch grid. channels_last = 0: (channel, row, col) within a patch, the patch embed's input
 * order; 1: (row, col, channel), the final layer's output order. Each is a permutation, so
 * patches_to_image inverts image_to_patches of the same order. */
void ds_dit_image_to_patches(int C, int I, int p, int channels_last, const float *img, float *patches);
void ds_dit_patches_to_image(int C, int I, int p, int channels_last, const float *patches, float *img);

/* Forward FLOPs of one sample, matrix products only (patch embed, blocks incl. attention, adaLN,
 * final layer, timestep MLP); a training step is about 3x. */
double ds_dit_forward_flops(const ds_dit_dims *d);

#endif
