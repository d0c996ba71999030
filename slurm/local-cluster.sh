#!/usr/bin/env bash
# A real Slurm cluster on this machine (munged + slurmctld + slurmd) with all of its state, logs and
# pid files under one directory, for the tests and for trying the sbatch scripts without a cluster.
# Needs root (slurmd runs jobs as their users; network namespaces) and the Debian packages slurm-wlm,
# munge and iproute2 (`make deps`).
#
#   slurm/local-cluster.sh start [--nodes 2] [DIR]   start (or keep) the cluster; prints `export SLURM_CONF=...`
#   slurm/local-cluster.sh stop   [DIR]   cancel its jobs, stop its daemons, remove its namespaces
#   slurm/local-cluster.sh status [DIR]   which daemons run, sinfo and squeue; exit 0 only if all run
#   slurm/local-cluster.sh run DIR CMD [ARG]...   run CMD where the controller can be reached (sbatch,
#                                                  squeue, scontrol, ...: in node 1's namespace)
#
# One node (the default): the machine's short host name on 127.0.0.1, ports picked free at start, so
# several clusters (or a real Slurm) can coexist. Two nodes (--nodes 2, recorded in DIR/nodes at the
# first start): two network namespaces joined, like the nodes of a real cluster, by two networks, each
# a veth pair: `mgmt` (node1 10.213.0.1/24, node2 10.213.0.2/24: Slurm and PMIx) and `fabric` (10.213.1.1
# and 10.213.1.2/24: for MPI, OMPI_MCA_btl_tcp_if_include=10.213.1.0/24), so that a failed MPI link is
# not also a node that Slurm lost. The addresses exist only inside those namespaces and nothing is
# routed out of them. One slurmd runs in each, with its own spool, tmp, log and pid file under
# DIR/<node>/ and DIR/log/, and slurmctld in node1's; the file system (the run directory) is shared,
# as on a real cluster. DIR/nodes holds a line per node: NAME ADDRESS NAMESPACE FABRIC_ADDRESS
# ("-" for the machine's own namespace and no fabric).
#
# DIR defaults to $DS_SLURM_DIR. Every command is idempotent; `start` after a node's daemons died
# starts the missing ones again. munged is shared by the whole machine (one socket, /run/munge, which
# the namespaces see too): a running one is reused and only a munged started here is stopped here.
# Each node claims CPUs=4 whatever the machine has (SlurmdParameters=config_overrides) so that 2-core
# machines can run multi-task jobs.
set -euo pipefail

usage() {
  echo "usage: $0 start [--nodes 1|2] [DIR] | stop [DIR] | status [DIR] | run DIR CMD [ARG]...   (DIR defaults to \$DS_SLURM_DIR)" >&2
  exit 2
}
cmd=${1:-}
[ $# -gt 0 ] && shift
want_nodes=""
if [ "$cmd" = start ] && [ "${1:-}" = --nodes ]; then
  [ $# -ge 2 ] || usage
  want_nodes=$2; shift 2
  case "$want_nodes" in 1|2) ;; *) echo "local-cluster: --nodes $want_nodes: 1 or 2" >&2; exit 2 ;; esac
fi
if [ "$cmd" = run ]; then [ $# -ge 2 ] || usage; dir=$1; shift
else dir=${1:-${DS_SLURM_DIR:-}}; fi
[ -n "$cmd" ] && [ -n "$dir" ] || usage
case "$cmd" in start|stop|status|run) ;; *) usage ;; esac
if [ "$cmd" != start ] && [ ! -d "$dir" ]; then
  [ "$cmd" = stop ] && exit 0
  echo "local-cluster: $dir: no such directory" >&2; exit 3
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf
export SLURM_CONF=$conf
log() { echo "local-cluster: $*" >&2; }

