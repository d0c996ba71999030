#!/usr/bin/env bash
# End-to-end checks of the Slurm scripts on a real single-node Slurm (munged + slurmctld + slurmd on
# localhost, started by slurm/local-cluster.sh under a temp dir and always stopped on exit):
#  1. `sbatch --wait slurm/train.sbatch configs/tiny.yaml --set ...` (80 steps): the job COMPLETED with
#     exit 0, its run dir is named by job id and holds config.yaml (threads from --cpus-per-task), the JSONL
#     and the final checkpoint; its output file <name>-<id>.out holds the trainer's log;
#  2. the same run, `scancel -s USR1 -b` mid-run: a checkpoint of the current step appears and the
#     trainer exits within 10 s; the job requeues itself and the resumed run continues from that step
#     to the end, with every step's loss equal to run 1's;
#  3. a new job on run 2's directory (DS_RUN_DIR) continues from its last step;
#  4. slurm/submit-sweep.sh: a dry run of jobs/scaling-sweep.yaml, a rejected sweep, and a real
#     two-model job array;
#  5. local-cluster.sh is idempotent and `stop` leaves no daemon running.
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh slurm
. tests/slurm_lib.sh

# 0. the cluster
t0=$(now)
if slurm/local-cluster.sh start "$CLUSTER" >"$TMP/start.out" 2>"$TMP/start.err" \
   && grep -q "^export SLURM_CONF=$CLUSTER/slurm.conf$" "$TMP/start.out"; then
  ok "local cluster up in $(since "$t0") s: node $(sinfo -h -N -o '%N %T, %c CPUs' 2>/dev/null)"
else
  bad "local cluster did not start:"; sed 's/^/  | /' "$TMP/start.err"; finish
fi
pids_before=$(cat "$CLUSTER"/slurmctld.pid "$CLUSTER"/slurmd.pid)
slurm/local-cluster.sh start "$CLUSTER" >/dev/null 2>&1 && [ "$(cat "$CLUSTER"/slurmctld.pid "$CLUSTER"/slurmd.pid)" = "$pids_before" ] \
  && ok "start again: same daemons (pids $(echo $pids_before))" || bad "second start changed or failed"

# one thread per job (--cpus-per-task=1): a tiny model gains little from two, and a single thread
# keeps its pace when other work shares this 2-core machine
STEPS=80
COMMON=(--set "train.steps=$STEPS" --set train.eval_every=0 --set train.log_every=20 --set checkpoint.every=25)
final_ckpt=$(printf step-%08d.ckpt $STEPS)

# 1. a complete run with sbatch --wait
t0=$(now)
id1=$(sbatch --wait --parsable -J "$NAME" -c 1 slurm/train.sbatch configs/tiny.yaml "${COMMON[@]}" 2>"$TMP/sbatch1.err")
rc=$?
id1=${id1%%;*}
run1=$TMP/runs/$NAME-$id1
out1=$REPO/$NAME-$id1.out
wait_for 10 job_done "$id1"
state=$(final_state "$id1")
[ $rc -eq 0 ] && [ "$state" = "JobState=COMPLETED ExitCode=0:0" ] \
  && ok "job $id1 ($STEPS steps): sbatch --wait exit 0, $state, $(since "$t0") s" \
  || { bad "job $id1: sbatch rc=$rc, state '$state' $(cat "$TMP/sbatch1.err")"; show_out "$out1"; }
[ "$(jsonl_steps "$run1/train.jsonl" | tr '\n' ' ')" = "$(seq -s ' ' 1 $STEPS) " ] \
  && ok "run dir named by job id ($(basename "$run1")): JSONL has steps 1..$STEPS" || bad "$run1/train.jsonl: steps $(jsonl_steps "$run1/train.jsonl" | wc -l)"
[ -f "$run1/checkpoints/$final_ckpt" ] && ok "final checkpoint $(basename "$run1")/checkpoints/$final_ckpt" \
  || bad "no final checkpoint: $(ls "$run1/checkpoints" 2>&1)"
grep -q '^  threads: 1$' "$run1/config.yaml" 2>/dev/null && ok "config.yaml: run.threads 1 from --cpus-per-task=1" \
  || bad "config.yaml: threads not 1"
if grep -q "^train.sbatch: job $id1, restart 0, 1 task(s)" "$out1" 2>/dev/null && grep -q '1 rank(s) x 1 thread(s)' "$out1" \
   && grep -q '^done: final train loss' "$out1" && grep -q "step exited with status 0 at step $STEPS of $STEPS" "$out1"; then
  ok "output file $(basename "$out1"): header, trainer log, exit status"
else
  bad "output file $out1 lacks the expected lines"; show_out "$out1"
fi

