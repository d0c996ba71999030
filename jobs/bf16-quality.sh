#!/usr/bin/env bash
# bf16 against fp32 training quality (README.md, "Precision"): the mid shape, configs/tiny.yaml at
# L4 C256 T128 B4 (512 tokens per step, lr 2e-3 -> 2e-4), trained on the default corpus for 2,000 steps
# twice, train.precision fp32 and bf16, same seed and data, both at once with one thread each; then
#   - both final checkpoints evaluated in fp32 over the whole held-out set (`dreamstate eval`, 1,600
#     windows of 128 tokens), beside each run's own last held-out loss (in its precision, 64 windows);
#   - OUT/loss-curves.png: both runs' train loss (means of 20 steps) and held-out loss (every 100 steps);
#   - OUT/summary.md: the held-out losses, their relative difference (acceptance: bf16 within 1% of fp32)
#     and each run's median tokens/s.
# usage: jobs/bf16-quality.sh [--size default|smoke] [--out DIR]
# (default: about 40 minutes on 2 cores; smoke: 40 steps). A finished run is not repeated.
set -euo pipefail
cd "$(dirname "$0")/.."
. jobs/lib.sh bf16-quality.sh default "$@"
case "$SIZE" in
  default) STEPS=2000; EVAL_WINDOWS=1600 ;;
  smoke)   STEPS=40; EVAL_WINDOWS=16 ;;
  *) echo "bf16-quality.sh: --size must be default or smoke" >&2; exit 2 ;;
esac
OUT=${OUT:-runs/bf16-quality-$SIZE}
MID=(configs/tiny.yaml --set model.n_layer=4 --set model.n_embd=256 --set train.ctx_len=128 --set train.batch_size=4
     --set train.steps=$STEPS --set train.eval_every=$((STEPS / 20)) --set train.eval_batches=16 --set train.log_every=100 --set optim.lr=2e-3
     --set optim.lr_final=2e-4 --set optim.warmup_steps=50 --set checkpoint.every=$((STEPS / 4)) --set run.threads=1)
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
final_ckpt() { printf '%s/%s/checkpoints/step-%08d.ckpt' "$OUT" "$1" "$STEPS"; }

stage "1. fp32 and bf16 runs, $STEPS steps each, one thread each, at once"
pids=()
for p in fp32 bf16; do
  if [ -s "$(final_ckpt $p)" ]; then echo "$p: done earlier"; continue; fi
  $BIN train "${MID[@]}" --set train.precision=$p --set run.out_dir="$OUT/$p" 2>"$OUT/$p.log" &
  pids+=($!)
  # the first run builds the default corpus; the second starts once it is there
  while [ ! -s data/default-byte/valid.bin ] && kill -0 "${pids[-1]}" 2>/dev/null; do sleep 1; done
done
for pid in "${pids[@]}"; do wait "$pid"; done
for p in fp32 bf16; do tail -2 "$OUT/$p.log"; done

stage "2. both final checkpoints in fp32 over the held-out set ($EVAL_WINDOWS windows)"
for p in fp32 bf16; do
  $BIN eval "${MID[@]}" --checkpoint "$(final_ckpt $p)" --set train.eval_batches=$((EVAL_WINDOWS / 4)) \
    >"$OUT/$p.eval.json" 2>/dev/null
  cat "$OUT/$p.eval.json"
done

stage "3. loss curves and summary"
/usr/bin/python3 src/tools/plot_compare.py --out "$OUT/loss-curves.png" \
  --title "RWKV-7 L4 C256 T128 B4, default corpus: fp32 vs bf16 matrix products" fp32="$OUT/fp32" bf16="$OUT/bf16"
/usr/bin/python3 - "$OUT" "$STEPS" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, steps = sys.argv[1], int(sys.argv[2])
rows = {p: [json.loads(l) for l in open(f'{out}/{p}/train.jsonl')] for p in ('fp32', 'bf16')}
ev = {p: json.load(open(f'{out}/{p}.eval.json')) for p in ('fp32', 'bf16')}
own = {p: [r['val_loss'] for r in rows[p] if 'val_loss' in r][-1] for p in rows}
tok = {p: statistics.median(r['tokens_per_s'] for r in rows[p][1:]) for p in rows}
rel_eval = (ev['bf16']['loss'] - ev['fp32']['loss']) / ev['fp32']['loss']
rel_own = (own['bf16'] - own['fp32']) / own['fp32']
print(f"| after {steps} steps | fp32 | bf16 | bf16 vs fp32 |")
print("|---|---|---|---|")
print(f"| held-out loss, final weights evaluated in fp32 ({ev['fp32']['tokens']} tokens) | {ev['fp32']['loss']:.4f} | "
      f"{ev['bf16']['loss']:.4f} | {100 * rel_eval:+.2f}% |")
print(f"| held-out loss of the run's last evaluation (its own precision, 64 windows) | {own['fp32']:.4f} | {own['bf16']:.4f} | "
      f"{100 * rel_own:+.2f}% |")
print(f"| final train loss | {rows['fp32'][-1]['loss']:.4f} | {rows['bf16'][-1]['loss']:.4f} | "
      f"{100 * (rows['bf16'][-1]['loss'] - rows['fp32'][-1]['loss']) / rows['fp32'][-1]['loss']:+.2f}% |")
print(f"| median tokens/s (1 thread each, both at once, shared machine) | {tok['fp32']:.0f} | {tok['bf16']:.0f} | "
      f"{tok['bf16'] / tok['fp32']:.2f}x |")
print()
print(f"acceptance (held-out loss of bf16 within 1% of fp32): {'met' if abs(rel_eval) <= 0.01 and abs(rel_own) <= 0.01 else 'NOT met'}")
PY
echo "plot: $OUT/loss-curves.png"
