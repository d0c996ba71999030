/* Full multi-head attention, AVX-512 twin of attention_ref.c, tiled as FlashAttention-2 (Dao, arXiv
 * 2307.08691) on a CPU: no T x T matrix is ever formed.
 *  - forward: per block of QB queries, the keys in blocks of KB with an online softmax (running max m
 *    and sum l per query; the output accumulator is rescaled by exp(m_old - m_new) when the max grows),
 *    then O = acc / l and lse = m + log l;
 *  - backward: per block of KB keys, every query block again: P = exp(S - lse) recomputed from the
 *    saved log-sum-exp, dV_j += P^T dO_i, dS = P (dO_i V_j^T - Delta_i), dK_j += dS^T Q_i, dQ_i += dS K_j
 *    (dQ of the head kept whole, dK_j and dV_j per key block, each added to the output once).
 * Every product is one small-matrix kernel (tile_product) with rows of A broadcast and rows of B in
 * vectors, so K and V are transposed once per head ([D, T]) for the products that run over the
 * channel dimension. One (batch, head) pair per task with per-thread scratch: the result does not
 * depend on the thread count. */
#include "impl.h"

#include <math.h>

#include "dreamstate/common.h"
#include "simd_math.h"

enum { QB = 64, KB = 64, MR = 6, NR = 4 /* vectors of 16 per tile row: 64 columns */ };

/* C[m][n] (= or +=) sum_k A[m * a_row + k * a_col] B[k * ldb + n] for m < rows, n < 16 nv, the last
 * vector masked by `last`. rows and nv are compile-time constants at each call site (MR x NR tiles). */
static inline __attribute__((always_inline)) void tile(int rows, int nv, int K, const float *A, int64_t a_row,
                                                      int64_t a_col, const float *Bm, int64_t ldb, __mmask16 last,
                                                      float *C, int64_t ldc, int accumulate) {
    __m512 acc[MR][NR];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++)
            acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xffff, C + r * ldc + 16 * v)
                                   : _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 b[NR];
        for (int v = 0; v < nv; v++) b[v] = _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xffff, Bm + k * ldb + 16 * v);
        for (int r = 0; r < rows; r++) {
            __m512 a = _mm512_set1_ps(A[r * a_row + k * a_col]);
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++)
            _mm512_mask_storeu_ps(C + r * ldc + 16 * v, v == nv - 1 ? last : 0xffff, acc[r][v]);
}

/* C [M, N] (= or +=) A B with A[m][k] = A[m * a_row + k * a_col] (so A^T is a_row = 1) and B [K, N]
 * of row stride ldb. */
static void tile_product(int M, int N, int K, const float *A, int64_t a_row, int64_t a_col, const float *Bm,
                         int64_t ldb, float *C, int64_t ldc, int accumulate) {
    for (int n0 = 0; n0 < N; n0 += 16 * NR) {
        int width = N - n0 < 16 * NR ? N - n0 : 16 * NR, nv = (width + 15) / 16;
        __mmask16 last = ds_lanes(16 * (nv - 1), width);
        for (int m0 = 0; m0 < M; m0 += MR) {
            int rows = M - m0 < MR ? M - m0 : MR;
            const float *a = A + m0 * a_row;
            const float *b = Bm + n0;
            float *c = C + m0 * ldc + n0;
#define TILE(R, V) case (R) * 8 + (V): tile(R, V, K, a, a_row, a_col, b, ldb, last, c, ldc, accumulate); break
#define TILES(R) TILE(R, 1); TILE(R, 2); TILE(R, 3); TILE(R, 4)
            switch (rows * 8 + nv) {
                TILES(1); TILES(2); TILES(3); TILES(4); TILES(5); TILES(6);
            }
#undef TILES
#undef TILE
        }
    }
}

/* dst[c * dst_row + r] = src[r * src_row + c] for a full 16 x 16 block, in registers (unpack pairs,
 * then 64-bit pairs, then 128-bit lanes twice). */
static inline void transpose16(const float *src, int64_t src_row, float *dst, int64_t dst_row) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * src_row);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * dst_row, r[i]);
}

/* src [T, D] (row stride `token`) transposed block by block of KB tokens: dst [T / KB, D, KB] (the last
 * block as wide as the tail), so a key block's channels are rows 256 bytes apart, not T floats apart
 * (a stride of a multiple of 4 KiB would alias in the L1 cache). Full 16 x 16 squares in registers,
 * the edges element by element. */
