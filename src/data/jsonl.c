#include "jsonl.h"

#include "dreamstate/common.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- UTF-8 */

size_t ds_utf8_char_len(const unsigned char *p, size_t n) {
    if (p[0] < 0x80) return 1;
    size_t len = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 ? 2 : 0;
    if (len == 0 || p[0] > 0xF4 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (p[0] == 0xE0 && p[1] < 0xA0) return 0;   /* overlong */
    if (p[0] == 0xED && p[1] >= 0xA0) return 0;  /* surrogate */
    if (p[0] == 0xF0 && p[1] < 0x90) return 0;   /* overlong */
    if (p[0] == 0xF4 && p[1] >= 0x90) return 0;  /* > U+10FFFF */
    return len;
}

int ds_utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = ds_utf8_char_len((const unsigned char *)s + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* ---------------------------------------------------------------- reader */

static void arena_put(ds_text_arena *a, const void *p, size_t n) {
    if (a->n + n > a->cap) {
        a->cap = a->n + n > 2 * a->cap ? a->n + n + 4096 : 2 * a->cap;
        a->data = realloc(a->data, a->cap);
        if (!a->data) ds_die(DS_EXIT_FAIL, "out of memory reading JSON lines");
    }
    memcpy(a->data + a->n, p, n);
    a->n += n;
}

typedef struct cursor {
    const char *p, *begin, *end;
    char *why;
    size_t why_len;
} cursor;

static int fail(cursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(cursor *c, const char *fmt, ...) {
    int col = (int)(c->p - c->begin) + 1;
    int k = snprintf(c->why, c->why_len, "column %d: ", col);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why + k, c->why_len - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

static void skip_space(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r')) c->p++;
}

static int hex4(cursor *c, unsigned *out) {
    if (c->end - c->p < 4) return fail(c, "\\u needs 4 hex digits");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char h = c->p[i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return fail(c, "\\u needs 4 hex digits");
        v = v * 16 + (unsigned)d;
    }
    c->p += 4;
    *out = v;
    return 0;
}

static void put_utf8(ds_text_arena *a, unsigned cp) {
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = 0xC0 | cp >> 6; b[1] = 0x80 | (cp & 0x3F); n = 2; }
    else if (cp < 0x10000) { b[0] = 0xE0 | cp >> 12; b[1] = 0x80 | ((cp >> 6) & 0x3F); b[2] = 0x80 | (cp & 0x3F); n = 3; }
    else {
        b[0] = 0xF0 | cp >> 18; b[1] = 0x80 | ((cp >> 12) & 0x3F); b[2] = 0x80 | ((cp >> 6) & 0x3F);
        b[3] = 0x80 | (cp & 0x3F); n = 4;
    }
    arena_put(a, b, n);
}

/* A JSON string at c->p (at its opening quote), decoded into a with a terminating NUL; \u0000 only
 * when nul_allowed. */
static int parse_string(cursor *c, ds_text_arena *a, int nul_allowed) {
    if (c->p >= c->end || *c->p != '"') return fail(c, "expected a string");
    c->p++;
    for (;;) {
        if (c->p >= c->end) return fail(c, "unterminated string");
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') { c->p++; break; }
        if (ch < 0x20) return fail(c, "control character 0x%02x in a string (escape it)", ch);
        if (ch != '\\') {
            size_t k = ds_utf8_char_len((const unsigned char *)c->p, (size_t)(c->end - c->p));
            if (k == 0) return fail(c, "invalid UTF-8");
            arena_put(a, c->p, k);
            c->p += k;
            continue;
        }
        if (++c->p >= c->end) return fail(c, "unterminated string");
        char e = *c->p++, plain;
        switch (e) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(c, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(c, "lone low surrogate \\u%04X", cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
                    return fail(c, "high surrogate \\u%04X not followed by a low one", cp);
                c->p += 2;
                if (hex4(c, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(c, "high surrogate \\u%04X not followed by a low one", cp);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0 && !nul_allowed) return fail(c, "\\u0000 (NUL) is not allowed");
            put_utf8(a, cp);
            continue;
        }
        default:
            c->p--;
            return fail(c, "bad escape '\\%c'", e);
        }
        arena_put(a, &plain, 1);
    }
    arena_put(a, "", 1);
    return 0;
}

static int skip_digits(cursor *c) {
    const char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    return c->p > start ? 0 : fail(c, "expected a digit");
}

/* A JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int skip_number(cursor *c) {
    if (*c->p == '-') c->p++;
    if (c->p < c->end && *c->p == '0') c->p++;
    else if (skip_digits(c)) return -1;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (skip_digits(c)) return -1;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
        if (skip_digits(c)) return -1;
    }
    return 0;
}

/* A string checked (escapes, UTF-8) and passed over. */
static int skip_string(cursor *c, ds_text_arena *a) {
    size_t mark = a->n;
    int rc = parse_string(c, a, 1);
    a->n = mark;
    return rc;
}

enum { MAX_DEPTH = 256 };  /* of skipped arrays and objects: bounds the recursion */

/* Any JSON value at c->p, checked and passed over. */
static int skip_value(cursor *c, ds_text_arena *a, int depth) {
    skip_space(c);
    if (c->p >= c->end) return fail(c, "expected a value");
    static const char *const literals[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(literals[i]);
        if ((size_t)(c->end - c->p) >= n && memcmp(c->p, literals[i], n) == 0) { c->p += n; return 0; }
    }
    char open = *c->p;
    if (open == '"') return skip_string(c, a);
    if (open == '-' || (open >= '0' && open <= '9')) return skip_number(c);
    if (open != '[' && open != '{') return fail(c, "expected a value");
    if (depth >= MAX_DEPTH) return fail(c, "nested deeper than %d levels", MAX_DEPTH);
    char close = open == '[' ? ']' : '}';
    c->p++;
    skip_space(c);
    if (c->p < c->end && *c->p == close) { c->p++; return 0; }
    for (;;) {
        if (open == '{') {
            skip_space(c);
            if (skip_string(c, a)) return -1;
            skip_space(c);
            if (c->p >= c->end || *c->p != ':') return fail(c, "expected ':'");
            c->p++;
        }
        if (skip_value(c, a, depth + 1)) return -1;
        skip_space(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (c->p < c->end && *c->p == close) { c->p++; return 0; }
        return fail(c, "expected ',' or '%c'", close);
    }
}

/* "need "a" and "b"": the required keys, for the message about an empty object. */
static void list_required(char *buf, size_t len, int n_required, const char *const *keys) {
    size_t used = 0;
    buf[0] = 0;
    for (int k = 0; k < n_required && used < len; k++)
        used += snprintf(buf + used, len - used, "%s\"%s\"", k == 0 ? "" : k + 1 < n_required ? ", " : " and ",
                         keys[k]);
}

int ds_jsonl_parse_line(const char *line, size_t len, const ds_jsonl_keys *keys, ds_text_arena *a, int64_t *off,
                        size_t *lens, char *why, size_t why_len) {
    cursor cur = {line, line, line + len, why, why_len}, *c = &cur;
    int n_keys = keys->n;
    const char *const *names = keys->names;
    for (int k = 0; k < n_keys; k++) off[k] = -1;
    skip_space(c);
    if (c->p == c->end) return fail(c, "empty line (JSONL: one object per line)");
    if (*c->p != '{') return fail(c, "expected '{' (JSONL: one object per line)");
    c->p++;
    skip_space(c);
    if (c->p < c->end && *c->p == '}') {
        char need[256];
        list_required(need, sizeof need, keys->n_required, names);
        if (keys->n_required) return fail(c, "empty object; need %s", need);
        c->p++;
    } else {
        for (;;) {
            skip_space(c);
            const char *key_at = c->p;
            size_t mark = a->n;
            if (parse_string(c, a, 0)) return -1;
            const char *key = a->data + mark;
            int k = 0;
            while (k < n_keys && strcmp(key, names[k]) != 0) k++;
            if (k == n_keys && !keys->others_skipped) {
                char allowed[256];
                size_t used = 0;
                allowed[0] = 0;
                for (int i = 0; i < n_keys && used < sizeof allowed; i++)
                    used += snprintf(allowed + used, sizeof allowed - used, "%s%s", i ? ", " : "", names[i]);
                c->p = key_at;
                return fail(c, "unknown key \"%s\" (allowed: %s)", key, allowed);
            }
            a->n = mark;
            if (k < n_keys && off[k] >= 0) { c->p = key_at; return fail(c, "duplicate key \"%s\"", names[k]); }
            skip_space(c);
            if (c->p >= c->end || *c->p != ':') return fail(c, "expected ':'");
            c->p++;
            skip_space(c);
            if (k == n_keys) {
                if (skip_value(c, a, 0)) return -1;
            } else {
                if (c->p >= c->end || *c->p != '"') return fail(c, "\"%s\" must be a string", names[k]);
                off[k] = (int64_t)a->n;
                if (parse_string(c, a, keys->nul_allowed)) return -1;
                if (lens) lens[k] = a->n - (size_t)off[k] - 1;
            }
            skip_space(c);
            if (c->p < c->end && *c->p == ',') { c->p++; continue; }
            if (c->p < c->end && *c->p == '}') { c->p++; break; }
            return fail(c, "expected ',' or '}'");
        }
    }
    skip_space(c);
    if (c->p != c->end) return fail(c, "unexpected text after the object");
    for (int k = 0; k < keys->n_required; k++)
        if (off[k] < 0) return fail(c, "missing \"%s\"", names[k]);
    return 0;
}

void ds_jsonl_write_line(FILE *fp, int n_keys, const char *const *keys, const char *const *values,
                         const size_t *lens) {
    int first = 1;
    for (int k = 0; k < n_keys; k++) {
        if (!values[k]) continue;
        fputs(first ? "{" : ",", fp);
        first = 0;
        ds_json_string(fp, keys[k]);
        fputc(':', fp);
        ds_json_string_n(fp, values[k], lens[k]);
    }
    fputs(first ? "{}\n" : "}\n", fp);
}

