/* Reading text inputs, shared by prepare-data and the default corpus (corpus.c) and the contexts
 * harvester (harvest.c): sorted directory listings, whole-file reads (.gz through gzip -dc) and
 * cutting a text into documents.
 * Private to src/data. */
#ifndef DREAMSTATE_TEXT_FILES_H
#define DREAMSTATE_TEXT_FILES_H

#include <stddef.h>
#include <stdint.h>

typedef struct ds_path_list {
    char **items;
    size_t n, cap;
} ds_path_list;

void ds_path_list_add(ds_path_list *l, const char *path);
void ds_path_list_free(ds_path_list *l);

int ds_has_suffix(const char *s, const char *suffix);

/* Appends the regular files of `dir` accepted by `keep` (NULL: all), sorted by name, descending
 * into subdirectories when `recursive`. Hidden entries and symbolic links are skipped: they are
 * rarely text meant for training and links can loop or count a file twice. Dies (exit 2) if `dir`
 * cannot be read. */
void ds_walk_dir(const char *dir, int recursive, int (*keep)(const char *name), ds_path_list *out);

/* Reads a whole file (a ".gz" name through `gzip -dc`) into a malloc'ed buffer. Returns 0, or -1 with
 * a one-line reason in why. */
int ds_read_input(const char *path, uint8_t **data, size_t *len, char *why, size_t why_len);
/* The same, byte for byte as stored (no decompression). */
int ds_read_file(const char *path, uint8_t **data, size_t *len, char *why, size_t why_len);

/* Cuts text into documents. separator NULL: the whole text is one document; otherwise documents end
 * at lines equal to separator (compared without the line's "\n" or "\r\n"; the separator lines belong
 * to no document), each keeping its lines' newlines. Calls emit(ctx, start, len) for each, in order,
 * empty ones included. */
void ds_split_text(const uint8_t *text, size_t n, const char *separator,
                   void (*emit)(void *ctx, const uint8_t *doc, size_t len), void *ctx);

#endif
