/* Token sampling: temperature, nucleus (top-p), inverse CDF of one uniform number. Everything in
 * double and in a fixed order, so the drawn token is a deterministic function of (logits, u) and its
 * probability is the renormalised nucleus softmax up to rounding (tests/test_sampling.c). */
#include "dreamstate/generate.h"

#include <math.h>
#include <stdlib.h>

typedef struct ranked {
    double w;       /* exp((logit - max) / temperature) */
    float logit;
    int32_t id;
} ranked;

/* Most likely first; equal logits (equal probabilities) by lower id. */
static int by_rank(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

size_t ds_sample_scratch_bytes(int V) { return V > 0 ? sizeof(ranked) * (size_t)V : 0; }

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

    ranked *r = scratch;
    double max = logits[best];
    for (int32_t i = 0; i < V; i++) r[i] = (ranked){exp(((double)logits[i] - max) / temperature), logits[i], i};
    int kept = V;
    if (top_p < 1) {
        /* The nucleus: the shortest most-likely-first prefix holding top_p of the mass. The sum and the
         * running sum go in the same order, so the running sum reaches top_p * total at the latest at
         * the last token. */
        qsort(r, (size_t)V, sizeof *r, by_rank);
        double total = 0, cum = 0;
        for (int k = 0; k < V; k++) total += r[k].w;
        double target = top_p * total;
        for (kept = 0; kept < V && cum < target;) cum += r[kept++].w;
    }
    double mass = 0;
    for (int k = 0; k < kept; k++) mass += r[k].w;
    /* Inverse CDF. Zero-weight tokens have empty intervals; if rounding puts u * mass at the very top,
     * the last token of positive weight takes it. */
    double x = u * mass, cum = 0;
    int32_t last = best;
    for (int k = 0; k < kept; k++) {
        if (r[k].w <= 0) continue;
        cum += r[k].w;
        last = r[k].id;
        if (x < cum) return last;
    }
    return last;
}