# The nodes: NAME ADDRESS NAMESPACE FABRIC_ADDRESS per line of DIR/nodes, written by the first start.
node_names=(); node_addrs=(); node_ns=(); node_fabric=()
read_nodes() {
  local name addr ns fabric
  node_names=(); node_addrs=(); node_ns=(); node_fabric=()
  [ -s "$dir/nodes" ] || return 0
  while read -r name addr ns fabric; do
    node_names+=("$name"); node_addrs+=("$addr"); node_ns+=("$ns"); node_fabric+=("$fabric")
  done <"$dir/nodes"
}
read_nodes
multi() { [ ${#node_names[@]} -gt 1 ]; }
# nsenter, not `ip netns exec`: that also remounts /sys for the namespace, which hides
# /sys/fs/cgroup, and slurmd refuses to start without it
in_ns() { local ns=$1; shift; if [ "$ns" = - ]; then "$@"; else nsenter --net="/run/netns/$ns" "$@"; fi; }
# client commands reach slurmctld from node 1's network
ctl() { in_ns "${node_ns[0]:--}" "$@"; }
slurmd_pidfile() { if multi; then echo "$dir/$1/slurmd.pid"; else echo "$dir/slurmd.pid"; fi; }

# The pid in FILE if that process is alive and is the named program (a stale file may name a pid
# that has since been reused by something else).
pid_of() {
  local file=$1 name=$2 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

# Alive and not a zombie (an exited daemon whose parent has not reaped it yet counts as gone).
alive() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# TERM, then KILL what is left after 5 s; returns when all of PIDS are gone.
stop_pids() {
  local pid i left
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for i in $(seq 70); do
    left=""
    for pid in "$@"; do alive "$pid" && left="$left $pid"; done
    [ -n "$left" ] || return 0
    [ "$i" -eq 50 ] && kill -KILL $left 2>/dev/null
    sleep 0.1
  done
}

# Every descendant of PID, deepest first.
descendants() {
  local kid
  for kid in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do descendants "$kid"; echo "$kid"; done
}

# This cluster's slurmstepd processes (slurmd detaches them; they inherit its SLURM_CONF), each
# preceded by the job processes under it.
job_processes() {
  local p
  for p in $(pgrep -x slurmstepd || true); do
    grep -qsxzF "SLURM_CONF=$conf" "/proc/$p/environ" || continue
    descendants "$p"; echo "$p"
  done
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_works; then return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  # as root munged warns that it does not own its log; harmless (--force)
  munged --force --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" 2>>"$dir/log/munged.stderr"
  local i
  for i in $(seq 50); do munge_works && return 0; sleep 0.1; done
  log "munged did not come up; see $dir/log/munged.log"; return 1
}

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() {
  local p avoid=${1:-0}
  for p in $(shuf -i 20000-59999 -n 200); do
    [ "$p" != "$avoid" ] && ! port_in_use "$p" && { echo "$p"; return 0; }
  done
  log "no free TCP port found"; return 1
}

# The nodes of a new cluster. Two nodes live in network namespaces named after DIR, so that several
# clusters coexist.
make_nodes() {
  local i tag
  if [ "$1" -eq 1 ]; then echo "$(hostname -s) 127.0.0.1 - -" >"$dir/nodes"; read_nodes; return 0; fi
  command -v ip >/dev/null && command -v nsenter >/dev/null \
    || { log "ip or nsenter not found: install iproute2 and util-linux (make deps)"; return 1; }
  tag=ds$(printf %s "$dir" | md5sum | cut -c1-8)
  for i in 1 2; do echo "node$i 10.213.0.$i $tag-$i 10.213.1.$i"; done >"$dir/nodes.tmp"
  mv "$dir/nodes.tmp" "$dir/nodes"
  read_nodes
}

# node1 <-mgmt-> node2 and node1 <-fabric-> node2 (veth pairs with the same name at both ends); kept
# where they exist already, and brought up (a start after a node's daemons died or a link went down).
make_network() {
  local i ns net
  for ns in "${node_ns[@]}"; do [ -e "/run/netns/$ns" ] || ip netns add "$ns"; done
  for net in mgmt fabric; do
    ip -n "${node_ns[0]}" link show "$net" >/dev/null 2>&1 \
      || ip link add "$net" netns "${node_ns[0]}" type veth peer name "$net" netns "${node_ns[1]}"
  done
  for i in "${!node_ns[@]}"; do
    ns=${node_ns[$i]}
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "${node_addrs[$i]}/24" dev mgmt
    ip -n "$ns" addr replace "${node_fabric[$i]}/24" dev fabric
    ip -n "$ns" link set mgmt up
    ip -n "$ns" link set fabric up
  done
}

# the namespaces, their veth ends, and whatever still runs in them
remove_network() {
  local ns pids
  for ns in "${node_ns[@]}"; do
    [ -e "/run/netns/$ns" ] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || stop_pids $pids
    ip netns delete "$ns"
  done
}

write_conf() {
  local host mem ctld_port slurmd_port i per_node
  host=$(hostname -s)
  mem=$(awk -v n=${#node_names[@]} '/^MemTotal:/ {print int($2 / 1024 * 0.9 / n)}' /proc/meminfo)
  if multi; then
    # each node has its ports to itself; per-node paths (%n: the node's name) keep the two slurmd, and
    # the PMIx directories of a job's two steps (under TmpFS), apart on the one file system
    ctld_port=6817; slurmd_port=6818
    per_node="SlurmdSpoolDir=$dir/%n/spool
SlurmdPidFile=$dir/%n/slurmd.pid
SlurmdLogFile=$dir/log/slurmd-%n.log
TmpFS=$dir/%n/tmp"
  else
    ctld_port=$(free_port)
    slurmd_port=$(free_port "$ctld_port")
    per_node="SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/log/slurmd.log"
  fi
  cat >"$conf.tmp" <<EOF
# written by slurm/local-cluster.sh: ${#node_names[@]} node(s) on this machine, state under $dir
ClusterName=dslocal
SlurmctldHost=$host(${node_addrs[0]})
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
$per_node
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
# short waits: cancelled or requeued jobs are gone within seconds, not the default 30 s; with a
# MinJobAge this low, sbatch --wait polls every 2 s (it backs off up to 32 s otherwise), and finished
# jobs leave squeue/scontrol within a minute: their final state is kept in the job completion log
KillWait=5
MinJobAge=4
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
EOF
  for i in "${!node_names[@]}"; do
    echo "NodeName=${node_names[$i]} NodeAddr=${node_addrs[$i]} CPUs=4 RealMemory=$mem State=UNKNOWN"
  done >>"$conf.tmp"
  echo "PartitionName=debug Nodes=$(IFS=,; echo "${node_names[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES" >>"$conf.tmp"
  mv "$conf.tmp" "$conf"
}

# "ready" when every node is idle, mixed or allocated; else the states sinfo reports
nodes_state() {
  local states
  states=$(ctl sinfo -h -N -o '%T' 2>/dev/null | sort -u | paste -sd ' ' || true)
  if [ -z "$states" ]; then echo none
  elif tr ' ' '\n' <<<"$states" | grep -qvxE 'idle|mixed|allocated'; then echo "$states"
  else echo ready; fi
}

do_start() {
  [ "$(id -u)" -eq 0 ] || { log "needs root (slurmd, munged, network namespaces)"; return 1; }
  local tool i
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { log "$tool not found: install slurm-wlm and munge (make deps)"; return 1; }
  done
  if [ ${#node_names[@]} -eq 0 ]; then make_nodes "${want_nodes:-1}"
  elif [ -n "$want_nodes" ] && [ "$want_nodes" -ne ${#node_names[@]} ]; then
    log "$dir holds a ${#node_names[@]}-node cluster: stop it first"; return 2
  fi
  mkdir -p "$dir/state" "$dir/log"
  if multi; then
    make_network
    for i in "${node_names[@]}"; do mkdir -p "$dir/$i/spool" "$dir/$i/tmp"; done
  else
    mkdir -p "$dir/spool"
  fi
  start_munge
  local ctld slurmd=() running=""
  ctld=$(pid_of "$dir/slurmctld.pid" slurmctld || true)
  for i in "${!node_names[@]}"; do
    slurmd[$i]=$(pid_of "$(slurmd_pidfile "${node_names[$i]}")" slurmd || true)
    running+=${slurmd[$i]}
  done
  if [ -z "$ctld$running" ]; then write_conf; fi
  [ -n "$ctld" ] || ctl slurmctld -f "$conf"
  for i in "${!node_names[@]}"; do
    [ -n "${slurmd[$i]}" ] || in_ns "${node_ns[$i]}" slurmd -f "$conf" -N "${node_names[$i]}"
  done
  local state=""
  for i in $(seq 150); do
    state=$(nodes_state)
    [ "$state" = ready ] && break
    sleep 0.2
  done
  if [ "$state" != ready ]; then
    log "nodes not ready (states: $state); logs in $dir/log:"
    tail -n 5 "$dir"/log/slurm*.log >&2 2>/dev/null || true
    ctl sinfo -N -o '%N %T %E' >&2 2>/dev/null || true
    return 1
  fi
  log "up: $(ctl sinfo -h -N -o '%N %T,' | tr '\n' ' ')at ${node_addrs[*]}$(multi && echo " (fabric ${node_fabric[*]})"), state in $dir"
  echo "export SLURM_CONF=$conf"
}

do_stop() {
  local ctld slurmd="" munged jobs i procs
  ctld=$(pid_of "$dir/slurmctld.pid" slurmctld || true)
  for i in "${node_names[@]}"; do slurmd+=" $(pid_of "$(slurmd_pidfile "$i")" slurmd || true)"; done
  # cancel the cluster's jobs first, so that Slurm ends them in order
  if [ -n "$ctld" ]; then
    jobs=$(ctl squeue -h -o '%i' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      ctl scancel $jobs 2>/dev/null || true
      for i in $(seq 100); do [ -z "$(ctl squeue -h -o '%i' 2>/dev/null)" ] && break; sleep 0.1; done
    fi
  fi
  stop_pids $slurmd $ctld
  # whatever of its jobs still runs (a step that ignored the cancel, or no controller to cancel it)
  mapfile -t procs < <(job_processes)
  stop_pids "${procs[@]}"
  munged=$(pid_of "$dir/munged.pid" munged || true)
  stop_pids $munged
  if multi; then remove_network; fi
  for i in "${node_names[@]}"; do rm -f "$(slurmd_pidfile "$i")"; done
  rm -f "$dir/slurmctld.pid" "$dir/munged.pid" "$dir/nodes"
  log "stopped (state in $dir)"
}

do_status() {
  local ok=0 name pid i
  if pid=$(pid_of "$dir/munged.pid" munged); then echo "munged: running (pid $pid)"
  elif munge_works; then echo "munged: running (not started by this cluster)"
  else echo "munged: not running"; ok=3; fi
  if pid=$(pid_of "$dir/slurmctld.pid" slurmctld); then echo "slurmctld: running (pid $pid)"
  else echo "slurmctld: not running"; ok=3; fi
  [ ${#node_names[@]} -gt 0 ] || { echo "slurmd: not running"; return 3; }
  for i in "${!node_names[@]}"; do
    name=slurmd; multi && name="slurmd ${node_names[$i]} (${node_addrs[$i]}, fabric ${node_fabric[$i]}, namespace ${node_ns[$i]})"
    if pid=$(pid_of "$(slurmd_pidfile "${node_names[$i]}")" slurmd); then echo "$name: running (pid $pid)"
    else echo "$name: not running"; ok=3; fi
  done
  if [ $ok -eq 0 ]; then ctl sinfo; ctl squeue; fi
  return $ok
}

do_run() { ctl "$@"; }

"do_$cmd" "$@"
