/* Named fp32 tensors. ds_tensor is a view of named data in the caller's memory: what checkpoint and
 * safetensors files hold. ds_param_table is the parameter table of a model (RWKV-7, DiT, the hybrid):
 * each tensor's official name, shape and offset into the model's one flat parameter allocation (the
 * same offset into its one flat gradient allocation), with the AdamW flags the training code builds
 * its parameter groups from. Each model keeps its own pointer struct (e.g. ds_rwkv7_weights, one
 * float * per tensor, with an array of per-layer structs); the table records where each tensor's
 * pointer lives, so that one bind call points the struct into params and another into grads. */
#ifndef DREAMSTATE_TENSOR_H
#define DREAMSTATE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define DS_TENSOR_MAX_DIMS 4
#define DS_TENSOR_NAME_LEN 64

typedef struct {
    const char *name;
    int ndim;                            /* 0 (scalar) .. DS_TENSOR_MAX_DIMS */
    int64_t shape[DS_TENSOR_MAX_DIMS];
    float *data;                         /* caller's memory, row-major, numel floats */
} ds_tensor;

/* One tensor of a parameter table. */
typedef struct ds_param_tensor {
    char name[DS_TENSOR_NAME_LEN];       /* official key, e.g. "blocks.3.att.key.weight" */
    int ndim;
    int64_t shape[DS_TENSOR_MAX_DIMS];
    int64_t offset;                      /* into the flat parameter / gradient arrays, a multiple of 16 */
    int64_t numel;
    float lr_scale;                      /* learning-rate factor (1 unless the model sets it) */
    int weight_decay;                    /* AdamW decays it: weight matrices ("*.weight", 2-D or more) */
} ds_param_tensor;

/* Where a tensor's pointer lives in a model's pointer struct: at byte offset `field` of the struct
 * itself (layer < 0) or of element `layer` of its per-layer array; DS_PARAM_UNBOUND: nowhere. */
typedef struct ds_param_slot {
    int layer;
    size_t field;
} ds_param_slot;
#define DS_PARAM_UNBOUND (-2)

/* A table under construction: start from {0}; tensors grows as needed. A model finishes it with
 * ds_param_arrays, one ds_param_bind per pointer struct, then ds_param_take. */
typedef struct ds_param_table {
    int n, cap;
    ds_param_tensor *tensors;            /* [n] */
    ds_param_slot *slots;                /* [n] */
    int64_t n_floats;                    /* length of the flat arrays: every tensor padded to 16 floats */
} ds_param_table;

/* Appends a tensor of the given shape at the end of the flat arrays (64-byte aligned), named by the
 * printf-style format, with lr_scale 1 and the weight-decay rule above; its pointer lives at
 * (layer, field). Returns the entry, for the caller to adjust its flags. */
ds_param_tensor *ds_param_add(ds_param_table *t, int layer, size_t field, int ndim, const int64_t *shape,
                              const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Appends the n tensors of another table (e.g. a sub-model's) with `prefix` before each name, keeping
 * their flags and relative layout, unbound. */
void ds_param_append(ds_param_table *t, const char *prefix, int n, const ds_param_tensor *src);

/* The flat parameter and gradient arrays of t into *params_out, *grads_out: the caller's params and
 * grads (e.g. a slice of a larger trainable set) or, with params NULL, new zeroed arrays of n_floats
 * floats each. Returns 1 when they are the caller's (the model must not free them). */
int ds_param_arrays(const ds_param_table *t, float *params, float *grads, float **params_out, float **grads_out);
/* Points a pointer struct (`owner`) into the flat array `base`: every bound tensor's pointer at
 * base + offset. Its per-layer array, n_layers elements of layer_size bytes, is allocated here and
 * returned (NULL for none; free with ds_free) for the caller to store in the struct. */
void *ds_param_bind(const ds_param_table *t, float *base, void *owner, int n_layers, size_t layer_size);
/* Hands the finished table to the model: returns the tensors (free with ds_free), *n_tensors their
 * count, *n_floats the flat arrays' length; frees the rest. */
ds_param_tensor *ds_param_take(ds_param_table *t, int *n_tensors, int64_t *n_floats);
/* Frees a table that no model took (e.g. one appended to a larger one). */
void ds_param_table_free(ds_param_table *t);

/* Checkpoint views of n table entries: out[i] names tensors[i] and points into `base` (the params
 * array, or a copy of it such as an EMA) at its offset. */
void ds_param_views(int n, const ds_param_tensor *tensors, float *base, ds_tensor *out);

/* The tensor called `name` among n, or NULL. */
const ds_param_tensor *ds_param_find(int n, const ds_param_tensor *tensors, const char *name);

#endif
