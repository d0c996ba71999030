#!/usr/bin/env bash
# A real two-node Slurm cluster on this machine, `slurm/local-cluster.sh start --nodes 2`: two network
# namespaces joined by two veth pairs (mgmt 10.213.0.0/24 for Slurm, fabric 10.213.1.0/24 for MPI), a
# slurmd in each, slurmctld in node1's, munged shared, the repository and run directories on the one
# file system; everything of it (daemons, jobs, namespaces, veths) is removed on any exit. The 2-node
# jobs run Open MPI over TCP on the fabric only (btl tcp,self: no shared-memory transport), started by
# slurm/train.sbatch with srun --mpi=pmix, one rank per node. Checks:
#  0. the cluster's addresses exist only inside its namespaces, and nothing is routed out of them;
#  1. a 2-node job (sbatch -N 2 slurm/train.sbatch configs/tiny.yaml, 40 steps): Open MPI's log shows
#     only the tcp and self transports, each rank sending to the other (on the other node) by tcp
#     and the connection made between fabric addresses; the fabric veth carried at least the
#     gradient traffic; every loss (byte for byte in train.jsonl) equals a 1-node 2-rank job's
#     (shared memory);
#  2. node2 killed mid-run (every process in its namespace: slurmd, slurmstepd, rank 1): rank 0's
#     collective watchdog (train.comm_timeout) names the collective it waited in, and the job ends
#     within 30 s; the newest checkpoint loads (dreamstate eval); node2 is started again and a new job on
#     the old run directory (DS_RUN_DIR) resumes from that checkpoint, its losses equal run 1's;
#  3. node2's fabric link taken down mid-run (ip link set fabric down): the job fails with the
#     watchdog's message within comm_timeout + 15 s instead of hanging (Open MPI's TCP transport has
#     no timeout of its own), and Slurm still has both nodes.
# Needs root (network namespaces, slurmd) and the packages of `make deps`; under two minutes.
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh twonode
. tests/slurm_lib.sh

STEPS=40
TIMEOUT=5                           # train.comm_timeout of the jobs that lose a node or a link
COMMON=(--set "train.steps=$STEPS" --set train.eval_every=0 --set train.log_every=20 --set checkpoint.every=5
        --set train.micro_batch=2)
