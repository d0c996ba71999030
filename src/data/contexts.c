/* Labelled contexts (format: include/dreamstate/states.h): a strict JSONL reader and writer, label
 * lookup, and `build-contexts`, which cuts labelled chunks out of text a Debian system has. */
#include "dreamstate/states.h"
#include "dreamstate/common.h"
#include "text_files.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- labels */

int ds_label_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= DS_LABEL_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._/+-", c)))
            return 0;
    }
    return 1;
}

int ds_label_lookup(const char *where, const char *name, int n, char *const *names) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    char known[1024] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof known - 80; i++)
        used += snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", names[i]);
    if (used >= sizeof known - 80) snprintf(known + used, sizeof known - used, ", ...");
    ds_die(DS_EXIT_BAD_INPUT, "%s%sunknown label '%s' (known: %s)", where ? where : "", where ? ": " : "", name,
           n ? known : "none");
}

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at p (shortest form, no surrogates, <= U+10FFFF), 0 if invalid. */
static size_t utf8_char_len(const unsigned char *p, size_t n) {
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

static int utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char_len((const unsigned char *)s + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* ---------------------------------------------------------------- JSONL reader */

typedef struct arena {
    char *data;
    size_t n, cap;
} arena;

static void arena_put(arena *a, const void *p, size_t n) {
    if (a->n + n > a->cap) {
        a->cap = a->n + n > 2 * a->cap ? a->n + n + 4096 : 2 * a->cap;
        a->data = realloc(a->data, a->cap);
        if (!a->data) ds_die(DS_EXIT_FAIL, "out of memory reading contexts");
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

static void put_utf8(arena *a, unsigned cp) {
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

/* A JSON string at c->p (at its opening quote), decoded into a with a terminating NUL. */
static int parse_string(cursor *c, arena *a) {
    if (c->p >= c->end || *c->p != '"') return fail(c, "expected a string");
    c->p++;
    for (;;) {
        if (c->p >= c->end) return fail(c, "unterminated string");
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') { c->p++; break; }
        if (ch < 0x20) return fail(c, "control character 0x%02x in a string (escape it)", ch);
        if (ch != '\\') {
            size_t k = utf8_char_len((const unsigned char *)c->p, (size_t)(c->end - c->p));
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
            if (cp == 0) return fail(c, "\\u0000 (NUL) is not allowed");
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

enum { KEY_LABEL, KEY_TEXT, KEY_DOC, N_KEYS };
static const char *const key_names[N_KEYS] = {"label", "text", "doc"};

/* One line: the object's strings go to a, their offsets to off[] (-1 = absent). */
static int parse_line(cursor *c, arena *a, int64_t off[N_KEYS]) {
    for (int k = 0; k < N_KEYS; k++) off[k] = -1;
    skip_space(c);
    if (c->p == c->end) return fail(c, "empty line (JSONL: one object per line)");
    if (*c->p != '{') return fail(c, "expected '{' (JSONL: one object per line)");
    c->p++;
    skip_space(c);
    if (c->p < c->end && *c->p == '}') return fail(c, "empty object; need \"label\" and \"text\"");
    for (;;) {
        skip_space(c);
        const char *key_at = c->p;
        size_t mark = a->n;
        if (parse_string(c, a)) return -1;
        const char *key = a->data + mark;
        int k = 0;
        while (k < N_KEYS && strcmp(key, key_names[k]) != 0) k++;
        if (k == N_KEYS) {
            c->p = key_at;
            return fail(c, "unknown key \"%s\" (allowed: label, text, doc)", key);
        }
        a->n = mark;
        if (off[k] >= 0) { c->p = key_at; return fail(c, "duplicate key \"%s\"", key_names[k]); }
        skip_space(c);
        if (c->p >= c->end || *c->p != ':') return fail(c, "expected ':'");
        c->p++;
        skip_space(c);
        if (c->p >= c->end || *c->p != '"') return fail(c, "\"%s\" must be a string", key_names[k]);
        off[k] = (int64_t)a->n;
        if (parse_string(c, a)) return -1;
        skip_space(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (c->p < c->end && *c->p == '}') { c->p++; break; }
        return fail(c, "expected ',' or '}'");
    }
    skip_space(c);
    if (c->p != c->end) return fail(c, "unexpected text after the object");
    if (off[KEY_LABEL] < 0) return fail(c, "missing \"label\"");
    if (off[KEY_TEXT] < 0) return fail(c, "missing \"text\"");
    const char *label = a->data + off[KEY_LABEL];
    if (!ds_label_valid(label))
        return fail(c, "label '%s' must be 1-%d characters of [A-Za-z0-9._/+-]", label, DS_LABEL_MAX - 1);
    if (a->data[off[KEY_TEXT]] == 0) return fail(c, "empty \"text\"");
    return 0;
}

static int compare_strings(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

ds_contexts *ds_contexts_load(const char *path, int n_labels, char *const *labels) {
    uint8_t *data;
    size_t len;
    char why[512];
    if (ds_read_input(path, &data, &len, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: %s", path, why);
    if (len == 0) ds_die(DS_EXIT_BAD_INPUT, "%s: no contexts (empty file)", path);
    arena a = {0};
    int64_t n = 0, cap = 0, (*offs)[N_KEYS] = NULL;
    size_t pos = 0;
    for (int64_t line = 1; pos < len; line++) {
        const char *begin = (const char *)data + pos;
        const char *nl = memchr(begin, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - begin) : len - pos;
        pos += line_len + (nl != NULL);
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            offs = realloc(offs, (size_t)cap * sizeof *offs);
            if (!offs) ds_die(DS_EXIT_FAIL, "out of memory reading contexts");
        }
        cursor c = {begin, begin, begin + line_len, why, sizeof why};
        if (parse_line(&c, &a, offs[n]) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s:%lld: %s", path, (long long)line, why);
        if (++n > INT32_MAX) ds_die(DS_EXIT_BAD_INPUT, "%s: more than %d contexts", path, INT32_MAX);
    }
    free(data);

    ds_contexts *ctx = calloc(1, sizeof *ctx);
    ctx->n = n;
    ctx->arena = a.data;
    ctx->items = calloc((size_t)n, sizeof *ctx->items);
    if (labels) {
        ctx->n_labels = n_labels;
        ctx->labels = calloc((size_t)n_labels, sizeof(char *));
        for (int i = 0; i < n_labels; i++) ctx->labels[i] = strdup(labels[i]);
    } else {  /* the sorted distinct labels */
        char **all = malloc((size_t)n * sizeof(char *));
        for (int64_t i = 0; i < n; i++) all[i] = a.data + offs[i][KEY_LABEL];
        qsort(all, (size_t)n, sizeof *all, compare_strings);
        ctx->labels = malloc((size_t)n * sizeof(char *));
        for (int64_t i = 0; i < n; i++)
            if (i == 0 || strcmp(all[i], all[i - 1]) != 0) ctx->labels[ctx->n_labels++] = strdup(all[i]);
        free(all);
    }
    for (int64_t i = 0; i < n; i++) {
        ds_context *it = &ctx->items[i];
        const char *label = a.data + offs[i][KEY_LABEL];
        if (labels) {
            char where[DS_PATH_MAX + 32];
            snprintf(where, sizeof where, "%s:%lld", path, (long long)i + 1);
            it->label = ds_label_lookup(where, label, ctx->n_labels, ctx->labels);
        } else {
            char **hit = bsearch(&label, ctx->labels, (size_t)ctx->n_labels, sizeof(char *), compare_strings);
            it->label = (int)(hit - ctx->labels);
        }
        it->text = a.data + offs[i][KEY_TEXT];
        it->len = strlen(it->text);
        it->doc = offs[i][KEY_DOC] >= 0 ? a.data + offs[i][KEY_DOC] : "";
    }
    free(offs);
    return ctx;
}

void ds_contexts_free(ds_contexts *c) {
    if (!c) return;
    for (int i = 0; i < c->n_labels; i++) free(c->labels[i]);
    free(c->labels);
    free(c->items);
    free(c->arena);
    free(c);
}

/* ---------------------------------------------------------------- JSONL writer */

struct ds_contexts_writer {
    ds_atomic_file af;
};

ds_contexts_writer *ds_contexts_writer_open(const char *path) {
    ds_contexts_writer *w = calloc(1, sizeof *w);
    if (ds_atomic_open(&w->af, path) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s: cannot create: %s", path, strerror(errno));
    return w;
}

void ds_contexts_writer_add(ds_contexts_writer *w, const char *label, const char *text, size_t len, const char *doc) {
    const char *why = !ds_label_valid(label) ? "label must be 1-63 characters of [A-Za-z0-9._/+-]"
                      : len == 0                        ? "empty text"
                      : memchr(text, 0, len)            ? "text contains a NUL byte"
                      : !utf8_valid(text, len)          ? "text is not valid UTF-8"
                      : doc && !utf8_valid(doc, strlen(doc)) ? "doc is not valid UTF-8"
                                                        : NULL;
    if (why) {
        ds_atomic_abort(&w->af);
        ds_die(DS_EXIT_BAD_INPUT, "%s: context with label '%s': %s", w->af.path, label, why);
    }
    FILE *fp = w->af.fp;
    fputs("{\"label\":", fp);
    ds_json_string_n(fp, label, strlen(label));
    if (doc) {
        fputs(",\"doc\":", fp);
        ds_json_string_n(fp, doc, strlen(doc));
    }
    fputs(",\"text\":", fp);
    ds_json_string_n(fp, text, len);
    fputs("}\n", fp);
}

void ds_contexts_writer_commit(ds_contexts_writer *w) {
    if (ferror(w->af.fp) || ds_atomic_commit(&w->af) != 0)
        ds_die(DS_EXIT_FAIL, "%s: write failed: %s", w->af.path, strerror(errno));
    free(w);
}

void ds_contexts_writer_abort(ds_contexts_writer *w) {
    ds_atomic_abort(&w->af);
    free(w);
}

/* ---------------------------------------------------------------- build-contexts: sources */

#define FORTUNES_DIR "/usr/share/games/fortunes"
/* Large fortune files of distinct character (each has 600-1250 entries). */
static const char *const fortune_categories[] = {"computers", "definitions", "people", "politics", "science",
                                                 "songs-poems"};
enum { N_FORTUNE_CATEGORIES = sizeof fortune_categories / sizeof *fortune_categories };

static int keep_h(const char *name) { return ds_has_suffix(name, ".h"); }
static int keep_py(const char *name) { return ds_has_suffix(name, ".py"); }
static int keep_gz(const char *name) { return ds_has_suffix(name, ".gz"); }

/* A script whose "#!" line runs sh, bash or dash (directly or through env). */
static int is_shell_script(const char *path) {
    char head[256];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, head, sizeof head - 1);
    close(fd);
    if (n < 3 || head[0] != '#' || head[1] != '!') return 0;
    head[n] = 0;
    head[strcspn(head, "\n")] = 0;
    char *cmd = head + 2 + strspn(head + 2, " \t");
    char *end = cmd + strcspn(cmd, " \t");
    char *base = end;
    while (base > cmd && base[-1] != '/') base--;
    if ((size_t)(end - base) == 3 && strncmp(base, "env", 3) == 0) {
        base = end + strspn(end, " \t");
        end = base + strcspn(base, " \t");
    }
    size_t k = (size_t)(end - base);
    return (k == 2 && !strncmp(base, "sh", 2)) || (k == 4 && !strncmp(base, "bash", 4)) ||
           (k == 4 && !strncmp(base, "dash", 4));
}

typedef struct source {
    const char *name;                  /* for --sources */
    const char *label;                 /* NULL: fortunes, one label per category */
    const char *dirs[3];               /* glob patterns of directories, listed without recursion */
    int (*keep)(const char *name);     /* by file name; NULL = all */
    int (*probe)(const char *path);    /* by content; NULL = all */
    const char *package;               /* what provides it on Debian */
} source;

static const source sources[] = {
    {"fortunes", NULL, {FORTUNES_DIR}, NULL, NULL, "fortunes"},
    {"c-headers", "c-header", {"/usr/include"}, keep_h, NULL, "libc6-dev"},
    {"python", "python", {"/usr/lib/python3.*"}, keep_py, NULL, "libpython3-stdlib"},
    {"shell", "shell", {"/usr/bin", "/usr/sbin", "/etc/init.d"}, NULL, is_shell_script, "(any: /usr/bin scripts)"},
    {"licenses", "license", {"/usr/share/common-licenses"}, NULL, NULL, "base-files"},
    {"man", "man", {"/usr/share/man/man1"}, keep_gz, NULL, "man pages (dpkg must not exclude /usr/share/man)"},
};
enum { N_SOURCES = sizeof sources / sizeof *sources };

/* ---------------------------------------------------------------- build-contexts: documents */

typedef struct doc {
    char *id;              /* file path, or "PATH#k" for the k-th fortune of a file */
    char *text;            /* fortunes: the entry; files: NULL until read */
    size_t len;
    uint64_t hash, order;  /* hash of id; seeded position in the order of use */
} doc;

typedef struct label_docs {
    char label[DS_LABEL_MAX];
    const source *src;
    doc *docs;
    size_t n, cap;
} label_docs;

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static void add_doc(label_docs *ld, const char *id, const char *text, size_t len) {
    if (ld->n == ld->cap) {
        ld->cap = ld->cap ? 2 * ld->cap : 256;
        ld->docs = realloc(ld->docs, ld->cap * sizeof *ld->docs);
        if (!ld->docs) ds_die(DS_EXIT_FAIL, "out of memory listing documents");
    }
    doc *d = &ld->docs[ld->n++];
    d->id = strdup(id);
    d->text = text ? memcpy(malloc(len + 1), text, len) : NULL;
    d->len = len;
    d->hash = fnv1a64(id);
}

/* Each '%'-line separated entry of a fortune file is one document. */
static void list_fortunes(label_docs *ld, const char *category) {
    char path[512], id[600], why[256];
    snprintf(path, sizeof path, "%s/%s", FORTUNES_DIR, category);
    uint8_t *data;
    size_t len;
    if (ds_read_input(path, &data, &len, why, sizeof why) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "build-contexts: source 'fortunes': %s: %s (install package fortunes)", path, why);
    size_t start = 0, line = 0;
    int k = 0;
    while (line < len) {
        const uint8_t *nl = memchr(data + line, '\n', len - line);
        size_t next = nl ? (size_t)(nl - data) + 1 : len;
        if (next - line == 2 && data[line] == '%') {
            snprintf(id, sizeof id, "%s#%d", path, k++);
            add_doc(ld, id, (const char *)data + start, line - start);
            start = next;
        }
        line = next;
    }
    snprintf(id, sizeof id, "%s#%d", path, k);
    add_doc(ld, id, (const char *)data + start, len - start);
    free(data);
}

static void list_files(label_docs *ld) {
    const source *s = ld->src;
    for (int i = 0; i < 3 && s->dirs[i]; i++) {
        glob_t g;
        if (glob(s->dirs[i], GLOB_ONLYDIR, NULL, &g) != 0) continue;
        for (size_t j = 0; j < g.gl_pathc; j++) {
            ds_path_list files = {0};
            ds_walk_dir(g.gl_pathv[j], 0, s->keep, &files);
            for (size_t f = 0; f < files.n; f++) add_doc(ld, files.items[f], NULL, 0);
            ds_path_list_free(&files);
        }
        globfree(&g);
    }
}

/* ---------------------------------------------------------------- build-contexts: chunks */

typedef struct chunk_options {
    size_t min_bytes, max_bytes;
    int per_doc;
} chunk_options;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Cuts text into consecutive chunks of at most max_bytes, ending after a newline when there is one
 * past min_bytes, else at a UTF-8 character boundary; leading and trailing white space is dropped and
 * chunks shorter than min_bytes are skipped. Returns the count; (start, len) pairs go to out. */
static size_t cut_chunks(const char *text, size_t len, const chunk_options *o, size_t (*out)[2], size_t cap) {
    size_t n = 0, pos = 0;
    while (n < cap) {
        while (pos < len && is_space(text[pos])) pos++;
        if (pos >= len) break;
        size_t end = pos + o->max_bytes < len ? pos + o->max_bytes : len;
        if (end < len) {
            size_t cut = end;
            while (cut > pos + o->min_bytes && text[cut - 1] != '\n') cut--;
            if (text[cut - 1] == '\n' && cut > pos + o->min_bytes) {
                end = cut;
            } else {
                size_t b = end;
                while (b > pos && ((unsigned char)text[b] & 0xC0) == 0x80) b--;
                if (b > pos) end = b;  /* else not UTF-8 at all: keep the hard cut */
            }
        }
        size_t stop = end;
        while (stop > pos && is_space(text[stop - 1])) stop--;
        if (stop - pos >= o->min_bytes) { out[n][0] = pos; out[n][1] = stop - pos; n++; }
        pos = end;
    }
    return n;
}

/* Invalid UTF-8 bytes become '?', so that every chunk can be written as JSON and keeps its length. */
static void make_utf8(char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char_len((const unsigned char *)s + i, n - i);
        if (k == 0) { s[i] = '?'; k = 1; }
        i += k;
    }
}

/* ---------------------------------------------------------------- build-contexts: selection */

#define ORDER_STREAM 0x4354584f  /* "CTXO": the order in which documents are used */
#define SPLIT_STREAM 0x43545853  /* "CTXS": train / held-out */

enum { TRAIN, HELD };

typedef struct picked {
    int split;
    char *doc_id;
    char *text;
    size_t len;
} picked;

typedef struct selection {
    picked *items;
    size_t n, cap;
    int count[2];
    int docs[2];
    int unreadable;
} selection;

static int compare_doc_order(const void *x, const void *y) {
    const doc *a = x, *b = y;
    if (a->order != b->order) return a->order < b->order ? -1 : 1;
    return strcmp(a->id, b->id);
}

/* Walks the label's documents in a seeded order that depends only on each document's id. Every
 * document belongs to one split (by a seeded hash of its id), and gives at most per_doc chunks, spread
 * evenly over it, until both splits have their quota. */
static void select_label(label_docs *ld, uint64_t seed, double held_fraction, const int quota[2],
                         const chunk_options *co, selection *sel) {
    for (size_t i = 0; i < ld->n; i++) ld->docs[i].order = ds_rng_u64(seed, ORDER_STREAM, ld->docs[i].hash);
    qsort(ld->docs, ld->n, sizeof *ld->docs, compare_doc_order);
    size_t cap = 1 << 16;
    size_t (*chunks)[2] = malloc(cap * sizeof *chunks);
    /* A label with few documents (licences) may take more chunks of each to fill its quota. */
    size_t want = (size_t)quota[TRAIN] + (size_t)quota[HELD];
    int per_doc = ld->n && (want + ld->n - 1) / ld->n > (size_t)co->per_doc ? (int)((want + ld->n - 1) / ld->n) : co->per_doc;
    for (size_t i = 0; i < ld->n && (sel->count[TRAIN] < quota[TRAIN] || sel->count[HELD] < quota[HELD]); i++) {
        doc *d = &ld->docs[i];
        int split = held_fraction > 0 && ds_rng_uniform(seed, SPLIT_STREAM, d->hash) < held_fraction ? HELD : TRAIN;
        if (sel->count[split] >= quota[split]) continue;
        if (!d->text) {
            if (ld->src->probe && !ld->src->probe(d->id)) continue;
            uint8_t *data;
            char why[256];
            if (ds_read_input(d->id, &data, &d->len, why, sizeof why) != 0) { sel->unreadable++; continue; }
            d->text = (char *)data;
        }
        size_t n = memchr(d->text, 0, d->len) ? 0 : cut_chunks(d->text, d->len, co, chunks, cap);  /* NUL: binary */
        int used = 0;
        for (int k = 0; k < per_doc && (size_t)k < n && sel->count[split] < quota[split]; k++) {
            size_t c = n <= (size_t)per_doc ? (size_t)k : (size_t)k * n / (size_t)per_doc;
            if (sel->n == sel->cap) {
                sel->cap = sel->cap ? 2 * sel->cap : 256;
                sel->items = realloc(sel->items, sel->cap * sizeof *sel->items);
                if (!sel->items) ds_die(DS_EXIT_FAIL, "out of memory selecting contexts");
            }
            picked *p = &sel->items[sel->n++];
            p->split = split;
            p->doc_id = d->id;
            p->len = chunks[c][1];
            p->text = memcpy(malloc(p->len), d->text + chunks[c][0], p->len);
            make_utf8(p->text, p->len);
            sel->count[split]++;
            used = 1;
        }
        sel->docs[split] += used;
        free(d->text);  /* each document is visited once */
        d->text = NULL;
    }
    free(chunks);
}

/* ---------------------------------------------------------------- build-contexts: command */

static const char build_usage[] =
    "usage: dreamstate build-contexts --out FILE.jsonl [options]\n"
    "Labelled contexts (JSONL, format: include/dreamstate/states.h) cut from text this system has:\n"
    "  fortunes   fortunes/<category>: computers, definitions, people, politics, science, songs-poems\n"
    "             (" FORTUNES_DIR "; each entry is a document)\n"
    "  c-headers  c-header: /usr/include/*.h          python    python: /usr/lib/python3.*/*.py\n"
    "  shell      shell: sh/bash/dash scripts in /usr/bin, /usr/sbin, /etc/init.d\n"
    "  licenses   license: /usr/share/common-licenses/*\n"
    "  man        man: /usr/share/man/man1/*.gz (roff source)\n"
    "Each document gives up to --chunks-per-doc chunks spread over it; each chunk is --min-bytes to\n"
    "--max-bytes long and ends at a line end where possible. Documents are used in a seeded order, and\n"
    "with --held-out each document goes wholly to one file (seeded hash of its path).\n"
    "  --out FILE             train contexts (required)\n"
    "  --held-out FILE        held-out contexts (default: none, everything goes to --out)\n"
    "  --held-out-fraction F  share of documents (and of each label's contexts) held out, 0 < F < 1 (0.2)\n"
    "  --max-per-label N      contexts per label over both files (default 100)\n"
    "  --chunks-per-doc K     at most K chunks of one document (default 4; a label with D < N/K\n"
    "                         documents takes up to ceil(N/D) of each)\n"
    "  --min-bytes N          (default 64)\n"
    "  --max-bytes N          (default 512)\n"
    "  --sources LIST         comma-separated (default fortunes,c-headers,python,shell,licenses,man)\n"
    "  --seed N               (default 1234)\n";

static const char *option_value(int argc, char **argv, int *i, const char *name) {
    size_t k = strlen(name);
    if (strncmp(argv[*i], name, k) != 0) return NULL;
    if (argv[*i][k] == '=') return argv[*i] + k + 1;
    if (argv[*i][k] != 0) return NULL;
    if (*i + 1 >= argc) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: %s needs a value (see --help)", name);
    return argv[++*i];
}

static long long parse_count(const char *opt, const char *v, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        ds_die(DS_EXIT_BAD_INPUT, "build-contexts: %s '%s' must be an integer in [%lld, %lld]", opt, v, lo, hi);
    return x;
}

int ds_build_contexts_main(int argc, char **argv) {
    const char *out = NULL, *held_out = NULL, *source_list = "fortunes,c-headers,python,shell,licenses,man", *v;
    double fraction = 0.2;
    int fraction_given = 0, max_per_label = 100;
    chunk_options co = {64, 512, 4};
    uint64_t seed = 1234;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { fputs(build_usage, stdout); return 0; }
        if ((v = option_value(argc, argv, &i, "--out"))) out = v;
        else if ((v = option_value(argc, argv, &i, "--held-out-fraction"))) {
            char *end;
            fraction = strtod(v, &end);
            fraction_given = 1;
            if (end == v || *end || !(fraction > 0 && fraction < 1))
                ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --held-out-fraction '%s' must be a number in (0, 1)", v);
        } else if ((v = option_value(argc, argv, &i, "--held-out"))) held_out = v;
        else if ((v = option_value(argc, argv, &i, "--max-per-label"))) max_per_label = (int)parse_count("--max-per-label", v, 1, 1 << 24);
        else if ((v = option_value(argc, argv, &i, "--chunks-per-doc"))) co.per_doc = (int)parse_count("--chunks-per-doc", v, 1, 1 << 16);
        else if ((v = option_value(argc, argv, &i, "--min-bytes"))) co.min_bytes = (size_t)parse_count("--min-bytes", v, 1, 1 << 20);
        else if ((v = option_value(argc, argv, &i, "--max-bytes"))) co.max_bytes = (size_t)parse_count("--max-bytes", v, 1, 1 << 20);
        else if ((v = option_value(argc, argv, &i, "--sources"))) source_list = v;
        else if ((v = option_value(argc, argv, &i, "--seed"))) seed = (uint64_t)parse_count("--seed", v, 0, INT64_MAX);
        else ds_die(DS_EXIT_BAD_INPUT, "build-contexts: unknown argument '%s' (see --help)", argv[i]);
    }
    if (!out) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --out FILE is required (see --help)");
    if (co.max_bytes < co.min_bytes)
        ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --max-bytes %zu is below --min-bytes %zu", co.max_bytes, co.min_bytes);
    if (fraction_given && !held_out) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --held-out-fraction needs --held-out FILE");
    if (!held_out) fraction = 0;
    int quota[2] = {max_per_label - (int)(max_per_label * fraction + 0.5), (int)(max_per_label * fraction + 0.5)};

    /* The labels, in --sources order. */
    label_docs *labels = calloc(N_SOURCES + N_FORTUNE_CATEGORIES, sizeof *labels);
    int n_labels = 0, used[N_SOURCES] = {0};
    char *list = strdup(source_list), *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int s = 0;
        while (s < N_SOURCES && strcmp(sources[s].name, name) != 0) s++;
        if (s == N_SOURCES)
            ds_die(DS_EXIT_BAD_INPUT, "build-contexts: unknown source '%s' (known: fortunes, c-headers, python, shell, "
                   "licenses, man)", name);
        if (used[s]++) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: source '%s' given twice", name);
        if (!sources[s].label) {
            for (int c = 0; c < N_FORTUNE_CATEGORIES; c++) {
                label_docs *ld = &labels[n_labels++];
                ld->src = &sources[s];
                snprintf(ld->label, sizeof ld->label, "fortunes/%s", fortune_categories[c]);
                list_fortunes(ld, fortune_categories[c]);
            }
        } else {
            label_docs *ld = &labels[n_labels++];
            ld->src = &sources[s];
            snprintf(ld->label, sizeof ld->label, "%s", sources[s].label);
            list_files(ld);
            if (ld->n == 0)
                ds_die(DS_EXIT_BAD_INPUT, "build-contexts: source '%s': no files in %s (provided by %s)", name,
                       sources[s].dirs[0], sources[s].package);
        }
    }
    free(list);
    if (n_labels == 0) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --sources is empty");

    selection *sel = calloc((size_t)n_labels, sizeof *sel);
    for (int l = 0; l < n_labels; l++) {
        select_label(&labels[l], seed, fraction, quota, &co, &sel[l]);
        if (sel[l].count[TRAIN] == 0)
            ds_die(DS_EXIT_BAD_INPUT, "build-contexts: label '%s': no chunk of at least %zu bytes in %zu documents",
                   labels[l].label, co.min_bytes, labels[l].n);
    }

    ds_contexts_writer *w[2] = {ds_contexts_writer_open(out), held_out ? ds_contexts_writer_open(held_out) : NULL};
    for (int l = 0; l < n_labels; l++)
        for (size_t i = 0; i < sel[l].n; i++) {
            picked *p = &sel[l].items[i];
            ds_contexts_writer_add(w[p->split], labels[l].label, p->text, p->len, p->doc_id);
        }
    ds_contexts_writer_commit(w[TRAIN]);
    if (w[HELD]) ds_contexts_writer_commit(w[HELD]);

    printf("build-contexts: %d labels, seed %llu, chunks %zu-%zu bytes, <= %d per document\n", n_labels,
           (unsigned long long)seed, co.min_bytes, co.max_bytes, co.per_doc);
    printf("  %-22s %8s %8s %10s %10s\n", "label", "train", "held-out", "docs", "docs used");
    int total[2] = {0, 0};
    for (int l = 0; l < n_labels; l++) {
        printf("  %-22s %8d %8d %10zu %10d%s\n", labels[l].label, sel[l].count[TRAIN], sel[l].count[HELD],
               labels[l].n, sel[l].docs[TRAIN] + sel[l].docs[HELD],
               sel[l].count[TRAIN] < quota[TRAIN] || sel[l].count[HELD] < quota[HELD] ? "  (short of its quota)" : "");
        if (sel[l].unreadable) printf("  %-22s %d unreadable documents skipped\n", "", sel[l].unreadable);
        total[TRAIN] += sel[l].count[TRAIN];
        total[HELD] += sel[l].count[HELD];
    }
    printf("  %-22s %8d %8d\n", "total", total[TRAIN], total[HELD]);
    printf("  -> %s%s%s\n", out, held_out ? ", " : "", held_out ? held_out : "");

    for (int l = 0; l < n_labels; l++) {
        for (size_t i = 0; i < sel[l].n; i++) free(sel[l].items[i].text);
        free(sel[l].items);
        for (size_t i = 0; i < labels[l].n; i++) { free(labels[l].docs[i].id); free(labels[l].docs[i].text); }
        free(labels[l].docs);
    }
    free(sel);
    free(labels);
    return 0;
}
