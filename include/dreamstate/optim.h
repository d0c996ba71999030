/* AdamW over a parameter table (per-tensor learning-rate scale and weight-decay flag, src/rwkv7/README.md §4.2),
 * the warm-up + cosine schedule (src/rwkv7/README.md §4.3), and global-norm gradient clipping. */
#ifndef DREAMSTATE_OPTIM_H
#define DREAMSTATE_OPTIM_H

#include <stdint.h>

typedef struct ds_optim_group {
    int64_t offset, numel;   /* slice of the flat parameter/gradient arrays */
    float lr_scale;
    int weight_decay;
} ds_optim_group;

/* The optimiser owns the moments of a set of flat ranges of the parameter array: all of it [0, n) for
 * a replicated optimiser, or one rank's shard under ZeRO-1. Moments are stored compactly, range after
 * range (m and v of length owned_len each). */
typedef struct ds_adamw {
    int n_ranges;
    int64_t *range_begin, *range_len;
    int64_t owned_len;
    float *m, *v;
    int n_groups;
    ds_optim_group *groups;
    double beta1, beta2, eps, weight_decay;
} ds_adamw;

void ds_adamw_create(ds_adamw *opt, int n_ranges, const int64_t *range_begin, const int64_t *range_len,
                     int n_groups, const ds_optim_group *groups, double beta1, double beta2, double eps,
                     double weight_decay);
void ds_adamw_destroy(ds_adamw *opt);
/* One update of `step` (>= 1) with learning rate lr, of the owned ranges only. */
void ds_adamw_step(ds_adamw *opt, float *params, const float *grads, double lr, int64_t step);

/* Warm-up then cosine: step < warmup: lr * (0.01 + 0.99 step / warmup); then cosine from lr to lr_final
 * over the remaining steps of total_steps. step counts from 0. */
double ds_lr_schedule(int64_t step, int64_t total_steps, int64_t warmup, double lr, double lr_final);

/* Sum of squares of grads over the owned ranges (add over ranks for a sharded optimiser). */
double ds_adamw_grad_sumsq(const ds_adamw *opt, const float *grads);
/* Scales grads over the owned ranges. */
void ds_adamw_scale_grads(const ds_adamw *opt, float *grads, float s);

/* Global L2 norm of grads[0..n); if max_norm > 0 and the norm exceeds it, scales grads down to
 * max_norm. Returns the norm before clipping. */
double ds_clip_grad_norm(float *grads, int64_t n, double max_norm);

#endif
