# Shared by the jobs: after `cd` to the repository root, `. jobs/lib.sh NAME DEFAULT_SIZE "$@"` reads
# --size S (default DEFAULT_SIZE; the job checks its value), --ranks R, --out DIR, --model FILE and
# --help (prints the job's header comment) into SIZE, RANKS, OUT and WEIGHTS, and sets BIN, MPI (the
# launcher of RANKS ranks), NTHREADS (BLIS/OpenMP threads per rank) and THREADS (its --set for
# dreamstate; exported as OMP_NUM_THREADS for the commands without a threads option, such as
# sample-state, which would otherwise start one per core: on a busy machine 3x slower), stage(),
# train_stage() and use_weights().
#
# MPI is `srun` inside a Slurm allocation of several tasks (SLURM_JOB_ID set, more than one task; RANKS
# defaults to its task count, threads per rank to --cpus-per-task), else `mpirun` on RANKS ranks
# (default 2, allowed as root) with one thread per rank.
#
# Stopping early: USR1 or TERM to the job script (slurm/part-a.sbatch passes Slurm's on) reaches the
# training stage in flight, which checkpoints and exits 0 short of train.steps; train_stage() sees
# that and the job exits with status 75 (STOPPED_EXIT), as it does at the next stage() when the signal
# came during another stage. Every stage skips what it finished, so rerunning the same command continues.
JOB=$1; SIZE=$2; shift 2
. slurm/lib.sh "$JOB"
# without -n/--ntasks Slurm sets no SLURM_NTASKS, and srun starts one task per node
if [ -n "${SLURM_JOB_ID:-}" ] && [ "${SLURM_NTASKS:-${SLURM_JOB_NUM_NODES:-1}}" -gt 1 ]; then
  RANKS=${SLURM_NTASKS:-$SLURM_JOB_NUM_NODES}; ON_SLURM=1
else
  RANKS=2; ON_SLURM=0
fi
OUT=""; WEIGHTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --ranks) RANKS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --model) WEIGHTS=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    *) echo "$JOB: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
BIN=bin/dreamstate
if [ $ON_SLURM = 1 ]; then
  MPI=("${SRUN[@]}" --ntasks="$RANKS"); NTHREADS=${SLURM_CPUS_PER_TASK:-1}
else
  # a stop signal goes to the ranks, not through mpirun (slurm/lib.sh pass_signal)
  MPI=(mpirun --oversubscribe -np "$RANKS"); NTHREADS=1; RANKS_ARE_CHILDREN=1
fi
THREADS=(--set "run.threads=$NTHREADS")
export OMP_NUM_THREADS=$NTHREADS
echo "$JOB: ranks started by ${MPI[*]}, $NTHREADS thread(s) each"
catch_stop_signals
stop_if_signalled() {
  [ -z "$signalled" ] && return 0
  echo "$JOB: stopped by SIG$signalled; rerun the same command to continue (exit $STOPPED_EXIT)" >&2
  exit "$STOPPED_EXIT"
}
stage() { stop_if_signalled; echo; echo "=== $* ==="; }
# train_stage DIR FILTER CONFIG ARGS...: `dreamstate train CONFIG ARGS... --set run.out_dir=DIR` on
# RANKS ranks, printing only the lines of its log that match the extended regex FILTER (all when
# empty) and those of a stop and a resume. When it ends short of train.steps (a stop signal: the trainer
# checkpointed, or died of a signal that came before it set its handlers), the job stops with
# STOPPED_EXIT, whatever the launcher's status (mpirun exits 1 after TERM): the rerun resumes from the
# newest checkpoint. When it fails without a signal, the job stops with its status.
train_stage() {
  local dir=$1 filter=$2 fd="" filter_pid="" restart=(); shift 2
  stop_if_signalled
  # killed before its first checkpoint (SIGKILL, a lost node, a machine restart): a log and nothing to
  # resume from, which the trainer refuses as someone else's run. The directory is this job's own, so
  # it starts over, the earlier files moved aside (DIR.old-N/), not deleted.
  if [ -s "$dir/train.jsonl" ] && ! compgen -G "$dir/checkpoints/*.ckpt" >/dev/null; then
    echo "$JOB: $dir was stopped before its first checkpoint: starting it over (its files go to $dir.old-N/)"
    restart=(--set checkpoint.resume=restart)
  fi
  if [ -n "$filter" ]; then
    # the filter outlives a TERM or Ctrl-C to the whole job, which the trainer would not (SIGPIPE)
    exec {fd}> >(trap '' INT TERM; exec grep --line-buffered -E "$filter|^(stopped by|resumed from) ")
    filter_pid=$!
  fi
  STEP_OUT=${fd:+/dev/fd/$fd} STEP_WHAT="the training in $dir" \
    run_forwarding "${MPI[@]}" $BIN train "$@" "${THREADS[@]}" "${restart[@]}" --set run.out_dir="$dir"
  if [ -n "$fd" ]; then exec {fd}>&-; wait "$filter_pid" || true; fi
  run_progress "$dir"
  if [ "$step_rc" -ne 0 ] && [ -z "$signalled" ]; then
    echo "$JOB: the training in $dir failed (exit $step_rc)" >&2
    exit "$step_rc"
  fi
  if ! run_finished; then
    echo "$JOB: the training in $dir stopped at step ${run_last:-none} of ${run_steps:-?} (a signal);" \
         "rerun the same command to resume it (exit $STOPPED_EXIT)" >&2
    exit "$STOPPED_EXIT"
  fi
}
# use_weights DIR: the --model file as weights dreamstate reads (an official .pth is converted once to
# DIR/model.safetensors); sets WEIGHTS to that path. The shape is read from the file.
use_weights() {
  [ -f "$WEIGHTS" ] || { echo "$JOB: --model $WEIGHTS: no such file" >&2; exit 2; }
  case "$WEIGHTS" in
    *.pth|*.pt)
      if [ ! -s "$1/model.safetensors" ]; then
        mkdir -p "$1"
        /usr/bin/python3 src/tools/pth_to_safetensors.py "$WEIGHTS" "$1/model.safetensors"
      fi
      WEIGHTS=$1/model.safetensors ;;
  esac
}
