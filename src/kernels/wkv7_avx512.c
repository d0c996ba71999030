/* WKV-7 recurrence (src/rwkv7/README.md §2.3 / §3.1): AVX-512 twin of wkv7_ref.c.
 *
 * Same layouts as the reference: public states row-major S[i][j]; internal states and ckpt
 * KEY-MAJOR (M[j*N + i] = S[i][j]). Column j of S is 64 floats = 4 zmm, so the value-indexed
 * products (sigma = S alpha, y = S r, dv = G k, dsigma = G beta) are sums of broadcast-scaled columns
 * with no horizontal work, and the rank-1 updates are 3 broadcast-FMAs per zmm. The key-indexed
 * gradients (dr, dk, dbeta, ddecay, dalpha: one dot product per column) are formed as one partial
 * zmm per column and reduced 16 columns at a time by a shuffle tree (hsum16).
 *
 * Forward: one pass over the state per step; the pass that writes S_t also accumulates y_t = S_t r_t
 * and sigma_{t+1} = S_t alpha_{t+1}. The initial sigma uses the same accumulation order, so running
 * A then B with the carried state is bitwise equal to running A||B.
 * Backward: replay each chunk from its checkpoint into per-thread scratch (src/rwkv7/README.md §3.2), then two
 * passes per step over G = dL/dS_t, which stays in L1. */
#include <immintrin.h>
#include <string.h>

#include "dreamstate/common.h"
#include "impl.h"

enum { N = DS_HEAD_SIZE, NN = DS_HEAD_SIZE * DS_HEAD_SIZE, CHUNK = DS_WKV_CHUNK, Q = N / 16 };

static const float zeros[N] __attribute__((aligned(64)));

static inline void load4(__m512 x[Q], const float *p) {
    for (int q = 0; q < Q; q++) x[q] = _mm512_loadu_ps(p + 16 * q);
}

/* Lane l of the result = sum of the 16 lanes of p[l]. A 4-level shuffle tree; feeding the inputs in
 * the order u_q = p[4(q%4) + q/4] makes the tree's output come out in natural lane order. */
static inline __m512 hsum16(const __m512 p[16]) {
    __m512 l1[8], l2[4], l3[2];
    for (int m = 0; m < 8; m++) {
        const int qa = 2 * m, qb = 2 * m + 1;
        __m512 a = p[4 * (qa % 4) + qa / 4], b = p[4 * (qb % 4) + qb / 4];
        l1[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
    for (int m = 0; m < 4; m++) {
        __m512 a = l1[2 * m], b = l1[2 * m + 1];
        l2[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
    }
    for (int m = 0; m < 2; m++) {
        __m512 a = l2[2 * m], b = l2[2 * m + 1];
        l3[m] = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
    }
    return _mm512_add_ps(_mm512_shuffle_ps(l3[0], l3[1], 0x88), _mm512_shuffle_ps(l3[0], l3[1], 0xDD));
}

/* Partial dot product of two 64-float columns, left as one zmm for hsum16. */
static inline __m512 dot_partial(const __m512 a[Q], const __m512 b[Q]) {
    __m512 s = _mm512_mul_ps(a[0], b[0]);
    for (int q = 1; q < Q; q++) s = _mm512_fmadd_ps(a[q], b[q], s);
    return s;
}

/* dst[0..15] += hsum16(part). */
static inline void add_hsum16(float *dst, const __m512 part[16]) {
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), hsum16(part)));
}

/* sigma = S alpha for a key-major S, accumulated over j in the same order as step_forward. */
static inline void column_combination(const float *S, const float *alpha, __m512 sigma[Q]) {
    for (int q = 0; q < Q; q++) sigma[q] = _mm512_setzero_ps();
    for (int j = 0; j < N; j++) {
        const __m512 aj = _mm512_set1_ps(alpha[j]);
        for (int q = 0; q < Q; q++) sigma[q] = _mm512_fmadd_ps(aj, _mm512_loadu_ps(S + j * N + 16 * q), sigma[q]);
    }
}

/* S_t = S_{t-1} diag(decay) + sigma beta^T + v k^T from prev into next (may alias), and in the same
 * pass sigma <- S_t alpha_next and, if r is non-NULL, y = S_t r. Inlined so the r == NULL (replay)
 * variant drops the y work. */
