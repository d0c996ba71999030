# Stop, checkpoint, requeue: shared by the Slurm batch scripts (train.sbatch, part-a.sbatch,
# part-b.sbatch) and the job scripts' jobs/lib.sh. Sourced from the repository root as
# `. slurm/lib.sh TAG` (TAG starts this file's log lines). Defines:
#   SRUN                      srun as the batch scripts start ranks (array; one task per rank)
#   catch_stop_signals        from now on USR1 and TERM are recorded in $signalled and passed on to
#                             the work run_forwarding runs, if any
#   run_forwarding CMD...     runs CMD in the background (its output to $STEP_OUT when set) and waits
#                             for it, passing a stop signal on as above; sets step_rc (its status)
#   run_progress DIR          run_steps: train.steps of DIR/config.yaml; run_last: the last step of
#                             DIR/train.jsonl (either empty when missing); run_finished: run_last >= run_steps
#   requeue_if_stopped STOPPED DIR   after run_forwarding: when a stop signal ended the work early
#                             (STOPPED 1: the work says it stopped short), `scontrol requeue` this job
#                             and exit 0; else exit with step_rc
#   slurm_job_header          the job's first line (id, restart count, tasks, nodes) and its OMPI_MCA_*
#   slurm_run_dir             the directory a job's outputs go to: $DS_RUN_DIR, else
#                             ${DS_RUN_ROOT:-runs}/<job name>-<job id> (array elements:
#                             <job name>-<array job id>_<index>); a requeued job keeps its id, so its directory
#   STOPPED_EXIT              75 (EX_TEMPFAIL): a job script's status when a signal stopped it early
#   run_job_script SCRIPT ARGS...    the body of part-a.sbatch and part-b.sbatch (below)
STEP_TAG=$1
STOPPED_EXIT=75
signalled=""
step_pid=""
step_rc=0

# --kill-on-bad-exit: a rank that fails (a watchdog timeout, src/dist/README.md §8) ends the others.
# --wait=10: once one rank has exited, srun ends the step 10 s later. The ranks leave the trainer
# together (they meet in a final barrier), so one still "running" then sits on a node that died or
# that srun cannot reach, and srun would otherwise wait for it until Slurm declares the node down
# (SlurmdTimeout, 300 s by default). DS_MPI: srun's --mpi plugin.
SRUN=(srun --mpi="${DS_MPI:-pmix}" --kill-on-bad-exit=1 --wait=10)

# pass_signal SIG: to the work run_forwarding runs; with RANKS_ARE_CHILDREN=1 (mpirun on this node) to
# its ranks themselves. mpirun would pass a TERM on too, but kill the ranks 1 s later, before the step in
# flight and its checkpoint are done; and the only setting that delays that kill
# (odls_base_sigkill_timeout) also delays, twice over, the end of a job whose rank died of an error.
pass_signal() {
  if [ "${RANKS_ARE_CHILDREN:-0}" = 1 ]; then
    local stat line ppid
    for stat in /proc/[0-9]*/stat; do
      read -r line 2>/dev/null <"$stat" || continue
      # after the command name, which may hold spaces: the state, then the parent's pid
      read -r _ ppid _ <<<"${line##*) }"
      [ "$ppid" = "$step_pid" ] && kill -s "$SIG" "${stat//[!0-9]/}" 2>/dev/null
    done
  else
    kill -s "$SIG" "$step_pid" 2>/dev/null
  fi
  return 0
}
forward_signal() {
  signalled=$1
  if [ -n "$step_pid" ]; then
    echo "$STEP_TAG: got SIG$1 at $(date -Is), forwarding to ${STEP_WHAT:-the job step}"
    SIG=$1 pass_signal
  else
    echo "$STEP_TAG: got SIG$1 at $(date -Is), stopping before the next stage"
  fi
}
catch_stop_signals() {
  trap 'forward_signal USR1' USR1
  trap 'forward_signal TERM' TERM
}

