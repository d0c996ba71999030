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
    ds_dataset *ds = ds_dataset_open(path);
    uint64_t n = ds_dataset_num_tokens(ds);
    int32_t *ids = malloc(sizeof(int32_t) * (n + 1));
    ds_dataset_read(ds, 0, n, ids);
    for (uint64_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= ds_dataset_vocab_size(ds)) fuzz_fail("token %d outside the vocabulary", ids[i]);
    free(ids);
    if (ds_dataset_vocab_size(ds) <= (1u << 20)) ds_unigram_entropy_nats(ds);  /* a table of vocab_size counts;
                                                                                 * train checks the vocabulary first */
    ds_dataset_close(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_run(body, data, size);
    return 0;
}
