/* Training-step throughput of the part-B hybrid (src/hybrid/README.md) against the static fine-tune of
 * the same RWKV-7 (hybrid.matrices none, train_static 1) on the same random windows: forward + backward
 * + gradient clipping + AdamW over each model's trainable set. Three models, steps alternating between
 * them after a warm-up step of each, so that a machine whose load changes slows all alike:
 *  - "hybrid": the project's defaults (frozen static weights, W_r, W_k, W_v of the last layer, A1,
 *    first_token, prefix 16) with a small DiT (hidden HIDDEN, depth DEPTH, 2 heads, patch PATCH);
 *  - "hybrid_trained": the same with train_static 1 (the RWKV-7 trains as well);
 *  - "static": the static fine-tuning baseline.
 * Prints one JSON line: tokens/s and best step of each, and their ratios to the static step's (mean and
 * best), for tests/bench.sh.
 * usage: bench_hybrid L C V T B STEPS [THREADS [HIDDEN DEPTH PATCH]] */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/hybrid.h"
#include "dreamstate/kernels.h"
#include "dreamstate/optim.h"

#include <stdlib.h>

enum { HYBRID, HYBRID_TRAINED, STATIC, N_MODELS };
static const char *model_names[N_MODELS] = {"hybrid", "hybrid_trained", "static"};

typedef struct {
    ds_hybrid h;
    ds_adamw opt;
} bench_model;

static void make_model(bench_model *b, const ds_hybrid_dims *d) {
    ds_hybrid_create(&b->h, d);
    ds_rwkv7_init_weights(&b->h.model, 1);
    ds_hybrid_init_weights(&b->h, 2);
    ds_optim_group *groups = ds_alloc(sizeof(ds_optim_group) * b->h.n_tensors);
    for (int i = 0; i < b->h.n_tensors; i++) {
        const ds_param_tensor *t = &b->h.tensors[i];
        groups[i] = (ds_optim_group){t->offset, t->numel, t->lr_scale, t->weight_decay};
    }
    int64_t begin = 0, len = b->h.n_params;
    ds_adamw_create(&b->opt, 1, &begin, &len, b->h.n_tensors, groups, 0.9, 0.99, 1e-8, 0.0);
    ds_free(groups);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: bench_hybrid L C V T B STEPS [THREADS [HIDDEN DEPTH PATCH]]\n");
        return 2;
    }
    int L = atoi(argv[1]), C = atoi(argv[2]), V = atoi(argv[3]), T = atoi(argv[4]), B = atoi(argv[5]);
    int steps = atoi(argv[6]), threads = argc > 7 ? atoi(argv[7]) : 0;
    int hidden = argc > 10 ? atoi(argv[8]) : 64, depth = argc > 10 ? atoi(argv[9]) : 2,
        patch = argc > 10 ? atoi(argv[10]) : 8;
    ds_blas_init(threads);
    const char *kern = ds_kernels_init();
    threads = ds_blas_threads();
    ds_hybrid_dims d = {.model = {.n_layer = L, .n_embd = C, .vocab_size = V}, .n_targets = 1, .targets = {L - 1},
                        .matrices = DS_HYBRID_R | DS_HYBRID_K | DS_HYBRID_V, .param = DS_HYBRID_FULL,
                        .u0_seed = DS_HYBRID_U0_SEED, .condition = DS_HYBRID_FIRST_TOKEN, .prefix = 16,
                        .learn_alpha = 1, .alpha_init = 0.9, .alpha_lr_scale = 10, .lambda_lm = 1, .lambda_pd = 0.1,
                        .t_star = 199, .p_uncond = 0.1, .schedule = DS_SCHEDULE_LINEAR, .l2wrap = 1e-4f,
                        .dit = {.hidden = hidden, .depth = depth, .heads = 2, .patch_size = patch, .mlp_ratio = 4}};
    ds_rwkv7_default_ranks(&d.model, "released");
    bench_model models[N_MODELS];
    for (int k = 0; k < N_MODELS; k++) {
        ds_hybrid_dims dk = d;
        dk.train_static = k != HYBRID;
        if (k == STATIC) dk.n_targets = 0;
        make_model(&models[k], &dk);
    }
    int32_t *tok = ds_alloc(sizeof(int32_t) * B * T), *tgt = ds_alloc(sizeof(int32_t) * B * T);
    double total[N_MODELS] = {0}, best[N_MODELS] = {1e30, 1e30, 1e30};
    /* the first step of each model warms up (allocation, page faults, BLIS buffers) */
    for (int s = -1; s < steps; s++)
        for (int k = 0; k < N_MODELS; k++) {
            bench_model *b = &models[k];
            for (int64_t i = 0; i < (int64_t)B * T; i++) {
                tok[i] = (int32_t)(ds_rng_u64(7, 1, (uint64_t)(s + 1) * B * T + i) % V);
                tgt[i] = (int32_t)(ds_rng_u64(7, 2, (uint64_t)(s + 1) * B * T + i) % V);
            }
            double t0 = ds_now_seconds();
            ds_hybrid_zero_grad(&b->h);
            ds_hybrid_forward_backward(&b->h, B, T, tok, tgt, NULL, 3, (uint64_t)(s + 1) * B, 1.0f, NULL);
            ds_clip_grad_norm(b->h.grads, b->h.n_params, 1.0);
            ds_adamw_step(&b->opt, b->h.params, b->h.grads, 1e-4, s + 2);
            double dt = ds_now_seconds() - t0;
            if (s >= 0) {
                total[k] += dt;
                best[k] = dt < best[k] ? dt : best[k];
            }
        }
    double tok_s[N_MODELS];
    for (int k = 0; k < N_MODELS; k++) tok_s[k] = (double)B * T * steps / total[k];
    printf("{\"shape\":\"L%d C%d V%d T%d B%d\",\"dit\":\"d%d depth %d patch %d\",\"threads\":%d,\"kernels\":\"%s\"", L, C,
           V, T, B, hidden, depth, patch, threads, kern);
    for (int k = 0; k < N_MODELS; k++)
        printf(",\"%s_tokens_per_s\":%.1f,\"%s_best_step_s\":%.4f", model_names[k], tok_s[k], model_names[k], best[k]);
    /* the best steps too: on a loaded machine their ratio is the steadier one */
    printf(",\"hybrid_over_static\":%.3f,\"hybrid_trained_over_static\":%.3f,\"best_hybrid_over_static\":%.3f,"
           "\"best_hybrid_trained_over_static\":%.3f}\n", tok_s[HYBRID] / tok_s[STATIC], tok_s[HYBRID_TRAINED] / tok_s[STATIC],
           best[STATIC] / best[HYBRID], best[STATIC] / best[HYBRID_TRAINED]);
    for (int k = 0; k < N_MODELS; k++) {
        ds_adamw_destroy(&models[k].opt);
        ds_hybrid_destroy(&models[k].h);
    }
    ds_free(tok), ds_free(tgt);
    return 0;
}
