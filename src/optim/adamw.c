#include "dreamstate/optim.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <math.h>
#include <string.h>

void ds_adamw_create(ds_adamw *opt, int64_t n, int n_groups, const ds_optim_group *groups, double beta1,
                     double beta2, double eps, double weight_decay) {
    opt->n = n;
    opt->m = ds_alloc(sizeof(float) * 2 * n);
    opt->v = opt->m + n;
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
    memset(opt, 0, sizeof *opt);
}

void ds_adamw_step(ds_adamw *opt, float *params, const float *grads, double lr, int64_t step) {
    for (int i = 0; i < opt->n_groups; i++) {
        const ds_optim_group *g = &opt->groups[i];
        ds_k.adamw(g->numel, params + g->offset, grads + g->offset, opt->m + g->offset, opt->v + g->offset,
                   (float)(lr * g->lr_scale), (float)opt->beta1, (float)opt->beta2, (float)opt->eps,
                   g->weight_decay ? (float)opt->weight_decay : 0.0f, step);
    }
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
