/* Row softmax forward and backward (attention probabilities), scalar reference (kernels.h). */
#include "impl.h"

#include <math.h>

#include "simd_math.h"

/* exp(x - max) over the row, the sum in double, then one scaling pass; x == y is fine. */
void softmax_forward_ref(int64_t rows, int n, const float *x, float *y) {
#pragma omp parallel for schedule(static) if (rows * n >= DS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float max = xr[0];
        for (int i = 1; i < n; i++) max = fmaxf(max, xr[i]);
        double sum = 0;
        for (int i = 0; i < n; i++) {
            yr[i] = expf(xr[i] - max);
            sum += yr[i];
        }
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < n; i++) yr[i] *= inv;
    }
}

/* dx += y (dy - <dy, y>): the Jacobian diag(y) - y y^T applied to dy. */
void softmax_backward_ref(int64_t rows, int n, const float *y, const float *dy, float *dx) {
#pragma omp parallel for schedule(static) if (rows * n >= DS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        double dot = 0;
        for (int i = 0; i < n; i++) dot += (double)dyr[i] * yr[i];
        float d = (float)dot;
        for (int i = 0; i < n; i++) dxr[i] += yr[i] * (dyr[i] - d);
    }
}
