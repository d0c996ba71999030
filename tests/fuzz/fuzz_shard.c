/* Token shards (src/data/shard.c, format in include/dreamstate/data.h): ds_dataset_open of the input
 * as a shard file, then reading the whole token stream and its unigram entropy.
 *
 * Input: a flag byte, then the file. Bit 0 sets the header's token count to what the file's size
 * holds, bit 1 recomputes the payload and header checksums, so that mutations reach the checks
 * behind them. */
#include "fuzz.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"

#include <stdlib.h>

enum { HEADER = 64 };

static void fix_up(uint8_t *file, size_t size, int flags) {
    if (size < HEADER) return;
    uint32_t width = fuzz_get_u32(file + 12) == 1 ? 2 : 4;
    if (flags & 1) {
        uint64_t n_tokens = (size - HEADER) / width;
        fuzz_put_u32(file + 24, (uint32_t)n_tokens);
        fuzz_put_u32(file + 28, (uint32_t)(n_tokens >> 32));
    }
    if (flags & 2) {
        fuzz_put_u32(file + 40, ds_crc32c(0, file + HEADER, size - HEADER));
        fuzz_put_u32(file + 60, ds_crc32c(0, file, 60));
    }
}

static void body(const uint8_t *data, size_t size) {
    if (size < 1) return;
    char path[512];
    uint8_t *file = fuzz_copy(data + 1, size - 1);
    fix_up(file, size - 1, data[0]);
    fuzz_write(path, sizeof path, "tokens.bin", file, size - 1);
    free(file);
    fuzz_read_dataset(path);
}

FUZZ_TARGET(body)
