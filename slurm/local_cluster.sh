#!/usr/bin/env bash
# A single-node SLURM cluster on this Debian/Ubuntu machine (no systemd needed), for trying the launcher on a laptop
# and for the tests: munged + MariaDB + slurmdbd (accounting: sacct, job states) + slurmctld + slurmd.
#
#   bash slurm/local_cluster.sh start    # installs slurm-wlm, munge, slurmdbd, mariadb-server when missing (root)
#   bash slurm/local_cluster.sh status   # which of its daemons run; sinfo
#   bash slurm/local_cluster.sh stop     # cancels its jobs, stops only the daemons it started (PID files)
#
# State (PID files, logs, spool, the MariaDB data, a copy of the config) lives in $PCL_SLURM_STATE (default
# /tmp/pcl-slurm); the SLURM config goes to /etc/slurm, which SLURM's commands read, and only if that file is
# absent or was written by this script (a machine's own SLURM is never overwritten). Safe to run twice: daemons
# already running are left alone. The node has no GPUs (no GRES): profiles/local.toml asks for none.
# Limits: EnforcePartLimits=ALL, so a request no node can satisfy (CPUs, memory) fails at sbatch time.
set -euo pipefail
ACTION=${1:-}
STATE=${PCL_SLURM_STATE:-/tmp/pcl-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by pcl slurm/local_cluster.sh"
CLUSTER=pclcluster
DB_PORT=${PCL_SLURM_DB_PORT:-3307}
RUN=$STATE/run
LOG=$STATE/log
DAEMONS_STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)

die() { echo "local_cluster.sh: $*" >&2; exit 2; }
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }   # $1 = daemon name
wait_for() {  # $1 = tries of 0.2 s, rest = command
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
mine() { [[ -f "$STATE/started/$1" ]]; }   # did this script start daemon $1?
started() { mkdir -p "$STATE/started"; touch "$STATE/started/$1"; }

install_packages() {
  local pkgs="slurm-wlm munge slurmdbd mariadb-server" missing=0
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing=1; done
  [[ $missing == 0 ]] && return 0
  [[ $(id -u) == 0 ]] || die "SLURM is not installed and installing it needs root: sudo apt-get install $pkgs"
  command -v apt-get >/dev/null || die "SLURM is not installed and this is not a Debian/Ubuntu machine (no apt-get)"
  echo "installing $pkgs (one-off)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
}

start_munge() {
  [[ -s /etc/munge/munge.key ]] || mungekey --create --force
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  install -d -o munge -g munge -m 0755 "$RUN/munge"
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then   # a munged that runs already (not ours) is used
    runuser -u munge -- /usr/sbin/munged --pid-file="$RUN/munge/munged.pid"
    wait_for 50 bash -c 'munge -n | unmunge' || die "munged did not start (see /var/log/munge/munged.log)"
    ln -sf "$RUN/munge/munged.pid" "$RUN/munged.pid"
    started munged
  fi
  munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
}

write_slurm_conf() {
  if [[ -f $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script: this machine has its own SLURM; use it instead"
  fi
  local host node_hw mem_mb
  host=$(hostname -s)
  # the node exactly as slurmd detects it (else "Node reconfigured socket/core boundaries")
  node_hw=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//')
  mem_mb=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))   # 1 GiB headroom
  install -d -m 0755 "$CONF_DIR"
  cat > "$CONF.tmp" <<CONF
$MARKER
# state: $STATE
ClusterName=$CLUSTER
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
SlurmdSpoolDir=$STATE/spool/slurmd
StateSaveLocation=$STATE/spool/slurmctld
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MinJobAge=300
JobRequeue=1
# impossible requests (CPUs, memory, time) fail at sbatch time instead of pending forever
EnforcePartLimits=ALL
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 ${node_hw} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  mv "$CONF.tmp" "$CONF"
  rm -f "$CONF_DIR/cgroup.conf"
  cp "$CONF" "$STATE/slurm.conf"
}

start_accounting() {
  local sock=$RUN/mysqld/mysqld.sock
  local sql=(mariadb --socket="$sock" -u root)
  install -d -o mysql -g mysql -m 0755 "$RUN/mysqld" "$STATE/mysql"
  [[ -d $STATE/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir="$STATE/mysql" >"$LOG/mariadb-install.log" 2>&1 \
    || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
  if ! alive mariadbd; then
    (mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$sock" --pid-file="$RUN/mysqld/mariadbd.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve >"$LOG/mariadb.log" 2>&1 &)
    wait_for 150 mariadb-admin --socket="$sock" ping || die "MariaDB did not start (see $LOG/mariadb.log)"
    wait_for 50 test -s "$RUN/mysqld/mariadbd.pid"
    ln -sf "$RUN/mysqld/mariadbd.pid" "$RUN/mariadbd.pid"
    started mariadbd
  fi
  "${sql[@]}" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > "$CONF_DIR/slurmdbd.conf" <<CONF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
CONF
  chmod 0600 "$CONF_DIR/slurmdbd.conf"
  if ! alive slurmdbd; then
    /usr/sbin/slurmdbd
    started slurmdbd
  fi
  wait_for 150 sacctmgr -n show cluster || die "slurmdbd does not answer (see $LOG/slurmdbd.log)"
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

do_start() {
  local t0; t0=$(date +%s.%N)
  install_packages
  [[ $(id -u) == 0 ]] || die "starting the daemons needs root (munged, slurmd)"
  install -d -m 0755 "$STATE" "$RUN" "$LOG" "$STATE/spool/slurmd" "$STATE/spool/slurmctld"
  start_munge
  write_slurm_conf
  start_accounting
  if ! alive slurmctld; then /usr/sbin/slurmctld; started slurmctld; fi
  if ! alive slurmd; then /usr/sbin/slurmd; started slurmd; fi
  wait_for 150 bash -c "sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'" \
    || die "the node did not come up (see $LOG/slurmctld.log and $LOG/slurmd.log)"
  sinfo
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "local SLURM cluster up in %.1f s (state: %s)\n", b-a, "'"$STATE"'"}'
}

stop_daemon() {  # $1 = daemon name; only if this script started it
  local f=$RUN/$1.pid p
  mine "$1" || return 0
  if [[ -f $f ]]; then
    p=$(cat "$f")
    if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$p" 2>/dev/null; then echo "$1 ($p) did not stop, sending KILL"; kill -KILL "$p"; fi
      echo "stopped $1 ($p)"
    fi
  fi
  rm -f "$STATE/started/$1"
}

do_stop() {
  if mine slurmctld && alive slurmctld; then
    scancel --cluster="$CLUSTER" --full --signal=TERM --state=RUNNING 2>/dev/null || true
    scancel --cluster="$CLUSTER" 2>/dev/null || true   # every job of this (local) cluster
    sleep 1
  fi
  for d in "${DAEMONS_STOP_ORDER[@]}"; do stop_daemon "$d"; done
}

do_status() {
  local rc=0
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if alive "$d"; then echo "$d: running (pid $(cat "$RUN/$d.pid"))$(mine "$d" || echo ', not started by this script')"
    else echo "$d: not running"; [[ $d == munged ]] || rc=1; fi
  done
  if [[ $rc == 0 ]]; then sinfo; fi
  return $rc
}

case "$ACTION" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: bash slurm/local_cluster.sh start|stop|status" >&2; exit 2 ;;
esac
