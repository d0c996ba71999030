/* State-dataset indexes (src/data/state_index.c, format in include/dreamstate/states.h): ds_states_open
 * of the index and the shard it lists, then every record through ds_states_record and, for a small
 * shape, ds_states_load_rwkv7.
 *
 * Input: the index text up to the first NUL byte; the bytes after it are the shard file "s.bin" beside
 * the index (flags 3 of fuzz_fix_state_shard: its sizes and checksums fixed up). */
#include "fuzz.h"
#include "dreamstate/states.h"

#include <stdlib.h>
#include <string.h>

static void body(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t text_len = nul ? (size_t)(nul - data) : size, shard_len = nul ? size - text_len - 1 : 0;
    char path[512], shard_path[512];
    uint8_t *shard = fuzz_copy(data + size - shard_len, shard_len);
    fuzz_fix_state_shard(shard, shard_len, 3);
    fuzz_write(shard_path, sizeof shard_path, "s.bin", shard, shard_len);
    free(shard);
    fuzz_write(path, sizeof path, "index.txt", data, text_len);
    ds_states *s = ds_states_open(path);
    const ds_states_info *info = ds_states_get_info(s);
    const ds_state_shape *sh = &info->shape;
    int small = sh->n_layer <= 4 && sh->n_embd <= 256 && sh->n_embd % 64 == 0;
    ds_rwkv7_dims d = {.n_layer = sh->n_layer, .n_embd = sh->n_embd, .vocab_size = 256};
    ds_rwkv7_state state = {0};
    if (small) ds_rwkv7_state_create(&state, &d, 1);
    for (int64_t i = 0; i < info->n_records; i++) {
        ds_state_record r = ds_states_record(s, i);
        if (r.label < 0 || r.label >= info->n_labels) fuzz_fail("record %lld has label %d", (long long)i, r.label);
        if (small) ds_states_load_rwkv7(s, i, &d, &state);
    }
    if (small) ds_rwkv7_state_destroy(&state);
    ds_states_close(s);
}

FUZZ_TARGET(body)