# 2. USR1 mid-run: checkpoint, exit within 10 s, requeue, resume to the end
t0=$(now)
id2=$(sbatch --parsable -J "$NAME" -c 1 slurm/train.sbatch configs/tiny.yaml "${COMMON[@]}")
id2=${id2%%;*}
run2=$TMP/runs/$NAME-$id2
out2=$REPO/$NAME-$id2.out
has_steps() { [ "$(jsonl_steps "$run2/train.jsonl" | wc -l)" -ge "$1" ]; }
# signal early: on a fast machine the whole run takes about a second
if ! wait_for 90 has_steps 3; then
  bad "job $id2 wrote no 3 steps in 90 s"; show_out "$out2"; finish
fi
t_sig=$(now)
scancel -s USR1 -b "$id2"
step_exited() { grep -q 'train.sbatch: step exited' "$out2" 2>/dev/null; }
if wait_for 30 step_exited; then
  exit_s=$(since "$t_sig")
  stopped=$(sed -n 's/^stopped by .*signal.* after step \([0-9]*\).*/\1/p' "$out2" | tail -n1)
  last=$(jsonl_steps "$run2/train.jsonl" | tail -n1)
  ckpt=$(printf '%s/checkpoints/step-%08d.ckpt' "$run2" "${stopped:-0}")
  if [ -n "$stopped" ] && [ "$stopped" = "$last" ] && [ "$stopped" -lt $STEPS ] && [ -f "$ckpt" ]; then
    ok "USR1 after step $last: trainer stopped at step $stopped and wrote $(basename "$ckpt")"
  else
    bad "after USR1: stopped '$stopped', JSONL last step '$last', checkpoint $(ls "$run2/checkpoints" | tr '\n' ' ')"; show_out "$out2"
  fi
  awk -v s="$exit_s" 'BEGIN {exit !(s < 10)}' && ok "trainer exited ${exit_s} s after the signal (limit 10 s)" \
    || bad "trainer took ${exit_s} s to exit after USR1 (limit 10 s)"
else
  bad "job $id2: the step did not exit within 30 s of USR1"; show_out "$out2"
fi
pending() { [ "$(squeue -h -j "$id2" -o %T 2>/dev/null)" = PENDING ]; }
if wait_for 30 pending && grep -q "requeueing job $id2" "$out2"; then
  ok "job $id2 requeued itself: $(scontrol show job "$id2" | grep -o 'JobState=[A-Z]* Reason=[A-Za-z]*'), $(scontrol show job "$id2" | grep -o 'Restarts=[0-9]*')"
  # skip the requeue hold (Reason=BeginTime); Slurm refuses to start a job in the same second as its
  # requeue revoked its credential, hence the pause
  sleep 2
  scontrol update JobId="$id2" StartTime=now
else
  bad "job $id2 did not requeue: $(squeue -h -j "$id2" -o '%T %r' 2>&1)"; show_out "$out2"
fi
restarted() { [ "$(final_state "$id2")" = "JobState=COMPLETED ExitCode=0:0" ]; }
if wait_for 120 restarted; then
  ok "requeued job $id2 COMPLETED, exit 0 ($(since "$t0") s for both runs)"
else
  bad "requeued job $id2 did not complete: '$(final_state "$id2")' $(squeue -h -j "$id2" -o '%T %r' 2>&1)"; show_out "$out2"
fi
grep -q "^train.sbatch: job $id2, restart 1," "$out2" && grep -q "resumed from .*step-$(printf %08d "${stopped:-0}").ckpt (step ${stopped:-0})" "$out2" \
  && ok "second start: SLURM_RESTART_COUNT 1, resumed from step ${stopped:-?}" || { bad "second start did not resume from step ${stopped:-?}"; show_out "$out2" 30; }
if [ "$(jsonl_steps "$run2/train.jsonl" | tr '\n' ' ')" = "$(seq -s ' ' 1 $STEPS) " ] \
   && diff <(losses "$run1/train.jsonl") <(losses "$run2/train.jsonl") >/dev/null; then
  ok "interrupted + resumed run: steps 1..$STEPS, every loss equal to run 1's (final $(losses "$run2/train.jsonl" | tail -n1))"
else
  bad "interrupted + resumed run differs from run 1:"; diff <(losses "$run1/train.jsonl") <(losses "$run2/train.jsonl") | head -5
fi

# 3. a new job on the same run directory continues from its last step
id3=$(DS_RUN_DIR=$run2 sbatch --wait --parsable -J "$NAME" -c 1 slurm/train.sbatch configs/tiny.yaml "${COMMON[@]}" \
      --set train.steps=$((STEPS + 6)) 2>"$TMP/sbatch3.err")
rc=$?
id3=${id3%%;*}
if [ $rc -eq 0 ] && grep -q "resumed from .*$final_ckpt (step $STEPS)" "$REPO/$NAME-$id3.out" 2>/dev/null \
   && [ "$(jsonl_steps "$run2/train.jsonl" | tail -n1)" = $((STEPS + 6)) ] \
   && [ -f "$run2/checkpoints/$(printf step-%08d.ckpt $((STEPS + 6)))" ]; then
  ok "new job $id3 with DS_RUN_DIR=$(basename "$run2") and $((STEPS + 6)) steps: resumed from step $STEPS, ended at $((STEPS + 6))"
