#!/usr/bin/env bash
# Nothing lost, ever: what a run directory holds survives runs that go wrong.
#  1. a diverging run (optim.lr 1e3: the loss goes NaN at step 6) stops there with exit 1 and one line
#     naming the step; every checkpoint left verifies and is finite (the last finite one is not
#     pruned); train.jsonl parses as JSON. With train.skip_nonfinite N it skips N such steps (logged
#     with "loss":null,"skipped":true) and stops at the next one. Weights holding a NaN are refused
#     by import (and every command that loads weights) with the tensor's name, exit 2.
#  2. a checkpoint whose step= disagrees with its file name is refused; weights of an imported (step-0)
#     checkpoint reach every rank: 2 ranks train exactly as 1.
#  3. a full disk (a small tmpfs; skipped where none can be mounted): train.jsonl's writes fail at some
#     step: exit 1 with one line, the log ends with its last whole line, the checkpoints stay; with
#     space again the same command resumes and finishes. A checkpoint that does not fit: exit 1, the
#     older checkpoints and the log intact, no temp file left.
#  4. a run directory belongs to one run: a fresh start (checkpoint.resume never, or auto without a
#     valid checkpoint) where an earlier run's checkpoints or train.jsonl are is refused (exit 2, one
#     line, nothing changed); checkpoint.resume restart moves them, unchanged, to OUT.old-N/ and a later
#     resume continues the new run. `import` over an earlier run is refused the same way.
#  5. a TERM to a job's training under mpirun mid-step checkpoints the step in flight (below); a rank
#     that dies before the first step ends the job's mpirun in seconds, not minutes; a job stage killed
#     before its first checkpoint starts over when the job is rerun, its earlier files moved aside.
cd "$(dirname "$0")/.."
. tests/lib.sh safety
TINY=(configs/tiny.yaml --set run.threads=1 --set train.eval_every=0 --set train.eval_batches=1 --set train.log_every=100)
json_ok() { /usr/bin/python3 -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1])]' "$1" 2>/dev/null; }
finite_ckpts() {  # DIR: every checkpoint in DIR loads (export refuses NaN/Inf weights); prints their steps
  local f
  for f in "$1"/step-*.ckpt; do
    $BIN export "${TINY[@]}" --checkpoint "$f" --out "$TMP/x.safetensors" >/dev/null 2>"$TMP/export.err" || return 1
    basename "$f" .ckpt | sed 's/step-0*//'
  done
}

# 1. divergence
DIVERGE=(--set optim.lr=1e3 --set train.steps=30 --set checkpoint.every=2 --set checkpoint.keep=2)
$BIN train "${TINY[@]}" "${DIVERGE[@]}" --set run.out_dir="$TMP/nan" >"$TMP/nan.out" 2>"$TMP/nan.log"
rc=$?
msg=$(grep '^dreamstate: ' "$TMP/nan.log")
[ $rc -eq 1 ] && [ "$(grep -c '^dreamstate: ' "$TMP/nan.log")" -eq 1 ] && grep -q 'step 6: loss -\?nan' <<<"$msg" \
  && ok "diverging run stops with exit 1: $msg" || bad "diverging run: exit $rc: $(tail -2 "$TMP/nan.log")"
kept=$(finite_ckpts "$TMP/nan/checkpoints" | tr '\n' ' ')
[ "$kept" = "2 4 " ] && ok "the last finite checkpoints are kept and load: steps $kept" \
  || bad "checkpoints after divergence: '$kept' $(cat "$TMP/export.err")"
json_ok "$TMP/nan/train.jsonl" && [ "$(wc -l <"$TMP/nan/train.jsonl")" -eq 5 ] \
  && ok "train.jsonl: 5 lines of valid JSON (steps before the NaN)" || bad "train.jsonl: $(tail -1 "$TMP/nan/train.jsonl")"

