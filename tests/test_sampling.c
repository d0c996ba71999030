/* The token sampler (src/rwkv7/sampling.c) against closed forms. The draw is a deterministic function
 * of u, so sweeping u over the midpoints of a fine grid of [0, 1) measures each token's probability:
 * the share of grid points mapping to a token is within 1/G of the length of its set of u. That share
 * must equal softmax(logits / T) restricted to the nucleus and renormalised, which the test computes
 * independently in long double (ranking with an O(V^2) count, no sorting). */
#include "test.h"

#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/rwkv7.h"

#define MAX_V 64

/* Reference: probabilities p[] of the renormalised nucleus (0 outside it); returns the number of
 * its tokens of positive probability. Also
 * returns in *margin the distance of top_p from the nearest cumulative sum of the ranking, so a test
 * can make sure its p is not on a boundary where rounding decides. */
static int reference(const float *logits, int V, double T, double top_p, long double *p, double *margin) {
    /* weights in double as the contract says (exp(-1000) is 0, not 5e-435), sums in long double */
    long double w[MAX_V], total = 0;
    double max = logits[0];
    for (int i = 0; i < V; i++) max = logits[i] > max ? logits[i] : max;
    for (int i = 0; i < V; i++) total += w[i] = exp(((double)logits[i] - max) / T);
    /* rank[i]: how many tokens come before i (more probable, or as probable with a lower id) */
    int rank[MAX_V], at[MAX_V];
    for (int i = 0; i < V; i++) {
        rank[i] = 0;
        for (int j = 0; j < V; j++) rank[i] += w[j] > w[i] || (w[j] == w[i] && j < i);
        at[rank[i]] = i;
    }
    long double cum = 0;
    int n = V;
    *margin = 1;
    for (int k = 0; k < V; k++) {
        cum += w[at[k]] / total;
        double gap = fabs((double)(cum - top_p));
        *margin = gap < *margin ? gap : *margin;
        if (cum >= top_p && n == V) n = k + 1;
    }
    if (top_p >= 1) n = V;
    long double kept = 0;
    for (int i = 0; i < V; i++) kept += rank[i] < n ? w[i] : 0;
    int reachable = 0;
    for (int i = 0; i < V; i++) {
        p[i] = rank[i] < n ? w[i] / kept : 0;
        reachable += p[i] > 0;
    }
    return reachable;
}

/* Sweeps u over G grid midpoints; compares the reachable set and each token's share with the
 * reference. Returns the largest |share - p|. */
static double sweep(const char *name, const float *logits, int V, double T, double top_p, int log2_grid) {
    long double p[MAX_V];
    double margin;
    int n = reference(logits, V, T, top_p, p, &margin);
    long G = 1L << log2_grid;
    CHECK(top_p >= 1 || margin == 0 || margin > 1e-6, "%s: test data: top_p %g is %g from a cumulative sum", name, top_p, margin);
    for (int i = 0; i < V; i++)
        CHECK(p[i] == 0 || p[i] * G >= 4, "%s: test data: token %d (p %Lg) too rare for the grid", name, i, p[i]);

    double scratch[2 * MAX_V];
    CHECK(ds_sample_scratch_bytes(V) <= sizeof scratch, "scratch size %zu", ds_sample_scratch_bytes(V));
    long count[MAX_V] = {0};
    int bad = 0;
    for (long j = 0; j < G; j++) {
        int32_t id = ds_sample_token(logits, V, T, top_p, (j + 0.5) / G, scratch);
        if (id < 0 || id >= V) { bad++; continue; }
        count[id]++;
    }
    /* the ends of [0, 1) stay inside the nucleus */
    int32_t lo = ds_sample_token(logits, V, T, top_p, 0.0, scratch);
    int32_t hi = ds_sample_token(logits, V, T, top_p, nextafter(1.0, 0.0), scratch);
    CHECK(bad == 0, "%s: %d draws out of range", name, bad);
    CHECK(lo >= 0 && p[lo] > 0 && hi >= 0 && p[hi] > 0, "%s: u = 0 -> %d, u = 1-eps -> %d", name, lo, hi);

    int reached = 0, same_set = 1;
    double worst = 0;
    for (int i = 0; i < V; i++) {
        reached += count[i] > 0;
        same_set &= (count[i] > 0) == (p[i] > 0);
        double err = fabs((double)count[i] / G - (double)p[i]);
        worst = err > worst ? err : worst;
    }
    CHECK(same_set && reached == n, "%s: %d tokens reachable, nucleus has %d", name, reached, n);
    CHECK(worst <= 1e-6, "%s: probability error %.3g (grid 2^%d)", name, worst, log2_grid);
    printf("  %-34s V=%2d T=%-5g p=%-5g nucleus %2d  max |share - p| %.2e\n", name, V, T, top_p, n, worst);
    return worst;
}

