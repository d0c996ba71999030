#!/usr/bin/env bash
# `make bench`: throughput side by side in one run, on this machine, with the same threads:
#  - the FP32 FMA peak and the bf16 peak (VDPBF16PS dot-product chains; the FP32 peak on CPUs without
#    AVX512_BF16) the benchmark measures itself;
#  - training-step tokens/s and MFU of the C trainer (tiny shape, the mid shape of jobs/bf16-quality.sh
#    L4 C256 V256 T128 B4 and the 0.1B shape L12 C768 V65536 T512), in fp32 and in bf16 matrix products
#    (train.precision; steps alternating on one model), MFU against the peak of the precision in use,
#    the bf16/fp32 ratio, and the shares of the step in matrix products and bf16 conversions;
#  - the same training step of the PyTorch reference (tests/ref/rwkv7_torch.py, Debian torch) and
#    the ratio to the C fp32 step;
#  - the DiT training step (forward + backward + clipping + AdamW, tests/bench_dit.c) at the state
#    shape of DREAMSTATE part A (one layer's 12 heads of 64 x 64 = 256 tokens of patch 4, batch 8) for
#    DiT-B/4 (d 768, depth 12, 12 heads) and DiT-S/4 (d 384, depth 12, 6 heads): tokens/s, GFLOP/s, MFU
#    and where the best step's time goes, beside the same step of tests/ref/dit_torch.py in PyTorch;
#  - a state-tuning step (frozen weights, src/rwkv7/README.md §3.4) against a training step of one shape;
#  - the WKV-7 AVX-512 kernels against their scalar twins;
#  - distributed (about 2-3 minutes more; DIST=0 skips it): MPI allreduce bus bandwidth on 2 and 4 ranks
#    (4 oversubscribed), with glibc's default malloc and with its mmap/trim thresholds fixed; how much
#    of the gradient allreduce a real 2-rank run hides behind backward; tokens/s of 1 rank x 2 threads
#    against 2 ranks x 1 thread with `dreamstate plan --measure`'s prediction beside each; and
#    `dreamstate plan` for 1..64 nodes of the 0.1B and 1.5B configs.
# Every PyTorch peer runs with the BLIS configuration of its C side: Debian's torch does its matrix
# products through the system BLAS (BLIS), which without BLIS_ARCH_TYPE runs generic kernels on CPUs
# it does not know (Zen 5); ds_blas_init sets BLIS_ARCH_TYPE=skx on AVX-512 CPUs, and each peer gets
# the value its C run reports (printed, with the peer's own sgemm GFLOP/s as evidence).
# THREADS (default: all cores), STEPS_BIG (default 3), B_BIG (default 1; the PyTorch reference keeps
# every per-step WKV state for autograd: ~8 GB at B=1) and STEPS_DIT (default 3) can be set.
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
STEPS_BIG=${STEPS_BIG:-3}
B_BIG=${B_BIG:-1}
STEPS_DIT=${STEPS_DIT:-3}
PY=/usr/bin/python3
export OMP_NUM_THREADS=$THREADS
field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
pct() { /usr/bin/python3 -c "print(f'{100 * $1:.1f}')"; }
ratio() { /usr/bin/python3 -c "print(f'{$1 / $2:.2f}')"; }
# the PyTorch peer of a C run, with the C run's BLIS_ARCH_TYPE (unset if it had none)
peer() {  # C JSON, bench_torch.py arguments...
  local arch; arch=$(field "$1" blis_arch_type); shift
  if [ -n "$arch" ]; then BLIS_ARCH_TYPE=$arch $PY tests/ref/bench_torch.py "$@"; else (unset BLIS_ARCH_TYPE; $PY tests/ref/bench_torch.py "$@"); fi
}
peer_note() { echo "  PyTorch peer: BLIS_ARCH_TYPE='$(field "$1" blis_arch_type)', its 1024^3 sgemm $(field "$1" sgemm_gflops) GFLOP/s"; }
compare() {  # label, L C V T B, C steps (per precision), torch steps (0: no PyTorch run)
  local label=$1 shape=$2 cs=$3 ts=$4
  local both c b t="" mfu
  both=$(build/tests/bench_train $shape "$cs" "$THREADS" both)
  c=$(sed -n 1p <<<"$both"); b=$(sed -n 2p <<<"$both")
  [ "$ts" -gt 0 ] && t=$(peer "$c" $shape "$ts" "$THREADS")
  for j in "$c" "$b"; do
    mfu=$(/usr/bin/python3 -c "print(100*$(field "$j" mfu))")
    printf '%-5s %-24s %s: %9.1f tok/s  %6.1f GFLOP/s  MFU %5.1f%% of %5.0f (%s peak) | products %4.1f%%, bf16 conversions %4.1f%% of the step\n' \
      "$label" "$(field "$j" shape)" "$(field "$j" precision)" "$(field "$j" tokens_per_s)" "$(field "$j" gflops)" "$mfu" \
      "$(field "$j" peak_gflops)" "$(field "$j" precision)" "$(/usr/bin/python3 -c "print(100*$(field "$j" products_share))")" \
      "$(/usr/bin/python3 -c "print(100*$(field "$j" conversions_share))")"
  done
  printf '      bf16/fp32 tokens/s: %.2fx' "$(/usr/bin/python3 -c "print($(field "$b" tokens_per_s)/$(field "$c" tokens_per_s))")"
  [ -n "$t" ] && printf ' | PyTorch fp32: %.1f tok/s, C fp32/PyTorch %.1fx' "$(field "$t" tokens_per_s)" \
    "$(/usr/bin/python3 -c "print($(field "$c" tokens_per_s)/$(field "$t" tokens_per_s))")"
  echo
  echo "  C fp32:  $c"
  echo "  C bf16:  $b"
  [ -n "$t" ] && peer_note "$t" && echo "  PyTorch: $t"
  LAST=$c  # its peaks for the summary line
}
compare_dit() {  # label, C I p d depth heads B
  local label=$1 shape=$2
  local c t
  c=$(build/tests/bench_dit $shape "$STEPS_DIT" "$THREADS")
  t=$(peer "$c" dit $shape "$STEPS_DIT" "$THREADS")
  local flops_per_tok; flops_per_tok=$(/usr/bin/python3 -c "print($(field "$c" gflops) / $(field "$c" tokens_per_s))")
  printf '%-8s %-36s C: %7.1f tok/s  %6.1f GFLOP/s  MFU %5.1f%% (best step %5.1f%%) of %5.0f GFLOP/s peak | PyTorch: %7.1f tok/s  %6.1f GFLOP/s | C/PyTorch %5.2fx\n' \
    "$label" "$(field "$c" shape)" "$(field "$c" tokens_per_s)" "$(field "$c" gflops)" "$(pct "$(field "$c" mfu)")" \
    "$(pct "$(field "$c" best_mfu)")" "$(field "$c" peak_gflops)" "$(field "$t" tokens_per_s)" \
    "$(/usr/bin/python3 -c "print($flops_per_tok * $(field "$t" tokens_per_s))")" \
    "$(ratio "$(field "$c" tokens_per_s)" "$(field "$t" tokens_per_s)")"
  printf '  C best step %.2f s: forward %.2f, backward %.2f, clip + AdamW %.2f; of which Linear layers alone %.2f, attention alone %.2f, the rest %.2f\n' \
    "$(field "$c" best_step_s)" "$(field "$c" forward_s)" "$(field "$c" backward_s)" "$(field "$c" optim_s)" \
    "$(field "$c" linear_s)" "$(field "$c" attention_s)" "$(field "$c" other_s)"
  peer_note "$t"
  echo "  C:       $c"
  echo "  PyTorch: $t"
}
echo "dreamstate bench: $THREADS threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
compare tiny "2 128 256 64 8" 50 5
compare mid "4 256 256 128 4" 10 0
compare 0.1B "12 768 65536 512 $B_BIG" "$STEPS_BIG" 1
compare_dit DiT-B/4 "12 64 4 768 12 12 8"
compare_dit DiT-S/4 "12 64 4 384 12 6 8"
t=$(build/tests/bench_train 4 512 256 128 8 5 "$THREADS")
f=$(build/tests/bench_train 4 512 256 128 8 5 "$THREADS" frozen)
echo "state tuning (frozen backward to the state gradient) L4 C512 V256 T128 B8: $(field "$f" tokens_per_s) tok/s vs a training step $(field "$t" tokens_per_s) ($($PY -c "print(round($(field "$f" tokens_per_s)/$(field "$t" tokens_per_s), 2))")x)"
echo "peaks measured with the 0.1B run ($THREADS threads): FP32 FMA $(field "$LAST" fp32_peak_gflops) GFLOP/s," \
  "bf16 $(field "$LAST" bf16_peak_gflops) GFLOP/s (VDPBF16PS chains: ds_measure_bf16_peak)"