else
  bad "resubmission: rc=$rc $(cat "$TMP/sbatch3.err")"; show_out "$REPO/$NAME-$id3.out"
fi

# 4. the sweep: dry run of the real file, a rejected file, and a real two-model array
dry=$(slurm/submit-sweep.sh --dry-run jobs/scaling-sweep.yaml 2>&1); rc=$?
cmds=$(grep -c '^sbatch ' <<<"$dry")
nodes=$(grep -o -- '--nodes=[0-9]*' <<<"$dry" | cut -d= -f2 | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$cmds" -ge 3 ] && [[ "$nodes" == "1 2 4 "* ]] && grep -q 'slurm/sweep.sbatch configs/' <<<"$dry" \
   && grep -q "'1.5b [^']*model.n_layer=24 [^']*model.n_embd=2048" <<<"$dry" && grep -q "'0.1b [^']*model.n_layer=12 [^']*model.n_embd=768" <<<"$dry"; then
  ok "submit-sweep --dry-run jobs/scaling-sweep.yaml: $cmds arrays, --nodes $nodes"
else
  bad "submit-sweep --dry-run: rc=$rc"; echo "$dry" | head -5
fi
cat >"$TMP/bad-sweep.yaml" <<EOF
name: bad
config: configs/tiny.yaml
nodes: [1, 3]
models:
  - {name: m, n_layer: 1, n_embd: 64, batch_size: 4}
EOF
err=$(slurm/submit-sweep.sh --dry-run "$TMP/bad-sweep.yaml" 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q 'm on 3 node(s): train.batch_size 4 is not a multiple of 3 rank(s)' <<<"$err" \
  && ok "a sweep whose batch does not divide by the ranks is refused: $err" || bad "bad sweep: rc=$rc $err"
SWEEP=$NAME-sweep
cat >"$TMP/sweep.yaml" <<EOF
name: $SWEEP
config: configs/tiny.yaml
nodes: [1]
cpus_per_task: 1
set:
  train.eval_every: 0
models:
  - {name: small, n_layer: 1, n_embd: 64, steps: 5, ctx_len: 32, batch_size: 4}
  - {name: wide, n_layer: 2, n_embd: 128, steps: 7, ctx_len: 16, batch_size: 8}
EOF
t0=$(now)
sub=$(slurm/submit-sweep.sh "$TMP/sweep.yaml" 2>&1); rc=$?
arr=$(sed -n 's/^submitted \([0-9]*\):.*/\1/p' <<<"$sub")
queue_empty() { [ -z "$(squeue -h -j "$arr" -o %i 2>/dev/null)" ]; }
if [ $rc -eq 0 ] && [ -n "$arr" ] && wait_for 120 queue_empty; then
  good=1
  for spec in "0 small 1 64 5" "1 wide 2 128 7"; do
    read -r idx model layers width steps <<<"$spec"
    dir=$TMP/runs/$SWEEP-$model-n1-${arr}_$idx
    grep -q "^  n_layer: $layers$" "$dir/config.yaml" 2>/dev/null && grep -q "^  n_embd: $width$" "$dir/config.yaml" \
      && [ "$(jsonl_steps "$dir/train.jsonl" | tail -n1)" = "$steps" ] && [ -f "$REPO/$NAME-sweep-${arr}_$idx.out" ] \
      || { good=0; echo "  element $idx ($model): $dir"; show_out "$REPO/$NAME-sweep-${arr}_$idx.out"; }
  done
  n_done=$(grep -c "Name=$SWEEP JobState=COMPLETED" "$CLUSTER/log/jobcomp.log")
  [ $good -eq 1 ] && [ "$n_done" -eq 2 ] \
    && ok "sweep array $arr: 2 elements COMPLETED in $(since "$t0") s with their shapes (L1 C64, L2 C128) and steps" \
    || bad "sweep array $arr: $n_done element(s) COMPLETED"
else
  bad "sweep submission: rc=$rc $sub"
fi

# 5. stop: no daemon of this cluster left, and stop is idempotent
pids=$(cat "$CLUSTER"/slurmctld.pid "$CLUSTER"/slurmd.pid "$CLUSTER"/munged.pid 2>/dev/null)
slurm/local-cluster.sh stop "$CLUSTER" 2>/dev/null
left=""
for p in $pids; do
  st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && left="$left $p"
done
[ -z "$left" ] && [ -z "$(pgrep -f "$CLUSTER/slurm.conf")" ] && slurm/local-cluster.sh stop "$CLUSTER" 2>/dev/null \
  && ! slurm/local-cluster.sh status "$CLUSTER" >/dev/null 2>&1 \
  && ok "stop: daemons (pids $(echo $pids)) gone, nothing runs with this cluster's slurm.conf; stop again: ok" \
  || bad "after stop still running:$left $(pgrep -af "$CLUSTER/slurm.conf")"
finish
