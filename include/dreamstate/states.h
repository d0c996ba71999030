/* DREAMSTATE part A data (src/dit/README.md §3.1-3.4): labelled contexts, the state dataset that
 * `extract-states` makes from them, and single state files.
 *
 * Labelled contexts (JSONL)
 * =========================
 * One JSON object per line, UTF-8, every line ending in "\n" (the last may omit it; a ".gz" file is
 * read through gzip -dc):
 *   {"label": "c-header", "doc": "/usr/include/stdio.h", "text": "..."}
 * "label" (required): 1..63 bytes of [A-Za-z0-9._/+-]. "text" (required): a non-empty string, any
 * Unicode except U+0000. "doc" (optional): where the text came from; the builder splits train /
 * held-out by it. No other keys, no duplicate keys, no blank lines. A context's index is its
 * 0-based line number. Label ids are positions in the sorted list of distinct labels, unless a
 * label list is given (extract-states --labels-from). Readers refuse anything else with
 * "FILE:LINE: reason", exit code 2.
 *
 * State shard format (version 1)
 * ==============================
 * All integers little-endian, floats IEEE fp32. A 64-byte header, n_records records, metadata text:
 *
 *   offset size  field
 *        0    8  magic "DSSTATES"
 *        8    4  u32 version = 1
 *       12    4  u32 L   layers
 *       16    4  u32 C   embedding width
 *       20    4  u32 H   heads (C = H * N)
 *       24    4  u32 N   head size = 64
 *       28    4  u32 cond_dim: floats of condition per record
 *       32    4  u32 flags: the parts of the condition, in this order, each C floats:
 *                  bit 0 DS_COND_FIRST_TOKEN: emb[token_0], the input-embedding row (before ln0)
 *                  bit 1 DS_COND_MEAN_TOKEN:  mean over t of emb[token_t]
 *                  bit 2 DS_COND_LAST_HIDDEN: ln_out(x) of the last token, the head's input
 *                        (extract-states --ln-out; a control of analyze-states, src/eval/README.md §1)
 *                cond_dim = C * (number of bits set); other bits must be 0
 *       36    4  u32 meta_bytes: length of the metadata text after the records
 *       40    8  u64 n_records
 *       48    8  u64 record_bytes = 8 + 4 * (cond_dim + L * (2C + H*N*N))
 *       56    4  u32 CRC-32C of everything after the header (records and metadata)
 *       60    4  u32 CRC-32C of header bytes 0..59
 *       64       records, each:
 *                  i32 label      (index into the dataset's label list; -1 = none)
 *                  i32 context    (line index in the contexts file; -1: none, e.g. a tuned state)
 *                  f32 cond[cond_dim]
 *                  f32 state[L][2C + H*N*N]: per layer, in src/rwkv7/README.md §6 order,
 *                      att x_prev [C], WKV [H][N][N] as S[h][i = value][j = key], ffn x_prev [C]
 *     ...            metadata: "key=value\n" lines (model=<ds_weights_signature>, ...); the file ends
 *
 * Readers check magic, header CRC, version, shape (N = 64, C = H*N, L >= 1), flags vs cond_dim,
 * record_bytes, file size, payload CRC and the metadata text, and refuse a bad file with one line,
 * "dreamstate: PATH: reason", exit code 2. Writers write a temporary file and rename it into place.
 *
 * A state file (`generate --state FILE`) is a shard with one record: its metadata carries model=
 * and, when known, label=NAME. Readers of state files also take RWKV-PEFT state files (safetensors,
 * below), and writers can write them (ds_state_file_format).
 *
 * State dataset index (text, version 1)
 * =====================================
 * Written atomically by rank 0 after every rank has written its shard. Lines, in this order:
 *   dreamstate-states 1
 *   model <ds_weights_signature of the model>
 *   shape L=<L> C=<C> H=<H> N=<N> cond_dim=<cond_dim> flags=<flags>
 *   checkpoint <path of the weights the states came from>
 *   contexts <path of the contexts file>
 *   tokenizer <byte|world>
 *   max_tokens <contexts were truncated to their first max_tokens tokens>
 *   records <total>
 *   labels <K>
 *   label <name>            (K lines; the line order is the label id)
 *   shards <S>
 *   shard <file> <records>  (S lines; file names relative to the index's directory)
 * Opening an index validates every shard (the checks above, the shape, the count, the model
 * signature, labels < K); records are numbered shard by shard in the listed order.
 */
#ifndef DREAMSTATE_STATES_H
#define DREAMSTATE_STATES_H

#include "dreamstate/config.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/state_record.h"

#include <stddef.h>
#include <stdint.h>

/* ---- labels ---- */

#define DS_LABEL_MAX 64   /* bytes, with the terminating NUL */

