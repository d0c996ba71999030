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
 *       16    4  u32 vocab_size (at most 2^31 - 1): every id in the payload is < vocab_size
 *       20    4  u32 tokenizer fingerprint: 0 = byte tokenizer, else CRC-32C of the vocab file
 *       24    8  u64 token count N (separators included)
 *       32    8  u64 document count D
 *       40    4  u32 CRC-32C of the payload
 *       44   16  reserved, zero
 *       60    4  u32 CRC-32C of header bytes 0..59
 *       64  N*w  payload: N ids of w = 2 (dtype 1) or 4 (dtype 2) bytes; the file ends there
 *
 * Readers check all of it (magic, header CRC, version, dtype and range of vocab_size, reserved
 * bytes, file size vs N, payload CRC, ids < vocab_size, payload ends with 0 when N > 0, at least D
 * separators) and refuse a bad file with one line, "dreamstate: PATH: reason", exit code 2.
 * Writers write a temporary file and rename it into place, so a shard is never seen half-written.
 *
 * A dataset is one shard file or a directory of "*.bin" shards (sorted by name, not recursive),
 * seen as one token stream; all its shards must agree on vocab_size and tokenizer fingerprint.
 *
 * binidx (RWKV-LM's training data)
 * ================================
 * Megatron's MMapIndexedDataset as RWKV-LM's make_data.py writes it: NAME.bin holds the token ids of
 * all sequences back to back (no header); NAME.idx indexes them. Little-endian:
 *
 *   offset      size  field
 *        0         9  magic "MMIDIDX\0\0"
 *        9         8  u64 version = 1
 *       17         1  u8 dtype code: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16
 *                     (6 and 7 are floating point, refused)
 *       18         8  u64 N, the number of sequences
 *       26         8  u64 D, the number of document-index entries
 *       34       4*N  i32 sizes[N]: ids in each sequence
 *   34+4N        8*N  i64 pointers[N]: byte offset of each sequence in NAME.bin
 *  34+12N        8*D  i64 doc_idx[D]: 0, then the sequence index where each document ends
 *
 * make_data.py writes one sequence per document, the document's ids followed by 0, as uint16, so
 * doc_idx = 0, 1, ..., N. Readers check the magic, version and dtype, that the file is exactly as long
 * as N and D say, that the pointers are the running byte sums of the sizes (from 0), that doc_idx
 * rises from 0 to N, that NAME.bin is exactly as long as the sizes say, and that no id is negative;
 * a bad file is refused with one line, "dreamstate: FILE: reason", exit code 2. The stream is all of
 * NAME.bin (as RWKV-LM reads it); the dataset's vocab_size is its largest id + 1 (binidx records no
 * vocabulary) and its fingerprint is 0; its documents are the D - 1 that doc_idx delimits.
 *
 * ds_dataset_open takes binidx data as the prefix NAME (when no file NAME exists and NAME.bin or
 * NAME.idx does), as NAME.idx, or as NAME.bin when NAME.idx exists beside it and NAME.bin does not
 * start with the shard magic.
 */
#ifndef DREAMSTATE_DATA_H
#define DREAMSTATE_DATA_H

#include "dreamstate/config.h"

#include <stddef.h>
#include <stdint.h>

/* ---- tokenizers (src/rwkv7/README.md §7) ---- */

/* "byte": id = byte value, vocab 256, any bytes round-trip exactly (id 0 is the NUL byte).
 * "world": the RWKV World vocabulary rwkv_vocab_v20230424.txt (lines "<id> <python literal> <byte
 *   length>"), greedy longest match over bytes, vocab 65536, id 0 = <|endoftext|> (decodes to
 *   nothing, as do the unused ids). */
typedef struct ds_tokenizer ds_tokenizer;

/* kind is "byte" or "world"; a world vocab_file that is NULL or "" means the copy of
 * rwkv_vocab_v20230424.txt built into the binary (src/data/). Dies with exit code 2 on an unknown kind
 * or a malformed vocab file ("FILE:LINE: reason"). */
ds_tokenizer *ds_tokenizer_open(const char *kind, const char *vocab_file);
void ds_tokenizer_free(ds_tokenizer *tok);
uint32_t ds_tokenizer_vocab_size(const ds_tokenizer *tok);
/* 0 for "byte", CRC-32C of the vocab file for "world": stored in shards so a trainer can tell
 * whether its data was tokenized with the vocabulary it is configured for. */
