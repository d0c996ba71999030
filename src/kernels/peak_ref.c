/* FMA peak probe, portable twin: scalar fmaf chains (what the CPU gives without SIMD). */
#include "impl.h"

#include <math.h>

double fma_chains_ref(int64_t iters) {
    float acc[12] = {0};
    const float a = 0.999999f, b = 1e-7f;
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < 12; c++) acc[c] = fmaf(acc[c], a, b);
    float s = 0;
    for (int c = 0; c < 12; c++) s += acc[c];
    return s;
}