static void transpose_blocks(int T, int D, const float *src, int64_t token, float *dst) {
    for (int j0 = 0; j0 < T; j0 += KB) {
        int cols = T - j0 < KB ? T - j0 : KB, full_t = cols & ~15, full_d = D & ~15;
        const float *in = src + j0 * token;
        float *blk = dst + (int64_t)j0 * D;
        for (int t = 0; t < full_t; t += 16)
            for (int d = 0; d < full_d; d += 16) transpose16(in + t * token + d, token, blk + d * KB + t, KB);
        for (int t = 0; t < cols; t++)
            for (int d = t < full_t ? full_d : 0; d < D; d++) blk[d * KB + t] = in[t * token + d];
    }
}

void attention_forward_avx512(int B, int H, int T, int D, const float *q, const float *k, const float *v,
                              ds_attn_layout in, float *o, ds_attn_layout out, float *lse) {
    float scale = 1.0f / sqrtf((float)D);
    int64_t nkt = (int64_t)(T + KB - 1) / KB * KB * D;
#pragma omp parallel
    {
        float *kt = ds_alloc(sizeof(float) * nkt), *s = ds_alloc(sizeof(float) * QB * KB);
        float *acc = ds_alloc(sizeof(float) * QB * D), *m = ds_alloc(sizeof(float) * QB),
              *l = ds_alloc(sizeof(float) * QB);
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < (int64_t)B * H; bh++) {
            int64_t b = bh / H, h = bh % H, base = b * in.batch + h * in.head;
            const float *qh = q + base, *vh = v + base;
            float *oh = o + b * out.batch + h * out.head, *lh = lse + bh * T;
            transpose_blocks(T, D, k + base, in.token, kt);
            for (int i0 = 0; i0 < T; i0 += QB) {
                int rows = T - i0 < QB ? T - i0 : QB;
                for (int r = 0; r < rows; r++) { m[r] = -INFINITY; l[r] = 0; }
                for (int j0 = 0; j0 < T; j0 += KB) {
                    int cols = T - j0 < KB ? T - j0 : KB;
                    tile_product(rows, cols, D, qh + i0 * in.token, in.token, 1, kt + (int64_t)j0 * D, KB, s, KB, 0);
                    for (int r = 0; r < rows; r++) {
                        float *sr = s + r * KB;
                        __m512 vmax = _mm512_set1_ps(-INFINITY);
                        for (int j = 0; j < cols; j += 16)
                            vmax = _mm512_mask_max_ps(vmax, ds_lanes(j, cols), vmax, _mm512_loadu_ps(sr + j));
                        float m_new = fmaxf(m[r], scale * _mm512_reduce_max_ps(vmax));
                        __m512 vscale = _mm512_set1_ps(scale), vm = _mm512_set1_ps(m_new), sum = _mm512_setzero_ps();
                        for (int j = 0; j < cols; j += 16) {
                            __mmask16 lanes = ds_lanes(j, cols);
                            __m512 p = _mm512_maskz_mov_ps(lanes, ds_exp512(_mm512_fmsub_ps(_mm512_loadu_ps(sr + j), vscale, vm)));
                            _mm512_storeu_ps(sr + j, p);
                            sum = _mm512_add_ps(sum, p);
                        }
                        float alpha = expf(m[r] - m_new);  /* 0 on the first block (m = -inf) */
                        l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
                        m[r] = m_new;
                        float *ar = acc + r * D;
                        __m512 va = _mm512_set1_ps(alpha);
                        for (int d = 0; d < D; d += 16) {
                            __mmask16 lanes = ds_lanes(d, D);
                            __m512 x = j0 ? _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, ar + d), va) : _mm512_setzero_ps();
                            _mm512_mask_storeu_ps(ar + d, lanes, x);
                        }
                    }
                    tile_product(rows, D, cols, s, KB, 1, vh + j0 * in.token, in.token, acc, D, 1);
                }
                for (int r = 0; r < rows; r++) {
                    __m512 inv = _mm512_set1_ps(1.0f / l[r]);
                    for (int d = 0; d < D; d += 16) {
                        __mmask16 lanes = ds_lanes(d, D);
                        _mm512_mask_storeu_ps(oh + (i0 + r) * out.token + d, lanes,
                                              _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, acc + r * D + d), inv));
                    }
                    lh[i0 + r] = m[r] + logf(l[r]);
                }
            }
        }
        ds_free(kt); ds_free(s); ds_free(acc); ds_free(m); ds_free(l);
    }
}

