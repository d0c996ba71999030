/* fp32 <-> bf16 conversion with AVX512_BF16 (VCVTNE2PS2BF16: round to nearest even, NaN kept and made
 * quiet, denormal inputs as zero), twin of bf16_ref.c; and the bf16 peak probe (VDPBF16PS chains).
 * This file alone is compiled with -mavx512bf16 (Makefile): dispatch.c uses it only when the CPU says
 * it has AVX512_BF16. */
#include "impl.h"

#include "simd_math.h"

void f32_to_bf16_avx512(int64_t n, const float *x, uint16_t *y) {
    int64_t whole = n & ~(int64_t)31;
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < whole; i += 32) {
        __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(y + i), (__m512i)b);
    }
    for (int64_t i = whole; i < n; i += 16) {
        __mmask16 k = ds_lanes(i, n);
        __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, x + i));
        _mm256_mask_storeu_epi16(y + i, k, (__m256i)b);
    }
}

void bf16_to_f32_avx512(int64_t n, const uint16_t *x, float *y) {
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = ds_lanes(i, n);
        __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, x + i));
        _mm512_mask_storeu_ps(y + i, k, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
}

/* 12 independent VDPBF16PS chains (each instruction: 16 lanes x 2 bf16 products = 64 flops). */
double dpbf16_chains_avx512(int64_t iters) {
    __m512 acc[12];
    for (int c = 0; c < 12; c++) acc[c] = _mm512_set1_ps((float)c);
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.999f), _mm512_set1_ps(0.999f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-7f), _mm512_set1_ps(1e-7f));
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < 12; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
    __m512 s = acc[0];
    for (int c = 1; c < 12; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}