$BIN train "${TINY[@]}" "${DIVERGE[@]}" --set train.skip_nonfinite=3 --set run.out_dir="$TMP/skip" >/dev/null 2>"$TMP/skip.log"
rc=$?
skipped=$(grep -c '"loss":null,.*"skipped":true}$' "$TMP/skip/train.jsonl")
[ $rc -eq 1 ] && [ "$skipped" -eq 3 ] && grep -q '^dreamstate: step 9: .*4 steps in a row' "$TMP/skip.log" \
  && json_ok "$TMP/skip/train.jsonl" && kept=$(finite_ckpts "$TMP/skip/checkpoints") \
  && ok "train.skip_nonfinite 3: steps 6-8 skipped (null in the JSON), stopped at step 9, checkpoints finite" \
  || bad "skip_nonfinite: exit $rc, $skipped skipped: $(tail -1 "$TMP/skip.log")"

# a finite model to bring in, and the same weights with one NaN
$BIN train "${TINY[@]}" --set train.steps=10 --set checkpoint.every=5 --set run.out_dir="$TMP/good" 2>"$TMP/good.log" \
  || bad "training a model to import: $(tail -2 "$TMP/good.log")"
$BIN export "${TINY[@]}" --checkpoint "$TMP/good/checkpoints/step-00000010.ckpt" --out "$TMP/good.safetensors" >/dev/null
/usr/bin/python3 - "$TMP/good.safetensors" "$TMP/nan.safetensors" <<'PY'
import json, shutil, struct, sys
shutil.copy(sys.argv[1], sys.argv[2])
with open(sys.argv[2], 'r+b') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    begin = json.loads(f.read(n))['blocks.1.ffn.key.weight']['data_offsets'][0]
    f.seek(8 + n + begin + 4 * 7)
    f.write(struct.pack('<f', float('nan')))
PY
expect_bad_input "import of weights holding a NaN" "nan.safetensors: tensor 'blocks.1.ffn.key.weight' holds NaN or Inf" \
  $BIN import "${TINY[@]}" --set run.out_dir="$TMP/imported-nan" --safetensors "$TMP/nan.safetensors"
[ ! -e "$TMP/imported-nan" ] && ok "nothing written for refused weights" || bad "refused import wrote $TMP/imported-nan"

# 2. step= metadata; imported weights on every rank
cp -r "$TMP/good" "$TMP/renamed"
mv "$TMP/renamed/checkpoints/step-00000010.ckpt" "$TMP/renamed/checkpoints/step-00000012.ckpt"
$BIN train "${TINY[@]}" --set train.steps=20 --set run.out_dir="$TMP/renamed" >/dev/null 2>"$TMP/err"
rc=$?
[ $rc -eq 2 ] && grep -q 'step-00000012.ckpt: checkpoint metadata step=10 does not match the file name (step 12)' "$TMP/err" \
  && ok "a checkpoint whose step= is not its file name's is refused: $(tail -1 "$TMP/err")" \
  || bad "renamed checkpoint: exit $rc: $(tail -1 "$TMP/err")"

RANKS=(--set train.micro_batch=2 --set train.steps=2)
for n in 1 2; do
  $BIN import "${TINY[@]}" "${RANKS[@]}" --set run.out_dir="$TMP/i$n" --safetensors "$TMP/good.safetensors" >/dev/null \
    && mpirun --oversubscribe -np $n $BIN train "${TINY[@]}" "${RANKS[@]}" --set run.out_dir="$TMP/i$n" 2>"$TMP/i$n.log" \
    || bad "import + train on $n rank(s): $(tail -2 "$TMP/i$n.log")"
done
l1=$(grep -o '"loss":[0-9.]*' "$TMP/i1/train.jsonl" | tr '\n' ' ')
l2=$(grep -o '"loss":[0-9.]*' "$TMP/i2/train.jsonl" | tr '\n' ' ')
good_loss=$(grep -o '"loss":[0-9.]*' "$TMP/good/train.jsonl" | tail -1 | cut -d: -f2)
[ -n "$l1" ] && [ "$l1" = "$l2" ] && awk -v a="$(cut -d' ' -f1 <<<"$l1" | cut -d: -f2)" -v g="$good_loss" 'BEGIN{exit !(a < g + 0.5)}' \
  && ok "imported (step-0) weights on 1 and 2 ranks: the same losses ($l1), those of the trained model" \
  || bad "imported weights on 2 ranks: 1 rank $l1, 2 ranks $l2 (the trained model ended at $good_loss)"