w=$(build/tests/bench_wkv7 1 512 12)
echo "WKV-7 B1 T512 H12: forward $(field "$w" avx512_fwd_tok_s) tok/s vs scalar $(field "$w" ref_fwd_tok_s) ($(field "$w" fwd_speedup)x), backward $(field "$w" avx512_bwd_tok_s) vs $(field "$w" ref_bwd_tok_s) ($(field "$w" bwd_speedup)x)"

# Start-up of `dreamstate train` at the 0.4B shape (configs/rwkv7-world-0.4b.yaml: L24 C1024, World
# vocabulary, 0.45B parameters, ~11 GB of training state), from the trainer's own "ready in" line: a
# fresh run (weights initialised) of two steps of one 64-token sequence, then the same run resumed
# from its checkpoint for two more (about a minute each, most of it writing the 5.4 GB checkpoint).
# Memory is touched first where it is used, so the first step pays for the page faults of gradients,
# moments and activations: the start-up cost is "ready in" + (first step - second step).
# The default World corpus is built first (once per checkout), so that neither run includes it.
# STARTUP=0 skips it.
if [ "${STARTUP:-1}" != 0 ]; then
  su=$(mktemp -d /tmp/ds-startup.XXXXXX)
  bin/dreamstate train configs/tiny.yaml --set data.tokenizer=world --set model.vocab_size=65536 --set train.steps=1 \
    --set train.batch_size=1 --set train.eval_batches=1 --set run.out_dir="$su/corpus" >/dev/null 2>&1
  startup() {  # steps
    bin/dreamstate train configs/rwkv7-world-0.4b.yaml --set train.steps="$1" --set train.ctx_len=64 \
      --set train.batch_size=1 --set train.micro_batch=1 --set train.eval_every=0 --set train.eval_batches=1 \
      --set checkpoint.every=2 --set checkpoint.keep=1 --set run.out_dir="$su/run" 2>&1 | grep -o 'ready in .*'
    $PY - "$su/run/train.jsonl" "$1" <<'PY'
import json, sys
s = [64 / r['tokens_per_s'] for r in map(json.loads, open(sys.argv[1])) if r['step'] > int(sys.argv[2]) - 2]
print(f"    first step {s[0]:.1f} s, second {s[1]:.1f} s: start-up beyond the step {s[0] - s[1]:+.1f} s")
PY
  }
  echo "Start-up, RWKV-7 0.4B (L24 C1024 V65536), time to the first step:"
  echo "  fresh:   $(startup 2)"
  echo "  resumed: $(startup 4)"
  rm -rf "$su"
