/* Helpers shared by checkpoint.c and safetensors.c (defined in checkpoint.c). */
#ifndef DREAMSTATE_CHECKPOINT_INTERNAL_H
#define DREAMSTATE_CHECKPOINT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dreamstate/checkpoint.h"
#include "dreamstate/common.h"

/* Writes "PATH: <formatted reason>" into err (DS_ERR_LEN bytes) and returns -1. */
int ckpt_fail(char *err, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ends an atomic write: commits it if `ok` (every write succeeded), else removes the temporary file;
 * returns 0, or -1 with "PATH: write failed: <errno text>" (or "cannot commit") in err. */
int ckpt_finish_write(ds_atomic_file *af, int ok, char *err, const char *path);
/* 0 if the file's shape equals the caller tensor's, else "PATH: shape mismatch for 'x': file [4,8],
 * model [8,8]" in err and -1. */
int ckpt_check_shape(char *err, const char *path, const ds_tensor *t, int ndim, const int64_t *shape);

#endif
