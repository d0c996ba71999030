#include "dreamstate/common.h"
#include "impl.h"

#include <omp.h>

/* Best rate over rounds of `chains` on every thread, for about `seconds`. */
static double best_rate(double (*chains)(int64_t), double flops_per_iter, int threads, double seconds) {
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

double ds_measure_fma_peak(int threads, double seconds) {
    int simd = ds_cpu_has_avx512();
    return best_rate(simd ? fma_chains_avx512 : fma_chains_ref, 12.0 * 2.0 * (simd ? 16 : 1), threads, seconds);
}

double ds_measure_bf16_peak(int threads, double seconds) {
    if (!ds_cpu_has_avx512_bf16()) return ds_measure_fma_peak(threads, seconds);
    return best_rate(dpbf16_chains_avx512, 12.0 * 16 * 2 * 2, threads, seconds);
}