/* 1..63 bytes of [A-Za-z0-9._/+-]. */
int ds_label_valid(const char *name);
/* Index of `name` in names[0..n), or dies (exit 2): "<where>: unknown label 'x' (known: a, b, c)"
 * (where NULL: no prefix). */
int ds_label_lookup(const char *where, const char *name, int n, char *const *names);

/* A label as part of a file name: '/' becomes '_'. */
void ds_label_file_name(const char *label, char *out, size_t len);

/* ---- labelled contexts ---- */

typedef struct ds_context {
    int label;            /* id into ds_contexts.labels */
    const char *text;     /* NUL-terminated, len bytes */
    size_t len;
    const char *doc;      /* "" when absent */
} ds_context;

typedef struct ds_contexts {
    int64_t n;
    ds_context *items;
    int n_labels;
    char **labels;        /* sorted distinct names, or the given list */
    char *arena;          /* the decoded strings */
} ds_contexts;

/* Loads and validates a contexts file. With labels != NULL (n_labels names), ids are positions in
 * that list and a label outside it is an error; otherwise the sorted distinct labels of the file. */
ds_contexts *ds_contexts_load(const char *path, int n_labels, char *const *labels);
void ds_contexts_free(ds_contexts *c);

typedef struct ds_contexts_writer ds_contexts_writer;
/* Starts an atomic write of `path`; dies (exit 2) if it cannot be created. */
ds_contexts_writer *ds_contexts_writer_open(const char *path);
/* One line; label must be valid, text non-empty UTF-8 without NUL, doc NULL or UTF-8 (exit 2 if not). */
void ds_contexts_writer_add(ds_contexts_writer *w, const char *label, const char *text, size_t len, const char *doc);
void ds_contexts_writer_commit(ds_contexts_writer *w);  /* fsync + rename; frees w */
void ds_contexts_writer_abort(ds_contexts_writer *w);   /* removes the temporary file; frees w */

/* `dreamstate build-contexts`: labelled contexts from the text files the manifest of source documents
 * lists (configs/text-manifest.tsv, built in; src/data/manifest.h), each checked against its sha256
 * first, so that the same contexts come out on every machine (src/data/harvest.c). Each document gives
 * up to chunks_per_doc chunks spread over it, each min_bytes to max_bytes long and ending at a line end
 * where possible; documents are used in a seeded order, and with held_out each document goes wholly to
 * one file (seeded hash of its path). Prints a table per label to stdout. */
typedef struct ds_build_contexts_options {
    const char *out;             /* train contexts */
    const char *held_out;        /* held-out contexts; NULL: everything goes to out */
    double held_out_fraction;    /* share of documents held out with held_out, in (0, 1) (default 0.2) */
    int max_per_label;           /* contexts per label over both files (default 100) */
    int chunks_per_doc;          /* default 4; a label with D < N/K documents takes up to ceil(N/D) of each */
    size_t min_bytes, max_bytes; /* default 64, 512 */
    const char *sources;         /* comma-separated sources of the manifest (default NULL: all but "corpus") */
    const char *manifest;        /* another manifest file (default NULL: the built-in one) */
    uint64_t seed;               /* default 1234 */
    const char *extra_contexts;  /* NULL, or a contexts file (e.g. configs/personas.jsonl) whose records are all
                                  * appended after the manifest's: per label, its distinct documents ("doc"; a
                                  * record without one is its own) in a seeded order, the first
                                  * round(D * held_out_fraction) of them held out. sources "none" then means no
                                  * manifest source. */
} ds_build_contexts_options;

ds_build_contexts_options ds_build_contexts_defaults(void);
/* Returns 0; bad options (an unknown source, max_bytes < min_bytes) and a missing or changed file of the
 * manifest exit 2, before anything is written. */
int ds_build_contexts(const ds_build_contexts_options *o);

/* ---- state shards and files (records: state_record.h) ---- */

typedef struct ds_state_writer ds_state_writer;
/* Starts an atomic write of a shard; dies (exit 2) if it cannot be created. */
ds_state_writer *ds_state_writer_open(const char *path, const ds_state_shape *shape);
/* Appends one record: cond has shape->cond_dim floats (NULL only when 0), state is sequence b of s. */
void ds_state_writer_add(ds_state_writer *w, int32_t label, int32_t context, const float *cond,
                         const ds_rwkv7_state *s, int b);
/* Writes `meta` ("key=value\n" lines) after the records, the header, fsyncs and renames; frees w.
 * Dies (exit 1) on I/O errors. */
void ds_state_writer_commit(ds_state_writer *w, const char *meta);
void ds_state_writer_abort(ds_state_writer *w);

/* Validates one shard or state file without dying: 0 if valid, else -1 with the reason in why. */
int ds_state_file_check(const char *path, char *why, size_t why_len);

/* A single state file is in one of two formats: dreamstate's (a one-record shard, above: the whole
 * state) or RWKV-PEFT's state-tuning safetensors (the "RWKV state files" below: WKV only). */
