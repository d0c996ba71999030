/* JSON Lines readers (src/data/jsonl.c and its users): labelled contexts (ds_contexts_load, with the
 * file's own sorted labels or with a given label list, src/data/contexts.c) and prepare-data's JSONL
 * documents (ds_prepare_data of a .jsonl file, src/data/corpus.c).
 *
 * Input: a byte choosing the reader (its value mod 3: contexts, contexts with the labels "a", "b" and
 * "c-header", prepare-data), then the file. */
#include "fuzz.h"
#include "dreamstate/data.h"
#include "dreamstate/states.h"

#include <string.h>

static void contexts(const char *path, int given) {
    static char *const labels[] = {"a", "b", "c-header"};
    ds_contexts *c = ds_contexts_load(path, given ? 3 : 0, given ? labels : NULL);
    for (int64_t i = 0; i < c->n; i++) {
        const ds_context *it = &c->items[i];
        if (it->label < 0 || it->label >= c->n_labels) fuzz_fail("context %lld has label %d", (long long)i, it->label);
        if (!ds_label_valid(c->labels[it->label])) fuzz_fail("label '%s' is not valid", c->labels[it->label]);
        if (it->len == 0 || strlen(it->text) != it->len)
            fuzz_fail("context %lld: text of %zu bytes", (long long)i, it->len);
    }
    ds_contexts_free(c);
}

static void documents(const char *path) {
    char out[512];
    fuzz_path(out, sizeof out, "prepared");
    ds_prepare_options o = ds_prepare_defaults();
    const char *inputs[] = {path};
    o.out_dir = out;
    o.n_inputs = 1;
    o.inputs = inputs;
    ds_prepare_data(&o);
}

static void body(const uint8_t *data, size_t size) {
    if (size < 1) return;
    char path[512];
    int reader = data[0] % 3;
    fuzz_write(path, sizeof path, reader == 2 ? "docs.jsonl" : "contexts.jsonl", data + 1, size - 1);
    if (reader == 2) documents(path);
    else contexts(path, reader);
}

FUZZ_TARGET(body)
