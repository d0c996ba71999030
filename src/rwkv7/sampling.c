/* Token sampling: temperature, nucleus (top-p), inverse CDF of one uniform number. Weights and sums
 * in double and in a fixed order, so the drawn token is a deterministic function of (logits, u) and
 * its probability is the renormalised nucleus softmax up to rounding (tests/test_sampling.c).
 *
 * The nucleus is a prefix of the ranking (logit descending, ties by lower id), so it is fixed by its
 * last token, the cut: token i is in it iff it ranks no lower than the cut. Finding the cut does not
 * need the whole ranking: tokens are binned by depth (max - logit) / temperature, which is monotone
 * in the logit, the bin where the running mass reaches top_p is found from per-bin sums, and only
 * that bin is sorted. O(V) plus sorting one bin, instead of sorting a 65536-token vocabulary.
 *
 * Shapes: V vocabulary; logits [V] of one position, the scratch w [V] (double) then ranked [V]. */
#include "dreamstate/rwkv7.h"

#include <math.h>
#include <stdlib.h>

#define DEPTH_BINS 256        /* bins of 1/8 depth down to depth 32; one more for everything deeper */
#define BINS_PER_DEPTH 8.0

typedef struct ranked {
    float logit;
    int32_t id;
} ranked;

/* Most likely first; equal logits (equal probabilities) by lower id. */
static int by_rank(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int depth_bin(float logit, double max, double temperature) {
    double bin = (max - logit) / temperature * BINS_PER_DEPTH;  /* >= 0, +inf for tiny temperatures */
    return bin < DEPTH_BINS ? (int)bin : DEPTH_BINS;
}

/* The last token of the nucleus: the first in the ranking at which the running weight reaches target. */
static ranked nucleus_cut(const float *logits, const double *w, int V, double max, double temperature, double target,
                          ranked *r) {
    double mass[DEPTH_BINS + 1] = {0};
    for (int32_t i = 0; i < V; i++) mass[depth_bin(logits[i], max, temperature)] += w[i];
    int b = 0;
    double cum = 0;
    while (b < DEPTH_BINS && cum + mass[b] < target) cum += mass[b++];
    int n = 0;
    for (int32_t i = 0; i < V; i++)
        if (depth_bin(logits[i], max, temperature) == b) r[n++] = (ranked){logits[i], i};
    /* n = 0 only if rounding kept every bin from reaching target: then the nucleus is everything */
    if (n == 0) return (ranked){-INFINITY, V};
    qsort(r, (size_t)n, sizeof *r, by_rank);
    int k = 0;
    while (k < n && cum < target) cum += w[r[k++].id];
    return r[k > 0 ? k - 1 : 0];
}

/* Token i ranks no lower than the cut. */
static int in_nucleus(const float *logits, int32_t i, ranked cut) {
    return logits[i] > cut.logit || (logits[i] == cut.logit && i <= cut.id);
}

size_t ds_sample_scratch_bytes(int V) { return V > 0 ? (sizeof(double) + sizeof(ranked)) * (size_t)V : 0; }

int32_t ds_sample_token(const float *logits, int V, double temperature, double top_p, double u, void *scratch) {
    if (!logits || !scratch || V < 1 || !(temperature >= 0) || !isfinite(temperature) || !(top_p > 0 && top_p <= 1) ||
        !(u >= 0 && u < 1))
        return -1;
    int32_t best = 0;
    for (int32_t i = 0; i < V; i++) {
        if (!isfinite(logits[i])) return -1;
        if (logits[i] > logits[best]) best = i;
    }
    if (temperature == 0) return best;

    double *w = scratch, max = logits[best], total = 0;
    for (int32_t i = 0; i < V; i++) total += w[i] = exp(((double)logits[i] - max) / temperature);
    ranked cut = top_p < 1 ? nucleus_cut(logits, w, V, max, temperature, top_p * total, (ranked *)(w + V))
                           : (ranked){-INFINITY, V};
    double mass = 0;
    for (int32_t i = 0; i < V; i++)
        if (in_nucleus(logits, i, cut)) mass += w[i];
    /* Inverse CDF in id order. Zero-weight tokens have empty intervals; if rounding puts u * mass at the
     * very top, the last token of positive weight takes it. */
    double x = u * mass, cum = 0;
    int32_t last = best;
    for (int32_t i = 0; i < V; i++) {
        if (!in_nucleus(logits, i, cut) || w[i] <= 0) continue;
        cum += w[i];
        last = i;
        if (x < cum) return i;
    }
    return last;
}