# 3. a full disk
mounted=()
trap 'for m in ${mounted[@]+"${mounted[@]}"}; do umount "$m"; done; [ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
tmpfs() { mkdir -p "$2" && mount -t tmpfs -o size="$1" tmpfs "$2" 2>/dev/null && mounted+=("$2"); }
if tmpfs 64k "$TMP/disk"; then
  FULL=(--set train.steps=60 --set checkpoint.every=5 --set run.out_dir="$TMP/disk/run" --set checkpoint.dir="$TMP/ckpt")
  head -c 57344 /dev/zero >"$TMP/disk/filler"  # 14 of the 16 pages: config.yaml and one page of log fit
  $BIN train "${TINY[@]}" "${FULL[@]}" >/dev/null 2>"$TMP/full.log"
  rc=$?
  msg=$(grep '^dreamstate: ' "$TMP/full.log")
  lines=$(wc -l <"$TMP/disk/run/train.jsonl")
  newest=$(ls "$TMP/ckpt" | tail -1 | sed 's/step-0*//; s/.ckpt//')
  [ $rc -eq 1 ] && grep -q "train.jsonl: cannot write the line of step $((lines + 1)): No space left on device" <<<"$msg" \
    && ok "disk full: exit 1 at step $((lines + 1)): $msg" || bad "disk full: exit $rc: $(tail -2 "$TMP/full.log")"
  json_ok "$TMP/disk/run/train.jsonl" && [ "$(tail -c1 "$TMP/disk/run/train.jsonl" | od -An -c | tr -d ' ')" = '\n' ] \
    && ok "train.jsonl ends with its last whole line (step $lines)" || bad "train.jsonl cut: $(tail -c 80 "$TMP/disk/run/train.jsonl")"
  kept=$(finite_ckpts "$TMP/ckpt" | tr '\n' ' ')
  [ -n "$kept" ] && [ "$newest" -le "$lines" ] && ok "checkpoints intact: steps $kept" || bad "checkpoints: '$kept'"
  rm "$TMP/disk/filler"
  $BIN train "${TINY[@]}" "${FULL[@]}" >/dev/null 2>"$TMP/full2.log" && grep -q "resumed from .*step-0*$newest.ckpt" "$TMP/full2.log" \
    && [ "$(wc -l <"$TMP/disk/run/train.jsonl")" -eq 60 ] && json_ok "$TMP/disk/run/train.jsonl" \
    && ok "with space again the same command resumes from step $newest and finishes" || bad "rerun: $(tail -2 "$TMP/full2.log")"

  tmpfs 16m "$TMP/disk2"  # two checkpoints of 6.4 MB fit, the third does not
  $BIN train "${TINY[@]}" --set train.steps=10 --set checkpoint.every=2 --set run.out_dir="$TMP/disk2/run" >/dev/null 2>"$TMP/full3.log"
  rc=$?
  kept=$(finite_ckpts "$TMP/disk2/run/checkpoints" | tr '\n' ' ')
  [ $rc -eq 1 ] && grep -q '^dreamstate: checkpoint: .*step-00000006.ckpt: write failed: No space left on device' "$TMP/full3.log" \
    && [ "$kept" = "2 4 " ] && ! ls "$TMP/disk2/run/checkpoints" | grep -q tmp && json_ok "$TMP/disk2/run/train.jsonl" \
    && ok "a checkpoint that does not fit: exit 1, checkpoints $kept intact, no temp file, log valid" \
    || bad "checkpoint on a full disk: exit $rc, kept '$kept': $(tail -1 "$TMP/full3.log")"
else
  echo "skip full-disk checks: cannot mount a tmpfs here (needs root)"
fi

