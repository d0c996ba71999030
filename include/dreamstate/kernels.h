/* Compute kernels: model-agnostic numerical building blocks, each with a portable scalar reference
 * (src/kernels/NAME_ref.c) and an AVX-512 twin (src/kernels/NAME_avx512.c). Callers go through the table
 * `ds_k`, chosen once at start-up by ds_kernels_init(): AVX-512 when the CPU has AVX-512F/BW/VL/DQ,
 * the references otherwise (or when DS_KERNELS=ref is set in the environment).
 *
 * Conventions
 *  - All arrays fp32, row-major, contiguous (attention: strided views, ds_attn_layout); "rows" are
 *    independent vectors of length C.
 *  - Forward kernels overwrite their outputs.
 *  - Backward kernels ACCUMULATE (+=) into every gradient output; the caller zeroes them first.
 *  - Kernels may parallelise internally with OpenMP; results must not depend on the thread count
 *    (no reductions whose order depends on the schedule).
 */
#ifndef DREAMSTATE_KERNELS_H
#define DREAMSTATE_KERNELS_H

#include <stdint.h>

#define DS_HEAD_SIZE 64   /* N: channels per head, fixed by the RWKV-7 kernels */
#define DS_WKV_CHUNK 16   /* state checkpoint interval of the WKV-7 forward */

/* silu(x) = x sigmoid(x); gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed as
 * x sigmoid(2u) (the same function, without the cancellation of 1 + tanh for negative x). Like
 * PyTorch, both give NaN at x = -inf. */
typedef enum { DS_ACT_SIGMOID, DS_ACT_TANH, DS_ACT_RELU_SQ, DS_ACT_SILU, DS_ACT_GELU_TANH } ds_activation;

/* Strides, in floats, of a [B, H, T, D] view whose last dimension is contiguous: element (b, h, t, i)
 * sits at base + b * batch + h * head + t * token + i. E.g. q of a [B, T, 3, H, D] qkv buffer:
 * {T * 3 H D, D, 3 H D}. */
typedef struct ds_attn_layout {
    int64_t batch, head, token;
} ds_attn_layout;

