/* Element-wise activations, scalar reference (kernels.h): sigmoid, tanh, relu_sq = max(x, 0)^2,
 * silu = x sigmoid(x), gelu_tanh = x sigmoid(2u) with u = k0 (x + k1 x^3). */
#include "impl.h"

#include <math.h>
#include <string.h>

#include "simd_math.h"

/* Through e = exp(-|x|), which cannot overflow: very negative x keeps its tiny (denormal) value. */
static inline float sigmoid(float x) {
    float e = expf(-fabsf(x)), s = 1.0f / (1.0f + e);
    return x < 0.0f ? e * s : s;
}
/* sigmoid'(x) = e / (1 + e)^2 from the same e: no cancellation in 1 - sigmoid for large x. */
static inline float sigmoid_slope(float x) {
    float e = expf(-fabsf(x)), s = 1.0f / (1.0f + e);
    return e * s * s;
}

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f
/* 2u of gelu_tanh: 1/2 (1 + tanh u) = sigmoid(2u). */
static inline float gelu_2u(float x) { return 2.0f * GELU_K0 * (x + GELU_K1 * x * x * x); }
/* gelu' = sigmoid(2u) + x sigmoid'(2u) d(2u)/dx = sigmoid(2u) + sigmoid'(2u) 2 k0 (x + 3 k1 x^3).
 * Beyond |x| = 50 the second term is exactly 0 in float; clamping x there keeps x^3 finite, so
 * 0 * inf cannot make a NaN. */
static inline float gelu_slope(float x) {
    float xc = fminf(fmaxf(x, -50.0f), 50.0f);
    float a = gelu_2u(x);
    return sigmoid(a) + sigmoid_slope(a) * (2.0f * GELU_K0) * (xc + 3.0f * GELU_K1 * xc * xc * xc);
}
/* max(x, 0) with NaN passing through (as in the AVX-512 twin), as an integer select on the bits:
 * under the default -ftrapping-math gcc will not vectorise a float compare-and-select, and a
 * branch on random signs costs a misprediction per element. */
static inline float relu(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    int keep = (int32_t)u >= 0 || (u & 0x7fffffffu) > 0x7f800000u; /* x >= +0 or NaN */
    u &= keep ? 0xffffffffu : 0u;
    memcpy(&x, &u, sizeof u);
    return x;
}

/* One loop per activation (not a switch per element), so that the compiler can vectorise them. */
void act_forward_ref(ds_activation act, int64_t n, const float *x, float *y) {
    switch (act) {
    case DS_ACT_SIGMOID:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) y[i] = sigmoid(x[i]);
        break;
    case DS_ACT_TANH:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        break;
    case DS_ACT_RELU_SQ:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float r = relu(x[i]);
            y[i] = r * r;
        }
        break;
    case DS_ACT_SILU:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * sigmoid(x[i]);
        break;
    case DS_ACT_GELU_TANH:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * sigmoid(gelu_2u(x[i]));
        break;
    }
}

/* dx += dy f'(x): sigmoid' = s (1 - s), tanh' = 1 - tanh^2, relu_sq' = 2 max(x, 0),
 * silu' = s + x s', gelu_tanh' above. */
void act_backward_ref(ds_activation act, int64_t n, const float *x, const float *dy, float *dx) {
    switch (act) {
    case DS_ACT_SIGMOID:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float s = sigmoid(x[i]);
            dx[i] += dy[i] * (s * (1.0f - s));
        }
        break;
    case DS_ACT_TANH:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float t = tanhf(x[i]);
            dx[i] += dy[i] * (1.0f - t * t);
        }
        break;
    case DS_ACT_RELU_SQ:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (2.0f * relu(x[i]));
        break;
    case DS_ACT_SILU:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (sigmoid(x[i]) + x[i] * sigmoid_slope(x[i]));
        break;
    case DS_ACT_GELU_TANH:
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * gelu_slope(x[i]);
        break;
    }
}
