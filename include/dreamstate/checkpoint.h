/* Checkpoints. A model-agnostic container of named fp32 tensors plus an opaque metadata text (the
 * caller supplies a table of ds_tensor views, dreamstate/tensor.h, pointing into its own memory), the checkpoint-directory policy
 * (step-numbered files, pruning, newest-valid lookup), and safetensors import/export for exchange with
 * PyTorch / Hugging Face tools.
 *
 * Error convention: every function that can fail on bad input returns 0 on success and -1 on failure,
 * writing a one-line reason that starts with the file name ("FILE: truncated (expected N bytes, found
 * M)") into `err`, a caller buffer of DS_ERR_LEN bytes. The caller decides: ds_die(DS_EXIT_BAD_INPUT,
 * "%s", err) or try an older checkpoint. All writes are atomic (temp file, fsync, rename, dir fsync). */
#ifndef DREAMSTATE_CHECKPOINT_H
#define DREAMSTATE_CHECKPOINT_H

#include "dreamstate/tensor.h"

#include <stddef.h>
#include <stdint.h>

#define DS_ERR_LEN 512

int64_t ds_tensor_numel(const ds_tensor *t);

/* Checks a caller's table before writing or reading: names non-empty and unique, ndim in range,
 * dims >= 0 and of sane size, data non-NULL where numel > 0. `path` only prefixes the message. */
int ds_tensors_check(const char *path, int n, const ds_tensor *t, char *err);

/* Index of the first of the n tensors that holds a NaN or an infinity, -1 when every value is finite.
 * Weights are refused (loaded) or not written (saved) with that tensor's name: one NaN spreads to the
 * whole model within a step. */
int ds_tensors_find_nonfinite(int n, const ds_tensor *t);

/* ---- dreamstate checkpoint files (.ckpt) --------------------------------------------------------
 * Layout (little-endian): 60-byte header (magic "DSCKPT01", version, counts, lengths, CRCs of
 * metadata and index, header CRC), metadata text, tensor index (name, shape, offset, byte count,
 * CRC-32C per tensor), payloads each at a 64-byte aligned offset, 24-byte trailer (magic, total
 * length, index CRC). Names must be unique. */

/* Writes `n` tensors and `meta` (NUL-terminated text, e.g. "key=value" lines; NULL = empty). */
int ds_ckpt_save(const char *path, const char *meta, int n, const ds_tensor *t, char *err);

/* Reads into the caller's tensors by name. The file must hold exactly the names in `t`, each with the
 * same shape; every checksum is verified, each payload's as it is read (one pass over the file). On
 * success *meta_out (if meta_out != NULL) receives a malloc'd copy of the metadata text (free with
 * free()). Returns 0; DS_CKPT_DAMAGED when the file is complete and matches the names and shapes but a
 * payload fails its checksum or cannot be read (a caller may fall back to an older checkpoint); -1 on
 * any other error. On failure the tensors' contents are unspecified (partially overwritten) and
 * *meta_out is NULL. */
#define DS_CKPT_DAMAGED (-2)
int ds_ckpt_load(const char *path, char **meta_out, int n, const ds_tensor *t, char *err);

/* Checks everything but the payloads' checksums without reading the payloads: header, metadata,
 * tensor index and trailer (the file is complete and its index consistent; ds_ckpt_load checks the
 * payloads as it reads them). Optionally returns the metadata as above. */
int ds_ckpt_check(const char *path, char **meta_out, char *err);

/* Value of "key=value" in metadata text of "key=value\n" lines (checkpoints, state files) into out
 * (cut to len - 1 bytes); returns out, or NULL when the key is absent. */
const char *ds_ckpt_meta_value(const char *meta, const char *key, char *out, size_t len);

/* The step= of checkpoint metadata: decimal digits only (an integer >= 0) and, when name_step >= 0 (a
 * file of a checkpoint directory), equal to the step in the file name. Returns 0 with *step, or -1 with
 * the reason in err. */
int ds_ckpt_meta_step(const char *path, const char *meta, int64_t name_step, int64_t *step, char *err);

/* ---- checkpoint directory: DIR/step-00000123.ckpt ---------------------------------------------- */

/* Writes "DIR/step-%08lld.ckpt" into buf (dies with exit code 2 if it does not fit). */
void ds_ckpt_path(char *buf, size_t len, const char *dir, int64_t step);

/* Steps of the checkpoint files in `dir`, ascending, in a malloc'd array (*steps, free()). Returns the
 * count; 0 if the directory does not exist; -1 with errno on other errors. Temp files are ignored. */
int ds_ckpt_list(const char *dir, int64_t **steps);

