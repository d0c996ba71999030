/* Parameter tables: named tensors laid out in one flat array, and the binding of a model's pointer
 * struct to them. */
#include "dreamstate/tensor.h"
#include "dreamstate/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void grow(ds_param_table *t) {
    int cap = t->cap ? 2 * t->cap : 64;
    ds_param_tensor *tensors = ds_alloc(sizeof(ds_param_tensor) * cap);
    ds_param_slot *slots = ds_alloc(sizeof(ds_param_slot) * cap);
    if (t->n) {
        memcpy(tensors, t->tensors, sizeof(ds_param_tensor) * t->n);
        memcpy(slots, t->slots, sizeof(ds_param_slot) * t->n);
    }
    ds_free(t->tensors);
    ds_free(t->slots);
    t->tensors = tensors;
    t->slots = slots;
    t->cap = cap;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

static void check_name(int len, const char *name) {
    if (len < 0 || len >= DS_TENSOR_NAME_LEN)
        ds_die(DS_EXIT_FAIL, "parameter table: name '%s...' longer than %d characters", name, DS_TENSOR_NAME_LEN - 1);
}

static ds_param_tensor *add(ds_param_table *t, int layer, size_t field, int ndim, const int64_t *shape,
                            const char *name) {
    if (ndim < 1 || ndim > DS_TENSOR_MAX_DIMS)
        ds_die(DS_EXIT_FAIL, "parameter table: %s has %d dimensions", name, ndim);
    if (t->n == t->cap) grow(t);
    ds_param_tensor *p = &t->tensors[t->n];
    memcpy(p->name, name, strlen(name) + 1);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) p->numel *= (p->shape[i] = shape[i]);
    p->offset = t->n_floats;
    p->lr_scale = 1.0f;
    p->weight_decay = ndim >= 2 && ends_with(name, ".weight");
    t->n_floats += (p->numel + 15) & ~(int64_t)15;  /* keep every tensor 64-byte aligned */
    t->slots[t->n] = (ds_param_slot){layer, field};
    t->n++;
    return p;
}

ds_param_tensor *ds_param_add(ds_param_table *t, int layer, size_t field, int ndim, const int64_t *shape,
                              const char *fmt, ...) {
    char name[DS_TENSOR_NAME_LEN];
    va_list ap;
    va_start(ap, fmt);
    check_name(vsnprintf(name, sizeof name, fmt, ap), name);
    va_end(ap);
    return add(t, layer, field, ndim, shape, name);
}

void ds_param_append(ds_param_table *t, const char *prefix, int n, const ds_param_tensor *src) {
    int64_t base = t->n_floats;
    for (int i = 0; i < n; i++) {
        char name[DS_TENSOR_NAME_LEN];
        check_name(snprintf(name, sizeof name, "%s%s", prefix, src[i].name), name);
        ds_param_tensor *p = add(t, DS_PARAM_UNBOUND, 0, src[i].ndim, src[i].shape, name);
        if (p->offset != base + src[i].offset)
            ds_die(DS_EXIT_FAIL, "parameter table: %s is not laid out as its table's tensors are", name);
        p->lr_scale = src[i].lr_scale;
        p->weight_decay = src[i].weight_decay;
    }
}

int ds_param_arrays(const ds_param_table *t, float *params, float *grads, float **params_out, float **grads_out) {
    *params_out = params ? params : ds_alloc(sizeof(float) * t->n_floats);
    *grads_out = params ? grads : ds_alloc(sizeof(float) * t->n_floats);
    return params != NULL;
}

void *ds_param_bind(const ds_param_table *t, float *base, void *owner, int n_layers, size_t layer_size) {
    char *layers = n_layers > 0 ? ds_alloc(layer_size * n_layers) : NULL;
    for (int i = 0; i < t->n; i++) {
        const ds_param_slot *s = &t->slots[i];
        if (s->layer == DS_PARAM_UNBOUND) continue;
        if (s->layer >= n_layers) ds_die(DS_EXIT_FAIL, "parameter table: %s of layer %d", t->tensors[i].name, s->layer);
        char *at = s->layer < 0 ? (char *)owner : layers + (size_t)s->layer * layer_size;
        *(float **)(at + s->field) = base + t->tensors[i].offset;
    }
    return layers;
}

ds_param_tensor *ds_param_take(ds_param_table *t, int *n_tensors, int64_t *n_floats) {
    ds_param_tensor *tensors = t->tensors;
    *n_tensors = t->n;
    *n_floats = t->n_floats;
    ds_free(t->slots);
    memset(t, 0, sizeof *t);
    return tensors;
}

void ds_param_table_free(ds_param_table *t) {
    ds_free(t->tensors);
    ds_free(t->slots);
    memset(t, 0, sizeof *t);
}

void ds_param_views(int n, const ds_param_tensor *tensors, float *base, ds_tensor *out) {
    for (int i = 0; i < n; i++) {
        out[i] = (ds_tensor){.name = tensors[i].name, .ndim = tensors[i].ndim, .data = base + tensors[i].offset};
        memcpy(out[i].shape, tensors[i].shape, sizeof out[i].shape);
    }
}

const ds_param_tensor *ds_param_find(int n, const ds_param_tensor *tensors, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(tensors[i].name, name) == 0) return &tensors[i];
    return NULL;
}
