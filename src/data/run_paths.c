/* Which token datasets a run reads (data.h: ds_data_paths). */
#include "dreamstate/data.h"
#include "dreamstate/common.h"

#include <stdio.h>
#include <string.h>

int ds_data_paths(const ds_config *cfg, int build, char *train, size_t train_len, char *valid, size_t valid_len) {
    if (cfg->data.train[0]) {
        if (train) snprintf(train, train_len, "%s", cfg->data.train);
        if (valid) snprintf(valid, valid_len, "%s", cfg->data.valid[0] ? cfg->data.valid : cfg->data.train);
        return 0;
    }
    const char *dir = strcmp(cfg->data.tokenizer, "world") == 0 ? "data/default-world" : "data/default-byte";
    if (build) {
        ds_mkdir_p(dir);
        ds_corpus_default(dir, cfg->data.tokenizer, cfg->data.vocab_file);
    }
    if (train) snprintf(train, train_len, "%s/train.bin", dir);
    if (valid) snprintf(valid, valid_len, "%s/valid.bin", dir);
    return 1;
}