/* Removes temp files ("*.tmp.<pid>") left in `dir` by writers that died (killed mid-save); files of a
 * live process are kept. Returns the number removed, -1 with errno if the directory is unreadable. */
int ds_ckpt_clean_stale(const char *dir);

/* Deletes all but the newest `keep` (>= 1) checkpoints; `protect_step` (the one just written) is never
 * deleted even if it is not among the newest. Returns the number removed, -1 with errno on error. */
int ds_ckpt_prune(const char *dir, int keep, int64_t protect_step);

/* Finds the newest checkpoint in `dir` that passes ds_ckpt_check (complete, without reading the
 * payloads); newer files that fail are skipped with a logged warning giving the reason (they are not
 * deleted). Returns 1 and fills path (and *step if step != NULL) when one is found, 0 when none is. */
int ds_ckpt_latest_complete(const char *dir, char *path, size_t len, int64_t *step);

/* ---- the run directory: one run per directory --------------------------------------------------
 * A run's files are OUT/config.yaml, OUT/train.jsonl and the checkpoints of its checkpoint directory.
 * A fresh start (or `import`) where an earlier run's files are would mix two runs: resume would pick
 * the wrong checkpoint, pruning would delete the new one. */

/* Before a fresh start in out_dir / ckpt_dir, changing nothing: 0 when they hold no earlier run (no
 * checkpoint, no train.jsonl with records); 1 when they do and `restart` is set (call
 * ds_run_dir_move_aside before writing); else dies with exit 2 and one line saying how to proceed,
 * beginning with `hint` (e.g. "continue it with checkpoint.resume: auto, "; may be ""). */
int ds_run_dir_check_fresh(const char *out_dir, const char *ckpt_dir, int restart, const char *hint);

/* Moves the earlier run's files into a new OUT.old-N/ (N = 1, 2, ...; checkpoints into its
 * checkpoints/), never deleting any; writes that directory into moved_to. Dies (exit 1) naming the file
 * if a move fails (e.g. another file system), having moved only whole files. */
void ds_run_dir_move_aside(const char *out_dir, const char *ckpt_dir, char *moved_to, size_t len);

/* ---- safetensors (Hugging Face format) ----------------------------------------------------------
 * u64 little-endian header length, JSON header {"name": {"dtype", "shape", "data_offsets": [b, e]},
 * "__metadata__": {string: string}}, then the raw data section. */

typedef enum {
    DS_ST_BOOL, DS_ST_U8, DS_ST_I8, DS_ST_F8_E4M3, DS_ST_F8_E5M2, DS_ST_I16, DS_ST_U16, DS_ST_F16,
    DS_ST_BF16, DS_ST_I32, DS_ST_U32, DS_ST_F32, DS_ST_F64, DS_ST_I64, DS_ST_U64, DS_ST_NDTYPES
} ds_st_dtype;

const char *ds_st_dtype_name(ds_st_dtype d);

typedef struct {
    char *name;
    ds_st_dtype dtype;
    int ndim;
    int64_t shape[DS_TENSOR_MAX_DIMS];
    uint64_t begin, end;                 /* byte range inside the data section */
} ds_st_entry;

typedef struct {
    int n;                               /* tensors, in header order */
    ds_st_entry *entries;
    int n_meta;                          /* __metadata__ pairs, in header order */
    char **meta_keys, **meta_values;
    uint64_t data_start;                 /* file offset of the data section */
    int *by_name, *meta_by_key;          /* entry and metadata numbers sorted by name: lookups and the
                                          * duplicate check take log time, a header of n entries n log n */
} ds_st_index;

/* Parses and validates the header (strict JSON; offsets must tile the data section exactly, as the
 * format requires). Tensors with more than DS_TENSOR_MAX_DIMS dims are rejected. */
int ds_safetensors_list(const char *path, ds_st_index *ix, char *err);
void ds_st_index_free(ds_st_index *ix);
const ds_st_entry *ds_st_find(const ds_st_index *ix, const char *name);  /* NULL if absent */
const char *ds_st_meta(const ds_st_index *ix, const char *key);           /* NULL if absent */

/* Fills the caller's tensors by name (shapes must match), converting F32, F16 or BF16 to fp32. Tensors
 * in the file that the caller does not ask for are ignored (inspect ds_safetensors_list to reject
 * them). On failure the tensors' contents are unspecified. */
int ds_safetensors_load(const char *path, int n, const ds_tensor *t, char *err);

/* Writes F32 tensors in the given order; `meta_kv` holds n_meta (key, value) string pairs flattened
 * as {key0, value0, key1, value1, ...}. */
int ds_safetensors_save(const char *path, int n_meta, const char *const *meta_kv, int n,
                        const ds_tensor *t, char *err);

#endif