typedef struct ds_kernel_table {
    const char *name;  /* "avx512" or "reference" */

    /* ---- WKV-7 recurrence (src/rwkv7/README.md §2.3 / §3.1) ----
     * B sequences of T steps, H heads of N = 64; r, decay, k, v, alpha, beta, y are [B, T, H*N].
     * State per (b, h) is an N x N matrix S[i][j], i = value channel, j = key channel, row-major;
     * state arrays are [B, H, N, N].
     * forward: state_in may be NULL (zero initial state). state_out (may be NULL) receives S_{T-1}.
     *   ckpt [B, H, ceil(T/16), N, N] receives the state *before* steps 0, 16, 32, ... (ckpt[..,0,..] is
     *   the initial state); the backward replays each chunk from it. ckpt may be NULL (inference).
     * backward: dy [B,T,C]; dstate_out (NULL = zero) is dL/dS_{T-1}; dstate_in (NULL = not wanted)
     *   receives (+=) dL/dS_init. Accumulates dr, ddecay, dk, dv, dalpha, dbeta. */
    void (*wkv7_forward)(int B, int T, int H, const float *r, const float *decay, const float *k,
                         const float *v, const float *alpha, const float *beta, const float *state_in,
                         float *y, float *state_out, float *ckpt);
    void (*wkv7_backward)(int B, int T, int H, const float *r, const float *decay, const float *k,
                          const float *v, const float *alpha, const float *beta, const float *ckpt,
                          const float *dy, const float *dstate_out, float *dr, float *ddecay, float *dk,
                          float *dv, float *dalpha, float *dbeta, float *dstate_in);

    /* ---- Normalisation over groups of G consecutive channels (G = C: LayerNorm; G = 64: GroupNorm
     * per head), with per-channel affine gamma, beta [C]. x, y [rows, C]; mean, rstd [rows, C/G]. */
    void (*norm_forward)(int rows, int C, int G, float eps, const float *x, const float *gamma,
                         const float *beta, float *y, float *mean, float *rstd);
    void (*norm_backward)(int rows, int C, int G, const float *dy, const float *x, const float *mean,
                          const float *rstd, const float *gamma, float *dx, float *dgamma, float *dbeta);

    /* ---- adaLN modulation (LayerNorm without affine, then a per-sample scale and shift): rows come in B
     * groups of T (samples of T tokens) of C channels; group b uses scale + b * stride and shift +
     * b * stride ([C] each): y = xhat (1 + scale_b) + shift_b, xhat = (x - mean) rstd over the row.
     * x, y [B T, C]; mean, rstd [B T]. backward accumulates dx, and dscale, dshift (the layout of
     * scale, shift; each sample's sum over its rows in a fixed order). */
    void (*modulate_forward)(int B, int T, int C, float eps, const float *x, const float *shift,
                             const float *scale, int64_t stride, float *y, float *mean, float *rstd);
    void (*modulate_backward)(int B, int T, int C, const float *dy, const float *x, const float *mean,
                              const float *rstd, const float *scale, int64_t stride, float *dx,
                              float *dshift, float *dscale);

    /* ---- Gated residual with a per-sample gate (rows and gate + b * stride as for modulate):
     * out = x + gate_b f. backward accumulates df += dout gate_b and dgate_b += sum over the sample's
     * rows of dout f (the residual's dx = dout is the caller's). */
    void (*gated_residual_forward)(int B, int T, int C, const float *x, const float *f, const float *gate,
                                   int64_t stride, float *out);
    void (*gated_residual_backward)(int B, int T, int C, const float *dout, const float *f,
                                    const float *gate, int64_t stride, float *df, float *dgate);

    /* ---- Token shift with a per-channel lerp: out[b,t] = x[b,t] + (x[b,t-1] - x[b,t]) * mu, where
     * x[b,-1] = prev[b] (prev [B, C], NULL = zeros). x, out [B, T, C], mu [C].
     * backward accumulates dx, dmu, and dprev (if non-NULL). */
    void (*shift_mix_forward)(int B, int T, int C, const float *x, const float *prev, const float *mu,
                              float *out);
    void (*shift_mix_backward)(int B, int T, int C, const float *x, const float *prev, const float *mu,
                               const float *dout, float *dx, float *dprev, float *dmu);

    /* ---- Element-wise activations on n values. backward takes the forward input x (not y) and
     * accumulates dx += dy * f'(x). */
    void (*act_forward)(ds_activation act, int64_t n, const float *x, float *y);
    void (*act_backward)(ds_activation act, int64_t n, const float *x, const float *dy, float *dx);

    /* ---- Softmax cross-entropy with RWKV's L2Wrap (src/rwkv7/README.md §4.4), fused forward + backward.
     * logits [rows, V] are overwritten IN PLACE by dlogits = scale * (softmax - onehot(target))
     * + scale * l2wrap * max_logit at the argmax (first index on ties). losses[rows] receives the
     * per-row cross-entropy (natural log). A target < 0 marks a row that is ignored (zero gradient,
     * zero loss). */
    void (*softmax_xent)(int rows, int V, float *logits, const int32_t *targets, float scale,
                         float l2wrap, float *losses);

    /* ---- Row softmax (attention probabilities): y[r] = softmax(x[r]) over n columns, x == y allowed.
     * backward takes the forward OUTPUT y and accumulates dx += y * (dy - <dy, y>) per row. */
    void (*softmax_forward)(int64_t rows, int n, const float *x, float *y);
    void (*softmax_backward)(int64_t rows, int n, const float *y, const float *dy, float *dx);

    /* ---- Full (non-causal) multi-head attention, O = softmax(Q K^T / sqrt(D)) V per (b, h), B batches
     * of H heads of T tokens of D channels. q, k, v share the layout `in`; o and dout the layout `out`;
     * lse [B, H, T] (contiguous) receives the log-sum-exp of each query's scaled scores, from which
     * the backward recomputes the probabilities (no T x T matrix is kept). backward accumulates dq,
     * dk, dv (layout `in`) from dout = dL/dO and the forward's o and lse. */
    void (*attention_forward)(int B, int H, int T, int D, const float *q, const float *k, const float *v,
                              ds_attn_layout in, float *o, ds_attn_layout out, float *lse);
    void (*attention_backward)(int B, int H, int T, int D, const float *q, const float *k, const float *v,
                               ds_attn_layout in, const float *o, const float *dout, ds_attn_layout out,
                               const float *lse, float *dq, float *dk, float *dv);

    /* ---- AdamW with bias correction (src/rwkv7/README.md §4.2): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     * p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + lr * wd * p.  step t >= 1. */
    void (*adamw)(int64_t n, float *param, const float *grad, float *m, float *v, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t step);

    /* ---- Reductions / BLAS-1 helpers. */
    double (*sum_squares)(int64_t n, const float *x);        /* in double, fixed order */
    void (*scale)(int64_t n, float *x, float s);             /* x *= s */
    void (*axpy)(int64_t n, float a, const float *x, float *y); /* y += a x */

    /* ---- bf16 (the top 16 bits of an fp32, stored as uint16_t) for the bf16 matrix products (blas.h).
     * f32_to_bf16 rounds to nearest, ties to even, as AVX512_BF16's VCVTNE2PS2BF16 does: a NaN stays a
     * (quiet) NaN, a denormal input becomes a zero of its sign. bf16_to_f32 is exact. The AVX-512
     * twins need AVX512_BF16: on AVX-512 CPUs without it the table holds the references here. */
    void (*f32_to_bf16)(int64_t n, const float *x, uint16_t *y);
    void (*bf16_to_f32)(int64_t n, const uint16_t *x, float *y);

    /* ---- Gaussian draws of the counter-based RNG (common.h): x[i] = sqrt(-2 log u1) cos(2 pi u2), i < n,
     * with u1 = ((h(2 j) >> 11) + 1) 2^-53 in (0, 1] and u2 = (h(2 j + 1) >> 11) 2^-53 in [0, 1), where
     * j = first + i and h(c) = ds_splitmix64(key ^ c). The reference takes log and cos from libm, and
     * that defines the values: the AVX-512 twin returns the same doubles, bit for bit. On one thread. */
    void (*box_muller)(int64_t n, uint64_t key, uint64_t first, double *x);
} ds_kernel_table;

