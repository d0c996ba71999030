/* Tokenizers: the byte tokenizer and the RWKV World tokenizer (greedy longest match over a byte trie).
 *
 * The World trie is built once from the vocab sorted by bytes: node k's children are the contiguous
 * nodes [first_child, first_child + n_children), ordered by their edge byte, so a lookup is a binary
 * search in a small sorted array and the whole trie is three flat arrays. */
#define _GNU_SOURCE  /* qsort_r, memrchr */
#include "dreamstate/data.h"
#include "dreamstate/common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { TOK_BYTE, TOK_WORLD };
#define WORLD_VOCAB_SIZE 65536

/* The World vocabulary, embedded at build time (so the binary needs no file at run time, whatever its
 * working directory): the assembler copies src/data/BUILTIN_VOCAB byte for byte, so its fingerprint
 * equals that of the same file given as data.vocab_file. The path is relative to the repository root,
 * where make runs the compiler; the Makefile lists the file as a prerequisite of this object. */
#define BUILTIN_VOCAB "rwkv_vocab_v20230424.txt"
extern const char builtin_vocab[], builtin_vocab_end[];
__asm__(".pushsection .rodata\n"
        ".balign 64\n"
        "builtin_vocab:\n"
        ".incbin \"src/data/" BUILTIN_VOCAB "\"\n"
        "builtin_vocab_end:\n"
        ".popsection\n");

typedef struct trie_node {
    uint32_t first_child;
    uint16_t n_children;
    uint8_t byte;      /* edge byte from the parent */
    int32_t token;     /* id ending here, or -1 */
} trie_node;

struct ds_tokenizer {
    int kind;
    uint32_t vocab_size, fingerprint;
    char name[DS_PATH_MAX + 64];  /* for messages: ds_tokenizer_name */
    uint8_t *blob;          /* all token bytes */
    uint32_t *offset;       /* [vocab_size] start of each id's bytes in blob */
    uint16_t *length;       /* [vocab_size] 0 for unused ids */
    trie_node *nodes;       /* world only; node 0 is the root */
};

/* ---------------------------------------------------------------- vocab parsing */

typedef struct vocab_entry {
    int32_t id;
    int line;
    uint32_t offset, length;  /* bytes in the blob */
} vocab_entry;

typedef struct vocab_parser {
    const char *path;
    int line;
} vocab_parser;

static _Noreturn void vocab_die(const vocab_parser *p, const char *reason) {
    ds_die(DS_EXIT_BAD_INPUT, "%s:%d: %s", p->path, p->line, reason);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static uint32_t parse_hex(const vocab_parser *p, const char *s, const char *end, int digits) {
    if (end - s < digits) vocab_die(p, "truncated escape sequence in literal");
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int h = hex_value(s[i]);
        if (h < 0) vocab_die(p, "bad hex digit in escape sequence");
        v = v * 16 + (uint32_t)h;
    }
    return v;
}

