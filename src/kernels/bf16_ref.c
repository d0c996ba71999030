/* fp32 <-> bf16 conversion, scalar reference (kernels.h). Rounds as AVX512_BF16's VCVTNE2PS2BF16
 * (bf16_avx512.c), bit for bit: to nearest, ties to even; a NaN stays a NaN (its top 16 bits, made
 * quiet); a denormal becomes a zero of its sign (the instruction treats denormal inputs as zero). */
#include "impl.h"

#include "simd_math.h"

#include <string.h>

static uint16_t round_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);   /* zero or denormal */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: quiet */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  /* overflow of the add rounds to Inf */
}

void f32_to_bf16_ref(int64_t n, const float *x, uint16_t *y) {
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = round_to_bf16(x[i]);
}

void bf16_to_f32_ref(int64_t n, const uint16_t *x, float *y) {
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(y + i, &u, sizeof u);
    }
}
