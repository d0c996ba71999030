#!/usr/bin/env bash
# Data-parallel training over MPI, on the default corpus:
#  - same config and global batch on 1, 2 and 4 ranks: the same loss curve (max relative difference
#    per step <= 1e-5 over 50 steps; with train.micro_batch fixed and fp64 gradient reduction it is 0);
#  - SIGKILL of one rank: the job ends non-zero within 30 s, the last checkpoint verifies, a restart
#    resumes; a run checkpointed on 4 ranks resumes on 2 and ends exactly where an uninterrupted run does;
#  - SIGSTOP of one rank: the other's collective watchdog (train.comm_timeout 2 s) ends the job within
#    10 s with one line naming the collective;
#  - SIGUSR1 to the job: a checkpoint of the current step appears and all ranks exit within 10 s;
#    rerunning continues from that step.
cd "$(dirname "$0")/.."
. tests/lib.sh mpi
MPI=(mpirun --oversubscribe -np)
trap 'pkill -9 -f "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
steps_in() { local n; n=$(grep -c '"step"' "$1" 2>/dev/null); echo "${n:-0}"; }
COMMON=(--set train.micro_batch=2 --set run.threads=1 --set train.log_every=10 --set train.eval_every=0)
# signal_one_rank SIGNAL STEPS DIR [--set ...]...: a 2-rank run into DIR (log DIR.log); once it has
# logged STEPS steps, SIGNAL goes to one of its ranks; waits for the job and sets rc and dt (seconds
# from the signal to the job's end)
signal_one_rank() {
  local sig=$1 after=$2 dir=$3 job victim t0
  shift 3
  "${MPI[@]}" 2 $BIN train configs/tiny.yaml "${COMMON[@]}" "$@" --set run.out_dir="$dir" 2>"$dir.log" &
  job=$!
  while [ "$(steps_in "$dir/train.jsonl")" -lt "$after" ] && kill -0 $job 2>/dev/null; do sleep 0.05; done
  victim=$(pgrep -f "run.out_dir=$dir" | while read p; do [ "$(cat /proc/$p/comm)" = dreamstate ] && echo $p; done | tail -1)
  t0=$(date +%s.%N)
  kill -"$sig" "$victim"
  wait $job; rc=$?
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
}

# 1. the same curve on 1, 2 and 4 ranks
for n in 1 2 4; do
  "${MPI[@]}" $n $BIN train configs/tiny.yaml "${COMMON[@]}" --set train.steps=50 --set run.out_dir="$TMP/r$n" \
    2>"$TMP/r$n.log" || bad "$n ranks: exit $?"
done
"${MPI[@]}" 2 $BIN train configs/tiny.yaml "${COMMON[@]}" --set train.steps=50 --set train.zero_stage=1 \
  --set run.out_dir="$TMP/z2" 2>"$TMP/z2.log" || bad "2 ranks ZeRO-1: exit $?"
grep -o 'per rank: .*' "$TMP/z2.log" | sed 's/^/  ZeRO-1, 2 ranks: /'
cmp -s "$TMP/r1/checkpoints/step-00000050.ckpt" "$TMP/z2/checkpoints/step-00000050.ckpt" \
  && ok "2 ranks with ZeRO-1 (sharded AdamW) write the same checkpoint, byte for byte, as 1 rank" \
  || bad "ZeRO-1 checkpoint differs from the 1-rank one"
/usr/bin/python3 - "$TMP" <<'PY' && ok "1 vs 2 vs 4 ranks, and 2 with ZeRO-1: same loss curve" || bad "loss curves differ"
import json, sys
runs = {n: [json.loads(l)['loss'] for l in open(f'{sys.argv[1]}/{n}/train.jsonl')] for n in ('r1', 'r2', 'r4', 'z2')}
runs[1] = runs['r1']
ok = True
for n in ('r2', 'r4', 'z2'):
    assert len(runs[n]) == len(runs[1]) == 50, 'expected 50 steps'
    worst = max(abs(a - b) / abs(a) for a, b in zip(runs[1], runs[n]))
    print(f'  1 rank vs {n}: max relative difference over 50 steps {worst:.3g} (final loss {runs[n][-1]:.6f})')
    ok &= worst <= 1e-5
sys.exit(0 if ok else 1)
PY