static inline __attribute__((always_inline)) void step_forward(
    const float *prev, float *next, __m512 sigma[Q], const float *decay, const float *k,
    const float *v, const float *beta, const float *alpha_next, const float *r, float *y) {
    __m512 vv[Q], yacc[Q], snext[Q];
    load4(vv, v);
    for (int q = 0; q < Q; q++) yacc[q] = snext[q] = _mm512_setzero_ps();
    for (int j = 0; j < N; j++) {
        const __m512 dj = _mm512_set1_ps(decay[j]), bj = _mm512_set1_ps(beta[j]),
                     kj = _mm512_set1_ps(k[j]), aj = _mm512_set1_ps(alpha_next[j]);
        for (int q = 0; q < Q; q++) {
            __m512 s = _mm512_loadu_ps(prev + j * N + 16 * q);
            s = _mm512_fmadd_ps(s, dj, _mm512_fmadd_ps(sigma[q], bj, _mm512_mul_ps(vv[q], kj)));
            _mm512_storeu_ps(next + j * N + 16 * q, s);
            snext[q] = _mm512_fmadd_ps(aj, s, snext[q]);
            if (r) yacc[q] = _mm512_fmadd_ps(_mm512_set1_ps(r[j]), s, yacc[q]);
        }
    }
    for (int q = 0; q < Q; q++) {
        sigma[q] = snext[q];
        if (r) _mm512_storeu_ps(y + 16 * q, yacc[q]);
    }
}

void wkv7_forward_avx512(int B, int T, int H, const float *r, const float *decay, const float *k,
                         const float *v, const float *alpha, const float *beta,
                         const float *state_in, float *y, float *state_out, float *ckpt) {
    const int C = H * N, nchunks = (T + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float S[NN] __attribute__((aligned(64)));
        const float *s_in = state_in ? state_in + (size_t)bh * NN : NULL;
        for (int j = 0; j < N; j++)
            for (int i = 0; i < N; i++) S[j * N + i] = s_in ? s_in[i * N + j] : 0.0f;
        __m512 sigma[Q];
        const size_t o0 = (size_t)b * T * C + (size_t)h * N;
        if (T > 0) column_combination(S, alpha + o0, sigma);
        for (int t = 0; t < T; t++) {
            const size_t o = o0 + (size_t)t * C;
            if (ckpt && t % CHUNK == 0)
                memcpy(ckpt + ((size_t)bh * nchunks + t / CHUNK) * NN, S, sizeof S);
            step_forward(S, S, sigma, decay + o, k + o, v + o, beta + o,
                         t + 1 < T ? alpha + o + C : zeros, r + o, y + o);
        }
        if (state_out)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) state_out[(size_t)bh * NN + i * N + j] = S[j * N + i];
    }
}

/* One backward step at time t (src/rwkv7/README.md §3.1). G holds S-hat_t on entry and S-hat_{t-1} on exit;
 * Snow = S_t, Sprev = S_{t-1}, sigma = sigma_t. Gradients at time t accumulate (+=). */
