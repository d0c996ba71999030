/* Group/LayerNorm over groups of G consecutive channels, and the adaLN modulation (LayerNorm without
 * affine, then a per-sample scale and shift), scalar reference (kernels.h). Statistics use two passes
 * over the group (mean, then centred variance) for accuracy. Both kernels share the per-group code:
 * the adaLN scale enters as gamma = scale + 1. */
#include "impl.h"

#include <math.h>

#include "dreamstate/common.h"
#include "simd_math.h"

/* y = (x - mean) rstd (gamma + one) + beta over one group of G values; returns mean, rstd. */
static void group_forward(int G, float eps, const float *x, const float *gamma, float one, const float *beta,
                          float *y, float *mean, float *rstd) {
    float sum = 0;
    for (int j = 0; j < G; j++) sum += x[j];
    float mu = sum / G;
    float sq = 0;
    for (int j = 0; j < G; j++) sq += (x[j] - mu) * (x[j] - mu);
    float rs = 1.0f / sqrtf(sq / G + eps);
    for (int j = 0; j < G; j++) y[j] = (x[j] - mu) * rs * (gamma[j] + one) + beta[j];
    *mean = mu;
    *rstd = rs;
}

/* Rows [r0, r1) of [rows, C] in groups of G: dx += rstd (g - mean(g) - xhat mean(g xhat)) with
 * g = dy (gamma + one); pg += dy xhat and pb += dy (per-channel partials of dgamma, dbeta). */
static void rows_backward(int64_t r0, int64_t r1, int C, int G, const float *dy, const float *x, const float *mean,
                          const float *rstd, const float *gamma, float one, float *dx, float *pg, float *pb) {
    int groups = C / G;
    for (int64_t r = r0; r < r1; r++) {
        for (int g = 0; g < groups; g++) {
            int64_t off = (int64_t)r * C + (int64_t)g * G;
            float mu = mean[(int64_t)r * groups + g], rs = rstd[(int64_t)r * groups + g];
            const float *xg = x + off, *dyg = dy + off, *ga = gamma + g * G;
            float sum_g = 0, sum_gx = 0;
            for (int j = 0; j < G; j++) {
                float xhat = (xg[j] - mu) * rs, gj = dyg[j] * (ga[j] + one);
                sum_g += gj;
                sum_gx += gj * xhat;
                pg[g * G + j] += dyg[j] * xhat;
                pb[g * G + j] += dyg[j];
            }
            float mean_g = sum_g / G, mean_gx = sum_gx / G;
            for (int j = 0; j < G; j++) {
                float xhat = (xg[j] - mu) * rs;
                dx[off + j] += rs * (dyg[j] * (ga[j] + one) - mean_g - xhat * mean_gx);
            }
        }
    }
}

void norm_forward_ref(int rows, int C, int G, float eps, const float *x, const float *gamma,
                      const float *beta, float *y, float *mean, float *rstd) {
    int groups = C / G;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < groups; g++) {
            int64_t off = (int64_t)r * C + (int64_t)g * G, s = (int64_t)r * groups + g;
            group_forward(G, eps, x + off, gamma + g * G, 0.0f, beta + g * G, y + off, mean + s, rstd + s);
        }
}

/* dgamma, dbeta via per-block partials (simd_math.h). */
void norm_backward_ref(int rows, int C, int G, const float *dy, const float *x, const float *mean,
                       const float *rstd, const float *gamma, float *dx, float *dgamma,
                       float *dbeta) {
    if (rows <= 0) return;
    int nblocks = ds_reduce_blocks(rows);
    /* per-block partials [block][dgamma C | dbeta C] */
    float *part = ds_alloc((size_t)nblocks * 2 * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        float *pg = part + (int64_t)blk * 2 * C;
        int r_end = (blk + 1) * DS_REDUCE_ROWS < rows ? (blk + 1) * DS_REDUCE_ROWS : rows;
        rows_backward(blk * DS_REDUCE_ROWS, r_end, C, G, dy, x, mean, rstd, gamma, 0.0f, dx, pg, pg + C);
    }
    ds_sum_block_partials(nblocks, 2 * C, part);
    for (int c = 0; c < C; c++) {
        dgamma[c] += part[c];
        dbeta[c] += part[C + c];
    }
    ds_free(part);
}

void modulate_forward_ref(int B, int T, int C, float eps, const float *x, const float *shift, const float *scale,
                          int64_t stride, float *y, float *mean, float *rstd) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < (int64_t)B * T; r++) {
        int64_t b = r / T;
        group_forward(C, eps, x + r * C, scale + b * stride, 1.0f, shift + b * stride, y + r * C, mean + r, rstd + r);
    }
}

/* dscale, dshift of each sample from per-block partials over its T rows, summed in block order. */
void modulate_backward_ref(int B, int T, int C, const float *dy, const float *x, const float *mean, const float *rstd,
                           const float *scale, int64_t stride, float *dx, float *dshift, float *dscale) {
    if (B <= 0 || T <= 0) return;
    int nblocks = ds_reduce_blocks(T);
    float *part = ds_alloc((size_t)B * nblocks * 2 * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * nblocks; task++) {
        int b = task / nblocks, blk = task % nblocks;
        float *pg = part + (int64_t)task * 2 * C;
        int64_t r0, r1;
        ds_group_block(T, b, blk, &r0, &r1);
        rows_backward(r0, r1, C, C, dy, x, mean, rstd, scale + b * stride, 1.0f, dx, pg, pg + C);
    }
    ds_add_group_partials(B, nblocks, C, 2 * C, part, dscale, stride);
    ds_add_group_partials(B, nblocks, C, 2 * C, part + C, dshift, stride);
    ds_free(part);
}
