/* Token shift with a per-channel lerp, scalar reference (kernels.h): out = x + (x_prev - x) mu. */
#include "impl.h"

#include "dreamstate/common.h"
#include "simd_math.h"

void shift_mix_forward_ref(int B, int T, int C, const float *x, const float *prev, const float *mu,
                           float *out) {
    int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        const float *xr = x + row * C, *xp = ds_shift_previous_row(T, C, x, prev, row);
        float *o = out + row * C;
        for (int c = 0; c < C; c++) o[c] = xr[c] + ((xp ? xp[c] : 0.0f) - xr[c]) * mu[c];
    }
}

/* dx[t] += (1 - mu) dout[t] + mu dout[t+1]; dprev += mu dout[0]; dmu += dout (x[t-1] - x[t]),
 * the last through per-block partials (simd_math.h). */
void shift_mix_backward_ref(int B, int T, int C, const float *x, const float *prev, const float *mu,
                            const float *dout, float *dx, float *dprev, float *dmu) {
    int rows = B * T;
    if (rows <= 0) return;
    int nblocks = ds_reduce_blocks(rows);
    float *part = ds_alloc((size_t)nblocks * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        float *pm = part + (int64_t)blk * C;
        int r_end = (blk + 1) * DS_REDUCE_ROWS < rows ? (blk + 1) * DS_REDUCE_ROWS : rows;
        for (int row = blk * DS_REDUCE_ROWS; row < r_end; row++) {
            int t = row % T;
            const float *xr = x + (int64_t)row * C, *xp = ds_shift_previous_row(T, C, x, prev, row);
            const float *d = dout + (int64_t)row * C, *dnext = t + 1 < T ? d + C : NULL;
            float *dxr = dx + (int64_t)row * C;
            for (int c = 0; c < C; c++) {
                dxr[c] += (1.0f - mu[c]) * d[c] + (dnext ? mu[c] * dnext[c] : 0.0f);
                pm[c] += d[c] * ((xp ? xp[c] : 0.0f) - xr[c]);
            }
            if (t == 0 && dprev)
                for (int c = 0; c < C; c++) dprev[(int64_t)(row / T) * C + c] += mu[c] * d[c];
        }
    }
    ds_sum_block_partials(nblocks, C, part);
    for (int c = 0; c < C; c++) dmu[c] += part[c];
    ds_free(part);
}
