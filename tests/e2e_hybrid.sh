#!/usr/bin/env bash
# End-to-end checks of `dreamstate train` with run.task hybrid, on the default corpus, from a
# tiny RWKV-7 trained here for 100 steps:
#  - 2 ranks, static weights trainable: the step means of loss_lm and loss_pd over the last 10 steps are
#    below those of the first 10, and the held-out L_LM ends below that of the base it started from;
#  - 1 vs 2 ranks (train.micro_batch 2): every step's loss, loss_lm, loss_pd agree to 1e-5 (relative)
#    and the checkpoints are the same bytes; the same with train.precision bf16 (30 steps), and with
#    train.grad_checkpoint the 1-rank bf16 run ends with the same checkpoint bytes;
#  - the static baseline (matrices none, train_static 1) trains without DiT or alpha and improves on the base;
#  - frozen static weights (not stored in checkpoints): stopped by SIGUSR1 at a random step on 2 ranks and
#    rerun, the run ends with the uninterrupted run's losses and alphas, step for step, exactly;
#  - the baselines of the ablation (src/hybrid/README.md §1.8, §1.9): the shuffled condition and the static
#    fine-tune restricted to W_r, W_k, W_v of layer 0, each 1 rank uninterrupted against 2 ranks stopped by
#    SIGUSR1 at a random step and rerun: every step's loss terms agree to 1e-5 and the last checkpoints are
#    the same bytes (so rank count and resume change nothing); the restricted run's checkpoints hold those
#    three matrices and no other RWKV-7 weight (the rest is re-read from hybrid.init, whose CRC the
#    signature carries);
#  - resume refuses a checkpoint of another hybrid layout or other hybrid.init weights; bad input
#    (hybrid.init unset, missing, of another model shape; matrices none with frozen weights) exits 2 with
#    one line.
cd "$(dirname "$0")/.."
. tests/lib.sh hybrid
MPI=(mpirun --oversubscribe -np)
steps_in() { local n; n=$(grep -c '"step"' "$1" 2>/dev/null); echo "${n:-0}"; }
# same_losses DIR_A DIR_B STEPS: both runs logged STEPS steps, each step's loss, loss_lm and loss_pd equal to
# 1e-5 (relative)
same_losses() {
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import json, sys
steps = int(sys.argv[3])
runs = [[json.loads(l) for l in open(f'{d}/train.jsonl')] for d in sys.argv[1:3]]
assert len(runs[0]) == len(runs[1]) == steps, [len(r) for r in runs]
worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-30) for a, b in zip(*runs) for k in ('loss', 'loss_lm', 'loss_pd'))
print(f'  max relative difference over {steps} steps x 3 terms: {worst:.3g}')
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
# stop_and_rerun DIR STOP_AT TRAIN_ARGS...: `train TRAIN_ARGS` on 2 ranks into DIR, stopped by SIGUSR1 once
# STOP_AT steps are logged (log DIR.1.log), then rerun to its end (DIR.2.log); `stopped`: the steps then
stop_and_rerun() {
  local dir=$1 at=$2 job; shift 2
  "${MPI[@]}" 2 $BIN train "$@" --set run.out_dir="$dir" 2>"$dir.1.log" &
  job=$!
  while [ "$(steps_in "$dir/train.jsonl")" -lt "$at" ] && kill -0 $job 2>/dev/null; do sleep 0.02; done
  kill -USR1 $job; wait $job
  stopped=$(steps_in "$dir/train.jsonl")
  "${MPI[@]}" 2 $BIN train "$@" --set run.out_dir="$dir" 2>"$dir.2.log"
}

# the base: configs/tiny.yaml for 100 steps on one thread
$BIN train configs/tiny.yaml --set train.steps=100 --set run.threads=1 --set train.eval_every=0 \
  --set checkpoint.every=50 --set train.log_every=100 --set run.out_dir="$TMP/base" 2>"$TMP/base.log" || { bad "base training: $(tail -1 "$TMP/base.log")"; }