fi

[ "${DIST:-1}" = 0 ] && exit 0
# ---- distributed training and `dreamstate plan` ----
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMP_NUM_THREADS  # each run below sets its threads
# Open MPI's nonblocking allreduce mallocs a temporary buffer per bucket; with glibc's adaptive
# thresholds the memory goes back to the kernel and every step page-faults it in again (2.4x the page
# faults, 5-10x slower on 64 MB and on the trainer's ~100 MB of buckets): compare with the thresholds fixed.
FIXED_MALLOC=(-x MALLOC_MMAP_THRESHOLD_=1073741824 -x MALLOC_TRIM_THRESHOLD_=4294967296)
TMP=$(mktemp -d /tmp/ds-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
echo
echo "In-place MPI_Iallreduce + wait (the trainer's call), shared memory: bus bandwidth 2(p-1)/p x bytes / time,"
echo "GB/s, mean (best) of the reps; 4 ranks share the 2 cores:"
for np in 2 4; do
  mpirun --oversubscribe -np $np build/tests/bench_allreduce 8K 1M 8M 64M >"$TMP/ar$np.jsonl"
  mpirun --oversubscribe -np $np "${FIXED_MALLOC[@]}" build/tests/bench_allreduce 8K 1M 8M 64M >"$TMP/ar$np-fixed.jsonl"
done
$PY - "$TMP" <<'PY'
import json, sys
print('  ranks      bytes |     glibc malloc: fp32          fp64 |  thresholds fixed: fp32          fp64')
for np in (2, 4):
    rows = {m: [json.loads(l) for l in open(f'{sys.argv[1]}/ar{np}{m}.jsonl')] for m in ('', '-fixed')}
    for size in sorted({r['bytes'] for r in rows['']}):
        cells = []
        for m in ('', '-fixed'):
            for t in ('fp32', 'fp64'):
                r = next(r for r in rows[m] if r['bytes'] == size and r['type'] == t)
                cells.append(f"{r['busbw_gbps']:6.2f} ({r['best_busbw_gbps']:5.2f})")
        print(f"  {np:5d} {size:10d} | {cells[0]:>23s} {cells[1]:>13s} | {cells[2]:>23s} {cells[3]:>13s}")
PY

# Real runs of `dreamstate train` on the default corpus. OMP_NUM_THREADS: run.threads sets BLIS's
# threads only, the OpenMP kernels would take every core.
MID=(--set model.n_layer=4 --set model.n_embd=512 --set train.ctx_len=128 --set train.batch_size=8)
train_run() {  # name ranks threads steps [mpirun options --] [--set ...]
  local name=$1 ranks=$2 threads=$3 steps=$4 mpi=(); shift 4
  if [ "${1:-}" = -x ]; then while [ "$1" != -- ]; do mpi+=("$1"); shift; done; shift; fi
  local cmd=(bin/dreamstate train configs/tiny.yaml "$@" --set run.threads="$threads" --set train.steps="$steps"
             --set train.eval_every=0 --set train.eval_batches=1 --set train.log_every=1000
             --set checkpoint.every=1000000 --set checkpoint.resume=never --set run.out_dir="$TMP/$name")
  export OMP_NUM_THREADS=$threads
  if [ "$ranks" = 1 ]; then "${cmd[@]}"; else mpirun -x OMP_NUM_THREADS "${mpi[@]}" -np "$ranks" "${cmd[@]}"; fi >"$TMP/$name.log" 2>&1
  unset OMP_NUM_THREADS
}
plan_for() {  # name ranks threads [--set ...]: the prediction for the same run, rates measured here
  local name=$1 ranks=$2 threads=$3; shift 3
  bin/dreamstate plan configs/tiny.yaml "$@" --nodes 1 --ranks-per-node "$ranks" --threads "$threads" --measure --json \
    >"$TMP/$name.plan.json" 2>/dev/null
}
for shape in tiny mid; do
  if [ $shape = tiny ]; then steps=60; sets=(); else steps=10; sets=("${MID[@]}"); fi
  train_run $shape-1x2 1 2 $steps "${sets[@]}";             plan_for $shape-1x2 1 2 "${sets[@]}"
  train_run $shape-2x1 2 1 $steps "${sets[@]}";             plan_for $shape-2x1 2 1 "${sets[@]}"
done
# the gradient allreduce of the mid shape: alone (the trainer's 8 MiB buckets, all in flight), in a
# 2-rank run with the malloc thresholds fixed, and the per-rank work without communication (1 rank,
# half the batch)
train_run mid-2x1-fixed 2 1 10 "${FIXED_MALLOC[@]}" -- "${MID[@]}"
train_run mid-1x1-half 1 1 10 "${MID[@]}" --set train.batch_size=4
bytes=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['params'] * 8)" "$TMP/mid-2x1.plan.json")
mpirun -np 2 build/tests/bench_allreduce --buckets "$bytes" 8M fp64 >"$TMP/pure.json"
mpirun -np 2 "${FIXED_MALLOC[@]}" build/tests/bench_allreduce --buckets "$bytes" 8M fp64 >"$TMP/pure-fixed.json"
echo
echo "dreamstate train, median over steps 2.. ('predicted': dreamstate plan --measure, same ranks and threads):"
$PY - "$TMP" <<'PY'
import json, statistics as st, sys
tmp = sys.argv[1]
def run(name):
    log = [json.loads(l) for l in open(f'{tmp}/{name}/train.jsonl')][1:]
    return st.median(r['tokens_per_s'] for r in log), st.median(r['comm_wait_s'] for r in log)