uint32_t ds_tokenizer_fingerprint(const ds_tokenizer *tok);
/* For messages: "byte", "world (built-in rwkv_vocab_v20230424.txt)" or "world (vocabulary FILE,
 * fingerprint 1a2b3c4d)". */
const char *ds_tokenizer_name(const ds_tokenizer *tok);
/* The tokenizer a fingerprint stands for, as far as this build knows it: "byte", "world (built-in
 * rwkv_vocab_v20230424.txt)" or "a World vocabulary with fingerprint 1a2b3c4d". */
void ds_tokenizer_fingerprint_name(uint32_t fingerprint, char *buf, size_t len);
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

/* ---- binidx writer ---- */

/* The same calls as the shard writer's, writing binidx data at prefix.bin and prefix.idx: uint16 ids
 * when vocab_size <= 65536, else int32; one sequence per document, its ids followed by 0, and doc_idx
 * 0, 1, ..., n. Both files are written as temporaries and renamed at commit, .bin first (a reader that
 * meets the new .bin with an old .idx finds their lengths disagree). Failures die with exit code 1. */
typedef struct ds_binidx_writer ds_binidx_writer;
ds_binidx_writer *ds_binidx_writer_open(const char *prefix, uint32_t vocab_size);
void ds_binidx_writer_add_document(ds_binidx_writer *w, const int32_t *ids, size_t n);
void ds_binidx_writer_commit(ds_binidx_writer *w);
void ds_binidx_writer_abort(ds_binidx_writer *w);

/* ---- datasets (reading) ---- */

typedef struct ds_dataset ds_dataset;
/* Opens (mmaps) and validates a shard file, a directory of shards or binidx data; dies with exit
 * code 2 and "PATH: reason" on anything invalid. */
ds_dataset *ds_dataset_open(const char *path);
void ds_dataset_close(ds_dataset *ds);
uint64_t ds_dataset_num_tokens(const ds_dataset *ds);
uint64_t ds_dataset_num_docs(const ds_dataset *ds);
uint32_t ds_dataset_vocab_size(const ds_dataset *ds);
uint32_t ds_dataset_fingerprint(const ds_dataset *ds);
/* Dies (exit 2, naming `path` and both tokenizers) when the dataset's tokens were made by another
 * tokenizer than tok: token shards record their tokenizer's fingerprint; binidx data records none and
 * passes. */
void ds_dataset_check_tokenizer(const ds_dataset *ds, const char *path, const ds_tokenizer *tok);
/* Token i of the stream (i < num_tokens). */
int32_t ds_dataset_token(const ds_dataset *ds, uint64_t i);
/* Tokens [start, start + n) into out, across shard boundaries; dies (exit 1) past the end. */
void ds_dataset_read(const ds_dataset *ds, uint64_t start, size_t n, int32_t *out);
/* Validates one shard file without dying: 0 if valid, else -1 with the reason in why. */
int ds_shard_check(const char *path, char *why, size_t why_len);
/* Entropy (nats) of the dataset's token unigram distribution, separators included: the loss of the
 * best context-free predictor, which a trained model must beat. */
double ds_unigram_entropy_nats(const ds_dataset *ds);

/* ---- RWKV-LM's sample order (data.sampler rwkv_lm) ----
 *
 * RWKV-LM (RWKV-v7/train_temp/src/dataset.py) trains on 40320-sample mini-epochs; rank r of W reads
 * its idx-th sample of mini-epoch e as number ii = 1 + 40320 e + W idx + r: the ctx_len + 1 tokens at
 * offset ((phi * ii^3) mod P) * ctx_len of the stream, with the magic prime P (P mod 3 = 2, so cubing
 * permutes the residues mod P and a mini-epoch's windows are all different) and
 * phi = int(P * (sqrt(5) - 1) / 2) evaluated in double precision. Its step s of mini-epoch e takes
 * idx in [s m, (s + 1) m) on every rank (m = micro_bsz), i.e. ii - 1 = 40320 e + s W m + k for
 * k < W m = real_bsz, and 40320 is a multiple of real_bsz: so ii - 1 is exactly the global sample number
 * g = step * real_bsz + k of this project's loop, and sample g here reads RWKV-LM's window
 * ii = g + 1. With train.batch_size = real_bsz every step trains on RWKV-LM's windows of that step,
 * on any rank count, micro batch or accumulation. ii^3 is reduced mod P exactly (128-bit products). */

