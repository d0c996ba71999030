/* Gaussian draws, scalar reference (kernels.h, box_muller): Box-Muller with libm's log and cos. These
 * are the values of every random initialisation and every noise draw; the AVX-512 twin reproduces them
 * bit for bit.
 *
 * libm's cos takes one of several paths by its argument's range; in random order they defeat the branch
 * predictor, and a call costs twice a predicted one. So a block's cosines are taken in the order of their
 * arguments (a counting sort into bands of [0, 2 pi)): the same calls on the same arguments, so the
 * same values. */
#include "impl.h"

#include "dreamstate/common.h"

#include <math.h>

#define BLOCK 512
#define COS_BANDS_LOG2 6

static uint64_t radius_bits(uint64_t key, uint64_t j) { return ds_splitmix64(key ^ (2 * j)) >> 11; }
static uint64_t angle_bits(uint64_t key, uint64_t j) { return ds_splitmix64(key ^ (2 * j + 1)) >> 11; }
static double radius(uint64_t bits) { return sqrt(-2.0 * log((bits + 1) * 0x1.0p-53)); }
static double angle(uint64_t bits) { return 2.0 * M_PI * (bits * 0x1.0p-53); }

double box_muller_one_ref(uint64_t key, uint64_t j) { return radius(radius_bits(key, j)) * cos(angle(angle_bits(key, j))); }

void box_muller_ref(int64_t n, uint64_t key, uint64_t first, double *x) {
    double theta[BLOCK];
    uint16_t band[BLOCK], order[BLOCK];
    for (int64_t b = 0; b < n; b += BLOCK) {
        int len = n - b < BLOCK ? (int)(n - b) : BLOCK;
        int start[(1 << COS_BANDS_LOG2) + 1] = {0};
        for (int i = 0; i < len; i++) {
            uint64_t j = first + (uint64_t)(b + i), bits = angle_bits(key, j);
            x[b + i] = radius(radius_bits(key, j));
            theta[i] = angle(bits);
            band[i] = (uint16_t)(bits >> (53 - COS_BANDS_LOG2));
            start[band[i] + 1]++;
        }
        for (int k = 0; k < 1 << COS_BANDS_LOG2; k++) start[k + 1] += start[k];
        for (int i = 0; i < len; i++) order[start[band[i]]++] = (uint16_t)i;
        for (int k = 0; k < len; k++) x[b + order[k]] *= cos(theta[order[k]]);
    }
}
