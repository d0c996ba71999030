/* Training data: tokenizers, token shards, prepare-data, and the built-in default corpus.
 *
 * Token shard format (version 1)
 * ==============================
 * A shard is one file holding a stream of token ids: documents concatenated, each followed by the
 * separator id 0 (<|endoftext|> of the World tokenizer; the NUL byte of the byte tokenizer), as in
 * RWKV's binidx data. All integers are little-endian. The file is a 64-byte header and the payload:
 *
 *   offset size  field
 *        0    8  magic "DSTOKENS"
 *        8    4  u32 version = 1
 *       12    4  u32 dtype: 1 = uint16 ids (only when vocab_size <= 65536), 2 = uint32 ids
 *       16    4  u32 vocab_size: every id in the payload is < vocab_size
 *       20    4  u32 tokenizer fingerprint: 0 = byte tokenizer, else CRC-32C of the vocab file
 *       24    8  u64 token count N (separators included)
 *       32    8  u64 document count D
 *       40    4  u32 CRC-32C of the payload
 *       44   16  reserved, zero
 *       60    4  u32 CRC-32C of header bytes 0..59
 *       64  N*w  payload: N ids of w = 2 (dtype 1) or 4 (dtype 2) bytes; the file ends there
 *
 * Readers check all of it (magic, header CRC, version, dtype vs vocab_size, reserved bytes, file
 * size vs N, payload CRC, ids < vocab_size, payload ends with 0 when N > 0, at least D separators)
 * and refuse a bad file with one line, "dreamstate: PATH: reason", exit code 2.
 * Writers write a temporary file and rename it into place, so a shard is never seen half-written.
 *
 * A dataset is one shard file or a directory of "*.bin" shards (sorted by name, not recursive),
 * seen as one token stream; all its shards must agree on vocab_size and tokenizer fingerprint.
 */
#ifndef DREAMSTATE_DATA_H
#define DREAMSTATE_DATA_H

#include <stddef.h>
#include <stdint.h>

/* ---- tokenizers (rwkv7.md section 7) ---- */

/* "byte": id = byte value, vocab 256, any bytes round-trip exactly (id 0 is the NUL byte).
 * "world": the RWKV World vocabulary rwkv_vocab_v20230424.txt (lines "<id> <python literal> <byte
 *   length>"), greedy longest match over bytes, vocab 65536, id 0 = <|endoftext|> (decodes to
 *   nothing, as do the unused ids). */
typedef struct ds_tokenizer ds_tokenizer;

/* kind is "byte" or "world" (which needs vocab_file). Dies with exit code 2 on an unknown kind or a
 * malformed vocab file ("FILE:LINE: reason"). */
ds_tokenizer *ds_tokenizer_open(const char *kind, const char *vocab_file);
void ds_tokenizer_free(ds_tokenizer *tok);
uint32_t ds_tokenizer_vocab_size(const ds_tokenizer *tok);
/* 0 for "byte", CRC-32C of the vocab file for "world": stored in shards so a trainer can tell
 * whether its data was tokenized with the vocabulary it is configured for. */
uint32_t ds_tokenizer_fingerprint(const ds_tokenizer *tok);
/* Encodes n bytes; `ids` must hold n entries (every token covers at least one byte). Returns the
 * number of ids written. */
size_t ds_tokenizer_encode(const ds_tokenizer *tok, const void *bytes, size_t n, int32_t *ids);
/* The bytes of one id (length in *len). Dies (exit 1) on an id outside [0, vocab_size). */
const uint8_t *ds_tokenizer_token(const ds_tokenizer *tok, int32_t id, size_t *len);
/* Concatenates the bytes of n ids into out (at most cap bytes written). Returns the full length,
 * which may exceed cap (like snprintf). A multi-byte UTF-8 character may span two ids. */
size_t ds_tokenizer_decode(const ds_tokenizer *tok, const int32_t *ids, size_t n, void *out, size_t cap);

/* ---- shard writer ---- */

