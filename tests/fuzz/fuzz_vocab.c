/* World tokenizer vocabulary files (data.vocab_file, prepare-data --vocab; src/data/tokenizer.c):
 * ds_tokenizer_open("world", FILE) parses the Python literals and builds the trie. A vocabulary that
 * loads must encode any bytes (here the input itself) into ids that decode back to the same bytes. */
#include "fuzz.h"
#include "dreamstate/data.h"

#include <stdlib.h>
#include <string.h>

static void body(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_write(path, sizeof path, "vocab.txt", data, size);
    ds_tokenizer *tok = ds_tokenizer_open("world", path);
    int32_t *ids = malloc(sizeof(int32_t) * (size + 1));
    uint8_t *back = malloc(size + 1);
    size_t n = ds_tokenizer_encode(tok, data, size, ids);
    if (ds_tokenizer_decode(tok, ids, n, back, size) != size || memcmp(back, data, size) != 0)
        fuzz_fail("encoding then decoding does not give the bytes back");
    free(back);
    free(ids);
    ds_tokenizer_free(tok);
}

FUZZ_TARGET(body)
