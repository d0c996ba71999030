# Shared by the jobs: after `cd` to the repository root, `. jobs/lib.sh NAME DEFAULT_SIZE "$@"` reads
# --size S (default DEFAULT_SIZE; the job checks its value), --ranks R (default 2), --out DIR,
# --model FILE and --help (prints the job's header comment) into SIZE, RANKS, OUT and
# WEIGHTS, and sets BIN, MPI (mpirun on RANKS ranks, allowed as root), THREADS (one BLIS/OpenMP thread
# per rank), stage() and use_weights().
JOB=$1; SIZE=$2; shift 2
RANKS=2; OUT=""; WEIGHTS=""
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
MPI=(mpirun --oversubscribe -np "$RANKS")
THREADS=(--set run.threads=1)
stage() { echo; echo "=== $* ==="; }
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
