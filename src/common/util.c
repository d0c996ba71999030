#define _GNU_SOURCE  /* sched_getaffinity, CPU_COUNT */
#include "dreamstate/common.h"
#include <sched.h>

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int process_rank, process_ranks = 1;

void ds_set_rank(int rank, int ranks) {
    process_rank = rank;
    process_ranks = ranks;
}

static ds_die_handler die_handler;

void ds_set_die_handler(ds_die_handler handler) { die_handler = handler; }

/* A message quotes what it refuses (a tensor name, a YAML key, a label), and that may hold a line
 * break or a terminal escape: control characters are shown as \n, \r, \t or \xNN, so that the
 * message stays one line. */
static void show_controls(const char *text, char *out, size_t len) {
    static const char named[] = {['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)text; *c && n + 5 < len; c++) {
        if (*c >= 0x20 && *c != 0x7f) out[n++] = (char)*c;
        else if (*c < sizeof named && named[*c]) n += (size_t)sprintf(out + n, "\\%c", named[*c]);
        else n += (size_t)sprintf(out + n, "\\x%02x", *c);
    }
    out[n] = 0;
}

static void __attribute__((noreturn)) die(int code, const char *fmt, va_list ap) {
    /* One write of the whole line, so that lines of ranks dying at once do not interleave. */
    char message[8192], line[8192];
    int n = process_ranks > 1 ? snprintf(line, sizeof line, "dreamstate[rank %d]: ", process_rank)
                              : snprintf(line, sizeof line, "dreamstate: ");
    vsnprintf(message, sizeof message, fmt, ap);
    show_controls(message, line + n, sizeof line - (size_t)n - 1);
    if (die_handler) die_handler(code, line);
    strcat(line, "\n");
    fputs(line, stderr);
    fflush(stderr);
    exit(code);
}

void ds_die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    die(code, fmt, ap);
}

void ds_die_replicated(int code, const char *fmt, ...) {
    if (process_rank != 0) {
        if (die_handler) die_handler(code, NULL);
        exit(code);
    }
    va_list ap;
    va_start(ap, fmt);
    die(code, fmt, ap);
}