static void step_backward(float *G, const float *Snow, const float *Sprev, const float *sigma,
                          const float *r, const float *decay, const float *k, const float *v,
                          const float *alpha, const float *beta, const float *dy, float *dr,
                          float *ddecay, float *dk, float *dv, float *dalpha, float *dbeta) {
    __m512 dyv[Q], vv[Q], sg[Q], dvacc[Q], ds[Q];
    __m512 pk[16], pb[16], pd[16], pr[16];
    load4(dyv, dy);
    load4(vv, v);
    load4(sg, sigma);
    for (int q = 0; q < Q; q++) dvacc[q] = ds[q] = _mm512_setzero_ps();

    /* Pass 1: G_t = S-hat_t + dy r^T; dv = G k; dsigma = G beta; dots dk, dbeta, ddecay, dr. */
    for (int j0 = 0; j0 < N; j0 += 16) {
        for (int jj = 0; jj < 16; jj++) {
            const int j = j0 + jj;
            const __m512 rj = _mm512_set1_ps(r[j]), kj = _mm512_set1_ps(k[j]),
                         bj = _mm512_set1_ps(beta[j]);
            __m512 g[Q], sp[Q], sn[Q];
            for (int q = 0; q < Q; q++) {
                g[q] = _mm512_fmadd_ps(dyv[q], rj, _mm512_load_ps(G + j * N + 16 * q));
                _mm512_store_ps(G + j * N + 16 * q, g[q]);
                dvacc[q] = _mm512_fmadd_ps(g[q], kj, dvacc[q]);
                ds[q] = _mm512_fmadd_ps(g[q], bj, ds[q]);
            }
            load4(sp, Sprev + j * N);
            load4(sn, Snow + j * N);
            pk[jj] = dot_partial(g, vv);
            pb[jj] = dot_partial(g, sg);
            pd[jj] = dot_partial(g, sp);
            pr[jj] = dot_partial(sn, dyv);
        }
        add_hsum16(dk + j0, pk);
        add_hsum16(dbeta + j0, pb);
        add_hsum16(ddecay + j0, pd);
        add_hsum16(dr + j0, pr);
    }
    for (int q = 0; q < Q; q++)
        _mm512_storeu_ps(dv + 16 * q, _mm512_add_ps(_mm512_loadu_ps(dv + 16 * q), dvacc[q]));

    /* Pass 2: dalpha = S_{t-1}^T dsigma; S-hat_{t-1} = G diag(decay) + dsigma alpha^T. */
    for (int j0 = 0; j0 < N; j0 += 16) {
        for (int jj = 0; jj < 16; jj++) {
            const int j = j0 + jj;
            const __m512 dj = _mm512_set1_ps(decay[j]), aj = _mm512_set1_ps(alpha[j]);
            __m512 sp[Q];
            load4(sp, Sprev + j * N);
            pk[jj] = dot_partial(sp, ds);
            for (int q = 0; q < Q; q++) {
                __m512 g = _mm512_load_ps(G + j * N + 16 * q);
                _mm512_store_ps(G + j * N + 16 * q, _mm512_fmadd_ps(g, dj, _mm512_mul_ps(ds[q], aj)));
            }
        }
        add_hsum16(dalpha + j0, pk);
    }
}

void wkv7_backward_avx512(int B, int T, int H, const float *r, const float *decay, const float *k,
                          const float *v, const float *alpha, const float *beta, const float *ckpt,
                          const float *dy, const float *dstate_out, float *dr, float *ddecay,
                          float *dk, float *dv, float *dalpha, float *dbeta, float *dstate_in) {
    const int C = H * N, nchunks = (T + CHUNK - 1) / CHUNK;
#pragma omp parallel
    {
        float *states = ds_alloc(sizeof(float) * CHUNK * NN); /* S_t of the chunk's steps */
        float *sigmas = ds_alloc(sizeof(float) * CHUNK * N);
        float *G = ds_alloc(sizeof(float) * NN);
#pragma omp for schedule(dynamic)
        for (int bh = 0; bh < B * H; bh++) {
            const int b = bh / H, h = bh % H;
            const float *dso = dstate_out ? dstate_out + (size_t)bh * NN : NULL;
            for (int j = 0; j < N; j++)
                for (int i = 0; i < N; i++) G[j * N + i] = dso ? dso[i * N + j] : 0.0f;
            const size_t o0 = (size_t)b * T * C + (size_t)h * N;
            for (int c = nchunks - 1; c >= 0; c--) {
                const int t0 = c * CHUNK, n = T - t0 < CHUNK ? T - t0 : CHUNK;
                const float *S0 = ckpt + ((size_t)bh * nchunks + c) * NN;
                __m512 sigma[Q];
                column_combination(S0, alpha + o0 + (size_t)t0 * C, sigma);
                for (int s = 0; s < n; s++) {
                    const size_t o = o0 + (size_t)(t0 + s) * C;
                    for (int q = 0; q < Q; q++) _mm512_store_ps(sigmas + s * N + 16 * q, sigma[q]);
                    step_forward(s ? states + (s - 1) * NN : S0, states + s * NN, sigma, decay + o,
                                 k + o, v + o, beta + o, s + 1 < n ? alpha + o + C : zeros, NULL, NULL);
                }
                for (int s = n - 1; s >= 0; s--) {
                    const size_t o = o0 + (size_t)(t0 + s) * C;
                    step_backward(G, states + s * NN, s ? states + (s - 1) * NN : S0, sigmas + s * N,
                                  r + o, decay + o, k + o, v + o, alpha + o, beta + o, dy + o, dr + o,
                                  ddecay + o, dk + o, dv + o, dalpha + o, dbeta + o);
                }
            }
            if (dstate_in)
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++) dstate_in[(size_t)bh * NN + i * N + j] += G[j * N + i];
        }
        ds_free(states);
        ds_free(sigmas);
        ds_free(G);
    }
}