# MPI over the fabric only; the 1-node reference job runs without these (shared memory)
TCP=(OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=10.213.1.0/24 OMPI_MCA_oob_tcp_if_include=10.213.1.0/24)
# submit [VAR=VALUE]... SBATCH_ARGS...: sbatch (in the controller's network) with VARs in the job's
# environment; prints the job id
submit() {
  local vars=() id
  while [ $# -gt 0 ] && [[ "$1" == [A-Z]*=* ]]; do vars+=("$1"); shift; done
  id=$(env "${vars[@]}" slurm/local-cluster.sh run "$CLUSTER" sbatch --parsable -J "$NAME" -c 1 "$@" 2>"$TMP/sbatch.err" | tail -n1)
  echo "${id%%;*}"
}
# submit2 [VAR=VALUE]... [SBATCH_ARGS]...: a 2-node training job over the fabric, watchdog at TIMEOUT
submit2() {
  submit "${TCP[@]}" "$@" -N 2 --ntasks-per-node=1 slurm/train.sbatch configs/tiny.yaml "${COMMON[@]}" \
    --set "train.comm_timeout=$TIMEOUT"
}
all_idle() { [ "$(sl sinfo -h -N -o '%T' | sort -u | tr '\n' ' ')" = "idle " ]; }
in_node() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
fabric_bytes() { in_node "$1" cat /proc/net/dev | awk '$1 == "fabric:" {print $2 + $10}'; }
has_steps() { [ "$(jsonl_steps "$1/train.jsonl" | wc -l)" -ge "$2" ]; }
newest_ckpt() { ls "$1/checkpoints"/step-*.ckpt 2>/dev/null | tail -n1; }

# 0. the cluster
t0=$(now)
if ! slurm/local-cluster.sh start --nodes 2 "$CLUSTER" >"$TMP/start.out" 2>"$TMP/start.err"; then
  bad "two-node cluster did not start (needs root: ip netns, veth, slurmd):"; sed 's/^/  | /' "$TMP/start.err"; finish
fi
read -r _ _ NS1 _ < <(sed -n 1p "$CLUSTER/nodes")
read -r _ _ NS2 _ < <(sed -n 2p "$CLUSTER/nodes")
ok "two-node cluster up in $(since "$t0") s: $(sl sinfo -h -N -o '%N %T' | tr '\n' ' ')(namespaces $NS1 $NS2)"
outside=$(ip -o addr show | grep -c '10\.213\.')
routes=$(for ns in "$NS1" "$NS2"; do ip -n "$ns" route show default; done | wc -l)
addrs=$(for ns in "$NS1" "$NS2"; do ip -n "$ns" -o -4 addr show | awk '{print $4}'; done | sort | tr '\n' ' ')
[ "$outside" -eq 0 ] && [ "$routes" -eq 0 ] && [ "$addrs" = "10.213.0.1/24 10.213.0.2/24 10.213.1.1/24 10.213.1.2/24 127.0.0.1/8 127.0.0.1/8 " ] \
  && ok "addresses only inside the namespaces ($addrs), no default route" \
  || bad "network leaks: $outside 10.213 address(es) outside, $routes default route(s), inside: $addrs"

# 1. a 2-node job over TCP against a 1-node 2-rank job
before=$(fabric_bytes "$NS2")
t0=$(now)
idA=$(submit OMPI_MCA_btl_base_verbose=20 "${TCP[@]}" --wait -N 2 --ntasks-per-node=1 slurm/train.sbatch configs/tiny.yaml "${COMMON[@]}")
runA=$TMP/runs/$NAME-$idA
outA=$REPO/$NAME-$idA.out
moved=$(( $(fabric_bytes "$NS2") - before ))
wait_for 10 job_done "$idA"
if [ "$(final_state "$idA")" = "JobState=COMPLETED ExitCode=0:0" ] && [ "$(jsonl_steps "$runA/train.jsonl" | tail -n1)" = $STEPS ] \
   && grep -q "^train.sbatch: job $idA, restart 0, 2 task(s) on 2 node(s) (node\[1-2\])" "$outA" \
   && grep -q '^  2 rank(s) x 1 thread(s)' "$outA"; then
  ok "2-node job $idA: COMPLETED, 2 ranks on node[1-2], $STEPS steps in $(since "$t0") s"
else
  bad "2-node job $idA: $(final_state "$idA") $(cat "$TMP/sbatch.err")"; show_out "$outA" 30
fi
transports=$(grep -o 'found loaded component [a-z0-9]*' "$outA" | sort -u | awk '{print $4}' | tr '\n' ' ')
# whichever rank sends first opens the connection: one logs connect(), the other "now connected"
opened=$(grep -o 'btl:tcp: connect() to 10\.213\.1\.[12]:[0-9]* completed' "$outA" | head -n1)
accepted=$(grep -o 'btl:tcp: now connected to 10\.213\.1\.[12]' "$outA" | head -n1)
if [ "$transports" = "self tcp " ] && grep -q 'mca: bml: Using tcp btl for send to \[\[[0-9]*,[0-9]*\],1\] on node node2' "$outA" \
   && grep -q 'mca: bml: Using tcp btl for send to \[\[[0-9]*,[0-9]*\],0\] on node node1' "$outA" \
   && [ -n "$opened" ] && [ -n "$accepted" ]; then
  ok "Open MPI: transports $transports(no shared memory); rank 0 and rank 1 on node1 and node2 use tcp, over the fabric (${opened#btl:tcp: }; ${accepted#btl:tcp: })"
else
  bad "Open MPI's log does not show TCP over the fabric: transports '$transports'"; grep 'mca: bml\|connect()' "$outA" | head -5
fi
n_params=$(sed -n 's/.*, \([0-9.]*\)M parameters$/\1/p' "$outA" | head -n1)
need=$(awk -v n="${n_params:-0}" -v s=$STEPS 'BEGIN {printf "%.0f", n * 1e6 * 8 * s}')
[ "$moved" -ge "$need" ] && [ "$need" -gt 0 ] \
  && ok "node2's fabric veth moved $((moved / 1000000)) MB, at least one fp64 gradient (${n_params}M x 8 bytes) per step ($((need / 1000000)) MB)" \
  || bad "fabric veth moved $moved bytes, expected >= $need"
t0=$(now)
idB=$(submit --wait -N 1 -n 2 -w node1 slurm/train.sbatch configs/tiny.yaml "${COMMON[@]}")
runB=$TMP/runs/$NAME-$idB
wait_for 10 job_done "$idB"
if [ "$(final_state "$idB")" = "JobState=COMPLETED ExitCode=0:0" ] && [ "$(losses "$runA/train.jsonl" | wc -l)" -eq $STEPS ] \
   && cmp -s <(losses "$runA/train.jsonl") <(losses "$runB/train.jsonl"); then
  ok "1-node 2-rank job $idB ($(since "$t0") s): all $STEPS losses identical to the 2-node job's (final $(losses "$runA/train.jsonl" | tail -n1))"
else
  bad "1-node job $idB: $(final_state "$idB"); losses differ:"; diff <(losses "$runA/train.jsonl") <(losses "$runB/train.jsonl") | head -4
  show_out "$REPO/$NAME-$idB.out"
fi

# 2. node2 dies mid-run; the job ends, the checkpoint survives, a new job resumes on the run directory
idC=$(submit2)
runC=$TMP/runs/$NAME-$idC
outC=$REPO/$NAME-$idC.out
if wait_for 120 has_steps "$runC" 12; then
  victims=$(ip netns pids "$NS2" | xargs -r ps -o comm= -p | sort | uniq -c | awk '{printf "%s%s ", $2, ($1 > 1 ? " x" $1 : "")}')
  t_kill=$(now)
  kill -KILL $(ip netns pids "$NS2")
  killed_at=$(jsonl_steps "$runC/train.jsonl" | tail -n1)
  if wait_for 60 job_done "$idC"; then
    end_s=$(since "$t_kill")
    awk -v s="$end_s" 'BEGIN {exit !(s < 30)}' && ok "node2 killed at step $killed_at (${victims% }): job $idC ended in $end_s s (limit 30 s), $(final_state "$idC")" \
      || bad "job $idC took $end_s s to end after node2 was killed (limit 30 s)"
  else
    bad "job $idC still not ended 60 s after node2 was killed: $(sl squeue -h -j "$idC" -o '%T %r' 2>&1)"; show_out "$outC"
  fi
  grep -q "^dreamstate\[rank 0\]: .* did not complete within $TIMEOUT s (train.comm_timeout) on node1: " "$outC" \
    && ok "rank 0 said why: $(grep -o '^dreamstate\[rank 0\]: [^:]*: [^;]*' "$outC")" || { bad "no watchdog message from rank 0"; show_out "$outC"; }
  ckpt=$(newest_ckpt "$runC")
  if [ -n "$ckpt" ] && $BIN eval "$runC/config.yaml" --checkpoint "$ckpt" >"$TMP/eval.out" 2>&1; then
    ok "newest checkpoint $(basename "$ckpt") verifies and evaluates: held-out $(grep -o '"loss":[0-9.]*' "$TMP/eval.out")"
  else
    bad "newest checkpoint '$ckpt' unusable: $(tail -n2 "$TMP/eval.out")"
  fi
  t0=$(now)
  if slurm/local-cluster.sh start "$CLUSTER" >/dev/null 2>"$TMP/restart.err"; then
    ok "node2 back in $(since "$t0") s: $(sl sinfo -h -N -o '%N %T' | tr '\n' ' ')"
  else
    bad "node2 did not come back:"; sed 's/^/  | /' "$TMP/restart.err"
  fi
  t0=$(now)
  idD=$(submit2 DS_RUN_DIR="$runC" --wait)
  outD=$REPO/$NAME-$idD.out
  wait_for 10 job_done "$idD"
  step=$(basename "${ckpt:-none}" .ckpt); step=$((10#${step#step-}))
  if [ "$(final_state "$idD")" = "JobState=COMPLETED ExitCode=0:0" ] && grep -q "resumed from .*$(basename "${ckpt:-none}") (step $step)" "$outD" \
     && [ "$(jsonl_steps "$runC/train.jsonl" | tr '\n' ' ')" = "$(seq -s ' ' 1 $STEPS) " ] \
     && cmp -s <(losses "$runA/train.jsonl") <(losses "$runC/train.jsonl"); then
    ok "job $idD with DS_RUN_DIR of job $idC resumed from step $step ($(since "$t0") s): steps 1..$STEPS, every loss equal to the uninterrupted run's"
  else
    bad "resumed job $idD: $(final_state "$idD")"; show_out "$outD" 20
    diff <(losses "$runA/train.jsonl") <(losses "$runC/train.jsonl") | head -4
  fi
else
  bad "job $idC wrote no 12 steps in 120 s"; show_out "$outC"
fi

# 3. node2's fabric link goes down mid-run: a clear failure, not a hang
idE=$(submit2)
runE=$TMP/runs/$NAME-$idE
outE=$REPO/$NAME-$idE.out
if wait_for 120 has_steps "$runE" 6; then
  t_down=$(now)
  in_node "$NS2" ip link set fabric down
  down_at=$(jsonl_steps "$runE/train.jsonl" | tail -n1)
  limit=$((TIMEOUT + 15))
  if wait_for 90 job_done "$idE"; then
    end_s=$(since "$t_down")
    state=$(final_state "$idE")
    if [[ "$state" == "JobState=FAILED ExitCode=1:0" ]] && awk -v s="$end_s" -v l=$limit 'BEGIN {exit !(s < l)}' \
       && grep -q "^dreamstate\[rank [01]\]: .* did not complete within $TIMEOUT s (train.comm_timeout) on node[12]: another rank died or hangs, or the network between the nodes is down" "$outE"; then
      ok "fabric down at step $down_at: job $idE $state after $end_s s (limit $limit s): $(grep -c '^dreamstate\[rank' "$outE") rank(s) said why"
    else
      bad "fabric down: job $idE $state after $end_s s (limit $limit s)"; show_out "$outE"
    fi
  else
    bad "fabric down: job $idE still running after 90 s: a hang"; show_out "$outE"
  fi
  wait_for 20 all_idle && ok "Slurm kept both nodes (the mgmt network is up): idle" \
    || bad "nodes after the fabric failure: $(sl sinfo -h -N -o '%N %T' | tr '\n' ' ')"
  in_node "$NS2" ip link set fabric up
else
  bad "job $idE wrote no 6 steps in 120 s"; show_out "$outE"
fi

# 4. stop: nothing of the cluster is left
slurm/local-cluster.sh stop "$CLUSTER" 2>/dev/null
left=$(ip netns list | grep -cE "^($NS1|$NS2)( |$)")
[ "$left" -eq 0 ] && [ -z "$(pgrep -f "$CLUSTER/slurm.conf")" ] \
  && ok "stop: namespaces $NS1 $NS2 (and their veths) removed, no daemon of the cluster left" \
  || bad "after stop: $left namespace(s), processes: $(pgrep -af "$CLUSTER/slurm.conf")"
finish