/* dst[t * token + d] += src[t * D + d] for t < T, d < D. */
static void add_rows(int T, int D, const float *src, float *dst, int64_t token) {
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d += 16) {
            __mmask16 lanes = ds_lanes(d, D);
            float *x = dst + t * token + d;
            _mm512_mask_storeu_ps(x, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, x),
                                                          _mm512_maskz_loadu_ps(lanes, src + t * D + d)));
        }
}

void attention_backward_avx512(int B, int H, int T, int D, const float *q, const float *k, const float *v,
                               ds_attn_layout in, const float *o, const float *dout, ds_attn_layout out,
                               const float *lse, float *dq, float *dk, float *dv) {
    float scale = 1.0f / sqrtf((float)D);
    int64_t nkt = (int64_t)(T + KB - 1) / KB * KB * D;
#pragma omp parallel
    {
        float *kt = ds_alloc(sizeof(float) * nkt), *vt = ds_alloc(sizeof(float) * nkt);
        float *dq_h = ds_alloc(sizeof(float) * T * D), *delta = ds_alloc(sizeof(float) * T);
        float *p = ds_alloc(sizeof(float) * QB * KB), *ds = ds_alloc(sizeof(float) * QB * KB);
        float *dk_j = ds_alloc(sizeof(float) * KB * D), *dv_j = ds_alloc(sizeof(float) * KB * D);
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < (int64_t)B * H; bh++) {
            int64_t b = bh / H, h = bh % H, base = b * in.batch + h * in.head, obase = b * out.batch + h * out.head;
            const float *qh = q + base, *kh = k + base, *oh = o + obase, *doh = dout + obase, *lh = lse + bh * T;
            transpose_blocks(T, D, kh, in.token, kt);
            transpose_blocks(T, D, v + base, in.token, vt);
            for (int i = 0; i < T; i++) {
                __m512 s = _mm512_setzero_ps();
                for (int d = 0; d < D; d += 16) {
                    __mmask16 lanes = ds_lanes(d, D);
                    s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lanes, doh + i * out.token + d),
                                        _mm512_maskz_loadu_ps(lanes, oh + i * out.token + d), s);
                }
                delta[i] = _mm512_reduce_add_ps(s);
            }
            for (int64_t i = 0; i < (int64_t)T * D; i++) dq_h[i] = 0;
            for (int j0 = 0; j0 < T; j0 += KB) {
                int cols = T - j0 < KB ? T - j0 : KB;
                for (int64_t i = 0; i < (int64_t)cols * D; i++) dk_j[i] = dv_j[i] = 0;
                for (int i0 = 0; i0 < T; i0 += QB) {
                    int rows = T - i0 < QB ? T - i0 : QB;
                    const float *qi = qh + i0 * in.token, *doi = doh + i0 * out.token;
                    tile_product(rows, cols, D, qi, in.token, 1, kt + (int64_t)j0 * D, KB, p, KB, 0);
                    tile_product(rows, cols, D, doi, out.token, 1, vt + (int64_t)j0 * D, KB, ds, KB, 0);
                    __m512 vscale = _mm512_set1_ps(scale);
                    for (int r = 0; r < rows; r++) {
                        __m512 vl = _mm512_set1_ps(lh[i0 + r]), vd = _mm512_set1_ps(delta[i0 + r]);
                        for (int j = 0; j < cols; j += 16) {
                            float *pr = p + r * KB + j, *dsr = ds + r * KB + j;
                            __m512 pv = ds_exp512(_mm512_fmsub_ps(_mm512_loadu_ps(pr), vscale, vl));
                            _mm512_storeu_ps(pr, pv);
                            _mm512_storeu_ps(dsr, _mm512_mul_ps(_mm512_mul_ps(pv, vscale),
                                                                _mm512_sub_ps(_mm512_loadu_ps(dsr), vd)));
                        }
                    }
                    tile_product(cols, D, rows, p, 1, KB, doi, out.token, dv_j, D, 1);
                    tile_product(cols, D, rows, ds, 1, KB, qi, in.token, dk_j, D, 1);
                    tile_product(rows, D, cols, ds, KB, 1, kh + j0 * in.token, in.token, dq_h + i0 * D, D, 1);
                }
                add_rows(cols, D, dk_j, dk + base + j0 * in.token, in.token);
                add_rows(cols, D, dv_j, dv + base + j0 * in.token, in.token);
            }
            add_rows(T, D, dq_h, dq + base, in.token);
        }
        ds_free(kt); ds_free(vt); ds_free(dq_h); ds_free(delta); ds_free(p); ds_free(ds); ds_free(dk_j); ds_free(dv_j);
    }
}
