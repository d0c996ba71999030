#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (munged + slurmctld + slurmd on localhost) with all
# of its state, logs and pid files under one directory, for the tests and for trying the sbatch
# scripts without a cluster. Needs root (slurmd runs jobs as their users) and the Debian packages
# slurm-wlm and munge (`make deps`).
#
#   slurm/local-cluster.sh start  [DIR]   start (or keep) the cluster; prints `export SLURM_CONF=...`
#   slurm/local-cluster.sh stop   [DIR]   cancel its jobs, stop its daemons; nothing of it keeps running
#   slurm/local-cluster.sh status [DIR]   which daemons run, sinfo and squeue; exit 0 only if all run
#
# DIR defaults to $DS_SLURM_DIR. Every command is idempotent. munged is shared by the whole machine
# (one socket, /run/munge): a running one is reused and only a munged started here is stopped here.
# The node claims CPUs=4 whatever the machine has (SlurmdParameters=config_overrides) so that 2-core
# machines can run multi-task jobs; the ports are picked free at start, so several clusters (or a
# real Slurm) can coexist.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status [DIR]   (DIR defaults to \$DS_SLURM_DIR)" >&2; exit 2; }
cmd=${1:-}
dir=${2:-${DS_SLURM_DIR:-}}
[ -n "$cmd" ] && [ -n "$dir" ] || usage
case "$cmd" in start|stop|status) ;; *) usage ;; esac
if [ "$cmd" != start ] && [ ! -d "$dir" ]; then
  [ "$cmd" = stop ] && exit 0
  echo "local-cluster: $dir: no such directory" >&2; exit 3
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf
export SLURM_CONF=$conf
log() { echo "local-cluster: $*" >&2; }

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

write_conf() {
  local host mem ctld_port slurmd_port
  host=$(hostname -s)
  mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  ctld_port=$(free_port)
  slurmd_port=$(free_port "$ctld_port")
  cat >"$conf.tmp" <<EOF
# written by slurm/local-cluster.sh: a single-node cluster on localhost, state under $dir
ClusterName=dslocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
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
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  mv "$conf.tmp" "$conf"
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n1; }

do_start() {
  [ "$(id -u)" -eq 0 ] || { log "needs root (slurmd and munged)"; return 1; }
  local tool
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { log "$tool not found: install slurm-wlm and munge (make deps)"; return 1; }
  done
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  start_munge
  local ctld slurmd
  ctld=$(pid_of "$dir/slurmctld.pid" slurmctld || true)
  slurmd=$(pid_of "$dir/slurmd.pid" slurmd || true)
  if [ -z "$ctld" ] && [ -z "$slurmd" ]; then write_conf; fi
  [ -n "$ctld" ] || slurmctld -f "$conf"
  [ -n "$slurmd" ] || slurmd -f "$conf"
  local i state=""
  for i in $(seq 150); do
    state=$(node_state)
    case "$state" in idle|mixed|allocated) break ;; esac
    sleep 0.2
  done
  case "$state" in
    idle|mixed|allocated) ;;
    *) log "node not ready (state '${state:-none}'); logs in $dir/log:"
       tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 2>/dev/null || true
       sinfo -N -o '%N %T %E' >&2 2>/dev/null || true
       return 1 ;;
  esac
  log "up: node $(hostname -s) $state, state in $dir"
  echo "export SLURM_CONF=$conf"
}

do_stop() {
  local ctld slurmd munged jobs i procs
  ctld=$(pid_of "$dir/slurmctld.pid" slurmctld || true)
  slurmd=$(pid_of "$dir/slurmd.pid" slurmd || true)
  # cancel the cluster's jobs first, so that Slurm ends them in order
  if [ -n "$ctld" ]; then
    jobs=$(squeue -h -o '%i' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      scancel $jobs 2>/dev/null || true
      for i in $(seq 100); do [ -z "$(squeue -h -o '%i' 2>/dev/null)" ] && break; sleep 0.1; done
    fi
  fi
  stop_pids $slurmd $ctld
  # whatever of its jobs still runs (a step that ignored the cancel, or no controller to cancel it)
  mapfile -t procs < <(job_processes)
  stop_pids "${procs[@]}"
  munged=$(pid_of "$dir/munged.pid" munged || true)
  stop_pids $munged
  rm -f "$dir/slurmctld.pid" "$dir/slurmd.pid" "$dir/munged.pid"
  log "stopped (state in $dir)"
}

do_status() {
  local ok=0 name pid
  for name in munged slurmctld slurmd; do
    if pid=$(pid_of "$dir/$name.pid" "$name"); then echo "$name: running (pid $pid)"
    elif [ "$name" = munged ] && munge_works; then echo "munged: running (not started by this cluster)"
    else echo "$name: not running"; ok=3; fi
  done
  if [ $ok -eq 0 ]; then sinfo; squeue; fi
  return $ok
}

"do_$cmd"
