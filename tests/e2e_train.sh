#!/usr/bin/env bash
# End-to-end checks of `dreamstate train` on the default corpus:
#  - the loss falls well below the unigram entropy of the data, per step in the JSONL;
#  - SIGKILL at a random step, then `train` again: the resumed run's losses equal an uninterrupted
#    run's exactly (every step, including the final one);
#  - bad inputs (unknown key, wrong type, truncated checkpoint, flipped byte in a shard) fail with a
#    one-line reason and exit code 2, and leave every existing file untouched.
cd "$(dirname "$0")/.."
. tests/lib.sh train
losses() { grep -o '"step":[0-9]*,"loss":[0-9.e+-]*' "$1"; }

COMMON=(--set train.steps=120 --set checkpoint.every=10 --set train.eval_every=60 --set train.log_every=20)

# 1. an uninterrupted run; the loss must end well below the unigram entropy
$BIN train configs/tiny.yaml "${COMMON[@]}" --set run.out_dir="$TMP/a" 2>"$TMP/a.log"
rc=$?
[ $rc -eq 0 ] && ok "uninterrupted run exits 0" || { bad "uninterrupted run rc=$rc"; cat "$TMP/a.log"; }
unigram=$(grep -o 'unigram entropy [0-9.]*' "$TMP/a.log" | head -1 | awk '{print $3}')
final=$(tail -n1 "$TMP/a/train.jsonl" | grep -o '"loss":[0-9.]*' | cut -d: -f2)
steps=$(grep -c '"step"' "$TMP/a/train.jsonl")
[ "$steps" -eq 120 ] && ok "one JSONL line per step ($steps)" || bad "JSONL has $steps lines, expected 120"
awk -v f="$final" -v u="$unigram" 'BEGIN{exit !(f < u - 0.7)}' && ok "final loss $final well below unigram entropy $unigram" \
  || bad "final loss $final not well below unigram entropy $unigram"

# 2. SIGKILL at a random step, resume, compare every step's loss
kill_at=$(( 25 + RANDOM % 70 ))
$BIN train configs/tiny.yaml "${COMMON[@]}" --set run.out_dir="$TMP/b" 2>"$TMP/b1.log" &
pid=$!
while kill -0 $pid 2>/dev/null; do
  n=$(grep -c "\"step\"" "$TMP/b/train.jsonl" 2>/dev/null); n=${n:-0}
  [ "$n" -ge "$kill_at" ] && break
  sleep 0.02
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
killed_after=$(grep -c '"step"' "$TMP/b/train.jsonl")
$BIN train configs/tiny.yaml "${COMMON[@]}" --set run.out_dir="$TMP/b" 2>"$TMP/b2.log"
grep -q 'resumed from' "$TMP/b2.log" && ok "killed after step $killed_after, resumed ($(grep -o 'resumed from.*' "$TMP/b2.log"))" \
  || bad "second run did not resume"
if diff <(losses "$TMP/a/train.jsonl") <(losses "$TMP/b/train.jsonl") >/dev/null; then
  ok "resumed run's 120 losses equal the uninterrupted run's exactly (final $(losses "$TMP/b/train.jsonl" | tail -1))"
else
  bad "resumed losses differ:"; diff <(losses "$TMP/a/train.jsonl") <(losses "$TMP/b/train.jsonl") | head -5
fi
ls "$TMP/b/checkpoints" | grep -q tmp && bad "temp files left in checkpoints" || ok "no temp files left behind"
n_ckpt=$(ls "$TMP/b/checkpoints" | grep -c '\.ckpt$')
[ "$n_ckpt" -eq 3 ] && ok "keeps the last 3 checkpoints" || bad "$n_ckpt checkpoints kept, expected 3"

# 3. bad inputs: one line, exit code 2, nothing modified
snapshot() { find "$TMP/a" "$TMP/data" -type f -exec md5sum {} + 2>/dev/null | sort; }
expect_bad() {  # name, expected message fragment, command...
  local name=$1 frag=$2; shift 2
  local before; before=$(snapshot)
  "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"; local rc=$?
  local lines; lines=$(wc -l <"$TMP/err.txt")
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$frag" "$TMP/err.txt" && [ "$before" = "$(snapshot)" ]; then
    ok "$name: exit 2, one line: $(cat "$TMP/err.txt")"
  else
    bad "$name: rc=$rc lines=$lines: $(head -3 "$TMP/err.txt")"
  fi
}
sed 's/^  n_embd: 128/  n_embd: 128\n  n_emdb: 64/' configs/tiny.yaml >"$TMP/unknown.yaml"
expect_bad "unknown key" "unknown.yaml:11: model.n_emdb: unknown key" \
  $BIN train "$TMP/unknown.yaml" --set run.out_dir="$TMP/a"
sed 's/^  batch_size: 8/  batch_size: eight/' configs/tiny.yaml >"$TMP/wrongtype.yaml"
expect_bad "wrong type" "wrongtype.yaml:17: train.batch_size: expected an integer" \
  $BIN train "$TMP/wrongtype.yaml" --set run.out_dir="$TMP/a"
