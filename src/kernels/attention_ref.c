/* Full multi-head attention, scalar reference (kernels.h): one query row at a time, the softmax from
 * its row of scores in one piece (max, exp, sum in double), and a backward that recomputes each
 * probability from the saved log-sum-exp. One (batch, head) pair per task, so each task owns its
 * slices of dq, dk, dv and the result does not depend on the thread count. */
#include "impl.h"

#include <math.h>

#include "dreamstate/common.h"

static float dot(int D, const float *a, const float *b) {
    float s = 0;
    for (int i = 0; i < D; i++) s += a[i] * b[i];
    return s;
}

void attention_forward_ref(int B, int H, int T, int D, const float *q, const float *k, const float *v,
                           ds_attn_layout in, float *o, ds_attn_layout out, float *lse) {
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel
    {
        float *s = ds_alloc(sizeof(float) * T);
        double *acc = ds_alloc(sizeof(double) * D);
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < (int64_t)B * H; bh++) {
            int64_t b = bh / H, h = bh % H, base = b * in.batch + h * in.head;
            const float *qh = q + base, *kh = k + base, *vh = v + base;
            float *oh = o + b * out.batch + h * out.head;
            for (int i = 0; i < T; i++) {
                float max = -INFINITY;
                for (int j = 0; j < T; j++) {
                    s[j] = scale * dot(D, qh + i * in.token, kh + j * in.token);
                    max = fmaxf(max, s[j]);
                }
                double sum = 0;
                for (int d = 0; d < D; d++) acc[d] = 0;
                for (int j = 0; j < T; j++) {
                    double p = exp((double)s[j] - max);
                    sum += p;
                    for (int d = 0; d < D; d++) acc[d] += p * vh[j * in.token + d];
                }
                for (int d = 0; d < D; d++) oh[i * out.token + d] = (float)(acc[d] / sum);
                lse[bh * T + i] = (float)(max + log(sum));
            }
        }
        ds_free(s);
        ds_free(acc);
    }
}

/* With P = exp(S - lse) and Delta_i = <dO_i, O_i>: dV += P^T dO, dS = P (dO V^T - Delta), dQ += dS K /
 * sqrt(D), dK += dS^T Q / sqrt(D). */
void attention_backward_ref(int B, int H, int T, int D, const float *q, const float *k, const float *v,
                            ds_attn_layout in, const float *o, const float *dout, ds_attn_layout out,
                            const float *lse, float *dq, float *dk, float *dv) {
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < (int64_t)B * H; bh++) {
        int64_t b = bh / H, h = bh % H, base = b * in.batch + h * in.head, obase = b * out.batch + h * out.head;
        const float *qh = q + base, *kh = k + base, *vh = v + base, *oh = o + obase, *doh = dout + obase;
        float *dqh = dq + base, *dkh = dk + base, *dvh = dv + base;
        for (int i = 0; i < T; i++) {
            const float *qi = qh + i * in.token, *doi = doh + i * out.token;
            float delta = dot(D, doi, oh + i * out.token), l = lse[bh * T + i];
            for (int j = 0; j < T; j++) {
                const float *kj = kh + j * in.token;
                float p = expf(scale * dot(D, qi, kj) - l);
                float ds = scale * p * (dot(D, doi, vh + j * in.token) - delta);
                for (int d = 0; d < D; d++) {
                    dvh[j * in.token + d] += p * doi[d];
                    dqh[i * in.token + d] += ds * kj[d];
                    dkh[j * in.token + d] += ds * qi[d];
                }
            }
        }
    }
}
