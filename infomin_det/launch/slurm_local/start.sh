#!/usr/bin/env bash
# infomin-det's loopback SLURM: a real one-node cluster (slurmctld + slurmd + munge, and
# slurmdbd + MariaDB so that `sacct` -- which submitit polls for job states -- works).
# Debian 12, root, no systemd, no cgroups. Installs missing packages itself (fresh CI machine).
# Idempotent: rewrites the config, starts only daemons that are not running, waits until the
# node is idle. Every daemon it starts is recorded as "PID STARTTIME" in DIR/pids/NAME; stop.sh
# signals only those (the start time guards against a reused PID).
#
#   start.sh [DIR]        default ${TMPDIR:-/tmp}/infomin-det-slurm
#   env: SLURM_CPUS=N         CPUs the node advertises (default 8; may exceed the real count)
#        SLURM_PORT_BASE=P    ports P..P+3: slurmctld, slurmd, slurmdbd, MariaDB (default 16817)
#        SLURM_ACCOUNTING=0   no slurmdbd/MariaDB (sacct then fails: submitit sees UNKNOWN states)
# Prints `export SLURM_CONF=...` as its last line (also written to DIR/env.sh).
set -euo pipefail

DIR=$(realpath -m "${1:-${TMPDIR:-/tmp}/infomin-det-slurm}")
CPUS=${SLURM_CPUS:-8}
PORT=${SLURM_PORT_BASE:-16817}
ACCOUNTING=${SLURM_ACCOUNTING:-1}
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
SOCK=$DIR/munge/socket
export SLURM_CONF=$DIR/etc/slurm.conf
START=$SECONDS

