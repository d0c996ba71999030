/* Which token datasets a run reads (data.h: ds_data_paths). */
#include "dreamstate/data.h"
#include "dreamstate/common.h"

#include <stdio.h>
#include <string.h>

int ds_data_paths(const ds_config *cfg, int build, char *train, size_t train_len, char *valid, size_t valid_len) {
    const char *given_valid = cfg->data.valid[0] ? cfg->data.valid : cfg->data.train;
    int need_corpus = (train && !cfg->data.train[0]) || (valid && !given_valid[0]);
    const char *dir = strcmp(cfg->data.tokenizer, "world") == 0 ? "data/default-world" : "data/default-byte";
    if (need_corpus && build) {
        ds_mkdir_p(dir);
        ds_corpus_default(dir, cfg->data.tokenizer, cfg->data.vocab_file);
    }
    if (train && cfg->data.train[0]) snprintf(train, train_len, "%s", cfg->data.train);
    else if (train) snprintf(train, train_len, "%s/train.bin", dir);
    if (valid && given_valid[0]) snprintf(valid, valid_len, "%s", given_valid);
    else if (valid) snprintf(valid, valid_len, "%s/valid.bin", dir);
    return need_corpus;
}