# 4. one run per run directory
snapshot() { (cd "$1" && find . -type f -exec md5sum {} + | sort); }
expect_refused() {  # WHAT TEXT DIR CMD...: exit 2, TEXT in the last line of stderr, DIR unchanged
  local what=$1 text=$2 dir=$3 before; shift 3
  before=$(snapshot "$dir")
  "$@" >/dev/null 2>"$TMP/err"; local rc=$?
  if [ $rc -eq 2 ] && [ "$(grep -c '^dreamstate: ' "$TMP/err")" -eq 1 ] && tail -1 "$TMP/err" | grep -qF -- "$text" \
     && [ "$before" = "$(snapshot "$dir")" ]; then ok "$what: $(tail -1 "$TMP/err")"
  else bad "$what: exit $rc: $(tail -1 "$TMP/err")"; fi
}
ONE=(--set checkpoint.every=2 --set run.out_dir="$TMP/one")
$BIN train "${TINY[@]}" "${ONE[@]}" --set train.steps=4 2>"$TMP/one.log" || bad "first run: $(tail -1 "$TMP/one.log")"
first=$(snapshot "$TMP/one")
expect_refused "checkpoint.resume never over an earlier run" \
  "holds an earlier run (2 checkpoint(s) in $TMP/one/checkpoints, 4 line(s) in $TMP/one/train.jsonl); continue it with checkpoint.resume: auto, start over with --set checkpoint.resume=restart (moves its files to $TMP/one.old-1/)" \
  "$TMP/one" $BIN train "${TINY[@]}" "${ONE[@]}" --set train.steps=2 --set checkpoint.resume=never
mkdir -p "$TMP/killed" && head -3 "$TMP/one/train.jsonl" >"$TMP/killed/train.jsonl"
expect_refused "a fresh start over the log of a run killed before its first checkpoint" \
  "holds an earlier run (3 line(s) in $TMP/killed/train.jsonl); start over" \
  "$TMP/killed" $BIN train "${TINY[@]}" --set run.out_dir="$TMP/killed" --set train.steps=2
$BIN train "${TINY[@]}" "${ONE[@]}" --set train.steps=2 --set checkpoint.resume=restart 2>"$TMP/restart.log"
rc=$?
[ $rc -eq 0 ] && grep -q "the earlier run's files are now in $TMP/one.old-1/" "$TMP/restart.log" \
  && [ "$(snapshot "$TMP/one.old-1")" = "$first" ] && [ "$(ls "$TMP/one/checkpoints")" = step-00000002.ckpt ] \
  && [ "$(wc -l <"$TMP/one/train.jsonl")" -eq 2 ] \
  && ok "checkpoint.resume restart: the earlier run moved to one.old-1/ unchanged, the new run alone in one/" \
  || bad "restart: exit $rc: $(tail -1 "$TMP/restart.log"); $(ls "$TMP/one/checkpoints" | tr '\n' ' ')"
$BIN train "${TINY[@]}" "${ONE[@]}" --set train.steps=4 2>"$TMP/resume.log" \
  && grep -q "resumed from $TMP/one/checkpoints/step-00000002.ckpt (step 2)" "$TMP/resume.log" \
  && [ "$(snapshot "$TMP/one.old-1")" = "$first" ] && ok "a later resume continues the new run (step 2), the old one untouched" \
  || bad "resume after restart: $(grep -o 'resumed.*' "$TMP/resume.log")"

before=$(snapshot "$TMP/one")
expect_refused "import over an earlier run" \
  "holds an earlier run (2 checkpoint(s) in $TMP/one/checkpoints, 4 line(s) in $TMP/one/train.jsonl); start over with --set checkpoint.resume=restart (moves its files to $TMP/one.old-2/)" \
  "$TMP/one" $BIN import "${TINY[@]}" "${ONE[@]}" --safetensors "$TMP/good.safetensors"
$BIN import "${TINY[@]}" "${ONE[@]}" --set checkpoint.resume=restart --safetensors "$TMP/good.safetensors" >"$TMP/import.out" 2>&1 \
  && [ "$(snapshot "$TMP/one.old-2")" = "$before" ] && [ "$(ls "$TMP/one/checkpoints")" = step-00000000.ckpt ] \
  && $BIN train "${TINY[@]}" "${ONE[@]}" --set train.steps=2 2>"$TMP/imported.log" \
  && grep -q "resumed from $TMP/one/checkpoints/step-00000000.ckpt (step 0)" "$TMP/imported.log" \
  && ok "import with checkpoint.resume restart: the earlier run moved to one.old-2/, train starts from the import" \
  || bad "import with restart: $(cat "$TMP/import.out") $(tail -1 "$TMP/imported.log")"

