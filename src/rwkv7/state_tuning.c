/* State tuning (src/rwkv7/README.md §3.4): the loss of a batch whose sequences start from trainable
 * sets of initial WKV states, and its gradient with respect to those sets, through the frozen model. */
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/rwkv7.h"

#include <string.h>

#define N DS_HEAD_SIZE

void ds_rwkv7_tuner_init(ds_rwkv7_tuner *t, ds_rwkv7 *m) {
    memset(t, 0, sizeof *t);
    t->model = m;
    t->set_floats = (int64_t)m->d.n_layer * m->d.n_embd * N;
    m->frozen = 1;
}

static void free_batch_states(ds_rwkv7_tuner *t) {
    if (t->in.data) ds_rwkv7_state_destroy(&t->in);
    if (t->d_in.data) ds_rwkv7_state_destroy(&t->d_in);
}

void ds_rwkv7_tuner_destroy(ds_rwkv7_tuner *t) {
    free_batch_states(t);
    memset(t, 0, sizeof *t);
}

double ds_rwkv7_tuner_run(ds_rwkv7_tuner *t, int n, int T, const int32_t *tokens, const int32_t *targets,
                          const int32_t *set, const float *states, float *grads, float scale, float l2wrap) {
    ds_rwkv7 *m = t->model;
    int L = m->d.n_layer;
    int64_t per_layer = m->d.n_embd * N;  /* one layer's [H, N, N] */
    if (!t->in.data || t->in.B != n) {    /* a batch state's layout depends on its sequence count */
        free_batch_states(t);
        ds_rwkv7_state_create(&t->in, &m->d, n);
        ds_rwkv7_state_create(&t->d_in, &m->d, n);
    }
    memset(t->in.data, 0, sizeof(float) * t->in.numel);
    for (int l = 0; l < L; l++)
        for (int b = 0; b < n; b++)
            memcpy(t->in.wkv + ((int64_t)l * n + b) * per_layer, states + set[b] * t->set_floats + l * per_layer,
                   sizeof(float) * per_layer);
    int64_t count = 0;
    for (int64_t i = 0; i < (int64_t)n * T; i++) count += targets[i] >= 0;
    /* the forward scales each scored token's gradient by loss_scale / count: make that `scale` */
    double mean = ds_rwkv7_forward(m, n, T, tokens, targets, scale * (float)count, l2wrap, &t->in, NULL, NULL);
    if (grads) {
        ds_rwkv7_backward_state(m, &t->d_in);
        for (int b = 0; b < n; b++)
            for (int l = 0; l < L; l++)
                ds_k.axpy(per_layer, 1.0f, t->d_in.wkv + ((int64_t)l * n + b) * per_layer,
                          grads + set[b] * t->set_floats + l * per_layer);
    }
    return mean * (double)count;
}