log() { echo "[infomin-det slurm] $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (the daemons run as root on loopback)"

# --- packages ------------------------------------------------------------------------------
want=(munge slurmctld slurmd slurm-client)
[ "$ACCOUNTING" = 1 ] && want+=(slurmdbd mariadb-server)
need=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "packages missing (${need[*]}) and no apt-get"
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- configuration -------------------------------------------------------------------------
mkdir -p "$DIR"/{etc,munge,state,spool,log,pids,db}
chmod 755 "$DIR/munge"                     # munged requires a world-searchable socket dir
[ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key"

{
  echo "ClusterName=infomin"
  echo "SlurmctldHost=localhost"
  echo "SlurmctldPort=$PORT"
  echo "SlurmdPort=$((PORT + 1))"
  echo "SlurmUser=root"
  echo "SlurmdUser=root"
  echo "AuthType=auth/munge"
  echo "CredType=cred/munge"
  # cred_expire: a requeued job may restart only after it (default 120 s -> ~17 s cycle here)
  echo "AuthInfo=socket=$SOCK,cred_expire=10"
  echo "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"   # loopback only
  echo "StateSaveLocation=$DIR/state"
  echo "SlurmdSpoolDir=$DIR/spool"
  echo "SlurmctldPidFile=$DIR/pids/slurmctld.own"
  echo "SlurmdPidFile=$DIR/pids/slurmd.own"
  echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
  echo "SlurmdLogFile=$DIR/log/slurmd.log"
  echo "MailProg=/bin/true"
  echo "MpiDefault=none"
  echo "ProctrackType=proctrack/linuxproc"       # no cgroups in containers
  echo "TaskPlugin=task/none"
  echo "SelectType=select/cons_tres"
  echo "SelectTypeParameters=CR_CPU"
  echo "SchedulerType=sched/backfill"
  echo "SchedulerParameters=sched_interval=1,bf_interval=1"
  echo "SlurmdParameters=config_overrides"       # trust CPUs/RealMemory below
  echo "ReturnToService=2"
  echo "JobRequeue=1"
  echo "KillWait=5"
  echo "InactiveLimit=0"
  echo "MinJobAge=300"
  echo "SlurmdTimeout=300"
  echo "JobCompType=jobcomp/none"
  if [ "$ACCOUNTING" = 1 ]; then
    echo "AccountingStorageType=accounting_storage/slurmdbd"
    echo "AccountingStorageHost=localhost"
    echo "AccountingStoragePort=$((PORT + 2))"
    echo "AccountingStoragePass=$SOCK"             # slurmdbd's munge socket goes here
    echo "JobAcctGatherType=jobacct_gather/linux"
  else
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobAcctGatherType=jobacct_gather/none"
  fi
  echo "NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN"
  echo "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP"
} > "$SLURM_CONF"

if [ "$ACCOUNTING" = 1 ]; then
  # slurmdbd reads slurmdbd.conf beside slurm.conf and refuses it unless mode 600
  umask 077
  {
    echo "AuthType=auth/munge"
    echo "AuthInfo=socket=$SOCK"
    echo "DbdHost=localhost"
    echo "DbdPort=$((PORT + 2))"
    echo "SlurmUser=root"
    echo "PidFile=$DIR/pids/slurmdbd.own"
    echo "LogFile=$DIR/log/slurmdbd.log"
    echo "StorageType=accounting_storage/mysql"
    echo "StorageHost=127.0.0.1"
    echo "StoragePort=$((PORT + 3))"
    echo "StorageUser=slurm"
    echo "StoragePass=slurm"
    echo "StorageLoc=infomin_slurm_acct"
  } > "$DIR/etc/slurmdbd.conf"
  chmod 600 "$DIR/etc/slurmdbd.conf"
  umask 022
fi
echo "export SLURM_CONF=$SLURM_CONF" > "$DIR/env.sh"

# --- daemons -------------------------------------------------------------------------------
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
running() {   # running NAME: the PID recorded for NAME is alive and is still the same process
  local pid st
  [ -s "$DIR/pids/$1" ] || return 1
  read -r pid st < "$DIR/pids/$1"
  [ -n "$pid" ] && [ "$(starttime "$pid")" = "$st" ]
}
start() {     # start NAME CMD...: run CMD (a daemon in foreground mode) in the background
  local name=$1; shift
  if running "$name"; then log "$name already running"; return; fi
  nohup "$@" >> "$DIR/log/$name.out" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid $(starttime "$pid")" > "$DIR/pids/$name"
}
ready() {     # ready NAME CMD...: poll CMD until it succeeds; fail if NAME died or after 60 s
  local name=$1; shift
  local deadline=$((SECONDS + 60))
  until "$@" > /dev/null 2>&1; do
    running "$name" || fail "$name exited; see $DIR/log/$name.out"
    [ $SECONDS -lt $deadline ] || fail "$name not ready after 60 s; see $DIR/log/"
    sleep 0.2
  done
}

start munged munged -F --key-file="$DIR/munge/munge.key" --socket="$SOCK" \
  --pid-file="$DIR/pids/munged.own" --seed-file="$DIR/munge/seed" --log-file="$DIR/log/munged.log"
ready munged bash -c "munge -n -S '$SOCK' | unmunge -S '$SOCK'"

if [ "$ACCOUNTING" = 1 ]; then
  [ -d "$DIR/db/mysql" ] || mariadb-install-db --no-defaults --user=root --datadir="$DIR/db" \
      --skip-test-db --auth-root-authentication-method=socket >> "$DIR/log/mariadb.out" 2>&1 \
    || fail "mariadb-install-db failed; see $DIR/log/mariadb.out"
  start mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/db" \
    --socket="$DIR/db/mysqld.sock" --pid-file="$DIR/pids/mariadbd.own" \
    --bind-address=127.0.0.1 --port=$((PORT + 3)) --skip-name-resolve \
    --innodb-buffer-pool-size=64M --log-error="$DIR/log/mariadb.log"
  ready mariadbd mariadb-admin --socket="$DIR/db/mysqld.sock" ping
  mariadb --socket="$DIR/db/mysqld.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON infomin_slurm_acct.* TO 'slurm'@'127.0.0.1';"
  start slurmdbd slurmdbd -D
  ready slurmdbd sacctmgr -n list cluster
fi

start slurmctld slurmctld -D
ready slurmctld bash -c "scontrol ping | grep -q UP"
start slurmd slurmd -D -N localhost
ready slurmd bash -c "sinfo -h -n localhost -o %t | grep -Eq '^(idle|mix|alloc)$'"

log "up in $((SECONDS - START)) s: node localhost ($CPUS CPUs), partition debug, ports $PORT-$((PORT + 3)); stop: $(dirname "$(realpath "$0")")/stop.sh $DIR"
echo "export SLURM_CONF=$SLURM_CONF"