typedef struct ds_shard_writer ds_shard_writer;
/* Starts "<path>.tmp.<pid>"; dies (exit 1) if it cannot be created. */
ds_shard_writer *ds_shard_writer_open(const char *path, uint32_t vocab_size, uint32_t fingerprint);
/* Appends ids[0..n) and the separator 0 (ids must be < vocab_size). */
void ds_shard_writer_add_document(ds_shard_writer *w, const int32_t *ids, size_t n);
/* Writes the header, fsyncs and renames over the final path; frees w. Dies (exit 1) on I/O errors. */
void ds_shard_writer_commit(ds_shard_writer *w);
/* Removes the temporary file; frees w. */
void ds_shard_writer_abort(ds_shard_writer *w);

/* ---- datasets (reading) ---- */

typedef struct ds_dataset ds_dataset;
/* Opens (mmaps) and validates a shard file or a directory of shards; dies with exit code 2 and
 * "PATH: reason" on anything invalid. */
ds_dataset *ds_dataset_open(const char *path);
void ds_dataset_close(ds_dataset *ds);
uint64_t ds_dataset_num_tokens(const ds_dataset *ds);
uint64_t ds_dataset_num_docs(const ds_dataset *ds);
uint32_t ds_dataset_vocab_size(const ds_dataset *ds);
uint32_t ds_dataset_fingerprint(const ds_dataset *ds);
/* Token i of the stream (i < num_tokens). */
int32_t ds_dataset_token(const ds_dataset *ds, uint64_t i);
/* Tokens [start, start + n) into out, across shard boundaries; dies (exit 1) past the end. */
void ds_dataset_read(const ds_dataset *ds, uint64_t start, size_t n, int32_t *out);
/* Validates one shard file without dying: 0 if valid, else -1 with the reason in why. */
int ds_shard_check(const char *path, char *why, size_t why_len);
/* Entropy (nats) of the dataset's token unigram distribution, separators included: the loss of the
 * best context-free predictor, which a trained model must beat. */
double ds_unigram_entropy_nats(const ds_dataset *ds);

/* ---- prepare-data and the default corpus ---- */

/* The train/valid split is by document: document i (0-based over all non-empty documents, in
 * input order) goes to valid iff ds_rng_uniform(seed, DS_SPLIT_STREAM, i) < valid_fraction. */
#define DS_SPLIT_STREAM 0x5350u  /* "SP" */

/* `dreamstate prepare-data`: inputs are text files, .gz files (read through `gzip -dc`), or
 * directories walked recursively (sorted by name; hidden entries and symbolic links inside them
 * skipped). Each file is one document, or with split_on = LINE, documents are separated by lines
 * equal to LINE (an empty LINE: blank lines); empty documents are dropped. Writes OUT/train.bin and
 * OUT/valid.bin and prints per-split counts to stdout. */
typedef struct ds_prepare_options {
    const char *tokenizer;        /* "byte" (default) or "world" */
    const char *vocab;            /* the world tokenizer's vocab file; NULL for byte */
    const char *out_dir;          /* created if missing */
    const char *split_on;         /* NULL: each file is one document */
    double valid_fraction;        /* share of documents held out, in [0, 1) (default 0.05) */
    uint64_t seed;                /* of the split (default 1234) */
    int n_inputs;
    const char *const *inputs;
} ds_prepare_options;

ds_prepare_options ds_prepare_defaults(void);
/* Returns 0; bad options or inputs exit with code 2 and leave no files. */
int ds_prepare_data(const ds_prepare_options *o);

/* The default corpus: real English text from Debian packages, ~4.2 MB.
 *   /usr/share/games/fortunes/<file> (package fortunes; regular files only, not *.dat / *.u8 /
 *       symlinks / subdirectories): each '%'-separated entry is one document;
 *   /usr/share/doc/jargon-text/jargon.txt.gz (package jargon-text): each blank-line-separated
 *       paragraph is one document.
 * Split as prepare-data does with seed DS_CORPUS_SEED and 5% held out. Builds out_dir/train.bin
 * and out_dir/valid.bin unless both are already valid shards of the same tokenizer. Dies with
 * exit code 1 if the packages are missing. */
#define DS_CORPUS_SEED 1234
#define DS_CORPUS_VALID_FRACTION 0.05
void ds_corpus_default(const char *out_dir, const char *tokenizer_kind, const char *vocab_file);

#endif
