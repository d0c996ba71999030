/* State shards and single state files (src/data/state_file.c, format in include/dreamstate/states.h):
 * ds_state_file_check, and ds_state_file_load into a state of the model shape the header names (when
 * small; else L=1 C=64), which also sniffs RWKV state files (safetensors) and PyTorch files.
 *
 * Input: a flag byte, then the file, fixed up as fuzz_fix_state_shard says. */
#include "fuzz.h"
#include "dreamstate/states.h"

#include <stdlib.h>

enum { HEADER = 64 };

static void body(const uint8_t *data, size_t size) {
    if (size < 1) return;
    char path[512], why[512];
    uint8_t *file = fuzz_copy(data + 1, size - 1);
    fuzz_fix_state_shard(file, size - 1, data[0]);
    fuzz_write(path, sizeof path, "one.state", file, size - 1);
    ds_rwkv7_dims d = {.n_layer = 1, .n_embd = 64, .vocab_size = 256};
    if (size - 1 >= HEADER) {
        uint32_t L = fuzz_get_u32(file + 12), C = fuzz_get_u32(file + 16);
        if (L >= 1 && L <= 4 && C >= 64 && C <= 256 && C % 64 == 0) d.n_layer = (int)L, d.n_embd = (int)C;
    }
    free(file);
    ds_state_file_check(path, why, sizeof why);
    ds_rwkv7_state state;
    ds_rwkv7_state_create(&state, &d, 1);
    char *meta = NULL;
    ds_state_file_load(path, &d, &state, &meta);
    free(meta);
    ds_rwkv7_state_destroy(&state);
}

FUZZ_TARGET(body)
