#!/usr/bin/env bash
# Proof at the paper's scale, on this machine (`make bench-paper`; README.md "Benchmarks"): the two
# DREAMSTATE configs as shipped, configs/dreamstate-0.1b-states.yaml (DiT-B/4 over the last layer's WKV
# state of an RWKV-7 0.1B) and configs/dreamstate-0.1b-hybrid.yaml (the hybrid on that 0.1B), on random
# weights in the official 0.1B layout (tests/ref/official_weights.py: a bf16 .pth as released, then
# converted), for a few steps with only the batch, the step count and the inputs overridden:
#   - 1 rank x 2 threads and 2 ranks x 1 thread, micro-batch set: every step's loss identical;
#   - peak memory (RSS) of rank 0 of the 2-rank run within 20% of `dreamstate plan`'s memory per rank
#     for the same job;
#   - a run stopped after its checkpoint at step STEPS/2 resumes to a final checkpoint byte-identical to
#     the uninterrupted run's;
# and the 0.4B LM at ctx 4096 with activation checkpointing within this machine's 24 GB (below).
# About 10-20 minutes on the 2-core dev machine. STEPS (default 4, even), KEEP=1 (keep the work
# directory) and WEIGHTS_DIR (where the random 0.1B weights are made, or reused if already there;
# default: the work directory) can be set.
cd "$(dirname "$0")/.."
. tests/lib.sh paper-scale
STEPS=${STEPS:-4}
PY=/usr/bin/python3
WEIGHTS_DIR=${WEIGHTS_DIR:-$TMP}
PTH="$WEIGHTS_DIR/rwkv7-0.1b-random.pth" ST="$WEIGHTS_DIR/rwkv7-0.1b-random.safetensors"
{ [ -s "$ST" ] || { $PY tests/ref/official_weights.py "$PTH" --shape 0.1b --seed 11 >/dev/null &&
                    $PY src/tools/pth_to_safetensors.py "$PTH" "$ST" >/dev/null; }; } \
  && ok "random RWKV-7 0.1B in the official layout (L12 C768 V65536), converted" || { bad "weights"; finish; exit 1; }

# labelled contexts (4 labels x 8) and the final WKV states of the 0.1B over them (World tokenizer)
$BIN build-contexts --out "$TMP/train.jsonl" --held-out "$TMP/held.jsonl" --sources c-headers,licenses,python,man \
  --max-per-label 8 --max-bytes 512 >/dev/null 2>&1 || bad "build-contexts"
for part in train held; do
  extra=(); [ $part = held ] && extra=(--labels-from "$TMP/st-train/index.txt")
  $BIN extract-states configs/from-weights.yaml --checkpoint "$ST" --contexts "$TMP/$part.jsonl" --out "$TMP/st-$part" \
    --max-tokens 128 "${extra[@]}" >/dev/null 2>"$TMP/x.log" || bad "extract-states $part: $(tail -1 "$TMP/x.log")"
done
[ -s "$TMP/st-train/index.txt" ] && ok "states of the 0.1B: $(grep -c . "$TMP/train.jsonl") train contexts" || { finish; exit 1; }

losses() { grep -o '"loss":[0-9.e+-]*' "$1/train.jsonl" | tr '\n' ' '; }
# run NAME RANKS CONFIG ARGS...: trains with /usr/bin/time around every rank (RSS of rank r in NAME.rss.r)
# --bind-to none: Open MPI binds each rank to one core when the ranks fit the slots (np <= 2), and a
# 1-rank run with run.threads=2 would then be refused (more threads than its CPU affinity allows).
run() {
  local name=$1 ranks=$2; shift 2
  local t0; t0=$(date +%s)
  mpirun --oversubscribe --bind-to none -np "$ranks" sh -c 'exec /usr/bin/time -f "%M" -o "$0.rss.$OMPI_COMM_WORLD_RANK" "$@"' \
    "$TMP/$name" $BIN train "$@" --set run.threads=$((2 / ranks)) --set run.out_dir="$TMP/$name" \
    >/dev/null 2>"$TMP/$name.log"
  local rc=$?
  echo "  $name: $ranks rank(s), $(( $(date +%s) - t0 )) s, exit $rc"
  return $rc
}
# check TASK CONFIG ARGS...: the three checks above for one config
check() {
  local task=$1; shift
  local args=("$@" --set train.steps="$STEPS" --set train.eval_every=0 --set checkpoint.every=$((STEPS / 2))
              --set checkpoint.keep=5 --set optim.warmup_steps=1 --set train.log_every=1)
  run "$task-1" 1 "${args[@]}" || bad "$task, 1 rank: $(tail -2 "$TMP/$task-1.log")"
  run "$task-2" 2 "${args[@]}" || bad "$task, 2 ranks: $(tail -2 "$TMP/$task-2.log")"
  [ -n "$(losses "$TMP/$task-1")" ] && [ "$(losses "$TMP/$task-1")" = "$(losses "$TMP/$task-2")" ] \
    && ok "$task: 1 vs 2 ranks, every step's loss identical ($(losses "$TMP/$task-1"))" \
    || bad "$task: 1 vs 2 ranks differ: $(losses "$TMP/$task-1") vs $(losses "$TMP/$task-2")"
  local plan_bytes rss_kb
  plan_bytes=$($BIN plan "$@" --set train.steps="$STEPS" --nodes 1 --ranks-per-node 2 --threads 1 --json 2>/dev/null \
    | $PY -c "import json,sys; print(json.load(sys.stdin)['rows'][0]['memory_per_rank_bytes'])")
  rss_kb=$(cat "$TMP/$task-2.rss.0" 2>/dev/null)
  local msg
  msg=$($PY - "${plan_bytes:-0}" "${rss_kb:-0}" <<'PY'
import sys
plan, rss = float(sys.argv[1]), float(sys.argv[2]) * 1024
ratio = rss / plan if plan > 0 else float('nan')
print(f"{'ok' if 0.8 <= ratio <= 1.2 else 'out'} rank 0 of 2: peak RSS {rss / 1e9:.3f} GB vs plan {plan / 1e9:.3f} GB "
      f"per rank, {ratio:.2f}x (bound 0.8-1.2)")
PY
)
  case "$msg" in ok*) ok "$task: ${msg#ok }" ;; *) bad "$task: ${msg#out }" ;; esac
  # resume: the 1-rank run again, its checkpoints after STEPS/2 removed
  mkdir -p "$TMP/$task-r"
  cp -r "$TMP/$task-1/checkpoints" "$TMP/$task-r/"
  for c in "$TMP/$task-r"/checkpoints/step-*.ckpt; do
    [ "$((10#$(basename "$c" .ckpt | sed 's/step-//')))" -gt $((STEPS / 2)) ] && rm -f "$c"
  done
  run "$task-r" 1 "${args[@]}" || bad "$task, resumed: $(tail -2 "$TMP/$task-r.log")"
  local final; final=$(printf 'step-%08d.ckpt' "$STEPS")
  grep -q "resumed from .*$(printf 'step-%08d' $((STEPS / 2)))" "$TMP/$task-r.log" \
    && cmp -s "$TMP/$task-1/checkpoints/$final" "$TMP/$task-r/checkpoints/$final" \
    && ok "$task: resumed at step $((STEPS / 2)), final checkpoint byte-identical" \
    || bad "$task: resumed run differs: $(grep -m1 resumed "$TMP/$task-r.log")"
}
check states configs/dreamstate-0.1b-states.yaml --set diffusion.states="$TMP/st-train/index.txt" \
  --set diffusion.states_valid="$TMP/st-held/index.txt" --set train.batch_size=4 --set train.micro_batch=2
