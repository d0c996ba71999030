/* The harnesses' shared part (fuzz.h): ds_die turned into a longjmp, and the clean-up after one.
 *
 * A parser that refuses an input calls ds_die, which exits; libFuzzer would count every refusal as a
 * crash. The die handler (ds_set_die_handler) jumps back to fuzz_run instead. What the abandoned call
 * held is then released: heap blocks through ASan's allocation hooks (every block allocated during
 * the call and not freed, libyaml's included), mappings through the mmap/munmap wrappers below,
 * descriptors of scratch files through /proc/self/fd. A stdio stream left open is closed with fclose,
 * not freed, because glibc keeps every open stream on a list. */
#define _GNU_SOURCE
#include "fuzz.h"
#include "dreamstate/common.h"
#include "dreamstate/data.h"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sanitizer/allocator_interface.h>

/* ---- the blocks allocated during a call: an open-addressing set keyed by address ---- */

#define SLOTS (1u << 20)
#define TOMBSTONE ((const void *)1)
static const void *slot_ptr[SLOTS];
static size_t slot_size[SLOTS];
static uint32_t touched[SLOTS];  /* slots used since the last reset, to reset them cheaply */
static size_t n_touched;
static int overflow;             /* the set filled up: blocks cannot all be freed */
static atomic_flag lock = ATOMIC_FLAG_INIT;
static _Thread_local int tracking;  /* only the calling thread's allocations are the call's */

static uint32_t slot_of(const volatile void *p) {
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 44) & (SLOTS - 1);
}

static void on_malloc(const volatile void *p, size_t size) {
    if (!tracking || !p) return;
    while (atomic_flag_test_and_set(&lock)) {}
    if (n_touched >= SLOTS / 2) {
        overflow = 1;
    } else {
        uint32_t i = slot_of(p);
        while (slot_ptr[i] && slot_ptr[i] != TOMBSTONE) i = (i + 1) & (SLOTS - 1);
        if (!slot_ptr[i]) touched[n_touched++] = i;
        slot_ptr[i] = (const void *)p;
        slot_size[i] = size;
    }
    atomic_flag_clear(&lock);
}

static void on_free(const volatile void *p) {
    if (!p) return;
    while (atomic_flag_test_and_set(&lock)) {}
    for (uint32_t i = slot_of(p); slot_ptr[i]; i = (i + 1) & (SLOTS - 1))
        if (slot_ptr[i] == (const void *)p) {
            slot_ptr[i] = TOMBSTONE;
            break;
        }
    atomic_flag_clear(&lock);
}

static void reset_blocks(void) {
    for (size_t k = 0; k < n_touched; k++) slot_ptr[touched[k]] = NULL;
    n_touched = 0;
    overflow = 0;
}

/* ---- scratch directory ---- */

static char scratch[256];

static void remove_scratch(void) {
    DIR *d = opendir(scratch);
    if (!d) return;
    char path[512];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
        snprintf(path, sizeof path, "%s/%s", scratch, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(scratch);
}

static const char *scratch_dir(void) {
    if (scratch[0]) return scratch;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm"
                       : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(scratch, sizeof scratch, "%s/ds-fuzz.%ld", base, (long)getpid());
    if (mkdir(scratch, 0700) != 0) fuzz_fail("cannot create %s", scratch);
    atexit(remove_scratch);
    return scratch;
}

void fuzz_path(char *out, size_t len, const char *name) { snprintf(out, len, "%s/%s", scratch_dir(), name); }

void fuzz_write(char *out, size_t len, const char *name, const void *data, size_t n) {
    fuzz_path(out, len, name);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fuzz_fail("cannot write %s", out);
    for (size_t done = 0; done < n;) {
        ssize_t k = write(fd, (const char *)data + done, n - done);
        if (k <= 0) fuzz_fail("cannot write %s", out);
        done += (size_t)k;
    }
    close(fd);
}

/* ---- releasing what an abandoned call held ---- */

static int in_scratch(const char *path) {
    size_t n = strlen(scratch);
    return n && strncmp(path, scratch, n) == 0 && path[n] == '/';
}

/* Descriptors open on scratch files into fds (at most cap); returns the count. */
static int scratch_fds(int *fds, int cap) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    char link[64], target[512];
    for (struct dirent *e; (e = readdir(d)) && n < cap;) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(link, target, sizeof target - 1);
        if (k <= 0) continue;
        target[k] = 0;
        if (in_scratch(target)) fds[n++] = atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* A glibc stream (its _flags carry the magic 0xFBAD0000) on descriptor fd. */
static int is_stream_on(const void *block, size_t size, int fd) {
    if (size < sizeof(FILE)) return 0;
    const FILE *f = block;
    return ((unsigned)f->_flags & 0xFFFF0000u) == 0xFBAD0000u && f->_fileno == fd;
}

static void close_scratch_files(void) {
    int fds[256], n = scratch_fds(fds, 256);
    for (int k = 0; k < n; k++) {
        FILE *stream = NULL;
        for (size_t t = 0; t < n_touched && !stream; t++) {
            uint32_t i = touched[t];
            if (slot_ptr[i] && slot_ptr[i] != TOMBSTONE && is_stream_on(slot_ptr[i], slot_size[i], fds[k]))
                stream = (FILE *)slot_ptr[i];
        }
        if (stream) fclose(stream);  /* frees its blocks, which leave the set through on_free */
        else close(fds[k]);
    }
}

/* Mappings made during a call: the harnesses link with -Wl,--wrap=mmap,--wrap=munmap (Makefile). */
#define MAPS 4096
static struct { void *addr; size_t len; } maps[MAPS];
static int n_maps;

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset);
int __real_munmap(void *addr, size_t len);

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset) {
    void *m = __real_mmap(addr, len, prot, flags, fd, offset);
    if (tracking && m != MAP_FAILED) {
        if (n_maps == MAPS) fuzz_fail("more than %d mappings in one call", MAPS);
        maps[n_maps].addr = m;
        maps[n_maps++].len = len;
    }
    return m;
}

