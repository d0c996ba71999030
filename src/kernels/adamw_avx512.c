/* AdamW, AVX-512 twin of adamw_ref.c (same operation order; memory-bound). */
#include "impl.h"

#include <math.h>

#include "simd_math.h"

void adamw_avx512(int64_t n, float *param, const float *grad, float *m, float *v, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t step) {
    __m512 step_size = _mm512_set1_ps((float)(lr / (1.0 - pow(beta1, (double)step))));
    __m512 v_scale = _mm512_set1_ps((float)(1.0 / (1.0 - pow(beta2, (double)step))));
    __m512 decay = _mm512_set1_ps(lr * weight_decay), veps = _mm512_set1_ps(eps);
    __m512 b1 = _mm512_set1_ps(beta1), b2 = _mm512_set1_ps(beta2);
    __m512 c1 = _mm512_set1_ps(1.0f - beta1), c2 = _mm512_set1_ps(1.0f - beta2);
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = ds_lanes(i, n);
        __m512 g = ds_load16(k, grad + i), p = ds_load16(k, param + i);
        __m512 mi = _mm512_fmadd_ps(b1, ds_load16(k, m + i), _mm512_mul_ps(c1, g));
        __m512 vi =
            _mm512_fmadd_ps(b2, ds_load16(k, v + i), _mm512_mul_ps(c2, _mm512_mul_ps(g, g)));
        ds_store16(m + i, k, mi);
        ds_store16(v + i, k, vi);
        __m512 denom = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, v_scale)), veps);
        __m512 update = _mm512_div_ps(_mm512_mul_ps(step_size, mi), denom);
        p = _mm512_sub_ps(_mm512_fnmadd_ps(decay, p, p), update);
        ds_store16(param + i, k, p);
    }
}
