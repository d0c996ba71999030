#!/usr/bin/env bash
# The DREAMSTATE jobs as Slurm jobs (slurm/part-a.sbatch, slurm/part-b.sbatch) on a real single-node
# Slurm (slurm/local-cluster.sh under a temp dir, always stopped on exit), both at --size smoke, 2 tasks
# of 1 CPU each, at once:
#  1. part A runs through: COMPLETED, exit 0, its outputs in the run directory named by the job
#     (<job name>-<job id>): contexts, states, tuned states, DiT checkpoint, a sample per label,
#     eval-states.json, analysis.json, report.md; its MPI stages started by srun on the 2 tasks;
#  2. part B gets `scancel -s USR1 -b` while its first stage (the RWKV-7 base) trains: the training
#     checkpoints and stops short, the job script exits 75, the job requeues itself, restarts in the
#     same directory, resumes that training from the signal's step and runs every later stage; the
#     base's train.jsonl has every step once, with each loss equal to an uninterrupted run's (the same
#     resolved config.yaml trained again on 2 ranks with mpirun); the ablation table has all 13 variants.
cd "$(dirname "$0")/.."
. tests/lib.sh slurm-jobs
. tests/slurm_lib.sh

t0=$(now)
if slurm/local-cluster.sh start "$CLUSTER" >"$TMP/start.out" 2>"$TMP/start.err"; then
  ok "local cluster up in $(since "$t0") s"
else
  bad "local cluster did not start:"; sed 's/^/  | /' "$TMP/start.err"; finish
fi

# both jobs at once: 2 x 2 tasks fill the cluster's 4 CPUs
t0=$(now)
ida=$(sbatch --parsable -J "$NAME-a" -n 2 -c 1 slurm/part-a.sbatch --size smoke); ida=${ida%%;*}
idb=$(sbatch --parsable -J "$NAME-b" -n 2 -c 1 slurm/part-b.sbatch --size smoke); idb=${idb%%;*}
runa=$TMP/runs/$NAME-a-$ida; outa=$REPO/$NAME-a-$ida.out
runb=$TMP/runs/$NAME-b-$idb; outb=$REPO/$NAME-b-$idb.out
[ -n "$ida" ] && [ -n "$idb" ] && ok "submitted part A ($ida) and part B ($idb)" || { bad "sbatch failed"; finish; }

# 2. USR1 while part B's base trains (100 steps)
base=$runb/base
has_steps() { [ "$(jsonl_steps "$base/train.jsonl" | wc -l)" -ge 3 ]; }
if ! wait_for 120 has_steps; then
  bad "part B: no 3 base steps in 120 s"; show_out "$outb"; finish
fi
scancel -s USR1 -b "$idb"
pending() { [ "$(squeue -h -j "$idb" -o %T 2>/dev/null)" = PENDING ]; }
if wait_for 60 pending; then
  stopped=$(sed -n 's/^stopped by .*signal.* after step \([0-9]*\).*/\1/p' "$outb" | tail -n1)
  if grep -q "hybrid-ablation.sh: the training in $base stopped at step $stopped of 100" "$outb" \
     && grep -q "jobs/hybrid-ablation.sh exited with status 75" "$outb" && grep -q "requeueing job $idb to resume from $runb" "$outb" \
     && [ -f "$(printf '%s/checkpoints/step-%08d.ckpt' "$base" "${stopped:-0}")" ]; then
    ok "part B: USR1 -> the base stopped at step $stopped of 100 with its checkpoint, job script exit 75, job requeued" \
       "($(scontrol show job "$idb" | grep -o 'JobState=[A-Z]* Reason=[A-Za-z]*'))"
    grep -E 'got SIGUSR1|stopped|exited with status|requeueing' "$outb" | sed 's/^/  | /'
  else
    bad "part B after USR1: stopped '$stopped'"; show_out "$outb" 25
  fi
  sleep 2   # Slurm refuses to start a job in the same second as its requeue revoked its credential
  scontrol update JobId="$idb" StartTime=now
