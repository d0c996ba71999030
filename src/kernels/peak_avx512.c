/* FMA peak probe: 12 independent 512-bit FMA chains per thread hide the FMA latency (4 cycles x 2
 * pipes on Zen 4/5 needs >= 8 in flight). */
#include "impl.h"

#include <immintrin.h>

double fma_chains_avx512(int64_t iters) {
    __m512 acc[12];
    for (int c = 0; c < 12; c++) acc[c] = _mm512_set1_ps((float)c);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < 12; c++) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    __m512 s = acc[0];
    for (int c = 1; c < 12; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}
