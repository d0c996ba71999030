/* Element-wise activations, AVX-512 twin of act_ref.c (exp, sigmoid, tanh from simd_math.h). */
#include "impl.h"

#include "simd_math.h"

/* max(0, x); with x as the second operand a NaN passes through. */
static inline __m512 relu512(__m512 x) { return _mm512_max_ps(_mm512_setzero_ps(), x); }

static inline __m512 act_value(ds_activation act, __m512 x) {
    switch (act) {
    case DS_ACT_SIGMOID: return ds_sigmoid512(x);
    case DS_ACT_TANH: return ds_tanh512(x);
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
