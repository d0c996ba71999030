/* The manifest of source documents (private to src/data): configs/text-manifest.tsv, built into the
 * binary, lists every file build-contexts (harvest.c) and the default corpus (corpus.c) read, with the
 * Debian package that installs it and its sha256, so that every machine builds the same contexts and
 * corpus whatever else it has installed. One line per file, tab-separated:
 *   source  label  split  package  path  sha256
 * source: a name for build-contexts --sources, or "corpus" (the default corpus; label "-");
 * split: "file" (the file is one document), "%" (entries ending at lines "%"), "blank" (paragraphs).
 * Lines starting with '#' are comments. src/tools/text_manifest.py writes it. */
#ifndef DREAMSTATE_MANIFEST_H
#define DREAMSTATE_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

typedef struct ds_manifest_entry {
    const char *source, *label, *split, *package, *path;
    uint8_t sha256[32];
    int line;
} ds_manifest_entry;

typedef struct ds_manifest {
    ds_manifest_entry *items;
    size_t n;
    char *text;        /* the file, its tabs and newlines replaced by NULs */
    char name[4096];   /* for messages: the file, or configs/text-manifest.tsv for the built-in copy */
} ds_manifest;

/* Loads the manifest `path`, or the built-in one when path is NULL. A malformed line exits 2 with
 * "<what>: FILE:LINE: reason". */
ds_manifest *ds_manifest_load(const char *path, const char *what);
void ds_manifest_free(ds_manifest *m);

/* Checks that e's file is there and has its sha256; otherwise exits 2 with one line naming the file,
 * its package and the manifest line, and saying how to fix it. */
void ds_manifest_verify(const ds_manifest *m, const ds_manifest_entry *e, const char *what);

/* The document separator of e's split for ds_split_text: NULL ("file": one document), "%" or "". */
const char *ds_manifest_separator(const ds_manifest_entry *e);

#endif
