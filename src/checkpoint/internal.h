/* Helpers shared by the checkpoint module's readers and writers (checkpoint.c, name_index.c). */
#ifndef DREAMSTATE_CHECKPOINT_INTERNAL_H
#define DREAMSTATE_CHECKPOINT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"

/* The longest tensor name any reader or writer accepts, in bytes (a name is never empty): the one rule
 * for the checkpoint index, the tensors a writer is given, and a safetensors header. */
#define CKPT_NAME_MAX_LEN 4095
static inline int ckpt_name_length_ok(size_t len) { return len > 0 && len <= CKPT_NAME_MAX_LEN; }

/* Writes "PATH: <formatted reason>" into err (DS_ERR_LEN bytes) and returns -1. */
int ckpt_fail(char *err, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ends an atomic write: commits it if `ok` (every write succeeded), else removes the temporary file;
 * returns 0, or -1 with "PATH: write failed: <errno text>" (or "cannot commit") in err. */
int ckpt_finish_write(ds_atomic_file *af, int ok, char *err, const char *path);
/* 0 if the file's shape equals the caller tensor's, else "PATH: shape mismatch for 'x': file [4,8],
 * model [8,8]" in err and -1. */
int ckpt_check_shape(char *err, const char *path, const ds_tensor *t, int ndim, const int64_t *shape);

/* The name of entry i of a reader's table. */
typedef const char *(*ckpt_name_of)(const void *items, int i);
/* The numbers 0..n-1 sorted by name into *order (malloc'd; NULL when out of memory); returns the first
 * name that occurs twice, or NULL. */
const char *ckpt_name_order(const void *items, ckpt_name_of name, int n, int **order);
/* Binary search of such an order: the number of the entry named `key`, or -1. */
int ckpt_name_find(const void *items, ckpt_name_of name, const int *order, int n, const char *key);

#endif
