# dreamstate build.  `make` builds bin/dreamstate; `make test`, `make bench`, `make deps`.
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

.PHONY: all test bench deps run clean
all: bin/dreamstate $(TEST_BINS) $(BENCH_BINS)

# AVX512_BF16 (VCVTNE2PS2BF16, VDPBF16PS) is not part of x86-64-v4: this file alone gets it, and
# dispatch.c calls it only on CPUs that have it.
build/kernels/bf16_avx512.o: SIMD_ARCH += -mavx512bf16

build/%_avx512.o: src/%_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SIMD_ARCH) -MMD -MP -c $< -o $@

build/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_ARCH) -MMD -MP -c $< -o $@

# The World vocabulary is embedded by an .incbin in the tokenizer (compiled from the repository root).
build/data/tokenizer.o: src/data/rwkv_vocab_v20230424.txt

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

# The README's main job: a small end-to-end DREAMSTATE run (part A and part B) over MPI, 2 ranks.
RANKS ?= 2
run: all
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 jobs/dreamstate.sh --ranks $(RANKS)

deps:
	src/tools/install-deps.sh

clean:
	rm -rf build bin

-include $(OBJS:.o=.d) $(CLI_OBJS:.o=.d)
