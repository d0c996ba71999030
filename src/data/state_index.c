/* State datasets (format: include/dreamstate/states.h): the index writer and parser, and the view of
 * every record of the listed shards as one numbered sequence. */
#include "dreamstate/states.h"
#include "dreamstate/common.h"
#include "state_shard.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_MAGIC "dreamstate-states 1"

static int has_newline(const char *s) { return strchr(s, '\n') != NULL || strchr(s, '\r') != NULL; }

void ds_states_write_index(const char *path, const ds_states_info *info, const ds_states_shard *shards) {
    int64_t sum = 0;
    for (int i = 0; i < info->n_shards; i++) sum += shards[i].records;
    if (sum != info->n_records) ds_die(DS_EXIT_FAIL, "%s: shard counts sum to %" PRId64 ", not %" PRId64, path, sum, info->n_records);
    if (has_newline(info->checkpoint) || has_newline(info->contexts))
        ds_die(DS_EXIT_BAD_INPUT, "%s: paths with line breaks cannot be recorded in the index", path);
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot create: %s", path, strerror(errno));
    const ds_state_shape *s = &info->shape;
    FILE *fp = af.fp;
    fprintf(fp, "%s\nmodel %s\nshape L=%d C=%d H=%d N=%d cond_dim=%d flags=%u\n", INDEX_MAGIC, info->model, s->n_layer,
            s->n_embd, s->n_head, s->head_size, s->cond_dim, s->flags);
    fprintf(fp, "checkpoint %s\ncontexts %s\ntokenizer %s\nmax_tokens %d\nrecords %" PRId64 "\nlabels %d\n",
            info->checkpoint, info->contexts, info->tokenizer, info->max_tokens, info->n_records, info->n_labels);
    for (int i = 0; i < info->n_labels; i++) fprintf(fp, "label %s\n", info->labels[i]);
    fprintf(fp, "shards %d\n", info->n_shards);
    for (int i = 0; i < info->n_shards; i++) fprintf(fp, "shard %s %" PRId64 "\n", shards[i].file, shards[i].records);
    if (ds_atomic_commit(&af) != 0) ds_die(DS_EXIT_FAIL, "%s: write failed: %s", path, strerror(errno));
}

struct ds_states {
    char path[DS_PATH_MAX];
    ds_states_info info;
    ds_states_shard *listed;
    state_shard *shards;
    int64_t *first;        /* [n_shards + 1]: number of the first record of each shard */
};

typedef struct index_reader {
    const char *path;
    char *text, *next;
    int line;
} index_reader;

