/* Sorted name indexes for the file readers: a forged file with many entries costs n log n to check
 * for duplicate names and to match against a model, never n^2. */
#define _GNU_SOURCE  /* qsort_r */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    const void *items;
    ckpt_name_of name;
} name_table;

static int cmp_names(const void *a, const void *b, void *table) {
    const name_table *t = table;
    return strcmp(t->name(t->items, *(const int *)a), t->name(t->items, *(const int *)b));
}

const char *ckpt_name_order(const void *items, ckpt_name_of name, int n, int **order) {
    *order = malloc(((size_t)n + 1) * sizeof **order);
    if (!*order) return NULL;
    for (int i = 0; i < n; i++) (*order)[i] = i;
    name_table t = {items, name};
    qsort_r(*order, (size_t)n, sizeof **order, cmp_names, &t);
    for (int i = 1; i < n; i++)
        if (strcmp(name(items, (*order)[i - 1]), name(items, (*order)[i])) == 0) return name(items, (*order)[i]);
    return NULL;
}

int ckpt_name_find(const void *items, ckpt_name_of name, const int *order, int n, const char *key) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(name(items, order[mid]), key);
        if (c == 0) return order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}