static size_t put_utf8(const vocab_parser *p, uint32_t cp, uint8_t *out) {
    if (cp >= 0xD800 && cp <= 0xDFFF) vocab_die(p, "surrogate code point in str literal");
    if (cp < 0x80) { out[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { out[0] = 0xC0 | cp >> 6; out[1] = 0x80 | (cp & 63); return 2; }
    if (cp < 0x10000) {
        out[0] = 0xE0 | cp >> 12; out[1] = 0x80 | (cp >> 6 & 63); out[2] = 0x80 | (cp & 63);
        return 3;
    }
    if (cp > 0x10FFFF) vocab_die(p, "code point above U+10FFFF in str literal");
    out[0] = 0xF0 | cp >> 18; out[1] = 0x80 | (cp >> 12 & 63);
    out[2] = 0x80 | (cp >> 6 & 63); out[3] = 0x80 | (cp & 63);
    return 4;
}

/* A Python str literal ('...' or "...", meaning its UTF-8 encoding) or bytes literal (b'...'),
 * limited to the escapes Python's repr() emits. Output is never longer than the literal. */
static size_t parse_literal(const vocab_parser *p, const char *s, const char *end, uint8_t *out) {
    int is_bytes = s < end && *s == 'b';
    s += is_bytes;
    if (end - s < 2 || (*s != '\'' && *s != '"') || end[-1] != *s)
        vocab_die(p, "token is not a quoted Python str or bytes literal");
    char quote = *s++;
    end--;
    size_t n = 0;
    while (s < end) {
        char c = *s++;
        if (c == quote) vocab_die(p, "unescaped quote inside literal");
        if ((unsigned char)c >= 0x80 && is_bytes) vocab_die(p, "non-ASCII character in bytes literal");
        if (c != '\\') { out[n++] = (uint8_t)c; continue; }
        if (s == end) vocab_die(p, "literal ends with a backslash");
        char e = *s++;
        switch (e) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case '\\': case '\'': case '"': out[n++] = (uint8_t)e; break;
        case 'x': {
            uint32_t v = parse_hex(p, s, end, 2);
            s += 2;
            if (is_bytes) out[n++] = (uint8_t)v;
            else n += put_utf8(p, v, out + n);  /* '\x80' in a str is U+0080: two bytes */
            break;
        }
        case 'u': case 'U': {
            if (is_bytes) vocab_die(p, "\\u escape in bytes literal");
            int digits = e == 'u' ? 4 : 8;
            uint32_t v = parse_hex(p, s, end, digits);
            s += digits;
            n += put_utf8(p, v, out + n);
            break;
        }
        default: vocab_die(p, "unsupported escape sequence in literal");
        }
    }
    return n;
}

/* Parses a non-negative decimal field; -1 if it is empty, not all digits, or too large. */
static long parse_decimal(const char *s, const char *end) {
    if (s == end || end - s > 9) return -1;
    long v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* Byte-wise order; a prefix sorts before its extensions. */
static int compare_entries(const void *a, const void *b, void *blob) {
    const vocab_entry *x = a, *y = b;
    uint32_t n = x->length < y->length ? x->length : y->length;
    int c = memcmp((uint8_t *)blob + x->offset, (uint8_t *)blob + y->offset, n);
    if (c) return c;
    return (x->length > y->length) - (x->length < y->length);
}

/* ---------------------------------------------------------------- trie */

/* Nodes in breadth-first order; each node's children are consecutive and sorted by edge byte.
 * A node covers the sorted entries [lo, hi) that share its prefix of length `depth`; the entry
 * equal to the prefix, if any, sorts first. Node count <= total token bytes + 1. */
static trie_node *build_trie(const vocab_entry *sorted, size_t n_entries, const uint8_t *blob,
                             size_t total_bytes) {
    size_t cap = total_bytes + 1;
    trie_node *nodes = ds_alloc(cap * sizeof *nodes);
    uint32_t *lo = ds_alloc(cap * sizeof *lo), *hi = ds_alloc(cap * sizeof *hi);
    uint16_t *depth = ds_alloc(cap * sizeof *depth);
    size_t n_nodes = 1;
    nodes[0].token = -1;
    lo[0] = 0; hi[0] = (uint32_t)n_entries; depth[0] = 0;
    for (size_t k = 0; k < n_nodes; k++) {
        uint32_t a = lo[k], b = hi[k], d = depth[k];
        nodes[k].token = -1;
        if (a < b && sorted[a].length == d) nodes[k].token = sorted[a++].id;
        nodes[k].first_child = (uint32_t)n_nodes;
        while (a < b) {
            uint8_t byte = blob[sorted[a].offset + d];
            uint32_t group_end = a + 1;
            while (group_end < b && blob[sorted[group_end].offset + d] == byte) group_end++;
            nodes[n_nodes].byte = byte;
            lo[n_nodes] = a; hi[n_nodes] = group_end; depth[n_nodes] = (uint16_t)(d + 1);
            n_nodes++;
            nodes[k].n_children++;
            a = group_end;
        }
    }
    ds_free(lo); ds_free(hi); ds_free(depth);
    return nodes;
}

static inline const trie_node *trie_child(const trie_node *nodes, const trie_node *node, uint8_t byte) {
    uint32_t a = node->first_child, b = a + node->n_children;
    while (a < b) {
        uint32_t m = (a + b) / 2;
        if (nodes[m].byte < byte) a = m + 1;
        else b = m;
    }
    return a < node->first_child + node->n_children && nodes[a].byte == byte ? &nodes[a] : NULL;
}

/* ---------------------------------------------------------------- loading */

static char *read_whole_file(const char *path, size_t *len) {
    char why[256];
    FILE *f = ds_fopen_input(path, why, sizeof why);
    if (!f) ds_die(DS_EXIT_BAD_INPUT, "%s: vocab file: %s", path, why);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, (cap *= 2) + 1);
    }
    if (!buf) ds_die(DS_EXIT_FAIL, "out of memory reading %s", path);
    if (ferror(f)) ds_die(DS_EXIT_BAD_INPUT, "%s: read error", path);
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Parses a vocab file's text; `path` names it in error messages. */
static void parse_world(ds_tokenizer *tok, const char *path, const char *text, size_t file_len) {
    tok->fingerprint = ds_crc32c(0, text, file_len);
    if (tok->fingerprint == 0) tok->fingerprint = 1;  /* 0 means "byte tokenizer" */
    tok->vocab_size = WORLD_VOCAB_SIZE;
    tok->blob = ds_alloc(file_len + 1);
    tok->offset = ds_alloc(WORLD_VOCAB_SIZE * sizeof *tok->offset);
    tok->length = ds_alloc(WORLD_VOCAB_SIZE * sizeof *tok->length);
    int *line_of_id = ds_alloc(WORLD_VOCAB_SIZE * sizeof *line_of_id);
    size_t cap = 1 << 16, n_entries = 0, blob_len = 0;
    vocab_entry *entries = malloc(cap * sizeof *entries);

    vocab_parser p = {path, 0};
    char reason[160];
    for (const char *line = text; line < text + file_len;) {
        const char *end = memchr(line, '\n', text + file_len - line);
        const char *next = end ? end + 1 : text + file_len;
        if (!end) end = text + file_len;
        if (end > line && end[-1] == '\r') end--;
        p.line++;
        const char *first_space = memchr(line, ' ', end - line);
        const char *last_space = memrchr(line, ' ', end - line);
        if (!first_space || last_space == first_space)
            vocab_die(&p, "expected \"<id> <python literal> <byte length>\"");
        long id = parse_decimal(line, first_space);
        long declared = parse_decimal(last_space + 1, end);
        if (id < 1 || id >= WORLD_VOCAB_SIZE) vocab_die(&p, "id must be a number in 1..65535 (0 is <|endoftext|>)");
        if (declared < 0) vocab_die(&p, "byte length field is not a number");
        if (line_of_id[id]) {
            snprintf(reason, sizeof reason, "duplicate id %ld (first on line %d)", id, line_of_id[id]);
            vocab_die(&p, reason);
        }
        size_t n = parse_literal(&p, first_space + 1, last_space, tok->blob + blob_len);
        if (n == 0) vocab_die(&p, "empty token");
        if (n > UINT16_MAX) vocab_die(&p, "token longer than 65535 bytes");
        if ((long)n != declared) {
            snprintf(reason, sizeof reason, "literal encodes to %zu bytes but the line says %ld", n, declared);
            vocab_die(&p, reason);
        }
        if (n_entries == cap) entries = realloc(entries, (cap *= 2) * sizeof *entries);
        if (!entries) ds_die(DS_EXIT_FAIL, "out of memory parsing %s", path);
        entries[n_entries++] = (vocab_entry){(int32_t)id, p.line, (uint32_t)blob_len, (uint32_t)n};
        line_of_id[id] = p.line;
        tok->offset[id] = (uint32_t)blob_len;
        tok->length[id] = (uint16_t)n;
        blob_len += n;
        line = next;
    }

    qsort_r(entries, n_entries, sizeof *entries, compare_entries, tok->blob);
    for (size_t i = 1; i < n_entries; i++) {
        if (compare_entries(&entries[i - 1], &entries[i], tok->blob) == 0) {
            p.line = entries[i - 1].line > entries[i].line ? entries[i - 1].line : entries[i].line;
            snprintf(reason, sizeof reason, "token bytes duplicate those of id %d",
                     entries[i - 1].line < entries[i].line ? entries[i - 1].id : entries[i].id);
            vocab_die(&p, reason);
        }
    }
    tok->nodes = build_trie(entries, n_entries, tok->blob, blob_len);
    /* Greedy matching needs every single byte to be a token, else some inputs have no encoding. */
    const trie_node *root = &tok->nodes[0];
    for (int b = 0; b < 256; b++) {
        const trie_node *c = trie_child(tok->nodes, root, (uint8_t)b);
        if (!c || c->token < 0)
            ds_die(DS_EXIT_BAD_INPUT, "%s: no token for the single byte 0x%02x, so not every input is encodable", path,
                   b);
    }
    free(entries);
    ds_free(line_of_id);
}

ds_tokenizer *ds_tokenizer_open(const char *kind, const char *vocab_file) {
    ds_tokenizer *tok = ds_alloc(sizeof *tok);
    if (strcmp(kind, "byte") == 0) {
        tok->kind = TOK_BYTE;
        tok->vocab_size = 256;
        tok->blob = ds_alloc(256);
        tok->offset = ds_alloc(256 * sizeof *tok->offset);
        tok->length = ds_alloc(256 * sizeof *tok->length);
        for (int b = 0; b < 256; b++) { tok->blob[b] = (uint8_t)b; tok->offset[b] = b; tok->length[b] = 1; }
        ds_tokenizer_fingerprint_name(0, tok->name, sizeof tok->name);
    } else if (strcmp(kind, "world") == 0) {
        tok->kind = TOK_WORLD;
        if (vocab_file && *vocab_file) {
            size_t len;
            char *text = read_whole_file(vocab_file, &len);
            parse_world(tok, vocab_file, text, len);
            free(text);
            snprintf(tok->name, sizeof tok->name, "world (vocabulary %s, fingerprint %08x)", vocab_file,
                     tok->fingerprint);
        } else {
            parse_world(tok, "built-in " BUILTIN_VOCAB, builtin_vocab, (size_t)(builtin_vocab_end - builtin_vocab));
            ds_tokenizer_fingerprint_name(tok->fingerprint, tok->name, sizeof tok->name);
        }
    } else {
        ds_die(DS_EXIT_BAD_INPUT, "unknown tokenizer '%s' (expected byte or world)", kind);
    }
    return tok;
}

void ds_tokenizer_free(ds_tokenizer *tok) {
    if (!tok) return;
    ds_free(tok->blob); ds_free(tok->offset); ds_free(tok->length); ds_free(tok->nodes);
    ds_free(tok);
}

uint32_t ds_tokenizer_vocab_size(const ds_tokenizer *tok) { return tok->vocab_size; }
uint32_t ds_tokenizer_fingerprint(const ds_tokenizer *tok) { return tok->fingerprint; }
const char *ds_tokenizer_name(const ds_tokenizer *tok) { return tok->name; }

void ds_tokenizer_fingerprint_name(uint32_t fingerprint, char *buf, size_t len) {
    static uint32_t builtin;  /* computed as parse_world does */
    if (!builtin) {
        builtin = ds_crc32c(0, builtin_vocab, (size_t)(builtin_vocab_end - builtin_vocab));
        if (builtin == 0) builtin = 1;
    }
    if (fingerprint == 0) snprintf(buf, len, "byte");
    else if (fingerprint == builtin) snprintf(buf, len, "world (built-in %s)", BUILTIN_VOCAB);
    else snprintf(buf, len, "a World vocabulary with fingerprint %08x", fingerprint);
}

/* ---------------------------------------------------------------- encode / decode */

size_t ds_tokenizer_encode(const ds_tokenizer *tok, const void *bytes, size_t n, int32_t *ids) {
    const uint8_t *s = bytes;
    if (tok->kind == TOK_BYTE) {
        for (size_t i = 0; i < n; i++) ids[i] = s[i];
        return n;
    }
    const trie_node *nodes = tok->nodes;
    size_t n_ids = 0, pos = 0;
    while (pos < n) {
        const trie_node *node = nodes;
        int32_t best = -1;
        size_t best_len = 0;
        for (size_t i = pos; i < n; i++) {
            node = trie_child(nodes, node, s[i]);
            if (!node) break;
            if (node->token >= 0) { best = node->token; best_len = i - pos + 1; }
        }
        ids[n_ids++] = best;  /* every single byte is a token (checked at load), so best >= 0 */
        pos += best_len;
    }
    return n_ids;
}

const uint8_t *ds_tokenizer_token(const ds_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || (uint32_t)id >= tok->vocab_size)
        ds_die(DS_EXIT_FAIL, "token id %d outside the vocabulary [0, %u)", id, tok->vocab_size);
    *len = tok->length[id];
    return tok->blob + tok->offset[id];
}

size_t ds_tokenizer_decode(const ds_tokenizer *tok, const int32_t *ids, size_t n, void *out, size_t cap) {
    uint8_t *o = out;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *b = ds_tokenizer_token(tok, ids[i], &len);
        if (total < cap) memcpy(o + total, b, len < cap - total ? len : cap - total);
        total += len;
    }
    return total;
}
