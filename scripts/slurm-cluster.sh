#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, all state in one fresh temp dir.
#
#   scripts/slurm-cluster.sh start    # prints the exports that point sbatch & co at it
#   scripts/slurm-cluster.sh status
#   scripts/slurm-cluster.sh stop     # stops munged, slurmctld, slurmd and removes the dir
#
# Needs root (slurmd runs jobs as their user, munged runs as `munge`). Installs Debian's
# slurm-wlm and munge with apt when they are absent, unless IRREPRO_NO_INSTALL=1.
# The dir is made by mktemp (others may pass through it, to reach munge's socket, but not
# list it), or is IRREPRO_SLURM_DIR when that names one that does not exist yet; stop and
# status find it through IRREPRO_SLURM_DIR, else through the note start leaves in
# ~/.local/state/irrepro. Munge's key is made anew there, never copied from the host.
set -euo pipefail

NOTE=${XDG_STATE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.local/state}/irrepro/slurm.dir
DIR=${IRREPRO_SLURM_DIR:-$(cat "$NOTE" 2>/dev/null || true)}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket.2

die() { echo "slurm-cluster.sh: $*" >&2; exit 1; }

# shellcheck source=scripts/state-dir.sh
. "$(dirname "$0")/state-dir.sh"

# A new state dir (see state-dir.sh) that others may pass through, marked as this script's.
new_dir() {
  new_state_dir "${IRREPRO_SLURM_DIR:-}" irrepro-slurm "$NOTE"
  chmod 711 "$DIR"
  : >"$DIR/irrepro-slurm"
  CONF=$DIR/slurm.conf
  SOCKET=$DIR/munge/munge.socket.2
}

# Whether $DIR is a state dir of this script's, owned by this user (stop removes only such).
ours() {
  [ -n "$DIR" ] && [ -d "$DIR" ] && [ ! -L "$DIR" ] && [ -O "$DIR/irrepro-slurm" ]
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install_if_absent() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  [ "${IRREPRO_NO_INSTALL:-0}" != 1 ] || die "slurmctld or munged not found (IRREPRO_NO_INSTALL=1)"
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || die "slurmctld or munged not found; install slurm-wlm and munge (as root)"
  echo "installing slurm-wlm and munge with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
}

start_munge() {
  mkdir -m 755 "$DIR/munge"
  (umask 077; dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none)
  chown -R munge:munge "$DIR/munge"
  chmod 400 "$DIR/munge/munge.key"
  runuser -u munge -- munged --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
    --log-file="$DIR/munge/munged.log" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed"
}

write_conf() {
  local node cpus memory
  node=$(hostname -s)
  cpus=$(nproc)
  memory=$(awk '/MemTotal/ {print int($2 / 1024) - 512}' /proc/meminfo)
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat >"$CONF" <<EOF
ClusterName=irrepro
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=10
SchedulerParameters=sched_interval=2
NodeName=$node CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

running() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

start() {
  [ "$(id -u)" = 0 ] || die "start needs root (slurmd and munged run as other users)"
  if ours && running slurmctld; then
    die "already running in $DIR (scripts/slurm-cluster.sh stop first)"
  fi
  install_if_absent
  new_dir
  start_munge
  write_conf
  export SLURM_CONF=$CONF
  slurmctld -f "$CONF"
  slurmd -f "$CONF"
  for _ in $(seq 60); do
    if [ "$(sinfo -h -o %t 2>/dev/null)" = idle ]; then
      echo "export SLURM_CONF=$CONF"
      echo "export IRREPRO_SLURM_DIR=$DIR"
      return
    fi
    sleep 1
  done
  tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
  die "the node did not become idle within 60 s (logs in $DIR/log)"
}

# Stops the daemons of the given pid files together: TERM, up to 15 s, then KILL.
stop_pid_files() {
  local pids=() pid
  for file in "$@"; do
    [ -f "$file" ] && pids+=("$(cat "$file")")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 30); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || return 0
    sleep 0.5
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

stop_job_steps() {
  # A job step's slurmstepd runs in this cluster's log folder and can outlive slurmd.
  local pid
  for pid in $(pgrep -x slurmstepd); do
    case "$(readlink "/proc/$pid/cwd")" in
      "$DIR"/*) kill -9 "$pid" 2>/dev/null || true ;;
    esac
  done
}

stop() {
  ours || { echo "no cluster in ${DIR:-(no state dir)}" >&2; return; }
  if running slurmctld && [ -f "$CONF" ]; then
    SLURM_CONF=$CONF scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 30); do  # up to 15 s for cancelled jobs to wind down
      [ -z "$(SLURM_CONF=$CONF squeue -h 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  stop_pid_files "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"
  stop_job_steps
  rm -rf "$DIR"
  [ "$(cat "$NOTE" 2>/dev/null)" != "$DIR" ] || rm -f "$NOTE"
}

status() {
  ours && running slurmctld || die "not running (state dir ${DIR:-none})"
  SLURM_CONF=$CONF sinfo
  echo "export SLURM_CONF=$CONF"
  echo "export IRREPRO_SLURM_DIR=$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
