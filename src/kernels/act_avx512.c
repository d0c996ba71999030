/* Element-wise activations, AVX-512 twin of act_ref.c (exp, sigmoid, tanh from simd_math.h). */
#include "impl.h"

#include "simd_math.h"

/* max(0, x); with x as the second operand a NaN passes through. */
static inline __m512 relu512(__m512 x) { return _mm512_max_ps(_mm512_setzero_ps(), x); }

/* sigmoid'(x) = e / (1 + e)^2 with e = exp(-|x|), as in act_ref.c. */
static inline __m512 sigmoid_slope512(__m512 x) {
    __m512 e = ds_exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    __m512 s = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    return _mm512_mul_ps(_mm512_mul_ps(e, s), s);
}

#define GELU_2K0 1.5957691216057308f            /* 2 sqrt(2/pi) */
#define GELU_2K0K1 (1.5957691216057308f * 0.044715f)
/* 2u = 2 k0 (x + k1 x^3) of gelu_tanh = x sigmoid(2u). */
static inline __m512 gelu_2u512(__m512 x) {
    __m512 x2 = _mm512_mul_ps(x, x);
    return _mm512_mul_ps(x, _mm512_fmadd_ps(x2, _mm512_set1_ps(GELU_2K0K1), _mm512_set1_ps(GELU_2K0)));
}

static inline __m512 act_value(ds_activation act, __m512 x) {
    switch (act) {
    case DS_ACT_SIGMOID: return ds_sigmoid512(x);
    case DS_ACT_TANH: return ds_tanh512(x);
    case DS_ACT_SILU: return _mm512_mul_ps(x, ds_sigmoid512(x));
    case DS_ACT_GELU_TANH: return _mm512_mul_ps(x, ds_sigmoid512(gelu_2u512(x)));
    default: {
        __m512 r = relu512(x);
        return _mm512_mul_ps(r, r);
    }
    }
}

static inline __m512 act_derivative(ds_activation act, __m512 x) {
    __m512 one = _mm512_set1_ps(1.0f);
    switch (act) {
    case DS_ACT_SIGMOID: {
        __m512 s = ds_sigmoid512(x);
        return _mm512_mul_ps(s, _mm512_sub_ps(one, s));
    }
    case DS_ACT_TANH: {
        __m512 t = ds_tanh512(x);
        return _mm512_fnmadd_ps(t, t, one);
    }
    case DS_ACT_SILU: return _mm512_fmadd_ps(x, sigmoid_slope512(x), ds_sigmoid512(x));
    case DS_ACT_GELU_TANH: {
        /* sigmoid(2u) + sigmoid'(2u) 2 k0 (x + 3 k1 x^3), x clamped to +-50 there (see act_ref.c) */
        __m512 a = gelu_2u512(x);
        __m512 xc = _mm512_min_ps(_mm512_set1_ps(50.0f), _mm512_max_ps(_mm512_set1_ps(-50.0f), x));
        __m512 poly = _mm512_mul_ps(xc, _mm512_fmadd_ps(_mm512_mul_ps(xc, xc), _mm512_set1_ps(3.0f * GELU_2K0K1),
                                                        _mm512_set1_ps(GELU_2K0)));
        return _mm512_fmadd_ps(sigmoid_slope512(a), poly, ds_sigmoid512(a));
    }
    default: return _mm512_add_ps(relu512(x), relu512(x));
    }
}

void act_forward_avx512(ds_activation act, int64_t n, const float *x, float *y) {
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = ds_lanes(i, n);
        ds_store16(y + i, m, act_value(act, ds_load16(m, x + i)));
    }
}

void act_backward_avx512(ds_activation act, int64_t n, const float *x, const float *dy, float *dx) {
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = ds_lanes(i, n);
        __m512 d = act_derivative(act, ds_load16(m, x + i));
        __m512 r = _mm512_fmadd_ps(ds_load16(m, dy + i), d, ds_load16(m, dx + i));
        ds_store16(dx + i, m, r);
    }
}