/* Token offset of sample g's window. */
uint64_t ds_rwkv_lm_offset(uint64_t magic_prime, uint64_t ctx_len, uint64_t g);
/* The largest prime P = 2 mod 3 below n_tokens // ctx_len (RWKV-LM's make_data.py picks it so), or 0 if
 * none has P / (n_tokens // ctx_len) > 0.9. */
uint64_t ds_rwkv_lm_magic_prime(uint64_t n_tokens, uint64_t ctx_len);
/* Whether a prime fits data of n_tokens: 0.9 < P / (n_tokens // ctx_len) <= 1 (RWKV-LM's bound) and
 * P ctx_len + 1 <= n_tokens (every window inside the data). 0, or -1 with the reason in why. */
int ds_rwkv_lm_check_prime(uint64_t magic_prime, uint64_t n_tokens, uint64_t ctx_len, char *why, size_t why_len);

/* ---- prepare-data and the default corpus ---- */

/* The train/valid split is by document: document i (0-based over all non-empty documents, in
 * input order) goes to valid iff ds_rng_uniform(seed, DS_SPLIT_STREAM, i) < valid_fraction. */
#define DS_SPLIT_STREAM 0x5350u  /* "SP" */

/* `dreamstate prepare-data`: inputs are text files, JSONL files, .gz files of either (read through
 * `gzip -dc`), or directories walked recursively (sorted by name; hidden entries and symbolic links
 * inside them skipped). A text file is one document, or with split_on = LINE, documents are separated
 * by lines equal to LINE (an empty LINE: blank lines). A JSONL file (name ending in .jsonl or
 * .jsonl.gz) holds one document per line as RWKV-LM's make_data.py reads it: an object whose "text"
 * string is the document (other keys ignored; blank lines skipped); a bad line is refused as
 * "FILE:LINE: column C: reason". Empty documents are dropped. Writes shards OUT/train.bin and
 * OUT/valid.bin, or binidx pairs OUT/train.{bin,idx} and OUT/valid.{bin,idx} (no valid pair when
 * valid_fraction is 0), and prints per-split counts to stdout. */
typedef struct ds_prepare_options {
    const char *tokenizer;        /* "byte" (default) or "world" */
    const char *vocab;            /* the world tokenizer's vocab file; NULL: the built-in one (and byte) */
    const char *format;           /* "shards" (default) or "binidx" */
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

/* The default corpus: real English text from Debian packages, ~4.2 MB: the files the manifest of
 * source documents (configs/text-manifest.tsv, built in; src/data/manifest.h) lists for source
 * "corpus", in its order, each checked against its sha256 first:
 *   /usr/share/games/fortunes/<file> (packages fortunes, fortunes-min): each '%'-separated entry is
 *       one document;
 *   /usr/share/doc/jargon-text/jargon.txt.gz (package jargon-text): each blank-line-separated
 *       paragraph is one document.
 * Split as prepare-data does with seed DS_CORPUS_SEED and 5% held out. Builds out_dir/train.bin,
 * out_dir/valid.bin and out_dir/sources.sha256 (a digest of those manifest lines) unless all three
 * are there, the shards valid and of the same tokenizer, and the digest that of the built-in manifest.
 * A missing or changed file exits 2 naming it and its package. */
#define DS_CORPUS_SEED 1234
#define DS_CORPUS_VALID_FRACTION 0.05
void ds_corpus_default(const char *out_dir, const char *tokenizer_kind, const char *vocab_file);

/* The train and held-out token datasets of a run: data.train, and data.valid (else data.train); the
 * default corpus's DIR/train.bin or DIR/valid.bin, DIR = data/default-<data.tokenizer>, for whichever
 * is not given, built first (ds_corpus_default) when `build` is set. Returns 1 when an output is the
 * default corpus's: under MPI one rank builds it and every rank waits at a barrier before opening it.
 * Either output may be NULL (only what is asked for is built). */
int ds_data_paths(const ds_config *cfg, int build, char *train, size_t train_len, char *valid, size_t valid_len);

#endif