# A trapped signal cuts the first `wait` short: then poll until the work ends, passing USR1 on again
# every 5 s (srun drops a signal that comes while it is still launching the ranks). Not TERM: a second
# TERM ends the trainer at once, without the checkpoint it is writing. Bash keeps the work's exit status
# for the last `wait`. Written to run under `set -e` too.
run_forwarding() {
  local polls=0 kept
  if [ -n "${STEP_OUT:-}" ]; then "$@" >"$STEP_OUT" 2>&1 & else "$@" & fi
  step_pid=$!
  wait "$step_pid" && step_rc=0 || step_rc=$?
  while kill -0 "$step_pid" 2>/dev/null; do
    sleep 0.2
    polls=$((polls + 1))
    if [ $((polls % 25)) -eq 0 ] && [ "$signalled" = USR1 ]; then SIG=USR1 pass_signal; fi
  done
  wait "$step_pid" 2>/dev/null && kept=0 || kept=$?
  if [ "$kept" -ne 127 ]; then step_rc=$kept; fi
  step_pid=""
}

run_progress() {
  run_steps=$(awk '/^train:/ {s = 1; next} /^[^ #]/ {s = 0} s && $1 == "steps:" {print $2}' "$1/config.yaml" 2>/dev/null || true)
  run_last=$(tail -n 1 "$1/train.jsonl" 2>/dev/null | sed -n 's/^{"step":\([0-9]*\).*/\1/p' || true)
}
run_finished() { [ -n "$run_steps" ] && [ -n "$run_last" ] && [ "$run_last" -ge "$run_steps" ]; }

# Requeue after USR1 to this script (the work then exits as stopped short, or dies of the signal if it
# came before the work set its handler), or after USR1 to the steps alone (scancel -s USR1 without -b,
# --signal without B:), after which the work says it stopped short. Never after TERM (scancel,
# preemption, `scontrol requeue`): Slurm is ending the job itself then, and requeues it itself when that
# is what was asked; a requeue from here would undo an scancel.
requeue_if_stopped() {
  local again=0
  case "$signalled" in
    USR1) if [ "$1" = 1 ] || [ "$step_rc" -gt 128 ]; then again=1; fi ;;
    "") again=$1 ;;
  esac
  [ "$again" = 1 ] || exit "$step_rc"
  echo "$STEP_TAG: stopped early by SIG${signalled:-USR1 (to the step)}; requeueing job $SLURM_JOB_ID to resume from $2"
  if scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
  echo "$STEP_TAG: requeue failed; to continue, submit again with DS_RUN_DIR=$2" >&2
  exit 1
}

# without -n/--ntasks srun starts one task per node, and Slurm sets no SLURM_NTASKS
slurm_job_header() {
  local mca
  echo "$STEP_TAG: job $SLURM_JOB_ID${SLURM_ARRAY_JOB_ID:+ (array ${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID)}," \
       "restart ${SLURM_RESTART_COUNT:-0}, ${SLURM_NTASKS:-${SLURM_JOB_NUM_NODES:-1}} task(s) on" \
       "${SLURM_JOB_NUM_NODES:-1} node(s) ($SLURM_JOB_NODELIST), ${SLURM_CPUS_PER_TASK:-all} cpu(s)/task, $*, $(date -Is)"
  # which network and transports Open MPI was told to use (a multi-node job's first question)
  mca=$(env | grep '^OMPI_MCA_' | sort | tr '\n' ' ')
  [ -z "$mca" ] || echo "$STEP_TAG: Open MPI settings: $mca"
}

slurm_run_dir() {
  local tag=$SLURM_JOB_ID
  [ -z "${SLURM_ARRAY_JOB_ID:-}" ] || tag=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
  echo "${DS_RUN_DIR:-${DS_RUN_ROOT:-runs}/${SLURM_JOB_NAME}-$tag}"
}

# run_job_script SCRIPT ARGS...: the body of part-a.sbatch and part-b.sbatch. Runs the job script
# with --out <run dir> (unless ARGS has --out), passes USR1 and TERM on to it, and requeues the job when
# it exits with STOPPED_EXIT (stopped early by a signal, jobs/lib.sh) after USR1.
run_job_script() {
  local script=$1 out="" prev="" a; shift
  for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
  local args=("$@")
  if [ -z "$out" ]; then out=$(slurm_run_dir); args+=(--out "$out"); fi
  slurm_job_header "$script ${args[*]}"
  catch_stop_signals
  STEP_WHAT=$script run_forwarding bash "$script" "${args[@]}"
  echo "$STEP_TAG: $script exited with status $step_rc at $(date -Is)"
  local stopped=0
  [ "$step_rc" -eq "$STOPPED_EXIT" ] && stopped=1
  requeue_if_stopped "$stopped" "$out"
}