INIT="$TMP/base/checkpoints/step-00000100.ckpt"
H=(configs/tiny-hybrid.yaml --set hybrid.init="$INIT" --set run.threads=1 --set train.micro_batch=2
   --set train.log_every=50 --set checkpoint.resume=auto)

# 1. 2 ranks with trainable static weights; 2. the same on 1 rank
LEARN=(--set hybrid.train_static=1 --set train.steps=100 --set train.eval_every=0)
"${MPI[@]}" 2 $BIN train "${H[@]}" "${LEARN[@]}" --set run.out_dir="$TMP/r2" 2>"$TMP/r2.log" || bad "2 ranks: exit $? ($(tail -1 "$TMP/r2.log"))"
$BIN train "${H[@]}" "${LEARN[@]}" --set run.out_dir="$TMP/r1" 2>"$TMP/r1.log" || bad "1 rank: exit $? ($(tail -1 "$TMP/r1.log"))"
/usr/bin/python3 - "$TMP" <<'PY' && ok "2 ranks: loss_lm and loss_pd fall, held-out L_LM below the base's" || bad "2 ranks: the losses do not fall"
import json, sys
rows = [json.loads(l) for l in open(f'{sys.argv[1]}/r2/train.jsonl')]
assert len(rows) == 100, f'{len(rows)} steps'
mean = lambda k, part: sum(r[k] for r in part) / len(part)
ok = True
for k in ('loss_lm', 'loss_pd'):
    a, b = mean(k, rows[:10]), mean(k, rows[-10:])
    print(f'  {k}: mean of steps 1-10 {a:.4f}, of steps 91-100 {b:.4f}')
    ok &= b < a - 0.03
end = rows[-1]
print(f"  held-out L_LM (positions >= P): base {end['base_val_loss']:.4f}, after 100 steps {end['val_loss']:.4f}")
alphas = [v for k, v in end.items() if k.startswith('alpha_')]
ok &= end['val_loss'] < end['base_val_loss'] - 0.02 and len(alphas) == 3 and all(0 < a < 1 for a in alphas)
sys.exit(0 if ok else 1)
PY
same_losses "$TMP/r1" "$TMP/r2" 100 && ok "1 vs 2 ranks: the same loss, loss_lm and loss_pd at every step" \
  || bad "1 vs 2 ranks differ"
cmp -s "$TMP/r1/checkpoints/step-00000100.ckpt" "$TMP/r2/checkpoints/step-00000100.ckpt" \
  && ok "1 vs 2 ranks: the same checkpoint, byte for byte" || bad "1 and 2 ranks write different checkpoints"

# 2b. 1 vs 2 ranks in bf16 (matrix products of the DiT, the generated weights and the RWKV-7)
B16=(--set hybrid.train_static=1 --set train.steps=30 --set train.eval_every=0 --set train.precision=bf16)
for n in 1 2; do
  "${MPI[@]}" $n $BIN train "${H[@]}" "${B16[@]}" --set run.out_dir="$TMP/b$n" 2>"$TMP/b$n.log" || bad "bf16, $n rank(s): exit $? ($(tail -1 "$TMP/b$n.log"))"
done
same_losses "$TMP/b1" "$TMP/b2" 30 && ok "bf16, 1 vs 2 ranks: the same loss, loss_lm and loss_pd at every step" \
  || bad "bf16: 1 vs 2 ranks differ"
cmp -s "$TMP/b1/checkpoints/step-00000030.ckpt" "$TMP/b2/checkpoints/step-00000030.ckpt" \
  && ok "bf16, 1 vs 2 ranks: the same checkpoint, byte for byte" || bad "bf16: 1 and 2 ranks write different checkpoints"
# 2c. train.grad_checkpoint: the RWKV-7 recomputes its blocks in the backward (src/rwkv7/README.md §3.6)
"${MPI[@]}" 1 $BIN train "${H[@]}" "${B16[@]}" --set train.grad_checkpoint=true --set run.out_dir="$TMP/bcp" \
  2>"$TMP/bcp.log" || bad "bf16 with train.grad_checkpoint: exit $? ($(tail -1 "$TMP/bcp.log"))"
