/* binidx data (src/data/binidx.c, format in include/dreamstate/data.h): ds_dataset_open of the pair
 * NAME.idx / NAME.bin by its prefix, then reading the whole token stream and its unigram entropy.
 *
 * Input: a flag byte, a little-endian u16 L, L bytes of NAME.idx, the rest is NAME.bin. Flag bit 0
 * rewrites the index's pointers as the running byte sums of its sizes, so that mutated sizes reach
 * the checks behind the pointer check. */
#include "fuzz.h"
#include "dreamstate/data.h"

#include <stdlib.h>
#include <string.h>

enum { IDX_HEADER = 34 };

static const unsigned widths[9] = {[1] = 1, [2] = 1, [3] = 2, [4] = 4, [5] = 8, [8] = 2};

static void fix_pointers(uint8_t *idx, size_t len) {
    if (len < IDX_HEADER || idx[17] > 8 || !widths[idx[17]]) return;
    uint64_t count = fuzz_get_u64(idx + 18);
    if (count > (len - IDX_HEADER) / 12) return;
    uint64_t bytes = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint8_t *pointer = idx + IDX_HEADER + 4 * count + 8 * k;
        fuzz_put_u32(pointer, (uint32_t)bytes);
        fuzz_put_u32(pointer + 4, (uint32_t)(bytes >> 32));
        bytes += (uint64_t)(int64_t)(int32_t)fuzz_get_u32(idx + IDX_HEADER + 4 * k) * widths[idx[17]];
    }
}

static void body(const uint8_t *data, size_t size) {
    if (size < 3) return;
    size_t idx_len = (size_t)(data[1] | data[2] << 8);
    if (idx_len > size - 3) idx_len = size - 3;
    char idx_path[512], bin_path[512], prefix[512];
    uint8_t *idx = fuzz_copy(data + 3, idx_len);
    if (data[0] & 1) fix_pointers(idx, idx_len);
    fuzz_write(idx_path, sizeof idx_path, "data.idx", idx, idx_len);
    fuzz_write(bin_path, sizeof bin_path, "data.bin", data + 3 + idx_len, size - 3 - idx_len);
    free(idx);
    fuzz_path(prefix, sizeof prefix, "data");
    fuzz_read_dataset(prefix);
}

FUZZ_TARGET(body)
