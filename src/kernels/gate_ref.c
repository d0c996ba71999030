/* Gated residual with a per-sample gate (the adaLN-Zero residual), scalar reference (kernels.h). */
#include "impl.h"

#include "dreamstate/common.h"
#include "simd_math.h"

void gated_residual_forward_ref(int B, int T, int C, const float *x, const float *f, const float *gate,
                                int64_t stride, float *out) {
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= DS_PARALLEL_MIN)
    for (int64_t r = 0; r < (int64_t)B * T; r++) {
        const float *g = gate + r / T * stride;
        for (int c = 0; c < C; c++) out[r * C + c] = x[r * C + c] + g[c] * f[r * C + c];
    }
}

/* dgate of each sample from per-block partials over its T rows, summed in block order. */
void gated_residual_backward_ref(int B, int T, int C, const float *dout, const float *f, const float *gate,
                                 int64_t stride, float *df, float *dgate) {
    if (B <= 0 || T <= 0) return;
    int nblocks = ds_reduce_blocks(T);
    float *part = ds_alloc((size_t)B * nblocks * C * sizeof(float));
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= DS_PARALLEL_MIN)
    for (int task = 0; task < B * nblocks; task++) {
        int b = task / nblocks, blk = task % nblocks;
        const float *g = gate + b * stride;
        float *p = part + (int64_t)task * C;
        int64_t r0, r1;
        ds_group_block(T, b, blk, &r0, &r1);
        for (int64_t r = r0; r < r1; r++)
            for (int c = 0; c < C; c++) {
                df[r * C + c] += dout[r * C + c] * g[c];
                p[c] += dout[r * C + c] * f[r * C + c];
            }
    }
    ds_add_group_partials(B, nblocks, C, C, part, dgate, stride);
    ds_free(part);
}