cmp -s "$TMP/b1/checkpoints/step-00000030.ckpt" "$TMP/bcp/checkpoints/step-00000030.ckpt" \
  && ok "train.grad_checkpoint (bf16, 30 steps): the same checkpoint, byte for byte" \
  || bad "train.grad_checkpoint changes the hybrid's checkpoint"

# 3. the static baseline: no DiT, the RWKV-7 alone fine-tuned on the same windows and positions
$BIN train "${H[@]}" --set hybrid.matrices=none --set hybrid.train_static=1 --set train.steps=40 \
  --set run.out_dir="$TMP/static" 2>"$TMP/static.log" || bad "static baseline: exit $? ($(tail -1 "$TMP/static.log"))"
/usr/bin/python3 - "$TMP" <<'PY' && ok "static baseline (matrices none): no DiT, no alpha, loss_pd 0, held-out L_LM below the base's" \
  || bad "static baseline"
import json, sys
rows = [json.loads(l) for l in open(f'{sys.argv[1]}/static/train.jsonl')]
end = rows[-1]
print(f"  held-out L_LM: base {end['base_val_loss']:.4f}, after 40 steps {end['val_loss']:.4f}")
sys.exit(0 if len(rows) == 40 and all(r['loss_pd'] == 0 and not any(k.startswith('alpha') for k in r) for r in rows)
         and 'val_loss_pd' not in end and end['val_loss'] < end['base_val_loss'] else 1)
PY

# 4. frozen static weights: uninterrupted, then stopped by SIGUSR1 and rerun
FROZEN=(--set train.steps=60 --set train.eval_every=30 --set checkpoint.every=1000)
"${MPI[@]}" 2 $BIN train "${H[@]}" "${FROZEN[@]}" --set run.out_dir="$TMP/u" 2>"$TMP/u.log" || bad "frozen run: exit $?"
stop_and_rerun "$TMP/s" $(( 10 + RANDOM % 35 )) "${H[@]}" "${FROZEN[@]}"
fields() { /usr/bin/python3 -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r["step"], *(f"{k}={v}" for k, v in r.items() if k.startswith(("loss", "alpha", "val_"))))' "$1"; }
if [ "$stopped" -lt 60 ] && grep -q "resumed from" "$TMP/s.2.log" && diff <(fields "$TMP/u/train.jsonl") <(fields "$TMP/s/train.jsonl") >/dev/null; then
  ok "stopped at step $stopped, rerun: 60 steps of losses, alphas and held-out values equal the uninterrupted run's ($(fields "$TMP/s/train.jsonl" | tail -1 | cut -d' ' -f1-4))"
else
  bad "stop/rerun (stopped at $stopped): $(grep -o 'resumed.*' "$TMP/s.2.log")"; diff <(fields "$TMP/u/train.jsonl") <(fields "$TMP/s/train.jsonl") | head -4