extern ds_kernel_table ds_k;

/* Gaussian draws of the counter-based RNG (common.h), through ds_k.box_muller; the values are those of the
 * reference kernel whichever table is active. */
double ds_rng_normal(uint64_t seed, uint64_t stream, uint64_t index);  /* N(0, 1) */
/* x[i] = ds_rng_normal(seed, stream, first + i), i < n, on this thread (the stream's key hashed once). */
void ds_rng_normals(double *x, int64_t n, uint64_t seed, uint64_t stream, uint64_t first);
/* x[i] = sd ds_rng_normal(seed, stream, first + i) rounded to float, i < n (on several threads when n is
 * large); ds_fill_normal from index 0. */
void ds_fill_normal_at(float *x, int64_t n, double sd, uint64_t seed, uint64_t stream, uint64_t first);
void ds_fill_normal(float *x, int64_t n, double sd, uint64_t seed, uint64_t stream);
extern const ds_kernel_table ds_kernels_reference;
extern const ds_kernel_table ds_kernels_avx512;

/* Chooses the table (see above) and returns its name. Safe to call more than once. */
const char *ds_kernels_init(void);
int ds_cpu_has_avx512(void);
/* AVX-512 with its bf16 extension (VCVTNE2PS2BF16, VDPBF16PS): Cooper Lake, Sapphire Rapids, Zen 4/5. */
int ds_cpu_has_avx512_bf16(void);

/* Measured FP32 FMA peak of this machine in GFLOP/s over `threads` OpenMP threads (independent FMA
 * chains for `seconds`), with the widest SIMD the CPU has: MFU's denominator. */
double ds_measure_fma_peak(int threads, double seconds);
/* The same for bf16 products with fp32 accumulation: VDPBF16PS chains (2 products per fp32 lane) where
 * the CPU has AVX512_BF16, else the FP32 FMA peak (bf16 products then run on fp32 FMAs, blas.h). AMX
 * tiles are not probed: on AMX CPUs oneDNN can exceed this figure. */
double ds_measure_bf16_peak(int threads, double seconds);
#endif