void ds_log(const char *fmt, ...) {
    if (process_rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Large arrays (weights, gradients, moments, activations) are mappings of their own: the kernel hands
 * them out zero-filled as they are first touched, so they are written once, not zeroed twice, and on
 * 2 MiB pages where it gives transparent huge pages on request (its "madvise" mode): 512 times fewer
 * page faults (which a virtual machine can make very slow) and TLB misses. ds_free finds them here.
 * Under AddressSanitizer (the fuzz build) every array comes from the allocator instead: its red zones
 * catch overflows that a mapping of our own would hide, and the harnesses release what a refused input
 * left allocated through its hooks (tests/fuzz/fuzz.c), which this table and its mappings would escape. */
#if defined(__SANITIZE_ADDRESS__)
#define LARGE_ALLOC SIZE_MAX
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LARGE_ALLOC SIZE_MAX
#endif
#endif
#ifndef LARGE_ALLOC
#define LARGE_ALLOC ((size_t)32 << 20)
#endif
#define HUGE_PAGE ((size_t)2 << 20)
static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mapping { void *p; size_t len; } *mappings;
static size_t n_mappings, cap_mappings;

void *ds_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    if (rounded < LARGE_ALLOC) {
        void *p = aligned_alloc(64, rounded);
        if (!p) ds_die(DS_EXIT_FAIL, "out of memory allocating %zu bytes", bytes);
        return memset(p, 0, rounded);
    }
    /* a huge page needs a 2 MiB aligned start: map one more, then give back the ends around that */
    rounded = (rounded + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    char *m = mmap(NULL, rounded + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) ds_die(DS_EXIT_FAIL, "out of memory allocating %zu bytes", bytes);
    char *p = (char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > m) munmap(m, (size_t)(p - m));
    if (p + rounded < m + rounded + HUGE_PAGE) munmap(p + rounded, (size_t)(m + HUGE_PAGE - p));
    madvise(p, rounded, MADV_HUGEPAGE);  /* a kernel without transparent huge pages says no: fine */
    pthread_mutex_lock(&mappings_lock);
    if (n_mappings == cap_mappings) {
        cap_mappings = cap_mappings ? 2 * cap_mappings : 64;
        mappings = realloc(mappings, cap_mappings * sizeof *mappings);
        if (!mappings) ds_die(DS_EXIT_FAIL, "out of memory");
    }
    mappings[n_mappings++] = (struct mapping){p, rounded};
    pthread_mutex_unlock(&mappings_lock);
    return p;
}

void ds_free(void *p) {
    if (!p) return;
    pthread_mutex_lock(&mappings_lock);
    for (size_t i = n_mappings; i-- > 0;)
        if (mappings[i].p == p) {
            munmap(p, mappings[i].len);
            mappings[i] = mappings[--n_mappings];
            pthread_mutex_unlock(&mappings_lock);
            return;
        }
    pthread_mutex_unlock(&mappings_lock);
    free(p);
}

static const char *file_kind(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "an unknown kind of file";
}

int ds_open_input(const char *path, char *why, size_t why_len) {
    /* O_NONBLOCK: open() of a FIFO without a writer would wait for one forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(why, why_len, "cannot open: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) snprintf(why, why_len, "cannot open: %s", strerror(EISDIR));
        else snprintf(why, why_len, "not a regular file (%s)", file_kind(st.st_mode));
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

FILE *ds_fopen_input(const char *path, char *why, size_t why_len) {
    int fd = ds_open_input(path, why, why_len);
    if (fd < 0) return NULL;
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        snprintf(why, why_len, "cannot open: %s", strerror(errno));
        close(fd);
    }
    return fp;
}

#ifdef __SSE4_2__
/* The CRC32 instruction (SSE4.2, in the x86-64-v2 baseline the program is built for) computes exactly
 * this polynomial, 8 bytes per instruction: ~10 GB/s instead of ~1 with tables. */
#include <nmmintrin.h>

uint32_t ds_crc32c(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t c = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
#else
static uint32_t crc32c_table[8][256];
static void crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc32c_table[t][i] = (crc32c_table[t - 1][i] >> 8) ^ crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
}

uint32_t ds_crc32c(uint32_t crc, const void *data, size_t n) {
    static int ready = 0;
    if (!ready) { crc32c_init(); ready = 1; }
    const uint8_t *p = data;
    crc = ~crc;
    while (n >= 8) {  /* slicing-by-8 */
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc32c_table[7][w & 0xff] ^ crc32c_table[6][(w >> 8) & 0xff] ^
              crc32c_table[5][(w >> 16) & 0xff] ^ crc32c_table[4][(w >> 24) & 0xff] ^
              crc32c_table[3][(w >> 32) & 0xff] ^ crc32c_table[2][(w >> 40) & 0xff] ^
              crc32c_table[1][(w >> 48) & 0xff] ^ crc32c_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}
#endif

/* SHA-256 as FIPS 180-4 defines it. */
static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr32(uint32_t x, int k) { return (x >> k) | (x << (32 - k)); }

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
        uint32_t t2 = (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void ds_sha256(const void *data, size_t n, uint8_t digest[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t full = n / 64 * 64;
    for (size_t i = 0; i < full; i += 64) sha256_block(h, p + i);
    uint8_t tail[128] = {0};  /* the rest, 0x80, zeros, and the length in bits, big-endian */
    size_t rest = n - full, tail_len = rest < 56 ? 64 : 128;
    memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t i = 0; i < tail_len; i += 64) sha256_block(h, tail + i);
    for (int i = 0; i < 32; i++) digest[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

int ds_atomic_open(ds_atomic_file *af, const char *path) {
    if (strlen(path) >= sizeof af->path) { errno = ENAMETOOLONG; return -1; }
    strcpy(af->path, path);
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    return af->fp ? 0 : -1;
}

int ds_atomic_commit(ds_atomic_file *af) {
    int ok = !ferror(af->fp) && fflush(af->fp) == 0 && fsync(fileno(af->fp)) == 0;
    ok = (fclose(af->fp) == 0) && ok;
    af->fp = NULL;
    if (!ok || rename(af->tmp_path, af->path) != 0) {
        int e = errno;
        unlink(af->tmp_path);
        errno = e;
        return -1;
    }
    char dir[4096];
    strcpy(dir, af->path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    return 0;
}

void ds_atomic_abort(ds_atomic_file *af) {
    if (af->fp) fclose(af->fp);
    af->fp = NULL;
    unlink(af->tmp_path);
}

uint64_t ds_rng_key(uint64_t seed, uint64_t stream) { return ds_splitmix64(ds_splitmix64(seed) ^ stream); }

uint64_t ds_rng_u64(uint64_t seed, uint64_t stream, uint64_t index) {
    return ds_splitmix64(ds_rng_key(seed, stream) ^ index);
}

double ds_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return (ds_rng_u64(seed, stream, index) >> 11) * 0x1.0p-53;
}

/* Element-wise loops start OpenMP threads only above this size. */
#define PARALLEL_MIN ((int64_t)1 << 15)

void ds_zero_floats(float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t b = 0; b < n; b += PARALLEL_MIN)
        memset(x + b, 0, sizeof(float) * (n - b < PARALLEL_MIN ? n - b : PARALLEL_MIN));
}

void ds_fill_pattern(float *x, int64_t n, float scale) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = scale * ((float)(((uint64_t)i * 2654435761u) & 1023) / 1024.0f - 0.5f);
}

uint64_t ds_mulmod_u64(uint64_t a, uint64_t b, uint64_t m) {
    return (uint64_t)((unsigned __int128)a * b % m);
}

static uint64_t powmod(uint64_t base, uint64_t e, uint64_t m) {
    uint64_t r = 1 % m;
    for (base %= m; e; e >>= 1, base = ds_mulmod_u64(base, base, m))
        if (e & 1) r = ds_mulmod_u64(r, base, m);
    return r;
}

/* Miller-Rabin with the first twelve primes as bases: deterministic for every n below 3.3e24. */
int ds_is_prime_u64(uint64_t n) {
    static const uint64_t bases[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
    if (n < 2) return 0;
    for (int i = 0; i < 12; i++)
        if (n % bases[i] == 0) return n == bases[i];
    uint64_t d = n - 1;
    int s = 0;
    for (; d % 2 == 0; d /= 2) s++;
    for (int i = 0; i < 12; i++) {
        uint64_t x = powmod(bases[i], d, n);
        if (x == 1 || x == n - 1) continue;
        int witness = 1;
        for (int r = 1; r < s && witness; r++) {
            x = ds_mulmod_u64(x, x, n);
            witness = x != n - 1;
        }
        if (witness) return 0;
    }
    return 1;
}

int ds_affinity_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

int ds_check_threads(int threads, const char *what) {
    int cores = ds_affinity_cores();
    if (threads > cores)
        ds_die(DS_EXIT_BAD_INPUT, "%s %d exceeds the %d core(s) this process may run on (its CPU affinity); use at "
               "most %d", what, threads, cores, cores);
    return threads;
}

double ds_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double ds_process_seconds(void) {
    /* /proc/self/stat field 22: the start in clock ticks after boot; fields 3.. follow the ")" that ends
     * field 2 (the command name, which may itself hold spaces and parentheses) */
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long long start = 0;
    for (int field = 3; p && field <= 22; field++) {
        p = strchr(p + 1, ' ');
        if (p && field == 22) start = strtoull(p + 1, NULL, 10);
    }
    struct timespec ts;
    long ticks = sysconf(_SC_CLK_TCK);
    if (!start || ticks <= 0 || clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return -1.0;
    return ts.tv_sec + 1e-9 * ts.tv_nsec - (double)start / ticks;
}

/* Walks the prefixes "a", "a/b", ... of path: each must be a directory. A missing one is made (make),
 * or, when only checking, its parent must take a new entry and the walk ends there. */
static int walk_dirs(const char *path, int make, char *why, size_t why_len) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char saved = *p;
        *p = 0;
        struct stat st;
        int exists = stat(buf, &st) == 0;
        if (exists && !S_ISDIR(st.st_mode)) {
            snprintf(why, why_len, "%s: cannot create directory: a file of that name exists", buf);
            return -1;
        }
        if (!exists && make && mkdir(buf, 0777) != 0 && errno != EEXIST) {
            snprintf(why, why_len, "%s: cannot create directory: %s", buf, strerror(errno));
            return -1;
        }
        if (!exists && !make) {
            char parent[4096];
            snprintf(parent, sizeof parent, "%s", buf);
            int e = errno != ENOENT ? errno : access(dirname(parent), W_OK | X_OK) != 0 ? errno : 0;
            if (e) snprintf(why, why_len, "%s: cannot create directory: %s", buf, strerror(e));
            return e ? -1 : 0;
        }
        *p = saved;
        if (!saved) break;
    }
    if (!make && access(buf, W_OK | X_OK) != 0) {
        snprintf(why, why_len, "%s: cannot write in directory: %s", buf, strerror(errno));
        return -1;
    }
    return 0;
}

void ds_absolute_path(const char *path, char *out, size_t len) {
    char *real = realpath(path, NULL);
    snprintf(out, len, "%s", real ? real : path);
    free(real);
}

void ds_mkdir_p(const char *path) {
    char why[4200];
    if (walk_dirs(path, 1, why, sizeof why) != 0) ds_die(DS_EXIT_BAD_INPUT, "%s", why);
}

int ds_dir_creatable(const char *path, char *why, size_t why_len) { return walk_dirs(path, 0, why, why_len); }

void ds_json_string_n(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        case '\r': fputs("\\r", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (ch < 0x20) fprintf(f, "\\u%04x", ch);
            else fputc(ch, f);
        }
    }
    fputc('"', f);
}

void ds_json_string(FILE *f, const char *s) { ds_json_string_n(f, s, strlen(s)); }

void ds_json_number(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.17g", x);
    else fputs("null", f);
}

size_t ds_json_null_nonfinite(const char *in, char *out, size_t len) {
    static const char *const words[] = {"-infinity", "infinity", "-nan", "nan", "-inf", "inf"};
    size_t n = 0;
    int in_string = 0;
    while (*in && n + 1 < len) {
        size_t skip = 0;
        if (!in_string)
            for (size_t w = 0; w < sizeof words / sizeof *words && !skip; w++)
                if (strncasecmp(in, words[w], strlen(words[w])) == 0) skip = strlen(words[w]);
        if (skip) {
            if (n + 5 > len) break;
            memcpy(out + n, "null", 4);
            n += 4;
            in += skip;
            continue;
        }
        if (*in == '\\' && in_string && in[1]) {  /* an escape pair: \" does not end the string */
            if (n + 3 > len) break;
            out[n++] = *in++;
        } else if (*in == '"') {
            in_string = !in_string;
        }
        out[n++] = *in++;
    }
    out[n] = 0;
    return n;
}

void ds_json_numbers(FILE *f, const double *x, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        ds_json_number(f, x[i]);
    }
    fputc(']', f);
}