else
  bad "part B did not requeue: $(squeue -h -j "$idb" -o '%T %r' 2>&1)"; show_out "$outb" 25
fi

# 1. part A to the end
if wait_for 420 job_done "$ida" && [ "$(final_state "$ida")" = "JobState=COMPLETED ExitCode=0:0" ]; then
  ok "part A ($ida) COMPLETED, exit 0, in $(since "$t0") s"
else
  bad "part A: '$(final_state "$ida")'"; show_out "$outa" 25
fi
missing=""
for f in contexts/held.jsonl states-train/index.txt states-held/index.txt tuned/states/index.txt \
         dit/checkpoints/step-00000100.ckpt eval-states.json analysis/analysis.json dit/report.md \
         states-random-train/index.txt states-personas/index.txt panel/panel.json analysis-personas/analysis.json \
         report.md; do
  [ -s "$runa/$f" ] || missing="$missing $f"
done
samples=$(ls "$runa"/samples/*.state 2>/dev/null | wc -l)
# one per label: the 5 text sources and the 6 personas of configs/personas.jsonl (--size smoke)
[ -z "$missing" ] && [ "$samples" -eq 11 ] && ok "part A outputs in $(basename "$runa")/: eval-states.json, analysis, report, $samples samples" \
  || bad "part A outputs missing:$missing (samples $samples)"
grep -q "^part-a.sh: ranks started by srun .*--ntasks=2, 1 thread(s) each" "$outa" && grep -q '2 rank(s) x 1 thread(s)' "$outa" \
  && ok "part A: MPI stages started by srun on the job's 2 tasks" || { bad "part A: not srun on 2 tasks"; show_out "$outa" 5; }

# 2. part B resumed and finished
if wait_for 300 job_done "$idb" && [ "$(final_state "$idb")" = "JobState=COMPLETED ExitCode=0:0" ]; then
  ok "part B ($idb) COMPLETED after its requeue, $(since "$t0") s since submission"
else
  bad "part B: '$(final_state "$idb")'"; show_out "$outb" 25
fi
grep -q "^part-b.sbatch: job $idb, restart 1," "$outb" \
  && grep -q "resumed from .*step-$(printf %08d "${stopped:-0}").ckpt (step ${stopped:-0})" "$outb" \
  && ok "part B second start: restart 1, same directory, the base resumed from step ${stopped:-?}" \
  || { bad "part B did not resume from step ${stopped:-?}"; show_out "$outb" 30; }
ref=$TMP/ref
mpirun --oversubscribe -np 2 "$BIN" train "$base/config.yaml" --set run.out_dir="$ref" \
  --set checkpoint.dir="$ref/checkpoints" >"$TMP/ref.log" 2>&1 || bad "reference run: $(tail -3 "$TMP/ref.log")"
if [ "$(jsonl_steps "$base/train.jsonl" | tr '\n' ' ')" = "$(seq -s ' ' 1 100) " ] \
   && diff <(losses "$ref/train.jsonl") <(losses "$base/train.jsonl") >/dev/null; then
  ok "interrupted + resumed base: steps 1..100, every loss equal to an uninterrupted run's (final $(losses "$base/train.jsonl" | tail -n1))"
else
  bad "interrupted + resumed base differs from the uninterrupted run:"; diff <(losses "$ref/train.jsonl") <(losses "$base/train.jsonl") | head -5
fi
rows=$(grep -cE '^\| (base|static|alpha-0\.[159]|learned|W_r|W_kv|mean_prefix|attn_prefix|direct|shuffled|static-restricted|ln_out_prefix) \|' "$runb/table.md" 2>/dev/null)
[ "$rows" = 14 ] && [ -s "$runb/table.json" ] && ok "part B table: base + 13 variants in $(basename "$runb")/table.md" \
  || bad "part B table: $rows rows"
finish
