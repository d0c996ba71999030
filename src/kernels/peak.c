#include "dreamstate/common.h"
#include "impl.h"

#include <omp.h>

double ds_measure_fma_peak(int threads, double seconds) {
    int simd = ds_cpu_has_avx512();
    double (*chains)(int64_t) = simd ? fma_chains_avx512 : fma_chains_ref;
    double flops_per_iter = 12.0 * 2.0 * (simd ? 16 : 1);
    int64_t iters = 1 << 16;
    volatile double sink = chains(iters);  /* warm up clocks */
    double t = 0, best = 0;
    for (int rounds = 0; rounds < 64 && t < seconds; rounds++) {
        double t0 = ds_now_seconds();
#pragma omp parallel num_threads(threads)
        {
            double r = chains(iters * 64);
#pragma omp atomic
            sink += r;
        }
        double dt = ds_now_seconds() - t0;
        t += dt;
        double gf = threads * flops_per_iter * iters * 64 / dt * 1e-9;
        if (gf > best) best = gf;
    }
    (void)sink;
    return best;
}