# 2a. SIGKILL one rank mid-run
signal_one_rank KILL 25 "$TMP/k" --set train.steps=400 --set checkpoint.every=10
if [ $rc -ne 0 ] && awk -v d="$dt" 'BEGIN{exit !(d < 30)}'; then ok "killed one rank: job exited $rc after ${dt}s"; else bad "kill: rc=$rc after ${dt}s"; fi
last=$(ls "$TMP/k/checkpoints"/*.ckpt | tail -1)
$BIN eval configs/tiny.yaml --checkpoint "$last" >/dev/null 2>"$TMP/eval.log" && ok "last checkpoint $(basename "$last") verifies and evaluates" \
  || bad "last checkpoint unusable: $(cat "$TMP/eval.log")"
"${MPI[@]}" 2 $BIN train configs/tiny.yaml "${COMMON[@]}" --set train.steps=60 --set run.out_dir="$TMP/k" 2>"$TMP/k2.log" \
  && grep -q "resumed from" "$TMP/k2.log" && ok "restart resumed: $(grep -o 'resumed from.*' "$TMP/k2.log" | sed "s|$TMP/||")" \
  || bad "restart after kill failed: $(tail -2 "$TMP/k2.log")"

# 2b. a rank that stops answering (SIGSTOP: to the others, a dead node or a cut link looks the same):
#     the collective watchdog (train.comm_timeout) ends the job with one line naming the collective
signal_one_rank STOP 10 "$TMP/w" --set train.steps=2000 --set train.comm_timeout=2
why=$(grep -m1 '^dreamstate\[rank [01]\]: .* did not complete within 2 s (train.comm_timeout)' "$TMP/w.log")
if [ $rc -ne 0 ] && [ -n "$why" ] && awk -v d="$dt" 'BEGIN{exit !(d < 10)}'; then ok "stopped rank: job exited $rc after ${dt}s: ${why%%;*}"
else bad "stopped rank: rc=$rc after ${dt}s, message '$why'"; tail -3 "$TMP/w.log"; fi

# 2c. stopped (SIGUSR1) on 4 ranks with ZeRO-1, resumed on 2 without: ends exactly where the
#     uninterrupted 1-rank run ends
"${MPI[@]}" 4 $BIN train configs/tiny.yaml "${COMMON[@]}" --set train.steps=50 --set train.zero_stage=1 \
  --set run.out_dir="$TMP/x" 2>"$TMP/x1.log" &
job=$!
while [ "$(steps_in "$TMP/x/train.jsonl")" -lt 20 ] && kill -0 $job 2>/dev/null; do sleep 0.02; done
kill -USR1 $job; wait $job
stopped=$(steps_in "$TMP/x/train.jsonl")
"${MPI[@]}" 2 $BIN train configs/tiny.yaml "${COMMON[@]}" --set train.steps=50 --set run.out_dir="$TMP/x" 2>"$TMP/x2.log"
a=$(tail -1 "$TMP/r1/train.jsonl" | grep -o '"loss":[0-9.]*'); b=$(tail -1 "$TMP/x/train.jsonl" | grep -o '"loss":[0-9.]*')
[ "$stopped" -lt 50 ] && grep -q "resumed from" "$TMP/x2.log" && [ "$a" = "$b" ] \
  && ok "stopped on 4 ranks (ZeRO-1) at step $stopped, resumed on 2: step 50 $b = uninterrupted 1-rank $a" \
  || bad "4 -> 2 ranks resume (stopped at $stopped): $b vs $a ($(grep -o 'resumed.*' "$TMP/x2.log"))"

# 3. SIGUSR1: checkpoint and exit within 10 s, then continue
"${MPI[@]}" 2 $BIN train configs/tiny.yaml "${COMMON[@]}" --set train.steps=2000 --set checkpoint.every=1000 \
  --set run.out_dir="$TMP/u" 2>"$TMP/u.log" &
job=$!
while [ "$(steps_in "$TMP/u/train.jsonl")" -lt 20 ] && kill -0 $job 2>/dev/null; do sleep 0.05; done
t0=$(date +%s.%N)
kill -USR1 $job
wait $job; rc=$?
dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
n=$(steps_in "$TMP/u/train.jsonl")
ck=$(ls "$TMP/u/checkpoints" | tail -1)
if [ $rc -eq 0 ] && [ "$ck" = "$(printf 'step-%08d.ckpt' "$n")" ] && awk -v d="$dt" 'BEGIN{exit !(d < 10)}'; then
  ok "SIGUSR1: exit 0 after ${dt}s with $ck (step $n)"
else
  bad "SIGUSR1: rc=$rc after ${dt}s, last step $n, newest checkpoint $ck"
fi
"${MPI[@]}" 2 $BIN train configs/tiny.yaml "${COMMON[@]}" --set train.steps=$((n + 5)) --set run.out_dir="$TMP/u" 2>"$TMP/u2.log"
[ "$(steps_in "$TMP/u/train.jsonl")" -eq $((n + 5)) ] && grep -q "(step $n)" "$TMP/u2.log" \
  && ok "rerun continued from step $n to $((n + 5))" || bad "rerun after SIGUSR1: $(tail -2 "$TMP/u2.log")"
finish
