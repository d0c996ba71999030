# Shared by the jobs: after `cd` to the repository root, `. jobs/lib.sh NAME DEFAULT_SIZE "$@"` reads
# --size S (default DEFAULT_SIZE; the job checks its value), --ranks R (default 2), --out DIR and
# --help (prints the job's header comment, lines 2-16) into SIZE, RANKS and OUT, and sets BIN, MPI
# (mpirun on RANKS ranks, allowed as root), THREADS (one BLIS/OpenMP thread per rank) and stage().
JOB=$1; SIZE=$2; shift 2
RANKS=2; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --ranks) RANKS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "$JOB: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
BIN=bin/dreamstate
MPI=(mpirun --oversubscribe -np "$RANKS")
THREADS=(--set run.threads=1)
stage() { echo; echo "=== $* ==="; }