typedef enum ds_state_file_format { DS_STATE_FILE_DREAMSTATE, DS_STATE_FILE_RWKV } ds_state_file_format;

/* The format of an output state file from a format name ("dreamstate" or "rwkv-state"; NULL: not
 * given) and the path's extension (path may be NULL): a name wins, else ".safetensors" means
 * rwkv-state, else dreamstate. Returns 0, or -1 with a one-line reason in why: an unknown name, or a
 * name that the extension contradicts (".safetensors" is rwkv-state, ".state" dreamstate). */
int ds_state_file_format_of(const char *name, const char *path, ds_state_file_format *out, char *why, size_t why_len);

/* Writes sequence b of s as a state file in format f; meta: extra "key=value\n" lines (NULL: none)
 * after model=<signature of d>. In rwkv-state files the lines become __metadata__ pairs (after
 * format=rwkv-state), `label` (an id) is not kept, and the token-shift part is dropped. */
void ds_state_file_save(const char *path, ds_state_file_format f, const ds_rwkv7_dims *d, const ds_rwkv7_state *s,
                        int b, int32_t label, const char *meta);
/* Loads a state file of either format, told apart by its first bytes (magic "DSSTATES", or a
 * safetensors header), into sequence 0 of dst (created for d); an RWKV state file gives a zero
 * token-shift part. Dies (exit 2) if the file is invalid or holds another shape: "FILE: state has
 * L=2 C=128, model has L=4 C=256"; a PyTorch file (an RWKV-PEFT .pth) is refused with the converter
 * command to run. meta_out (if not NULL) receives a malloc'd copy of the metadata text ("key=value\n"
 * lines; of an RWKV state file, its __metadata__ pairs). */
void ds_state_file_load(const char *path, const ds_rwkv7_dims *d, ds_rwkv7_state *dst, char **meta_out);

/* ---- state datasets (index + shards) ---- */

typedef struct ds_states_info {
    ds_state_shape shape;
    int64_t n_records;
    int n_labels;
    char **labels;
    int n_shards;
    int max_tokens;
    char model[256], tokenizer[16];
    char checkpoint[DS_PATH_MAX], contexts[DS_PATH_MAX];
} ds_states_info;

/* What the index says about each shard (the writer's input, the reader's view). */
typedef struct ds_states_shard {
    char file[256];       /* relative to the index's directory */
    int64_t records;
} ds_states_shard;

/* Writes an index atomically (info->n_shards entries of shards; info->n_records must be their sum). */
void ds_states_write_index(const char *path, const ds_states_info *info, const ds_states_shard *shards);

typedef struct ds_states ds_states;

/* Opens an index and maps and validates every shard; dies (exit 2) with "PATH: reason". */
ds_states *ds_states_open(const char *index_path);
void ds_states_close(ds_states *s);
/* The index's header alone (shape, labels, record count; the shards are neither opened nor checked),
 * e.g. to size a run; dies (exit 2) on a bad index. Free with ds_states_info_free. */
void ds_states_read_info(const char *index_path, ds_states_info *info);
void ds_states_info_free(ds_states_info *info);
const ds_states_info *ds_states_get_info(const ds_states *s);
/* Record i (0 <= i < n_records); pointers stay valid until close. */
ds_state_record ds_states_record(const ds_states *s, int64_t i);
/* Record i into sequence 0 of dst (a state created for d). Dies (exit 2) if d has another shape:
 * "INDEX: state has L=2 C=128, model has L=4 C=256". */
void ds_states_load_rwkv7(const ds_states *s, int64_t i, const ds_rwkv7_dims *d, ds_rwkv7_state *dst);
/* Record i as a state file (metadata: model, label, checkpoint, contexts, context). */
void ds_states_save_record(const ds_states *s, int64_t i, const char *path);

/* ---- RWKV state files (RWKV-PEFT state tuning; src/data/rwkv_state.c) ----
 * safetensors with "blocks.{i}.att.time_state" [H, 64, 64] per layer, [head][value][key], WKV only.
 * Both return 0, or -1 with a one-line reason in err (DS_ERR_LEN bytes): wrong layer or head count,
 * other tensors, a damaged file. Loading zeroes sequence b's token-shift state; saving drops it.
 * Metadata: saving writes format=rwkv-state and then the "key=value\n" lines of meta (NULL: none) as
 * __metadata__ pairs; loading gives the pairs back as such lines in *meta_out (if not NULL; malloc'd),
 * leaving out any a line cannot hold (a key with '=', control characters). */
int ds_rwkv_state_save(const char *path, const ds_rwkv7_dims *d, const ds_rwkv7_state *s, int b, const char *meta,
                       char *err);
int ds_rwkv_state_load(const char *path, const ds_rwkv7_dims *d, ds_rwkv7_state *dst, int b, char **meta_out,
                       char *err);

#endif
