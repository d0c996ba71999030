/* safetensors files (src/checkpoint/safetensors.c): the header parser and layout checks
 * (ds_safetensors_list), lookups by name and metadata key, and ds_safetensors_load of every tensor
 * of a dtype it converts (F32, F16, BF16). */
#include "fuzz.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"

#include <stdlib.h>
#include <string.h>

#define MAX_FLOATS (1 << 20)  /* what the harness allocates to load into; the format allows more */

static void body(const uint8_t *data, size_t size) {
    char path[512], err[DS_ERR_LEN];
    fuzz_write(path, sizeof path, "tensors.safetensors", data, size);
    ds_st_index ix;
    if (ds_safetensors_list(path, &ix, err) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", err);  /* as its callers do */
    for (int i = 0; i < ix.n; i++)
        if (ds_st_find(&ix, ix.entries[i].name) != &ix.entries[i])
            fuzz_fail("lookup of '%s' fails", ix.entries[i].name);
    for (int i = 0; i < ix.n_meta; i++)
        if (!ds_st_meta(&ix, ix.meta_keys[i])) fuzz_fail("lookup of metadata '%s' fails", ix.meta_keys[i]);
    ds_tensor *t = calloc((size_t)ix.n + 1, sizeof *t);
    int n = 0;
    int64_t floats = 0;
    for (int i = 0; i < ix.n; i++) {
        const ds_st_entry *e = &ix.entries[i];
        if (e->dtype != DS_ST_F32 && e->dtype != DS_ST_F16 && e->dtype != DS_ST_BF16) continue;
        t[n] = (ds_tensor){.name = e->name, .ndim = e->ndim};
        memcpy(t[n].shape, e->shape, sizeof e->shape);
        int64_t numel = ds_tensor_numel(&t[n++]);  /* the layout check bounds it by the file size */
        floats += numel < MAX_FLOATS ? numel : MAX_FLOATS;
    }
    float *values = floats <= MAX_FLOATS ? malloc(sizeof(float) * (size_t)(floats + 1)) : NULL;
    if (values) {
        for (int i = 0, at = 0; i < n; at += (int)ds_tensor_numel(&t[i]), i++) t[i].data = values + at;
        if (ds_safetensors_load(path, n, t, err) != 0) fuzz_fail("tensors that list do not load: %s", err);
    }
    free(values);
    free(t);
    ds_st_index_free(&ix);
}

FUZZ_TARGET(body)
