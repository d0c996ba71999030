/* Internal: the individual kernel implementations behind the table in kernels.h. Each *_ref
 * function lives in a *_ref.c file (portable scalar C, the reference), each *_avx512 twin in the
 * matching *_avx512.c file (compiled with -march=x86-64-v4). Signatures match ds_kernel_table. */
#ifndef DREAMSTATE_KERNELS_IMPL_H
#define DREAMSTATE_KERNELS_IMPL_H

#include "dreamstate/kernels.h"

#define DS_KERNEL_DECLS(suffix)                                                                      \
    void wkv7_forward_##suffix(int B, int T, int H, const float *r, const float *decay,              \
                               const float *k, const float *v, const float *alpha, const float *beta, \
                               const float *state_in, float *y, float *state_out, float *ckpt);       \
    void wkv7_backward_##suffix(int B, int T, int H, const float *r, const float *decay,             \
                                const float *k, const float *v, const float *alpha,                   \
                                const float *beta, const float *ckpt, const float *dy,                \
                                const float *dstate_out, float *dr, float *ddecay, float *dk,         \
                                float *dv, float *dalpha, float *dbeta, float *dstate_in);            \
    void norm_forward_##suffix(int rows, int C, int G, float eps, const float *x,                    \
                               const float *gamma, const float *beta, float *y, float *mean,         \
                               float *rstd);                                                          \
    void norm_backward_##suffix(int rows, int C, int G, const float *dy, const float *x,             \
                                const float *mean, const float *rstd, const float *gamma, float *dx,  \
                                float *dgamma, float *dbeta);                                         \
    void modulate_forward_##suffix(int B, int T, int C, float eps, const float *x, const float *shift, \
                                   const float *scale, int64_t stride, float *y, float *mean,         \
                                   float *rstd);                                                      \
    void modulate_backward_##suffix(int B, int T, int C, const float *dy, const float *x,            \
                                    const float *mean, const float *rstd, const float *scale,         \
                                    int64_t stride, float *dx, float *dshift, float *dscale);         \
    void gated_residual_forward_##suffix(int B, int T, int C, const float *x, const float *f,        \
                                         const float *gate, int64_t stride, float *out);              \
    void gated_residual_backward_##suffix(int B, int T, int C, const float *dout, const float *f,    \
                                          const float *gate, int64_t stride, float *df, float *dgate);\
    void shift_mix_forward_##suffix(int B, int T, int C, const float *x, const float *prev,          \
                                    const float *mu, float *out);                                     \
    void shift_mix_backward_##suffix(int B, int T, int C, const float *x, const float *prev,         \
                                     const float *mu, const float *dout, float *dx, float *dprev,     \
                                     float *dmu);                                                     \
    void act_forward_##suffix(ds_activation act, int64_t n, const float *x, float *y);               \
    void act_backward_##suffix(ds_activation act, int64_t n, const float *x, const float *dy,        \
                               float *dx);                                                            \
    void softmax_xent_##suffix(int rows, int V, float *logits, const int32_t *targets, float scale,  \
                               float l2wrap, float *losses);                                          \
    void softmax_forward_##suffix(int64_t rows, int n, const float *x, float *y);                    \
    void softmax_backward_##suffix(int64_t rows, int n, const float *y, const float *dy, float *dx); \
    void attention_forward_##suffix(int B, int H, int T, int D, const float *q, const float *k,        \
                                    const float *v, ds_attn_layout in, float *o, ds_attn_layout out,  \
                                    float *lse);                                                      \
    void attention_backward_##suffix(int B, int H, int T, int D, const float *q, const float *k,       \
                                     const float *v, ds_attn_layout in, const float *o,               \
                                     const float *dout, ds_attn_layout out, const float *lse,         \
                                     float *dq, float *dk, float *dv);                                \
    void adamw_##suffix(int64_t n, float *param, const float *grad, float *m, float *v, float lr,    \
                        float beta1, float beta2, float eps, float weight_decay, int64_t step);       \
    double sum_squares_##suffix(int64_t n, const float *x);                                          \
    void scale_##suffix(int64_t n, float *x, float s);                                               \
    void axpy_##suffix(int64_t n, float a, const float *x, float *y);                               \
    void f32_to_bf16_##suffix(int64_t n, const float *x, uint16_t *y);                               \
    void bf16_to_f32_##suffix(int64_t n, const uint16_t *x, float *y);                               \
    void box_muller_##suffix(int64_t n, uint64_t key, uint64_t first, double *x);

DS_KERNEL_DECLS(ref)
/* Draw j of key alone: the value box_muller_ref gives it, without a block's sort. */
double box_muller_one_ref(uint64_t key, uint64_t j);
DS_KERNEL_DECLS(avx512)

/* FMA chains for the peak probe (peak.c): returns a value so the work cannot be optimised away. */
double fma_chains_ref(int64_t iters);
double fma_chains_avx512(int64_t iters);
/* VDPBF16PS chains for the bf16 peak probe (bf16_avx512.c, AVX512_BF16 CPUs only). */
double dpbf16_chains_avx512(int64_t iters);

#endif
