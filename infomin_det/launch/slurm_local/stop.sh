#!/usr/bin/env bash
# Stop infomin-det's loopback SLURM started by start.sh in DIR: cancel its jobs, then signal only
# the PIDs recorded in DIR/pids/NAME, and only while their recorded start time still matches.
# DIR (logs, state) is kept; remove it for a clean slate.
#
#   stop.sh [DIR]        default ${TMPDIR:-/tmp}/infomin-det-slurm
set -uo pipefail

DIR=$(realpath -m "${1:-${TMPDIR:-/tmp}/infomin-det-slurm}")
export SLURM_CONF=$DIR/etc/slurm.conf

starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
running() {
  local pid st
  [ -s "$DIR/pids/$1" ] || return 1
  read -r pid st < "$DIR/pids/$1"
  [ -n "$pid" ] && [ "$(starttime "$pid")" = "$st" ]
}
pid() { local p; read -r p _ < "$DIR/pids/$1"; echo "$p"; }

halt() {     # halt NAME...: TERM together, wait up to 15 s, KILL the rest, forget the PID files
  local n alive
  for n; do running "$n" && kill -TERM "$(pid "$n")"; done
  for _ in $(seq 150); do
    alive=0; for n; do running "$n" && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for n; do
    running "$n" && { echo "[infomin-det slurm] $n ignored TERM; KILL" >&2; kill -KILL "$(pid "$n")"; }
    rm -f "$DIR/pids/$n"
  done
}

# slurmd leaves running job steps behind when it exits: cancel the cluster's jobs first
if running slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null)
  if [ -n "$jobs" ]; then
    scancel $jobs
    for _ in $(seq 100); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
halt slurmd slurmctld
halt slurmdbd mariadbd munged
echo "[infomin-det slurm] stopped (logs and state kept in $DIR)" >&2
