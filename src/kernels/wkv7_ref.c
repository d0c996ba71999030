/* WKV-7 recurrence (src/rwkv7/README.md §2.3 forward, §3.1 backward): portable scalar reference.
 *
 * Layouts. The public state arrays (state_in, state_out, dstate_out, dstate_in) are row-major
 * S[i][j] (i = value, j = key) as kernels.h specifies. Internally, and in the ckpt array, every
 * N x N matrix is KEY-MAJOR: M[j*N + i] = S[i][j], so column j of S is N contiguous floats (the
 * layout the AVX-512 twin needs for broadcast-FMAs; both twins share it so that either forward's
 * ckpt feeds either backward). ckpt[b][h][c] is the state before step 16*c.
 *
 * Backward = "replay" of src/rwkv7/README.md §3.2: for each chunk, last first, recompute the <= 16 states of the
 * chunk from its checkpoint into per-thread scratch, then walk back through them. */
#include <string.h>

#include "dreamstate/common.h"
#include "impl.h"

enum { N = DS_HEAD_SIZE, NN = DS_HEAD_SIZE * DS_HEAD_SIZE, CHUNK = DS_WKV_CHUNK };

/* Row-major public matrix -> key-major (NULL = zero). */
static void load_transposed(float *dst, const float *src) {
    for (int j = 0; j < N; j++)
        for (int i = 0; i < N; i++) dst[j * N + i] = src ? src[i * N + j] : 0.0f;
}

/* One step: sigma = S_{t-1} alpha, S_t = S_{t-1} diag(decay) + sigma beta^T + v k^T.
 * prev and next are key-major and may be the same buffer (element-wise update). */
static void step_forward(const float *prev, float *next, const float *decay, const float *k,
                         const float *v, const float *alpha, const float *beta, float *sigma) {
    for (int i = 0; i < N; i++) sigma[i] = 0.0f;
    for (int j = 0; j < N; j++)
        for (int i = 0; i < N; i++) sigma[i] += prev[j * N + i] * alpha[j];
    for (int j = 0; j < N; j++)
        for (int i = 0; i < N; i++)
            next[j * N + i] = prev[j * N + i] * decay[j] + sigma[i] * beta[j] + v[i] * k[j];
}

void wkv7_forward_ref(int B, int T, int H, const float *r, const float *decay, const float *k,
                      const float *v, const float *alpha, const float *beta, const float *state_in,
                      float *y, float *state_out, float *ckpt) {
    const int C = H * N, nchunks = (T + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float S[NN], sigma[N];
        load_transposed(S, state_in ? state_in + (size_t)bh * NN : NULL);
        for (int t = 0; t < T; t++) {
            const size_t o = ((size_t)b * T + t) * C + (size_t)h * N;
            if (ckpt && t % CHUNK == 0)
                memcpy(ckpt + ((size_t)bh * nchunks + t / CHUNK) * NN, S, sizeof S);
            step_forward(S, S, decay + o, k + o, v + o, alpha + o, beta + o, sigma);
            float yt[N] = {0};
            for (int j = 0; j < N; j++)
                for (int i = 0; i < N; i++) yt[i] += S[j * N + i] * r[o + j];
            memcpy(y + o, yt, sizeof yt);
        }
        if (state_out)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) state_out[(size_t)bh * NN + i * N + j] = S[j * N + i];
    }
}

/* One backward step (src/rwkv7/README.md §3.1) at time t. On entry G holds S-hat_t (gradient from the future),
 * on exit S-hat_{t-1}. Snow = S_t, Sprev = S_{t-1}, sigma = sigma_t. Gradients accumulate. */
static void step_backward(float *G, const float *Snow, const float *Sprev, const float *sigma,
                          const float *r, const float *decay, const float *k, const float *v,
                          const float *alpha, const float *beta, const float *dy, float *dr,
                          float *ddecay, float *dk, float *dv, float *dalpha, float *dbeta) {
    float dsigma[N] = {0}, dvt[N] = {0};
    for (int j = 0; j < N; j++) {
        float *g = G + j * N;
        const float *sn = Snow + j * N, *sp = Sprev + j * N;
        float drj = 0, dkj = 0, dbj = 0, ddj = 0;
        for (int i = 0; i < N; i++) {
            g[i] += dy[i] * r[j]; /* G_t = S-hat_t + dy r^T */
            drj += sn[i] * dy[i];
            dkj += g[i] * v[i];
            dbj += g[i] * sigma[i];
            ddj += g[i] * sp[i];
            dvt[i] += g[i] * k[j];
            dsigma[i] += g[i] * beta[j];
        }
        dr[j] += drj;
        dk[j] += dkj;
        dbeta[j] += dbj;
        ddecay[j] += ddj;
    }
    for (int i = 0; i < N; i++) dv[i] += dvt[i];
    for (int j = 0; j < N; j++) {
        float *g = G + j * N;
        const float *sp = Sprev + j * N;
        float daj = 0;
        for (int i = 0; i < N; i++) {
            daj += sp[i] * dsigma[i];
            g[i] = g[i] * decay[j] + dsigma[i] * alpha[j]; /* S-hat_{t-1} */
        }
        dalpha[j] += daj;
    }
}

void wkv7_backward_ref(int B, int T, int H, const float *r, const float *decay, const float *k,
                       const float *v, const float *alpha, const float *beta, const float *ckpt,
                       const float *dy, const float *dstate_out, float *dr, float *ddecay, float *dk,
                       float *dv, float *dalpha, float *dbeta, float *dstate_in) {
    const int C = H * N, nchunks = (T + CHUNK - 1) / CHUNK;
#pragma omp parallel
    {
        float *states = ds_alloc(sizeof(float) * CHUNK * NN); /* S_t of the chunk's steps */
        float *sigmas = ds_alloc(sizeof(float) * CHUNK * N);
        float *G = ds_alloc(sizeof(float) * NN);
#pragma omp for schedule(dynamic)
        for (int bh = 0; bh < B * H; bh++) {
            const int b = bh / H, h = bh % H;
            load_transposed(G, dstate_out ? dstate_out + (size_t)bh * NN : NULL);
            for (int c = nchunks - 1; c >= 0; c--) {
                const int t0 = c * CHUNK, n = T - t0 < CHUNK ? T - t0 : CHUNK;
                const float *S0 = ckpt + ((size_t)bh * nchunks + c) * NN;
                for (int s = 0; s < n; s++) {
                    const size_t o = ((size_t)b * T + t0 + s) * C + (size_t)h * N;
                    step_forward(s ? states + (s - 1) * NN : S0, states + s * NN, decay + o, k + o,
                                 v + o, alpha + o, beta + o, sigmas + s * N);
                }
                for (int s = n - 1; s >= 0; s--) {
                    const size_t o = ((size_t)b * T + t0 + s) * C + (size_t)h * N;
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
