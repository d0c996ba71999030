#include "dreamstate/optim.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <math.h>
#include <string.h>

void ds_adamw_create(ds_adamw *opt, int n_ranges, const int64_t *range_begin, const int64_t *range_len,
                     int n_groups, const ds_optim_group *groups, double beta1, double beta2, double eps,
                     double weight_decay) {
    memset(opt, 0, sizeof *opt);
    opt->n_ranges = n_ranges;
    opt->range_begin = ds_alloc(sizeof(int64_t) * (n_ranges + 1));
    opt->range_len = ds_alloc(sizeof(int64_t) * (n_ranges + 1));
    for (int r = 0; r < n_ranges; r++) {
        opt->range_begin[r] = range_begin[r];
        opt->range_len[r] = range_len[r];
        opt->owned_len += range_len[r];
    }
    opt->m = ds_alloc(sizeof(float) * 2 * (opt->owned_len ? opt->owned_len : 1));
    opt->v = opt->m + opt->owned_len;
    opt->n_groups = n_groups;
    opt->groups = ds_alloc(sizeof(ds_optim_group) * n_groups);
    memcpy(opt->groups, groups, sizeof(ds_optim_group) * n_groups);
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
}

void ds_adamw_destroy(ds_adamw *opt) {
    ds_free(opt->m);
    ds_free(opt->groups);
    ds_free(opt->range_begin);
    ds_free(opt->range_len);
    memset(opt, 0, sizeof *opt);
}

static int64_t compact_base(const ds_adamw *opt, int r) {
    int64_t base = 0;
    for (int i = 0; i < r; i++) base += opt->range_len[i];
    return base;
}

void ds_adamw_step(ds_adamw *opt, float *params, const float *grads, double lr, int64_t step) {
    for (int r = 0; r < opt->n_ranges; r++) {
        int64_t lo = opt->range_begin[r], hi = lo + opt->range_len[r], base = compact_base(opt, r);
        for (int i = 0; i < opt->n_groups; i++) {
            const ds_optim_group *g = &opt->groups[i];
            int64_t a = g->offset > lo ? g->offset : lo, b = g->offset + g->numel < hi ? g->offset + g->numel : hi;
            if (a >= b) continue;
            ds_k.adamw(b - a, params + a, grads + a, opt->m + base + (a - lo), opt->v + base + (a - lo),
                       (float)(lr * g->lr_scale), (float)opt->beta1, (float)opt->beta2, (float)opt->eps,
                       g->weight_decay ? (float)opt->weight_decay : 0.0f, step);
        }
    }
}

double ds_adamw_grad_sumsq(const ds_adamw *opt, const float *grads) {
    double s = 0;
    for (int r = 0; r < opt->n_ranges; r++) s += ds_k.sum_squares(opt->range_len[r], grads + opt->range_begin[r]);
    return s;
}

void ds_adamw_scale_grads(const ds_adamw *opt, float *grads, float s) {
    for (int r = 0; r < opt->n_ranges; r++) ds_k.scale(opt->range_len[r], grads + opt->range_begin[r], s);
}

double ds_lr_schedule(int64_t step, int64_t total_steps, int64_t warmup, double lr, double lr_final) {
    if (step < warmup) return lr * (0.01 + 0.99 * (double)step / (double)warmup);
    double span = (double)(total_steps - warmup);
    double progress = span > 0 ? (double)(step - warmup) / span : 1.0;
    if (progress > 1) progress = 1;
    return 0.5 * (lr + lr_final) + 0.5 * (lr - lr_final) * cos(M_PI * progress);
}

double ds_clip_grad_norm(float *grads, int64_t n, double max_norm) {
    double norm = sqrt(ds_k.sum_squares(n, grads));
    if (max_norm > 0 && norm > max_norm) ds_k.scale(n, grads, (float)(max_norm / norm));
    return norm;
}
