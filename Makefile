# dreamstate build.  `make` builds bin/dreamstate; `make test`, `make bench`, `make fuzz`, `make deps`.
#
# Code generation: the SIMD kernels (src/**/*_avx512.c) are compiled with -march=x86-64-v4 (AVX-512);
# everything else with the portable x86-64-v2 baseline, so the binary starts on any x86-64 CPU and the
# kernel table (src/kernels/dispatch.c) picks the AVX-512 or the scalar reference kernels at run time.

CC       ?= gcc
PKGS     := yaml-0.1 ompi-c
BLIS_INC := $(firstword $(wildcard /usr/include/x86_64-linux-gnu/blis-openmp /usr/include/x86_64-linux-gnu/blis-pthread /usr/include/x86_64-linux-gnu /usr/include/blis))
OPT      ?= -O3
BASE_ARCH := -march=x86-64-v2 -mtune=znver3
SIMD_ARCH := -march=x86-64-v4 -mtune=znver3 -mprefer-vector-width=512
WARN     := -Wall -Wextra -Wno-unused-parameter -Wshadow -Wno-sign-compare
CFLAGS   := -std=gnu11 $(OPT) -g -fopenmp -fno-math-errno $(WARN) -Iinclude -isystem $(BLIS_INC) \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# ScaLAPACK's pkg-config file needs a blas.pc that Debian's BLIS does not ship: name the libraries.
LDLIBS   := -fopenmp $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lscalapack-openmpi -llapack -lblis -ldnnl -lm

SRCS      := $(shell find src -name '*.c' ! -path 'src/cli/*' | sort)
OBJS      := $(patsubst src/%.c,build/%.o,$(SRCS))
CLI_OBJS  := $(patsubst src/%.c,build/%.o,$(wildcard src/cli/*.c))
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,build/tests/%,$(TEST_SRCS))
BENCH_SRCS:= $(wildcard tests/bench_*.c)
BENCH_BINS:= $(patsubst tests/%.c,build/tests/%,$(BENCH_SRCS))
LIB       := build/libdreamstate.a

.PHONY: all test bench bench-paper deps run clean fuzz fuzz-build fuzz-corpus
all: bin/dreamstate $(TEST_BINS) $(BENCH_BINS)

# AVX512_BF16 (VCVTNE2PS2BF16, VDPBF16PS) is not part of x86-64-v4: this file alone gets it, and
# dispatch.c calls it only on CPUs that have it.
build/kernels/bf16_avx512.o build/fuzz/obj/kernels/bf16_avx512.o: SIMD_ARCH += -mavx512bf16
# Double-double arithmetic relies on each product and sum being rounded on its own: no fused contractions.
build/kernels/normals_avx512.o build/fuzz/obj/kernels/normals_avx512.o: SIMD_ARCH += -ffp-contract=off

build/%_avx512.o: src/%_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SIMD_ARCH) -MMD -MP -c $< -o $@

build/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_ARCH) -MMD -MP -c $< -o $@

# The World vocabulary is embedded by an .incbin in the tokenizer (compiled from the repository root).
build/data/tokenizer.o: src/data/rwkv_vocab_v20230424.txt
# So is the manifest of source documents in its reader.
build/data/manifest.o: configs/text-manifest.tsv

$(LIB): $(OBJS)
	@rm -f $@
	ar rcs $@ $^

bin/dreamstate: $(CLI_OBJS) $(LIB)
	@mkdir -p bin
	$(CC) $(CFLAGS) $(BASE_ARCH) $^ -o $@ $(LDLIBS)

build/tests/%: tests/%.c tests/test.h $(LIB)
	@mkdir -p build/tests
	$(CC) $(CFLAGS) $(BASE_ARCH) $< $(LIB) -o $@ $(LDLIBS)

test: all
	tests/run.sh

bench: all
	tests/bench.sh

# the paper-scale configs for a few steps (tests/bench_paper_scale.sh; 10-20 minutes)
bench-paper: all
	bash tests/bench_paper_scale.sh

# The README's main job: a small end-to-end DREAMSTATE run (part A and part B) over MPI, 2 ranks.
RANKS ?= 2
run: all
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 jobs/dreamstate.sh --ranks $(RANKS)

deps:
	src/tools/install-deps.sh

# Fuzzing (tests/fuzz/README.md): the modules below MPI (layers 0-3) and one libFuzzer harness per
# input parser, built with clang under ASan + UBSan (a UBSan report is a crash), into build/fuzz/.
# `make fuzz` runs each harness FUZZ_SECONDS on a copy of its seed corpus and prints executions.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 600
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=gnu11 -O1 -g -fopenmp $(WARN) -Wno-unknown-pragmas $(FUZZ_SAN) -Iinclude -isystem $(BLIS_INC) \
                $(shell pkg-config --cflags yaml-0.1 2>/dev/null)
FUZZ_LDLIBS  := -fopenmp $(shell pkg-config --libs yaml-0.1 2>/dev/null) -lblis -ldnnl -lm
FUZZ_SRCS    := $(shell find $(addprefix src/,common config kernels blas tensor rwkv7 diffusion dit hybrid optim data \
                  checkpoint) -name '*.c' | sort)
FUZZ_OBJS    := $(patsubst src/%.c,build/fuzz/obj/%.o,$(FUZZ_SRCS))
FUZZ_LIB     := build/fuzz/libdreamstate-fuzz.a
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

build/fuzz/obj/%_avx512.o: src/%_avx512.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(SIMD_ARCH) -MMD -MP -c $< -o $@

build/fuzz/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(BASE_ARCH) -MMD -MP -c $< -o $@

build/fuzz/obj/data/tokenizer.o: src/data/rwkv_vocab_v20230424.txt

$(FUZZ_LIB): $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

# The harnesses' shared part is not instrumented for coverage: its clean-up is not the parsers' code.
build/fuzz/fuzz.o: tests/fuzz/fuzz.c tests/fuzz/fuzz.h include/dreamstate/common.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(BASE_ARCH) -c $< -o $@

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h build/fuzz/fuzz.o $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(BASE_ARCH) $< build/fuzz/fuzz.o $(FUZZ_LIB) -o $@ $(FUZZ_LDLIBS) \
	    -Wl,--wrap=mmap,--wrap=munmap

# The generated seeds (tests/fuzz/make_corpus.c), made by the project's own writers.
build/fuzz/make_corpus: tests/fuzz/make_corpus.c $(LIB)
	@mkdir -p build/fuzz
	$(CC) $(CFLAGS) $(BASE_ARCH) $< $(LIB) -o $@ $(LDLIBS)

fuzz-corpus: build/fuzz/make_corpus
	build/fuzz/make_corpus tests/fuzz/corpus

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null || \
	  { echo "make fuzz: $(FUZZ_CC) not found; run 'make deps' (installs clang)" >&2; exit 2; }
	@echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' | \
	  $(FUZZ_CC) -x c - -fsanitize=fuzzer,address,undefined -o /dev/null 2>/dev/null || { echo "make fuzz: $(FUZZ_CC)" \
	  "cannot link libFuzzer with ASan and UBSan; run 'make deps' (installs libclang-rt-dev)" >&2; exit 2; }
	$(MAKE) $(FUZZ_BINS)

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf build bin

-include $(OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(FUZZ_OBJS:.o=.d)
