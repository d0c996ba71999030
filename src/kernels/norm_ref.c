/* Group/LayerNorm over groups of G consecutive channels, scalar reference (kernels.h).
 * Statistics use two passes over the group (mean, then centred variance) for accuracy. */
#include "impl.h"

#include <math.h>

#include "dreamstate/common.h"
#include "simd_math.h"

void norm_forward_ref(int rows, int C, int G, float eps, const float *x, const float *gamma,
                      const float *beta, float *y, float *mean, float *rstd) {
    int groups = C / G;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        for (int g = 0; g < groups; g++) {
            int64_t off = (int64_t)r * C + (int64_t)g * G;
            const float *xg = x + off;
            float sum = 0;
            for (int j = 0; j < G; j++) sum += xg[j];
            float mu = sum / G;
            float sq = 0;
            for (int j = 0; j < G; j++) sq += (xg[j] - mu) * (xg[j] - mu);
            float rs = 1.0f / sqrtf(sq / G + eps);
            const float *ga = gamma + g * G, *be = beta + g * G;
            for (int j = 0; j < G; j++) y[off + j] = (xg[j] - mu) * rs * ga[j] + be[j];
            mean[(int64_t)r * groups + g] = mu;
            rstd[(int64_t)r * groups + g] = rs;
        }
    }
}

/* dx += rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma, per group; dgamma, dbeta via
 * per-block partials (simd_math.h). */
void norm_backward_ref(int rows, int C, int G, const float *dy, const float *x, const float *mean,
                       const float *rstd, const float *gamma, float *dx, float *dgamma,
                       float *dbeta) {
    if (rows <= 0) return;
    int groups = C / G, nblocks = ds_reduce_blocks(rows);
    /* per-block partials [block][dgamma C | dbeta C] */
    float *part = ds_alloc((size_t)nblocks * 2 * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        float *pg = part + (int64_t)blk * 2 * C, *pb = pg + C;
        int r_end = (blk + 1) * DS_REDUCE_ROWS < rows ? (blk + 1) * DS_REDUCE_ROWS : rows;
        for (int r = blk * DS_REDUCE_ROWS; r < r_end; r++) {
            for (int g = 0; g < groups; g++) {
                int64_t off = (int64_t)r * C + (int64_t)g * G;
                float mu = mean[(int64_t)r * groups + g], rs = rstd[(int64_t)r * groups + g];
                const float *xg = x + off, *dyg = dy + off, *ga = gamma + g * G;
                float sum_g = 0, sum_gx = 0;
                for (int j = 0; j < G; j++) {
                    float xhat = (xg[j] - mu) * rs, gj = dyg[j] * ga[j];
                    sum_g += gj;
                    sum_gx += gj * xhat;
                    pg[g * G + j] += dyg[j] * xhat;
                    pb[g * G + j] += dyg[j];
                }
                float mean_g = sum_g / G, mean_gx = sum_gx / G;
                for (int j = 0; j < G; j++) {
                    float xhat = (xg[j] - mu) * rs;
                    dx[off + j] += rs * (dyg[j] * ga[j] - mean_g - xhat * mean_gx);
                }
            }
        }
    }
    ds_sum_block_partials(nblocks, 2 * C, part);
    for (int c = 0; c < C; c++) {
        dgamma[c] += part[c];
        dbeta[c] += part[C + c];
    }
    ds_free(part);
}
