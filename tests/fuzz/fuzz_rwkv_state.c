/* RWKV state files, RWKV-PEFT's state-tuning safetensors (src/data/rwkv_state.c): ds_rwkv_state_load
 * into sequence 1 of a two-sequence state of the shape the file's tensors suggest (when small; else
 * L=1 C=64, which exercises the shape checks). The metadata handed back must be "key=value" lines, as
 * the state file writers require of it. */
#include "fuzz.h"
#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"
#include "dreamstate/states.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shape of the file's blocks.{i}.att.time_state tensors, if it lists and is small. */
static ds_rwkv7_dims shape_of(const char *path) {
    ds_rwkv7_dims d = {.n_layer = 1, .n_embd = 64, .vocab_size = 256};
    ds_st_index ix;
    char err[DS_ERR_LEN], name[48];
    if (ds_safetensors_list(path, &ix, err) != 0) return d;
    int layers = 0;
    while (snprintf(name, sizeof name, "blocks.%d.att.time_state", layers), ds_st_find(&ix, name)) layers++;
    const ds_st_entry *e = ds_st_find(&ix, "blocks.0.att.time_state");
    if (layers >= 1 && layers <= 4 && e->ndim >= 1 && e->shape[0] >= 1 && e->shape[0] <= 4)
        d.n_layer = layers, d.n_embd = 64 * (int)e->shape[0];
    ds_st_index_free(&ix);
    return d;
}

static void check_meta(const char *meta) {
    for (const char *line = meta; *line;) {
        const char *nl = strchr(line, '\n');
        if (!nl || line[0] == '=' || !memchr(line, '=', (size_t)(nl - line))) fuzz_fail("metadata line '%s'", line);
        for (const char *p = line; p < nl; p++)
            if ((unsigned char)*p < 0x20) fuzz_fail("control character in metadata '%s'", line);
        line = nl + 1;
    }
}

static void body(const uint8_t *data, size_t size) {
    char path[512], err[DS_ERR_LEN];
    fuzz_write(path, sizeof path, "state.safetensors", data, size);
    ds_rwkv7_dims d = shape_of(path);
    ds_rwkv7_state state;
    ds_rwkv7_state_create(&state, &d, 2);
    char *meta = NULL;
    if (ds_rwkv_state_load(path, &d, &state, 1, &meta, err) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s", err);  /* as its callers do */
    check_meta(meta);
    free(meta);
    ds_rwkv7_state_destroy(&state);
}

FUZZ_TARGET(body)
