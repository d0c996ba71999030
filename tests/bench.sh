#!/usr/bin/env bash
# `make bench`: throughput side by side in one run, on this machine, with the same threads:
#  - training-step tokens/s and MFU of the C trainer (tiny shape and the 0.1B shape L12 C768 V65536
#    T512), MFU against the FP32 FMA peak the benchmark measures itself;
#  - the same training step of the PyTorch reference (tests/ref/rwkv7_torch.py, Debian torch) and
#    the ratio;
#  - the WKV-7 AVX-512 kernels against their scalar twins.
# THREADS (default: all cores), STEPS_BIG (default 3) and B_BIG (default 1; the PyTorch reference keeps every per-step WKV state for autograd: ~8 GB at B=1) can be set.
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
STEPS_BIG=${STEPS_BIG:-3}
B_BIG=${B_BIG:-1}
PY=/usr/bin/python3
export OMP_NUM_THREADS=$THREADS
field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
compare() {  # label, L C V T B, C steps, torch steps
  local label=$1 shape=$2 cs=$3 ts=$4
  local c t
  c=$(build/tests/bench_train $shape "$cs" "$THREADS")
  t=$($PY tests/ref/bench_torch.py $shape "$ts" "$THREADS")
  printf '%-6s %-24s C: %9.1f tok/s  %6.1f GFLOP/s  MFU %5.1f%% of %5.0f GFLOP/s peak | PyTorch: %8.1f tok/s | C/PyTorch %6.1fx\n' \
    "$label" "$(field "$c" shape)" "$(field "$c" tokens_per_s)" "$(field "$c" gflops)" \
    "$(/usr/bin/python3 -c "print(100*$(field "$c" mfu))")" "$(field "$c" peak_gflops)" "$(field "$t" tokens_per_s)" \
    "$(/usr/bin/python3 -c "print($(field "$c" tokens_per_s)/$(field "$t" tokens_per_s))")"
  echo "  C:       $c"
  echo "  PyTorch: $t"
}
echo "dreamstate bench: $THREADS threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
compare tiny "2 128 256 64 8" 50 5
compare 0.1B "12 768 65536 512 $B_BIG" "$STEPS_BIG" 1
w=$(build/tests/bench_wkv7 1 512 12)
echo "WKV-7 B1 T512 H12: forward $(field "$w" avx512_fwd_tok_s) tok/s vs scalar $(field "$w" ref_fwd_tok_s) ($(field "$w" fwd_speedup)x), backward $(field "$w" avx512_bwd_tok_s) vs $(field "$w" ref_bwd_tok_s) ($(field "$w" bwd_speedup)x)"