static _Noreturn void index_fail(index_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void index_fail(index_reader *r, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ds_die(DS_EXIT_BAD_INPUT, "%s:%d: %s", r->path, r->line, msg);
}

/* The value of the next line, which must be "<key> <value>" (or exactly `key` when key has a space). */
static char *index_line(index_reader *r, const char *key) {
    r->line++;
    if (!r->next || !*r->next) index_fail(r, "file ends before '%s'", key);
    char *line = r->next, *nl = strchr(line, '\n');
    if (!nl) index_fail(r, "line does not end in a newline");
    *nl = 0;
    r->next = nl + 1;
    size_t k = strlen(key);
    if (strchr(key, ' ')) {
        if (strcmp(line, key) != 0) index_fail(r, "expected '%s' (not a state-dataset index?)", key);
        return line + k;
    }
    if (strncmp(line, key, k) != 0 || line[k] != ' ' || line[k + 1] == 0) index_fail(r, "expected '%s VALUE'", key);
    return line + k + 1;
}

static int64_t index_int(index_reader *r, const char *key, int64_t lo, int64_t hi) {
    char *v = index_line(r, key), *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        index_fail(r, "%s '%s' must be an integer in [%" PRId64 ", %" PRId64 "]", key, v, lo, hi);
    return x;
}

static void index_copy(index_reader *r, char *dst, size_t cap, const char *key) {
    const char *v = index_line(r, key);
    if (strlen(v) >= cap) index_fail(r, "%s is too long", key);
    strcpy(dst, v);
}

typedef struct numbered_label {
    const char *name;
    int i;
} numbered_label;

static int compare_labels(const void *a, const void *b) {
    const numbered_label *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* The number of the first label that repeats an earlier one, or -1. By sorting: an index may list
 * 2^20 labels, which a pairwise check would compare for hours. */
static int first_repeated_label(char *const *labels, int n) {
    numbered_label *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) ds_die(DS_EXIT_FAIL, "out of memory");
    for (int i = 0; i < n; i++) sorted[i] = (numbered_label){labels[i], i};
    qsort(sorted, (size_t)n, sizeof *sorted, compare_labels);
    int first = -1;
    for (int k = 1; k < n; k++)
        if (strcmp(sorted[k - 1].name, sorted[k].name) == 0 && (first < 0 || sorted[k].i < first)) first = sorted[k].i;
    free(sorted);
    return first;
}

static void parse_index(ds_states *s) {
    index_reader r = {s->path, NULL, NULL, 0};
    char why[256];
    FILE *fp = ds_fopen_input(s->path, why, sizeof why);
    if (!fp) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", s->path, why);
    size_t cap = 1 << 16, n = 0, got;
    r.text = malloc(cap + 1);
    while ((got = fread(r.text + n, 1, cap - n, fp)) > 0)
        if ((n += got) == cap) r.text = realloc(r.text, (cap *= 2) + 1);
    fclose(fp);
    r.text[n] = 0;
    if (strlen(r.text) != n) ds_die(DS_EXIT_BAD_INPUT, "%s: not a state-dataset index (binary data)", s->path);
    r.next = r.text;

    ds_states_info *in = &s->info;
    index_line(&r, INDEX_MAGIC);
    index_copy(&r, in->model, sizeof in->model, "model");
    ds_state_shape *sh = &in->shape;
    const char *shape = index_line(&r, "shape");
    int used = -1;
    if (sscanf(shape, "L=%d C=%d H=%d N=%d cond_dim=%d flags=%u%n", &sh->n_layer, &sh->n_embd, &sh->n_head,
               &sh->head_size, &sh->cond_dim, &sh->flags, &used) != 6 || shape[used] != 0)
        index_fail(&r, "expected 'shape L=.. C=.. H=.. N=.. cond_dim=.. flags=..'");
    index_copy(&r, in->checkpoint, sizeof in->checkpoint, "checkpoint");
    index_copy(&r, in->contexts, sizeof in->contexts, "contexts");
    index_copy(&r, in->tokenizer, sizeof in->tokenizer, "tokenizer");
    in->max_tokens = (int)index_int(&r, "max_tokens", 1, INT32_MAX);
    in->n_records = index_int(&r, "records", 0, INT64_MAX);
    in->n_labels = (int)index_int(&r, "labels", 1, 1 << 20);
    in->labels = calloc((size_t)in->n_labels, sizeof(char *));
    int first_label_line = r.line + 1;
    for (int i = 0; i < in->n_labels; i++) {
        const char *name = index_line(&r, "label");
        if (!ds_label_valid(name)) index_fail(&r, "label '%s' must be 1-63 characters of [A-Za-z0-9._/+-]", name);
        in->labels[i] = strdup(name);
    }
    int twice = first_repeated_label(in->labels, in->n_labels);
    if (twice >= 0) {
        r.line = first_label_line + twice;
        index_fail(&r, "label '%s' listed twice", in->labels[twice]);
    }
    in->n_shards = (int)index_int(&r, "shards", 1, 1 << 20);
    s->listed = calloc((size_t)in->n_shards, sizeof *s->listed);
    int64_t sum = 0;
    for (int i = 0; i < in->n_shards; i++) {
        char *v = index_line(&r, "shard"), *space = strrchr(v, ' '), *end;
        if (!space) index_fail(&r, "expected 'shard FILE RECORDS'");
        *space = 0;
        errno = 0;
        long long count = strtoll(space + 1, &end, 10);
        if (end == space + 1 || *end || errno || count < 0) index_fail(&r, "bad record count '%s'", space + 1);
        if (!*v || strchr(v, '/') || strlen(v) >= sizeof s->listed[i].file)
            index_fail(&r, "shard file '%s' must be a plain file name in the index's directory", v);
        strcpy(s->listed[i].file, v);
        s->listed[i].records = count;
        if (count > INT64_MAX - sum)  /* no shard file can hold that many records: the index is corrupt */
            index_fail(&r, "record counts add up to more than %" PRId64 "; the index is corrupt", INT64_MAX);
        sum += count;
    }
    r.line++;
    if (*r.next) index_fail(&r, "unexpected text after the last shard");
    if (sum != in->n_records)
        ds_die(DS_EXIT_BAD_INPUT, "%s: shards hold %" PRId64 " records, the index says %" PRId64, s->path, sum,
               in->n_records);
    free(r.text);
}

static ds_states *read_index(const char *index_path) {
    ds_states *s = calloc(1, sizeof *s);
    if (snprintf(s->path, sizeof s->path, "%s", index_path) >= (int)sizeof s->path)
        ds_die(DS_EXIT_BAD_INPUT, "%s: path too long", index_path);
    parse_index(s);
    return s;
}

void ds_states_read_info(const char *index_path, ds_states_info *info) {
    ds_states *s = read_index(index_path);
    *info = s->info;
    free(s->listed);
    free(s);
}

void ds_states_info_free(ds_states_info *info) {
    for (int i = 0; i < info->n_labels; i++) free(info->labels[i]);
    free(info->labels);
    info->labels = NULL;
    info->n_labels = 0;
}

ds_states *ds_states_open(const char *index_path) {
    ds_states *s = read_index(index_path);
    ds_states_info *in = &s->info;
    char copy[DS_PATH_MAX], dir[DS_PATH_MAX], path[2 * DS_PATH_MAX], why[512], model[256];
    snprintf(copy, sizeof copy, "%s", index_path);
    snprintf(dir, sizeof dir, "%s", dirname(copy));
    s->shards = calloc((size_t)in->n_shards, sizeof *s->shards);
    s->first = calloc((size_t)in->n_shards + 1, sizeof *s->first);
    for (int i = 0; i < in->n_shards; i++) {
        state_shard *m = &s->shards[i];
        snprintf(path, sizeof path, "%s/%s", dir, s->listed[i].file);
        if (state_shard_open(path, m, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", path, why);
        const ds_state_shape *a = &m->shape, *b = &in->shape;
        if (a->n_layer != b->n_layer || a->n_embd != b->n_embd || a->n_head != b->n_head ||
            a->head_size != b->head_size || a->cond_dim != b->cond_dim || a->flags != b->flags)
            ds_die(DS_EXIT_BAD_INPUT, "%s: shape L=%d C=%d cond_dim=%d differs from the index's L=%d C=%d cond_dim=%d",
                   path, a->n_layer, a->n_embd, a->cond_dim, b->n_layer, b->n_embd, b->cond_dim);
        if (m->n != s->listed[i].records)
            ds_die(DS_EXIT_BAD_INPUT, "%s: holds %" PRId64 " records, the index says %" PRId64, path, m->n,
                   s->listed[i].records);
        state_shard_meta(m, "model", model, sizeof model);
        if (strcmp(model, in->model) != 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: made by model '%s', the index says '%s'", path, model, in->model);
        for (int64_t k = 0; k < m->n; k++) {
            ds_state_record rec = state_shard_record(m, k);
            if (rec.label < 0 || rec.label >= in->n_labels || rec.context < -1)
                ds_die(DS_EXIT_BAD_INPUT, "%s: record %" PRId64 " has label %d (of %d) and context %d", path, k,
                       rec.label, in->n_labels, rec.context);
        }
        s->first[i + 1] = s->first[i] + m->n;
    }
    return s;
}

void ds_states_close(ds_states *s) {
    if (!s) return;
    for (int i = 0; i < s->info.n_shards; i++) state_shard_close(&s->shards[i]);
    ds_states_info_free(&s->info);
    free(s->shards);
    free(s->listed);
    free(s->first);
    free(s);
}

const ds_states_info *ds_states_get_info(const ds_states *s) { return &s->info; }

ds_state_record ds_states_record(const ds_states *s, int64_t i) {
    if (i < 0 || i >= s->info.n_records)
        ds_die(DS_EXIT_FAIL, "%s: record %" PRId64 " out of range [0, %" PRId64 ")", s->path, i, s->info.n_records);
    int lo = 0, hi = s->info.n_shards - 1;  /* the shard with first[k] <= i < first[k + 1] */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->first[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return state_shard_record(&s->shards[lo], i - s->first[lo]);
}

void ds_states_load_rwkv7(const ds_states *s, int64_t i, const ds_rwkv7_dims *d, ds_rwkv7_state *dst) {
    state_check_model_shape(s->path, &s->info.shape, d, dst);
    ds_state_unpack(&s->info.shape, ds_states_record(s, i).state, dst, 0);
}

void ds_states_save_record(const ds_states *s, int64_t i, const char *path) {
    ds_state_record rec = ds_states_record(s, i);
    char meta[sizeof s->info.model + DS_LABEL_MAX + sizeof s->info.checkpoint + sizeof s->info.contexts + 64];
    snprintf(meta, sizeof meta, "model=%s\nlabel=%s\ncheckpoint=%s\ncontexts=%s\ncontext=%d\n", s->info.model,
             s->info.labels[rec.label], s->info.checkpoint, s->info.contexts, rec.context);
    state_save_record(path, s->info.shape, rec.label, rec.context, rec.state, NULL, 0, meta);
}
