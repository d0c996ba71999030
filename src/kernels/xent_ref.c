/* Fused softmax cross-entropy with L2Wrap, scalar reference (kernels.h, src/rwkv7/README.md §4.4). */
#include "impl.h"

#include <math.h>
#include <string.h>

#include "simd_math.h"

/* One row: max/argmax, then exp(x - max) stored in place while summing (in double), then the
 * normalisation; finally the one-hot and L2Wrap corrections. Returns the loss. */
static float xent_row(int V, float *x, int target, float scale, float l2wrap) {
    int argmax = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[argmax]) argmax = i;
    float max = x[argmax], x_target = x[target];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float g = (float)(scale / sum);
    for (int i = 0; i < V; i++) x[i] *= g;
    x[target] -= scale;
    x[argmax] += scale * l2wrap * max;
    return (float)((double)max - x_target + log(sum));
}

void softmax_xent_ref(int rows, int V, float *logits, const int32_t *targets, float scale,
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
