/* Shared by the libFuzzer harnesses tests/fuzz/fuzz_*.c (tests/fuzz/README.md): running a parser so
 * that its ds_die comes back as a return, scratch files for parsers that read paths, and the
 * little-endian and checksum helpers the harnesses use to keep mutated files past their CRCs. */
#ifndef DREAMSTATE_FUZZ_H
#define DREAMSTATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Calls body(data, size) such that a ds_die inside it returns here instead of ending the process.
 * The die must be a refusal of bad input: exit code 2 and one line; any other code, or a message
 * with a line break, is a finding (abort). After a die, whatever the body allocated and did not
 * free is freed, and the descriptors and mappings of scratch files it left open are closed, so that
 * millions of refusals do not exhaust memory, descriptors or mappings (and leak detection stays on
 * for the inputs that parse). Returns 0 when body returned, 2 when it died. With the environment
 * variable FUZZ_VERBOSE set, each refusal's line is printed (to see what an input does). */
int fuzz_run(void (*body)(const uint8_t *data, size_t size), const uint8_t *data, size_t size);

/* From here to the end of the current fuzz_run body, a ds_die is a finding (abort) described by
 * `what` (e.g. "the resolved copy of a valid config does not load"). */
void fuzz_die_is_finding(const char *what);

/* libFuzzer's entry point: each input runs through fuzz_run(body, ...). */
#define FUZZ_TARGET(body)                                                \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {      \
        fuzz_run(body, data, size);                                      \
        return 0;                                                        \
    }

/* The path of `name` in this process's scratch directory (on /dev/shm when it exists, else $TMPDIR
 * or /tmp; removed at exit), written to out (len bytes). */
void fuzz_path(char *out, size_t len, const char *name);
/* Writes n bytes to the scratch file `name` and its path to out. */
void fuzz_write(char *out, size_t len, const char *name, const void *data, size_t n);

/* A property the harness checks does not hold: prints "fuzz: <message>" and aborts (a finding). */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

uint32_t fuzz_get_u32(const uint8_t *p);
uint64_t fuzz_get_u64(const uint8_t *p);
void fuzz_put_u32(uint8_t *p, uint32_t v);

/* Fix-ups that let mutated files past the checks that mutations rarely keep true, so that they reach
 * the checks behind them; `flags` is the harness input's first byte. A state shard (format in
 * include/dreamstate/states.h): bit 0 sets the header's record size to what its shape makes it and its
 * metadata length to what the file's size leaves, bit 1 recomputes the payload and header checksums. */
void fuzz_fix_state_shard(uint8_t *file, size_t size, int flags);

/* ds_dataset_open(path), then the whole token stream read (every id must be below the vocabulary)
 * and its unigram entropy. */
void fuzz_read_dataset(const char *path);

/* A copy of data (free with free()), size + 1 bytes, the last one 0. */
uint8_t *fuzz_copy(const uint8_t *data, size_t size);

#endif