print('  shape                 ranks x threads   tokens/s   step s  predicted s   comm wait s  predicted exposed s')
for shape, label in (('tiny', 'L2 C128 V256 T64 B8'), ('mid', 'L4 C512 V256 T128 B8')):
    for layout in ('1x2', '2x1'):
        tok, wait = run(f'{shape}-{layout}')
        plan = json.load(open(f'{tmp}/{shape}-{layout}.plan.json'))
        row = plan['rows'][0]
        print(f"  {label:21s} {layout:>15s} {tok:10.0f} {plan['batch_size'] * plan['ctx_len'] / tok:8.3f} "
              f"{row['step_s']:12.3f} {wait:13.4f} {row['exposed_comm_s']:20.4f}")
pure, fixed = (json.load(open(f'{tmp}/{f}.json')) for f in ('pure', 'pure-fixed'))
plan = json.load(open(f'{tmp}/mid-2x1.plan.json'))
tok2, wait2 = run('mid-2x1')
tokf, waitf = run('mid-2x1-fixed')
tok1, _ = run('mid-1x1-half')
step2, stepf, step1 = 1024 / tok2, 1024 / tokf, 512 / tok1
print(f"  mid, 2 ranks: the gradient allreduce ({pure['bytes'] / 1e6:.1f} MB fp64, {plan['rows'][0]['buckets']} buckets) alone takes "
      f"{pure['seconds']:.3f} s ({fixed['seconds']:.3f} s with the malloc thresholds fixed);")
print(f"    in training the step waits {wait2:.4f} s for it: hidden behind backward by that measure "
      f"{100 * (1 - wait2 / pure['seconds']):.0f}%;")
print(f"    but the step takes {step2:.3f} s against {step1:.3f} s for one rank's share of the work alone, i.e. "
      f"{step2 - step1:+.3f} s exposed ({100 * (1 - (step2 - step1) / pure['seconds']):.0f}% hidden);")
print(f"    with the malloc thresholds fixed: step {stepf:.3f} s, wait {waitf:.4f} s, {stepf - step1:+.3f} s exposed "
      f"({100 * (1 - (stepf - step1) / fixed['seconds']):.0f}% hidden); plan: {plan['rows'][0]['exposed_comm_s']:.4f} s exposed")
PY
echo
for c in 0.1b 1.5b; do
  bin/dreamstate plan configs/rwkv7-$c.yaml --nodes 1,2,4,8,16,32,64 --ranks-per-node 1 --threads "$THREADS" --measure 2>/dev/null
  echo
done
