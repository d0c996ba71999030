# Shared by the Slurm end-to-end scripts (tests/e2e_slurm.sh, tests/e2e_slurm_jobs.sh,
# tests/e2e_two_nodes.sh). After `. tests/lib.sh NAME`, `. tests/slurm_lib.sh` sets REPO, a job name
# NAME (output files $REPO/$NAME-<id>.out), a cluster directory CLUSTER=$TMP/cluster for
# slurm/local-cluster.sh, SLURM_CONF and DS_RUN_ROOT=$TMP/runs, clears any SLURM_* variables of an
# enclosing job, and stops the cluster (its daemons, jobs and network namespaces) and removes the
# output files on any exit. Then:
#   sl CMD...                          a Slurm client command, run where the controller is reachable
#   now; since T0                      wall-clock seconds; seconds since T0 (one decimal)
#   wait_for SECONDS CMD...            poll every 0.1 s until CMD succeeds; status 1 after SECONDS
#   jsonl_steps FILE; losses FILE      a train.jsonl's step numbers; its "step":N,"loss":X fields
#   final_state JOBID; job_done JOBID  "JobState=S ExitCode=N:M" from the job completion log; it is there
#   show_out FILE [LINES]              the end of a job's output file, indented
#   finish                             as tests/lib.sh's, and exits
for v in $(compgen -e SLURM_); do unset "$v"; done   # in case this runs inside a Slurm job
REPO=$(pwd)
NAME=ds-e2e-$$
CLUSTER=$TMP/cluster
export SLURM_CONF=$CLUSTER/slurm.conf DS_RUN_ROOT=$TMP/runs
cleanup() {
  # the namespaces are read first: whatever `stop` could not remove goes here
  local ns namespaces
  namespaces=$(awk '$3 != "-" {print $3}' "$CLUSTER/nodes" 2>/dev/null)
  slurm/local-cluster.sh stop "$CLUSTER" >/dev/null 2>&1
  for ns in $namespaces; do
    [ -e "/run/netns/$ns" ] || continue
    kill -KILL $(ip netns pids "$ns") 2>/dev/null
    ip netns delete "$ns"
  done
  rm -f "$REPO/$NAME"-*.out
  [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
finish() { echo "$pass passed, $fail failed"; [ $fail -eq 0 ]; exit; }
[ -x "$BIN" ] || { bad "$BIN missing: run make first"; finish; }

sl() { slurm/local-cluster.sh run "$CLUSTER" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
wait_for() {
  local end; end=$(awk -v t="$1" -v n="$(now)" 'BEGIN {printf "%.3f", n + t}'); shift
  until "$@"; do
    awk -v e="$end" -v n="$(now)" 'BEGIN {exit !(n > e)}' && return 1
    sleep 0.1
  done
}
jsonl_steps() { grep -o '"step":[0-9]*' "$1" 2>/dev/null | cut -d: -f2; }
losses() { grep -o '"step":[0-9]*,"loss":[0-9.e+-]*' "$1"; }
# the job completion log keeps a line per finished (or requeued) job
final_state() { grep "^JobId=$1 " "$CLUSTER/log/jobcomp.log" 2>/dev/null | tail -n1 | grep -o 'JobState=[A-Z_]* .*ExitCode=[0-9:]*' | sed 's/ .*ExitCode=/ ExitCode=/'; }
job_done() { final_state "$1" | grep -qv PENDING; }
show_out() { echo "  --- $1"; tail -n "${2:-15}" "$1" 2>/dev/null | sed 's/^/  | /'; }
