#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for tests and for trying `virb-host` submissions.
#
#   scripts/slurm-local.sh up       install (only when missing) and start munge, slurmctld, slurmd
#   scripts/slurm-local.sh status   show whether the daemons run and what sinfo/squeue say
#   scripts/slurm-local.sh down     stop the daemons (by their pid files), remove the scratch folder
#
# Everything lives under one scratch folder, `${VIRB_SLURM_DIR:-/tmp/virb-slurm}`: slurm.conf,
# state, spool, pid and log files, and `env.sh`, which exports SLURM_CONF so that every client
# (sbatch, squeue, scancel, sinfo) uses this cluster: `. "$VIRB_SLURM_DIR/env.sh"`.
# Nothing is written to /etc/slurm. Made for Debian 12 as root without systemd (containers):
# the packages' service scripts cannot start daemons there, so this script starts them itself.
# `up` on a running cluster only prints the env line. `down` deletes the state, so the next `up`
# is a clean cluster (Slurm keeps saved jobs across restarts otherwise).
set -euo pipefail

DIR="${VIRB_SLURM_DIR:-/tmp/virb-slurm}"
UP_TIMEOUT="${VIRB_SLURM_UP_TIMEOUT:-60}"
CONF="$DIR/slurm.conf"

die() { echo "slurm-local: $*" >&2; exit 1; }

pid_alive() { # pidfile
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

log_tails() {
  local f
  for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" "$DIR/log/munged.log"; do
    [[ -f "$f" ]] || continue
    echo "--- last lines of $f:" >&2
    tail -n 15 "$f" >&2
  done
}

install_packages() {
  local missing=0 cmd
  for cmd in sbatch slurmctld slurmd munged; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" ]] || missing=1
  done
  [[ $missing == 0 ]] && return 0
  [[ $(id -u) == 0 ]] || die "Slurm is not installed and installing it needs root: run as root, or: apt-get install -y slurmctld slurmd slurm-client munge"
  command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is missing: install slurmctld, slurmd, slurm-client and munge with this system's package manager"
  local t0=$SECONDS
  echo "slurm-local: installing slurmctld slurmd slurm-client munge (apt-get)..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  # The packages' postinst scripts try to start services; without systemd that fails harmlessly.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >&2
  echo "slurm-local: installed in $((SECONDS - t0)) s" >&2
}

write_conf() {
  local cpus mem_mb
  cpus="$(nproc)"
  # RealMemory must not exceed what slurmd detects, or the node is drained: keep 10% headroom.
  mem_mb="$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)"
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
  cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a single-node cluster on localhost, no cgroups, no database.
ClusterName=virblocal
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  printf 'export SLURM_CONF=%q\n' "$CONF" >"$DIR/env.sh"
}

start_munge() {
  local pidfile=/run/munge/munged.pid
  # munged runs as munge and opens its log file itself.
  mkdir -p "$DIR/log"
  touch "$DIR/log/munged.log"
  chown munge:munge "$DIR/log/munged.log"
  if pid_alive "$pidfile"; then return 0; fi
  [[ -f /etc/munge/munge.key ]] || {
    echo "slurm-local: creating /etc/munge/munge.key" >&2
    if command -v mungekey >/dev/null; then mungekey --create >&2; else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  }
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged --log-file="$DIR/log/munged.log" \
    || { log_tails; die "munged failed to start"; }
}

cluster_up() {
  pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid"
}

wait_idle() {
  local deadline=$((SECONDS + UP_TIMEOUT)) state=""
  while ((SECONDS < deadline)); do
    state="$(SLURM_CONF="$CONF" sinfo -h -o %t 2>/dev/null | head -n 1 || true)"
    # `idle*` (with the star) is a node that has not answered yet.
    [[ "$state" == idle ]] && return 0
    pid_alive "$DIR/run/slurmctld.pid" || { log_tails; die "slurmctld exited (logs above)"; }
    sleep 0.5
  done
  log_tails
  die "the node did not become idle within ${UP_TIMEOUT}s (sinfo says '${state:-nothing}'); logs above, conf $CONF"
}

cmd_up() {
  if [[ -f "$CONF" ]] && cluster_up; then
    cat "$DIR/env.sh"
    return 0
  fi
  local t0 t1
  t0="$(date +%s%N)"
  install_packages
  t1="$(date +%s%N)"
  # A half-started cluster (one daemon died): stop what is left and start clean. munged, when
  # running, is kept (its log file is recreated below for a restart).
  stop_daemons
  rm -rf "$DIR"
  write_conf
  start_munge
  export SLURM_CONF="$CONF"
  /usr/sbin/slurmctld -f "$CONF" || { log_tails; die "slurmctld failed to start"; }
  /usr/sbin/slurmd -f "$CONF" -N localhost || { log_tails; die "slurmd failed to start"; }
  wait_idle
  local t2
  t2="$(date +%s%N)"
  echo "slurm-local: up in $(((t2 - t1) / 1000000)) ms (install step $(((t1 - t0) / 1000000)) ms), folder $DIR" >&2
  cat "$DIR/env.sh"
}

stop_daemons() {
  local name pidfile pid i
  for name in slurmd slurmctld; do
    pidfile="$DIR/run/$name.pid"
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "slurm-local: $name ($pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
        kill -9 "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$pidfile"
  done
}

cmd_down() {
  stop_daemons
  # munged is shared machine-wide (/run/munge); stop it only when this script started it (its
  # command line names this folder's log file).
  local pid
  if pid_alive /run/munge/munged.pid; then
    pid="$(cat /run/munge/munged.pid)"
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--log-file=$DIR/log/munged.log"; then
      kill "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$DIR"
  echo "slurm-local: down, removed $DIR" >&2
}

cmd_status() {
  local name
  for name in slurmctld slurmd; do
    if pid_alive "$DIR/run/$name.pid"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
    else echo "$name: not running"; fi
  done
  if pid_alive /run/munge/munged.pid; then echo "munged: running"; else echo "munged: not running"; fi
  if [[ -f "$CONF" ]] && cluster_up; then
    SLURM_CONF="$CONF" sinfo || true
    SLURM_CONF="$CONF" squeue || true
    cat "$DIR/env.sh"
  else
    return 1
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status   (folder: \${VIRB_SLURM_DIR:-/tmp/virb-slurm})" >&2; exit 2 ;;
esac