ckpt=$(ls "$TMP/a/checkpoints"/*.ckpt | tail -1)
mkdir -p "$TMP/data"
head -c $(( $(stat -c %s "$ckpt") / 2 )) "$ckpt" >"$TMP/data/truncated.ckpt"
expect_bad "truncated checkpoint" "truncated" \
  $BIN eval configs/tiny.yaml --checkpoint "$TMP/data/truncated.ckpt"
cp data/default-byte/valid.bin "$TMP/data/flipped.bin"
printf '\x41' | dd of="$TMP/data/flipped.bin" bs=1 seek=100000 conv=notrunc status=none
expect_bad "flipped byte in a shard" "flipped.bin: payload checksum mismatch" \
  $BIN train configs/tiny.yaml --set run.out_dir="$TMP/a" --set data.train="$TMP/data/flipped.bin"

# Activation checkpointing (src/rwkv7/README.md §3.6) recomputes blocks with the same kernels: 20 steps
# with and without it log the same loss, gradient norm and held-out loss, to the last digit.
fields() { grep -o '"loss":[^,]*,"lr":[^,]*,"grad_norm":[^,]*\|"val_loss":[^,}]*' "$1"; }
CP=(--set model.n_layer=3 --set train.ctx_len=40 --set train.steps=20 --set train.eval_every=10 --set train.log_every=10)
for cp in false true; do
  $BIN train configs/tiny.yaml "${CP[@]}" --set train.grad_checkpoint=$cp --set run.out_dir="$TMP/cp-$cp" \
    2>"$TMP/cp-$cp.log" || bad "train.grad_checkpoint=$cp failed: $(tail -2 "$TMP/cp-$cp.log")"
done
act() { grep -o 'activations [0-9.]* GB' "$1" | awk '{print $2}'; }
if [ "$(fields "$TMP/cp-false/train.jsonl" | wc -l)" -eq 22 ] \
   && diff <(fields "$TMP/cp-false/train.jsonl") <(fields "$TMP/cp-true/train.jsonl") >/dev/null; then
  ok "train.grad_checkpoint: 20 steps' losses, gradient norms and held-out losses identical ($(act "$TMP/cp-true.log") GB of activations instead of $(act "$TMP/cp-false.log"))"
else
  bad "train.grad_checkpoint changes the run:"; diff <(fields "$TMP/cp-false/train.jsonl") <(fields "$TMP/cp-true/train.jsonl") | head -4
fi

# Resume reads each checkpoint once, checking its payloads as they load: a damaged newest one (a
# flipped byte in a payload) is skipped with a warning for the next older one. Start-up is logged.
SHORT=(--set train.eval_every=0 --set checkpoint.every=2 --set checkpoint.keep=3 --set run.out_dir="$TMP/damaged")
$BIN train configs/tiny.yaml "${SHORT[@]}" --set train.steps=4 2>/dev/null
newest="$TMP/damaged/checkpoints/step-00000004.ckpt"
printf '\x5a' | dd of="$newest" bs=1 seek=$(( $(stat -c %s "$newest") / 2 )) conv=notrunc status=none
$BIN train configs/tiny.yaml "${SHORT[@]}" --set train.steps=6 2>"$TMP/damaged.log"
grep -q "warning: skipping checkpoint $newest: checksum mismatch in tensor" "$TMP/damaged.log" \
  && grep -q "resumed from $TMP/damaged/checkpoints/step-00000002.ckpt (step 2)" "$TMP/damaged.log" \
  && [ "$(grep -c '"step"' "$TMP/damaged/train.jsonl")" -eq 6 ] \
  && ok "a damaged newest checkpoint is skipped: resumed from step 2, 6 steps logged" \
  || { bad "damaged newest checkpoint"; cat "$TMP/damaged.log"; }
grep -q "ready in [0-9.]* s since the program started: .*weights read [0-9.]* s" "$TMP/damaged.log" \
  && ok "start-up logged: $(grep -o 'ready in.*' "$TMP/damaged.log")" || bad "no 'ready in' line"

# Threads follow the cores a launcher binds the rank to: a plain `mpirun -np 1` binds to one core, so
# one thread (two spinning threads on one core ran 500x slower); unbound, every core of the process.
cores=$(nproc --all)
mpirun -np 1 $BIN train configs/tiny.yaml --set train.steps=2 --set train.eval_every=0 --set run.out_dir="$TMP/bound" \
  2>&1 | grep -q ' 1 rank(s) x 1 thread(s) (rank 0 may run on 1 core(s))' \
  && ok "mpirun -np 1 (bound to a core): 1 thread" || bad "mpirun -np 1: threads not from the affinity mask"
$BIN train configs/tiny.yaml --set train.steps=2 --set train.eval_every=0 --set run.out_dir="$TMP/free" 2>&1 \
  | grep -q " 1 rank(s) x $cores thread(s) (rank 0 may run on $cores core(s))" \
  && ok "unbound: $cores threads" || bad "unbound: not $cores threads"
finish
