/* Global sample -> item of a finite set, epoch by epoch (train.h): the data order of the tasks that
 * train on a set of records (state_diffusion, state_tuning). */
#include "dreamstate/common.h"
#include "dreamstate/train.h"

enum { RNG_STREAM_PERM = 0x5045524d /* "PERM" + epoch << 32 */ };

void ds_epoch_order_init(ds_epoch_order *o, uint64_t seed, int64_t n) {
    *o = (ds_epoch_order){.seed = seed, .n = n, .perm_epoch = -1, .perm = ds_alloc(sizeof(int64_t) * n)};
}

void ds_epoch_order_free(ds_epoch_order *o) {
    ds_free(o->perm);
    o->perm = NULL;
}

int64_t ds_epoch_order_item(ds_epoch_order *o, uint64_t g) {
    int64_t N = o->n, epoch = (int64_t)(g / (uint64_t)N);
    if (epoch != o->perm_epoch) {
        for (int64_t i = 0; i < N; i++) o->perm[i] = i;
        for (int64_t i = N - 1; i > 0; i--) {  /* Fisher-Yates from (seed, epoch) */
            int64_t j = (int64_t)(ds_rng_u64(o->seed, RNG_STREAM_PERM + ((uint64_t)epoch << 32), (uint64_t)i) %
                                  (uint64_t)(i + 1));
            int64_t tmp = o->perm[i];
            o->perm[i] = o->perm[j];
            o->perm[j] = tmp;
        }
        o->perm_epoch = epoch;
    }
    return o->perm[g % (uint64_t)N];
}
