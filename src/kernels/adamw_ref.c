/* AdamW with bias correction and decoupled weight decay, scalar reference (kernels.h, src/rwkv7/README.md §4.2). */
#include "impl.h"

#include <math.h>

#include "simd_math.h"

void adamw_ref(int64_t n, float *param, const float *grad, float *m, float *v, float lr,
               float beta1, float beta2, float eps, float weight_decay, int64_t step) {
    /* Bias corrections in double: 1 - beta^t loses most digits in float for beta2 near 1. */
    float step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    float v_scale = (float)(1.0 / (1.0 - pow(beta2, (double)step)));
    float decay = lr * weight_decay;
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * (g * g);
        m[i] = mi;
        v[i] = vi;
        /* True sqrt (not an rsqrt estimate): with eps = 1e-18 the denominator is sqrt(v) alone. */
        param[i] = param[i] - decay * param[i] - step_size * mi / (sqrtf(vi * v_scale) + eps);
    }
}