fi
ls "$TMP/s/checkpoints"/*.ckpt >/dev/null 2>&1 && ! grep -aq 'rwkv7.blocks' "$TMP"/s/checkpoints/*.ckpt \
  && ok "frozen static weights are not stored in the checkpoints" || bad "checkpoints hold the frozen RWKV-7 weights"

# 5. the ablation's baselines: 1 rank uninterrupted vs 2 ranks stopped and rerun
BASELINES=(
  "shuffled|--set hybrid.shuffle_condition=true"
  "restricted|--set hybrid.matrices=none --set hybrid.train_static=1 --set hybrid.static_scope=targeted"
)
for v in "${BASELINES[@]}"; do
  name=${v%%|*}; read -ra extra <<<"${v#*|}"
  A=(--set train.steps=30 --set train.eval_every=15 --set checkpoint.every=1000 "${extra[@]}")
  $BIN train "${H[@]}" "${A[@]}" --set run.out_dir="$TMP/$name-1" 2>"$TMP/$name-1.log" || bad "$name, 1 rank: exit $?"
  stop_and_rerun "$TMP/$name-2" $(( 8 + RANDOM % 15 )) "${H[@]}" "${A[@]}"
  if [ "$stopped" -lt 30 ] && grep -q "resumed from" "$TMP/$name-2.2.log" && same_losses "$TMP/$name-1" "$TMP/$name-2" 30 \
     && cmp -s "$TMP/$name-1/checkpoints/step-00000030.ckpt" "$TMP/$name-2/checkpoints/step-00000030.ckpt"; then
    ok "$name: 1 rank vs 2 ranks stopped at step $stopped and rerun: the same losses at every step, the same last checkpoint bytes"
  else
    bad "$name: 1 rank vs 2 ranks stopped at $stopped and rerun differ ($(tail -1 "$TMP/$name-2.2.log"))"
  fi
done
grep -q "condition first_token read from another window" "$TMP/shuffled-1.log" \
  && ok "shuffled: the log says where the condition comes from" || bad "shuffled: $(grep generates "$TMP/shuffled-1.log")"
held=$(grep -aoE 'rwkv7\.[A-Za-z0-9_.]+' "$TMP/restricted-2/checkpoints/step-00000030.ckpt" | sort -u | tr '\n' ' ')
[ "$held" = "rwkv7.blocks.0.att.key.weight rwkv7.blocks.0.att.receptance.weight rwkv7.blocks.0.att.value.weight " ] \
  && ok "restricted static: the checkpoint holds W_r, W_k, W_v of layer 0 and no other RWKV-7 weight" \
  || bad "restricted static: the checkpoint holds $held"

# 6. bad input and refused resumes: exit 2, one line, no change to the run directory
snapshot() { find "$TMP/s" -type f -exec md5sum {} + | sort; }
# name, expected message fragment, command...: exit 2 with a one-line reason. Input errors print nothing
# else; a refused resume comes after the task's setup lines, so there the reason must be the last line.
expect_bad() {
  local name=$1 frag=$2; shift 2
  local before; before=$(snapshot)
  "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"; local rc=$?
  local lines; lines=$(wc -l <"$TMP/err.txt")
  case "$name" in resume*) lines=$(grep -c '^dreamstate: ' "$TMP/err.txt"); tail -1 "$TMP/err.txt" >"$TMP/err1.txt" ;;
                  *) cp "$TMP/err.txt" "$TMP/err1.txt" ;; esac
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$frag" "$TMP/err1.txt" && [ "$before" = "$(snapshot)" ]; then
    ok "$name: exit 2, $(sed "s|$TMP/||g" "$TMP/err1.txt")"
  else
    bad "$name: rc=$rc lines=$lines: $(tail -3 "$TMP/err.txt")"
  fi
}
expect_bad "hybrid.init unset" "hybrid.init" $BIN train "${H[@]}" --set hybrid.init= --set run.out_dir="$TMP/s"
expect_bad "hybrid.init missing" "$TMP/nothing.ckpt" $BIN train "${H[@]}" --set hybrid.init="$TMP/nothing.ckpt" --set run.out_dir="$TMP/s"
expect_bad "hybrid.init of another shape" "has n_embd 128" \
  $BIN train "${H[@]}" --set model.n_embd=192 --set run.out_dir="$TMP/s"
expect_bad "matrices none with frozen weights" "needs hybrid.train_static 1" \
  $BIN train "${H[@]}" --set hybrid.matrices=none --set run.out_dir="$TMP/s"
expect_bad "resume with another layout" "config describes 'hybrid rwkv7 .* mats=kv" \
  $BIN train "${H[@]}" "${FROZEN[@]}" --set hybrid.matrices=kv --set run.out_dir="$TMP/s"
expect_bad "resume with other hybrid.init weights" "init=[0-9a-f]*', config describes 'hybrid .* init=" \
  $BIN train "${H[@]}" "${FROZEN[@]}" --set hybrid.init="$TMP/base/checkpoints/step-00000050.ckpt" --set run.out_dir="$TMP/s"
finish