# 5. a TERM to a job (jobs/lib.sh: mpirun, 2 ranks) while a step of seconds is in flight: the job passes
#    it to the ranks themselves (mpirun would kill them 1 s after passing it on), the trainer finishes
#    the step and checkpoints, the job exits 75, and the same command resumes from that checkpoint.
printf '%s\n' "cd '$PWD' && . jobs/lib.sh term-job ci && train_stage '$TMP/term' '' configs/tiny.yaml \
  --set model.n_layer=4 --set model.n_embd=256 --set train.batch_size=96 --set train.ctx_len=512 \
  --set train.steps=\${STEPS:-50} --set train.eval_every=0 --set checkpoint.every=1000" >"$TMP/term-job.sh"
bash "$TMP/term-job.sh" >"$TMP/term.log" 2>&1 & job=$!
# the TERM comes inside the first steps (each of seconds: 96 x 512 tokens), not before the trainer has
# set its handlers (its "ready in" line)
for _ in $(seq 900); do grep -q "ready in" "$TMP/term.log" && break; sleep 0.1; done
sleep 1; kill -TERM "$job"; wait "$job"; rc=$?
ck=$(ls "$TMP/term/checkpoints" 2>/dev/null | tail -1)
[ "$rc" = 75 ] && [ -n "$ck" ] && grep -q "checkpoint written" "$TMP/term.log" \
  && ok "TERM to a job mid-step: the step in flight checkpointed ($ck), exit 75" \
  || bad "TERM to a job: exit $rc, checkpoints '$ck': $(tail -2 "$TMP/term.log")"
if [ -n "$ck" ]; then
  STEPS=$((10#${ck:5:8} + 1)) bash "$TMP/term-job.sh" >"$TMP/term2.log" 2>&1 \
    && grep -q "resumed from $TMP/term/checkpoints/$ck" "$TMP/term2.log" \
    && ok "the same job resumes from it and finishes" || bad "resume after TERM: $(tail -2 "$TMP/term2.log")"
else
  bad "resume after TERM: no checkpoint to resume from"
fi

# a rank that dies during set-up (rank 0 refuses the run directory) while rank 1 waits at a collective:
# mpirun as the jobs start it ends them both at once (with odls_base_sigkill_timeout 120, as jobs/lib.sh
# once set, this took 4 minutes)
mkdir -p "$TMP/foreign" && echo '{"step":1}' >"$TMP/foreign/train.jsonl"
printf '%s\n' "cd '$PWD' && . jobs/lib.sh refused-job ci >/dev/null && \"\${MPI[@]}\" \$BIN train ${TINY[*]} \
  --set train.steps=2 --set run.out_dir='$TMP/foreign'" >"$TMP/refused-job.sh"
t0=$(date +%s)
timeout 100 bash "$TMP/refused-job.sh" >"$TMP/refused.log" 2>&1; rc=$?
took=$(( $(date +%s) - t0 ))
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$took" -le 30 ] && grep -q "holds an earlier run" "$TMP/refused.log" \
  && ok "a rank refused at set-up under the jobs' mpirun: the job ends in $took s (exit $rc)" \
  || bad "refused rank under mpirun: exit $rc after $took s: $(grep dreamstate "$TMP/refused.log" | tail -2)"

# a job stage killed before its first checkpoint: the rerun starts it over, the earlier log kept aside
mkdir -p "$TMP/early" && head -2 "$TMP/one/train.jsonl" >"$TMP/early/train.jsonl"
printf '%s\n' "cd '$PWD' && . jobs/lib.sh early-job ci && train_stage '$TMP/early' '' ${TINY[*]} --set train.steps=3" \
  >"$TMP/early-job.sh"
bash "$TMP/early-job.sh" >"$TMP/early.log" 2>&1; rc=$?
[ "$rc" = 0 ] && grep -q "stopped before its first checkpoint: starting it over" "$TMP/early.log" \
  && cmp -s "$TMP/early.old-1/train.jsonl" <(head -2 "$TMP/one/train.jsonl") \
  && [ "$(tail -1 "$TMP/early/train.jsonl" | sed -n 's/^{"step":\([0-9]*\).*/\1/p')" = 3 ] \
  && ok "a stage killed before its first checkpoint starts over on the rerun, its log moved to early.old-1/" \
  || bad "stage killed before its first checkpoint: exit $rc: $(tail -2 "$TMP/early.log")"

finish
