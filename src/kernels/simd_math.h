/* Helpers shared by the kernel implementations in this directory (the *_ref.c / *_avx512.c pairs).
 *  - Portable: fixed blockings that make reductions independent of the thread count, the size
 *    below which element-wise kernels stay single-threaded, the token-shift row lookup, and the
 *    target check of softmax_xent.
 *  - AVX-512 (only in files compiled for it): tail masks, loads/stores, and vectorised exp,
 *    sigmoid and tanh (relative error <= 1e-6 against float64 over the float range, see
 *    tests/test_kernels.c). */
#ifndef DREAMSTATE_KERNELS_SIMD_MATH_H
#define DREAMSTATE_KERNELS_SIMD_MATH_H

#include <stdint.h>

#include "dreamstate/common.h"

/* Element-wise kernels start OpenMP threads only above this many elements (a fork costs ~us). */
#define DS_PARALLEL_MIN ((int64_t)1 << 15)

/* Reductions over rows (dgamma, dbeta, dmu) sum fixed blocks of this many rows into per-block
 * partials, then add the partials in block order, so the result does not depend on the thread
 * count. */
#define DS_REDUCE_ROWS 64

/* sum_squares adds fixed blocks of this many elements in double, then the block sums in order. */
#define DS_SUMSQ_BLOCK ((int64_t)1 << 14)

/* Token shift: the row before `row` (= b*T + t) of x [B, T, C], i.e. prev[b] at t = 0; NULL means
 * zeros (t = 0 without prev). */
static inline const float *ds_shift_previous_row(int T, int C, const float *x, const float *prev,
                                                 int64_t row) {
    int64_t b = row / T, t = row % T;
    if (t > 0) return x + (row - 1) * C;
    return prev ? prev + b * C : NULL;
}

static inline int ds_reduce_blocks(int rows) {
    return (rows + DS_REDUCE_ROWS - 1) / DS_REDUCE_ROWS;
}

/* Sums the partials part[b * width + c] over blocks b, in block order, into part[0 .. width). */
static inline void ds_sum_block_partials(int nblocks, int width, float *part) {
    for (int b = 1; b < nblocks; b++)
        for (int c = 0; c < width; c++) part[c] += part[(int64_t)b * width + c];
}

/* Per-sample reductions (adaLN modulation, gated residual): B groups of T rows, each cut into
 * ds_reduce_blocks(T) blocks of DS_REDUCE_ROWS rows; rows [*r0, *r1) are block blk of group b. */
static inline void ds_group_block(int T, int b, int blk, int64_t *r0, int64_t *r1) {
    int lo = blk * DS_REDUCE_ROWS, hi = lo + DS_REDUCE_ROWS < T ? lo + DS_REDUCE_ROWS : T;
    *r0 = (int64_t)b * T + lo;
    *r1 = (int64_t)b * T + hi;
}

/* Adds to out + b * stride (width floats) the sum, in block order, of group b's block partials at
 * part + (b * nblocks + blk) * pitch. */
static inline void ds_add_group_partials(int B, int nblocks, int width, int64_t pitch, const float *part, float *out,
                                         int64_t stride) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < width; c++) {
            float s = 0;
            for (int blk = 0; blk < nblocks; blk++) s += part[((int64_t)b * nblocks + blk) * pitch + c];
            out[b * stride + c] += s;
        }
}

/* softmax_xent: a target must be < V (negative = ignored row). */
static inline void ds_check_targets(int rows, int V, const int32_t *targets) {
    for (int r = 0; r < rows; r++)
        if (targets[r] >= V)
            ds_die(DS_EXIT_BAD_INPUT, "target %d of row %d is outside the vocabulary (V = %d)",
                   (int)targets[r], r, V);
}

#ifdef __AVX512F__
#include <immintrin.h>

/* Mask of the 16 lanes starting at element i that lie below n (all 16 except at the tail). */
static inline __mmask16 ds_lanes(int64_t i, int64_t n) {
    int64_t left = n - i;
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1u);
}

/* Load / store of the lanes in m (others read as 0 / left untouched). A full mask uses the plain
 * instructions: masked loads and stores stream 1.5-2.5x slower from L3/DRAM on Zen 4/5. */
static inline __m512 ds_load16(__mmask16 m, const float *p) {
    return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
static inline void ds_store16(float *p, __mmask16 m, __m512 v) {
    if (m == 0xffff)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, m, v);
}

/* exp(x): x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact-ish r), exp(r) by a
 * degree-6 polynomial (near-minimax relative fit, 3e-9 before rounding; 1 + r + r^2 q(r)), then
 * scalef multiplies by 2^n, overflowing to inf and underflowing through denormals to 0 correctly.
 * The clamp keeps n and the polynomial finite; operand order in max/min lets NaN through. */
static inline __m512 ds_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.381459297e-03f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.368708193e-03f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166838899e-02f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666652113e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.999999404e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = exp(-|x|): never
 * overflows, so very negative x still gets its (denormal) value instead of 1 / inf = 0. */
static inline __m512 ds_sigmoid512(__m512 x) {
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = ds_exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
    __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_mul_ps(s, negative, s, e);
}

/* tanh(x): for |x| < 0.625 the odd polynomial x + x^3 P(x^2) (relative fit 4e-9), because
 * 1 - 2/(e^{2|x|} + 1) cancels badly near 0; above it that formula, with the sign of x. */
static inline __m512 ds_tanh512(__m512 x) {
    __m512 ax = _mm512_abs_ps(x);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 q = _mm512_set1_ps(-5.704988725e-03f);
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(2.063908987e-02f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-5.373971537e-02f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(1.333144158e-01f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-3.333328068e-01f));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(q, z), x, x);
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = ds_exp512(_mm512_add_ps(ax, ax));
    __m512 large = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
    large = _mm512_or_ps(large, _mm512_and_ps(x, _mm512_set1_ps(-0.0f)));
    __mmask16 is_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(is_small, large, small);
}
#endif

#endif
