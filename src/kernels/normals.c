/* Gaussian draws of the counter-based RNG (kernels.h): the stream's key hashed once, then the box_muller
 * kernel of the active table (its values are the reference's, bit for bit). */
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "impl.h"
#include "simd_math.h"

#define NORMALS_BLOCK 512

/* One draw by the reference kernel's formula, which defines the values. */
double ds_rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    return box_muller_one_ref(ds_rng_key(seed, stream), index);
}

void ds_rng_normals(double *x, int64_t n, uint64_t seed, uint64_t stream, uint64_t first) {
    ds_k.box_muller(n, ds_rng_key(seed, stream), first, x);
}

void ds_fill_normal_at(float *x, int64_t n, double sd, uint64_t seed, uint64_t stream, uint64_t first) {
    uint64_t key = ds_rng_key(seed, stream);
#pragma omp parallel for schedule(static) if (n >= DS_PARALLEL_MIN)
    for (int64_t b = 0; b < n; b += NORMALS_BLOCK) {
        double z[NORMALS_BLOCK];
        int len = n - b < NORMALS_BLOCK ? (int)(n - b) : NORMALS_BLOCK;
        ds_k.box_muller(len, key, first + (uint64_t)b, z);
        for (int i = 0; i < len; i++) x[b + i] = (float)(sd * z[i]);
    }
}

void ds_fill_normal(float *x, int64_t n, double sd, uint64_t seed, uint64_t stream) {
    ds_fill_normal_at(x, n, sd, seed, stream, 0);
}