static void test_distributions(void) {
    static const float mixed[8] = {2.0f, 1.0f, 0.5f, 0.5f, -1.0f, 3.0f, 0.0f, -2.5f};
    static const float flat[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    static const float spread[6] = {-3.0f, 4.0f, 1.5f, 4.0f, -0.25f, 2.0f};
    static const float extreme[3] = {0.0f, -1000.0f, -1000.0f};
    const double ps[] = {0.3, 0.6, 0.8, 0.95, 1.0};
    double scratch[2 * MAX_V];
    for (int k = 0; k < 5; k++) sweep("mixed, T=1", mixed, 8, 1.0, ps[k], 20);
    sweep("mixed, T=0.5", mixed, 8, 0.5, 0.9, 20);
    sweep("mixed, T=2.5", mixed, 8, 2.5, 0.7, 20);
    sweep("mixed, T=100 (near uniform)", mixed, 8, 100.0, 1.0, 20);
    /* ties: the nucleus of equal tokens takes the lower ids; a cumulative sum exactly at top_p counts */
    sweep("flat, nucleus 2 of 4 (reaches 0.5)", flat, 4, 1.0, 0.5, 20);
    sweep("flat, nucleus 3 of 4", flat, 4, 1.0, 0.6, 20);
    sweep("spread, tie at the top: lower id", spread, 6, 0.8, 0.45, 20);
    sweep("spread, tie at the top: both", spread, 6, 0.8, 0.5, 20);
    sweep("spread, top_p 0.85", spread, 6, 1.3, 0.85, 20);
    sweep("exp underflow to 0", extreme, 3, 1.0, 1.0, 20);

    /* a larger vocabulary with Gaussian logits */
    float gauss[MAX_V];
    for (int i = 0; i < 48; i++) gauss[i] = (float)(1.5 * ds_rng_normal(7, 1, (uint64_t)i));
    sweep("48 Gaussian logits, top_p 0.5", gauss, 48, 0.7, 0.5, 20);

    /* The sampler bins tokens by depth (max - logit) / T and sorts only the bin where the nucleus
     * ends. Here that bin holds 63 tied tokens of which the lower ids are kept ... */
    float tail[64];
    for (int i = 0; i < 64; i++) tail[i] = i == 0 ? 10.0f : 1.5f;
    sweep("top token + 39 of 63 tied", tail, 64, 1.0, 0.995, 20);
    /* ... and here the nucleus ends in the first bin, the 36 others never sorted */
    float low[40];
    for (int i = 0; i < 40; i++) low[i] = i < 4 ? 0.25f * i : -9.0f;
    sweep("4 tokens in, 36 left out", low, 40, 1.0, 0.9, 20);
    /* Cuts in the deep tail (depth 20: a bin; depth 33: past the last bin), with masses far below the
     * grid's resolution: u just below 1 draws the nucleus's last token in id order (the inverse CDF runs
     * in id order), u just below and above 1 / (nucleus weight) tokens 0 and 1. Top token 0, ten tail tokens 1..10
     * of weight e^-depth; top_p chosen so that the target lies halfway into the sixth. */
    const double depths[2] = {20, 33};
    for (int k = 0; k < 2; k++) {
        float deep[11];
        for (int i = 0; i < 11; i++) deep[i] = i == 0 ? 0.0f : (float)-depths[k];
        double w = exp((double)deep[1]);
        double top_p = (1 + 5.5 * w) / (1 + 10 * w);
        long double p[MAX_V];
        double margin;
        int n = reference(deep, 11, 1.0, top_p, p, &margin);
        int32_t hi = ds_sample_token(deep, 11, 1.0, top_p, nextafter(1.0, 0.0), scratch);
        int32_t top = ds_sample_token(deep, 11, 1.0, top_p, (1 - 1e-15) / (1 + 6 * w), scratch);
        int32_t next = ds_sample_token(deep, 11, 1.0, top_p, (1 + 0.5 * w) / (1 + 6 * w), scratch);
        CHECK(n == 7 && p[6] > 0 && p[7] == 0, "depth %g: reference nucleus %d", depths[k], n);
        CHECK(hi == 6 && top == 0 && next == 1, "depth %g: u -> 1 draws %d (want 6), u -> 1/mass draws %d, %d (want 0, 1)",
              depths[k], hi, top, next);
        hi = ds_sample_token(deep, 11, 1.0, 1.0, nextafter(1.0, 0.0), scratch);
        CHECK(hi == 10, "depth %g, top_p 1: u -> 1 draws %d (want 10)", depths[k], hi);
    }

    /* random vectors of many scales: every draw lies in the nucleus */
    int outside = 0, tried = 0;
    for (uint64_t c = 0; c < 3000; c++) {
        int V = 1 + (int)(ds_rng_u64(3, 1, c) % MAX_V);
        double scale = pow(10.0, 3 * ds_rng_uniform(3, 2, c) - 1), T = pow(10.0, 2 * ds_rng_uniform(3, 3, c) - 1);
        double top_p = ds_rng_uniform(3, 4, c) > 0.2 ? 1 - ds_rng_uniform(3, 5, c) : 1.0;
        float rl[MAX_V];
        for (int i = 0; i < V; i++) rl[i] = (float)(scale * ds_rng_normal(3, 6 + c, (uint64_t)i));
        long double p[MAX_V];
        double margin;
        reference(rl, V, T, top_p, p, &margin);
        if (top_p < 1 && margin < 1e-9) continue;
        tried++;
        int32_t id = ds_sample_token(rl, V, T, top_p, ds_rng_uniform(3, 7, c), scratch);
        outside += id < 0 || id >= V || !(p[id] > 0);
    }
    CHECK(tried > 2500 && outside == 0, "random vectors: %d of %d draws outside the nucleus", outside, tried);

    /* top_p so small that only the most likely token is kept: always the argmax */
    int all_argmax = 1;
    for (int j = 0; j < 1000; j++) all_argmax &= ds_sample_token(mixed, 8, 1.0, 1e-9, j / 1000.0, scratch) == 5;
    CHECK(all_argmax, "top_p 1e-9 keeps only the argmax");
}

static void test_greedy(void) {
    double scratch[2 * MAX_V];
    static const float ties[5] = {-2.0f, 7.5f, 3.0f, 7.5f, 7.5f};
    static const float negative[4] = {-9.0f, -3.0f, -4.0f, -3.5f};
    static const float one[1] = {-42.0f};
    int ok = 1;
    for (int j = 0; j < 100; j++) {
        double u = j / 100.0, p = j % 2 ? 1.0 : 0.3;
        ok &= ds_sample_token(ties, 5, 0.0, p, u, scratch) == 1;       /* lowest id among equal maxima */
        ok &= ds_sample_token(negative, 4, 0.0, p, u, scratch) == 1;
        ok &= ds_sample_token(one, 1, 0.0, p, u, scratch) == 0;
        ok &= ds_sample_token(one, 1, 1.0, p, u, scratch) == 0;
        ok &= ds_sample_token(negative, 4, 1e-4, p, u, scratch) == 1; /* T -> 0 tends to the argmax */
    }
    CHECK(ok, "temperature 0 is the argmax (lowest id on ties), whatever u and top_p");
}

static void test_bad_arguments(void) {
    double scratch[2 * MAX_V];
    static const float l[3] = {0.5f, 1.0f, -1.0f};
    const float nan_logits[3] = {0.5f, NAN, -1.0f}, inf_logits[3] = {0.5f, INFINITY, -1.0f};
    CHECK(ds_sample_token(l, 3, 1.0, 0.9, 0.5, scratch) >= 0, "valid call");
    CHECK(ds_sample_token(l, 0, 1.0, 0.9, 0.5, scratch) == -1, "V = 0");
    CHECK(ds_sample_token(l, -3, 1.0, 0.9, 0.5, scratch) == -1, "V < 0");
    CHECK(ds_sample_token(NULL, 3, 1.0, 0.9, 0.5, scratch) == -1, "no logits");
    CHECK(ds_sample_token(l, 3, 1.0, 0.9, 0.5, NULL) == -1, "no scratch");
    CHECK(ds_sample_token(l, 3, -0.1, 0.9, 0.5, scratch) == -1, "negative temperature");
    CHECK(ds_sample_token(l, 3, NAN, 0.9, 0.5, scratch) == -1, "NaN temperature");
    CHECK(ds_sample_token(l, 3, INFINITY, 0.9, 0.5, scratch) == -1, "infinite temperature");
    CHECK(ds_sample_token(l, 3, 1.0, 0.0, 0.5, scratch) == -1, "top_p 0");
    CHECK(ds_sample_token(l, 3, 1.0, -0.5, 0.5, scratch) == -1, "negative top_p");
    CHECK(ds_sample_token(l, 3, 1.0, 1.0000001, 0.5, scratch) == -1, "top_p above 1");
    CHECK(ds_sample_token(l, 3, 1.0, NAN, 0.5, scratch) == -1, "NaN top_p");
    CHECK(ds_sample_token(l, 3, 1.0, 0.9, 1.0, scratch) == -1, "u = 1");
    CHECK(ds_sample_token(l, 3, 1.0, 0.9, -1e-12, scratch) == -1, "u < 0");
    CHECK(ds_sample_token(l, 3, 1.0, 0.9, NAN, scratch) == -1, "NaN u");
    CHECK(ds_sample_token(nan_logits, 3, 1.0, 0.9, 0.5, scratch) == -1, "NaN logit");
    CHECK(ds_sample_token(inf_logits, 3, 1.0, 0.9, 0.5, scratch) == -1, "infinite logit");
    CHECK(ds_sample_token(nan_logits, 3, 0.0, 0.9, 0.5, scratch) == -1, "NaN logit, greedy");
}

int main(void) {
    test_distributions();
    test_greedy();
    test_bad_arguments();
    return test_summary("test_sampling");
}