int __wrap_munmap(void *addr, size_t len) {
    for (int i = 0; i < n_maps; i++)
        if (maps[i].addr == addr) maps[i] = maps[--n_maps];
    return __real_munmap(addr, len);
}

static void unmap_all(void) {
    while (n_maps > 0) __wrap_munmap(maps[n_maps - 1].addr, maps[n_maps - 1].len);
}

static void free_blocks(void) {
    for (size_t t = 0; t < n_touched; t++) {
        uint32_t i = touched[t];
        if (slot_ptr[i] && slot_ptr[i] != TOMBSTONE) free((void *)slot_ptr[i]);
    }
}

/* ---- running a call ---- */

static jmp_buf back;
static int verbose;              /* FUZZ_VERBOSE set: print each refusal */
static const char *die_finding;  /* fuzz_die_is_finding's `what`, NULL: a die is a refusal */

void fuzz_die_is_finding(const char *what) { die_finding = what; }

static void on_die(int code, const char *line) {
    tracking = 0;
    if (die_finding) fuzz_fail("%s: %s", die_finding, line ? line : "");
    if (code != DS_EXIT_BAD_INPUT) fuzz_fail("exit code %d (not 2, bad input) for: %s", code, line ? line : "");
    if (line && strpbrk(line, "\n\r")) fuzz_fail("the error message is not one line: %s", line);
    if (verbose && line) fprintf(stderr, "%s\n", line);
    longjmp(back, 1);
}

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    if (!__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free)) fuzz_fail("cannot install allocation hooks");
    ds_set_die_handler(on_die);
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    scratch_dir();
}

int fuzz_run(void (*body)(const uint8_t *data, size_t size), const uint8_t *data, size_t size) {
    setup();
    reset_blocks();
    n_maps = 0;
    die_finding = NULL;
    if (setjmp(back)) {
        close_scratch_files();
        unmap_all();
        if (overflow) fuzz_fail("more than %u blocks allocated in one call: cannot free them after a die", SLOTS / 2);
        free_blocks();
        reset_blocks();
        return DS_EXIT_BAD_INPUT;
    }
    tracking = 1;
    body(data, size);
    tracking = 0;
    reset_blocks();
    return 0;
}

void fuzz_fail(const char *fmt, ...) {
    tracking = 0;
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

uint32_t fuzz_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t fuzz_get_u64(const uint8_t *p) { return fuzz_get_u32(p) | (uint64_t)fuzz_get_u32(p + 4) << 32; }
void fuzz_put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }

uint8_t *fuzz_copy(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size + 1);
    if (!copy) fuzz_fail("out of memory");
    if (size) memcpy(copy, data, size);
    copy[size] = 0;
    return copy;
}

void fuzz_fix_state_shard(uint8_t *file, size_t size, int flags) {
    enum { HEADER = 64 };
    if (size < HEADER) return;
    if (flags & 1) {
        uint64_t L = fuzz_get_u32(file + 12), C = fuzz_get_u32(file + 16), H = fuzz_get_u32(file + 20);
        uint64_t N = fuzz_get_u32(file + 24), cond = fuzz_get_u32(file + 28), records = fuzz_get_u64(file + 40);
        if (L <= 4096 && C <= 1 << 20 && H <= 4096 && N <= 64 && cond <= 1 << 20) {
            uint64_t record = 8 + 4 * (cond + L * (2 * C + H * N * N));
            fuzz_put_u32(file + 48, (uint32_t)record);
            fuzz_put_u32(file + 52, (uint32_t)(record >> 32));
            if (records <= (size - HEADER) / record)
                fuzz_put_u32(file + 36, (uint32_t)(size - HEADER - records * record));
        }
    }
    if (flags & 2) {
        fuzz_put_u32(file + 56, ds_crc32c(0, file + HEADER, size - HEADER));
        fuzz_put_u32(file + 60, ds_crc32c(0, file, 60));
    }
}

void fuzz_read_dataset(const char *path) {
    ds_dataset *ds = ds_dataset_open(path);
    uint64_t n = ds_dataset_num_tokens(ds);
    int32_t *ids = malloc(sizeof(int32_t) * (n + 1));
    ds_dataset_read(ds, 0, n, ids);
    for (uint64_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= ds_dataset_vocab_size(ds))
            fuzz_fail("token %d outside the vocabulary", ids[i]);
    free(ids);
    /* a table of vocab_size counts (train checks the vocabulary against the model's first) */
    if (ds_dataset_vocab_size(ds) <= (1u << 20)) ds_unigram_entropy_nats(ds);
    ds_dataset_close(ds);
}
