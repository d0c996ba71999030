/* RWKV-7 weights in safetensors with the official names (src/checkpoint/model_shape.c, weights.c):
 * the model shape read from the tensor shapes (ds_rwkv7_dims_of_file) and, for a shape small enough
 * to build here, ds_weights_load into a model of that shape (missing, extra or misshapen tensors,
 * NaN or Inf values: refused with exit 2).
 *
 * Input: a little-endian u32 T, then the start of the file, which the harness fills up with zero
 * bytes to T mod 4 MiB bytes: the mutations go to the header, not to megabytes of weights. */
#include "fuzz.h"
#include "dreamstate/weights.h"

#include <stdlib.h>
#include <string.h>

#define MAX_FILE (4u << 20)

static int small(const ds_rwkv7_dims *d) {
    return d->n_layer <= 4 && d->n_embd <= 256 && d->vocab_size <= 4096 && d->dim_w <= 256 && d->dim_a <= 256 &&
           d->dim_v <= 256 && d->dim_g <= 256;
}

static void body(const uint8_t *data, size_t size) {
    if (size < 4) return;
    size_t len = fuzz_get_u32(data) % MAX_FILE, given = size - 4 < len ? size - 4 : len;
    uint8_t *file = calloc(len + 1, 1);
    memcpy(file, data + 4, given);
    char path[512], err[DS_ERR_LEN];
    fuzz_write(path, sizeof path, "model.safetensors", file, len);
    free(file);
    ds_rwkv7_dims d;
    if (ds_rwkv7_dims_of_file(path, &d, err) != 0 || !small(&d)) return;
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d);
    ds_weights_load(&m, path);
    ds_rwkv7_destroy(&m);
}

FUZZ_TARGET(body)
