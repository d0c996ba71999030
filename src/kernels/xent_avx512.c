/* Fused softmax cross-entropy with L2Wrap, AVX-512 twin of xent_ref.c. Two passes over each row:
 * an online pass keeping per-lane running max, argmax and sum of exp(x - running max), and one pass
 * writing the gradient. */
#include "impl.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "simd_math.h"

static float xent_row(int V, float *x, int target, float scale, float l2wrap) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    /* Starting at -FLT_MAX (not -inf) keeps x - max and the rescale factor free of inf - inf. */
    __m512 m = _mm512_set1_ps(-FLT_MAX);
    __m512i idx = _mm512_setzero_si512();
    /* Four sum accumulators per lane: shorter float sums, and four independent exp chains. */
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
    for (int i = 0; i < V; i += 64) {
        __m512 v[4];
        /* lanes past V read as -inf: they never win and add exp(-inf) = 0 */
        for (int k = 0; k < 4; k++) {
            __mmask16 mk = ds_lanes(i + 16 * k, V);
            v[k] = _mm512_mask_blend_ps(mk, neg_inf, ds_load16(mk, x + i + 16 * k));
        }
        __m512 block_max = _mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3]));
        __mmask16 grew = _mm512_cmp_ps_mask(block_max, m, _CMP_GT_OQ);
        if (grew) { /* rare after the first blocks: rescale the sums, record the first argmax */
            __m512 m_new = _mm512_mask_mov_ps(m, grew, block_max);
            __m512 factor = ds_exp512(_mm512_sub_ps(m, m_new));
            for (int k = 0; k < 4; k++) s[k] = _mm512_mul_ps(s[k], factor);
            __mmask16 open = grew;
            for (int k = 0; k < 4; k++) {
                __mmask16 hit = _mm512_mask_cmp_ps_mask(open, v[k], m_new, _CMP_EQ_OQ);
                idx = _mm512_mask_mov_epi32(idx, hit,
                                            _mm512_add_epi32(lane, _mm512_set1_epi32(i + 16 * k)));
                open &= ~hit;
            }
            m = m_new;
        }
        for (int k = 0; k < 4; k++) s[k] = _mm512_add_ps(s[k], ds_exp512(_mm512_sub_ps(v[k], m)));
    }
    /* Combine lanes: global max, first index attaining it, sums rescaled to it. */
    float max = _mm512_reduce_max_ps(m);
    __m512 vmax = _mm512_set1_ps(max);
    int argmax = _mm512_mask_reduce_min_epi32(_mm512_cmp_ps_mask(m, vmax, _CMP_EQ_OQ), idx);
    __m512 lane_sum = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]));
    float sum = _mm512_reduce_add_ps(_mm512_mul_ps(lane_sum, ds_exp512(_mm512_sub_ps(m, vmax))));
    float x_target = x[target];

    __m512 g = _mm512_set1_ps(scale / sum);
    for (int i = 0; i < V; i += 16) {
        __mmask16 mk = ds_lanes(i, V);
        __m512 e = ds_exp512(_mm512_sub_ps(ds_load16(mk, x + i), vmax));
        ds_store16(x + i, mk, _mm512_mul_ps(e, g));
    }
    x[target] -= scale;
    x[argmax] += scale * l2wrap * max;
    return (float)((double)max - x_target + log((double)sum));
}

void softmax_xent_avx512(int rows, int V, float *logits, const int32_t *targets, float scale,
                         float l2wrap, float *losses) {
    ds_check_targets(rows, V, targets);
#pragma omp parallel for schedule(dynamic, 1)
    for (int r = 0; r < rows; r++) {
        float *x = logits + (int64_t)r * V;
        if (targets[r] < 0) {
            memset(x, 0, (size_t)V * sizeof(float));
            losses[r] = 0;
        } else {
            losses[r] = xent_row(V, x, targets[r], scale, l2wrap);
        }
    }
}
