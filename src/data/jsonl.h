/* JSON Lines of string fields (private to src/data): a strict reader of lines that each hold one
 * object with string values for the keys asked for, the matching writer, and the UTF-8 checks both
 * need. The labelled contexts (contexts.c) and prepare-data's {"text": ...} documents are such lines. */
#ifndef DREAMSTATE_JSONL_H
#define DREAMSTATE_JSONL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Length of the valid UTF-8 sequence at p (n bytes left; shortest form, no surrogates, <= U+10FFFF),
 * 0 if invalid. */
size_t ds_utf8_char_len(const unsigned char *p, size_t n);
int ds_utf8_valid(const char *s, size_t n);

/* A growing buffer of decoded strings. */
typedef struct ds_text_arena {
    char *data;
    size_t n, cap;
} ds_text_arena;

/* The keys a line may hold. */
typedef struct ds_jsonl_keys {
    int n, n_required;          /* names[0..n_required) must be there; each key at most once */
    const char *const *names;
    int others_skipped;         /* other keys: 0 refused; 1 allowed, their values (any JSON) skipped */
    int nul_allowed;            /* \u0000 in a value: 0 refused (the value is a C string); 1 decoded */
} ds_jsonl_keys;

/* Parses one line (len bytes, without its '\n'): an object with string values for the keys in
 * `keys`. JSON escapes are decoded and the text must be valid UTF-8. Each value is appended to `a`
 * with a terminating NUL; off[k] gets its offset (-1: key k absent) and, unless lens is NULL, lens[k]
 * its length. Returns 0, or -1 with "column C: reason" in why. */
int ds_jsonl_parse_line(const char *line, size_t len, const ds_jsonl_keys *keys, ds_text_arena *a, int64_t *off,
                        size_t *lens, char *why, size_t why_len);

/* Writes {"key":"value",...} and '\n' for the keys whose value is not NULL (value k: lens[k] bytes). */
void ds_jsonl_write_line(FILE *fp, int n_keys, const char *const *keys, const char *const *values,
                         const size_t *lens);

#endif