$BIN prepare-data --tokenizer world --valid-fraction 0.2 --out "$TMP/data" README.md src/*/README.md >/dev/null 2>&1 \
  || bad "prepare-data"
check hybrid configs/dreamstate-0.1b-hybrid.yaml --set hybrid.init="$ST" --set data.train="$TMP/data/train.bin" \
  --set data.valid="$TMP/data/valid.bin" --set train.ctx_len=128 --set train.batch_size=2 --set train.micro_batch=1 --set hybrid.prefix=16

# The 0.4B shape (configs/rwkv7-world-0.4b.yaml, random init, the default World corpus) at its release
# context of 4096 tokens, one sequence a step, with activation checkpointing (train.grad_checkpoint):
# two steps fit this 24 GB machine, peak RSS against plan's memory per rank; and at 512 tokens, where
# both fit, the same two losses with and without it, bit for bit.
lm04() {  # NAME CTX GRAD_CHECKPOINT
  /usr/bin/time -f %M -o "$TMP/$1.rss" $BIN train configs/rwkv7-world-0.4b.yaml --set train.ctx_len="$2" \
    --set train.grad_checkpoint="$3" --set train.steps=2 --set train.batch_size=1 --set train.micro_batch=1 \
    --set train.eval_every=0 --set train.log_every=1 --set checkpoint.every=1000 --set run.threads=2 \
    --set run.out_dir="$TMP/$1" >/dev/null 2>"$TMP/$1.log"
}
t0=$(date +%s)
if lm04 lm04-4096 4096 true; then
  plan_bytes=$($BIN plan configs/rwkv7-world-0.4b.yaml --set train.ctx_len=4096 --set train.grad_checkpoint=true \
    --set train.batch_size=1 --set train.micro_batch=1 --nodes 1 --ranks-per-node 1 --threads 2 --json 2>/dev/null \
    | $PY -c "import json,sys; print(json.load(sys.stdin)['rows'][0]['memory_per_rank_bytes'])")
  msg=$($PY - "${plan_bytes:-0}" "$(cat "$TMP/lm04-4096.rss")" <<'PY'
import sys
plan, rss = float(sys.argv[1]), float(sys.argv[2]) * 1024
ratio = rss / plan if plan > 0 else float('nan')
print(f"{'ok' if rss < 24 * 2**30 and 0.8 <= ratio <= 1.2 else 'out'} peak RSS {rss / 2**30:.1f} GiB (limit 24), "
      f"plan {plan / 2**30:.1f} GiB, {ratio:.2f}x (bound 0.8-1.2)")
PY
)
  case "$msg" in ok*) ok "0.4B ctx 4096, grad_checkpoint, 2 steps in $(( $(date +%s) - t0 )) s: ${msg#ok }" ;;
                 *) bad "0.4B ctx 4096, grad_checkpoint: ${msg#out }" ;; esac
else
  bad "0.4B ctx 4096, grad_checkpoint: $(tail -2 "$TMP/lm04-4096.log")"
fi
lm04 lm04-512 512 false && lm04 lm04-512-cp 512 true || bad "0.4B ctx 512: $(tail -1 "$TMP/lm04-512.log" "$TMP/lm04-512-cp.log")"
[ -n "$(losses "$TMP/lm04-512")" ] && [ "$(losses "$TMP/lm04-512")" = "$(losses "$TMP/lm04-512-cp")" ] \
  && ok "0.4B ctx 512: losses with and without grad_checkpoint identical ($(losses "$TMP/lm04-512"))" \
  || bad "0.4B ctx 512: with and without grad_checkpoint differ: $(losses "$TMP/lm04-512") vs $(losses "$TMP/lm04-512-cp")"
finish
