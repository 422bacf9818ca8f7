#!/usr/bin/env bash
# slurm/testing/teardown.sh [--keep-munge] [--purge]
# Stops everything setup.sh started, by the PIDs it recorded (pidfiles in $SLURM_LOCAL_DIR/run),
# never by process name. Cancels jobs first so that slurm itself kills the job steps.
#   --keep-munge : leave munged running
#   --purge      : also delete $SLURM_LOCAL_DIR and the rendered slurm.conf/gres.conf
set -uo pipefail
DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CONFDIR=${SLURM_CONF_DIR:-/etc/slurm}
BR=slbr0
HOSTS_TAG="slurm-local"
KEEP_MUNGE=0; PURGE=0
for a in "$@"; do case "$a" in --keep-munge) KEEP_MUNGE=1;; --purge) PURGE=1;; esac; done
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
log() { echo "[slurm-testing teardown $(date +%T)] $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_pid() {  # stop_pid NAME PID : TERM, wait up to 10 s, then KILL
  local name=$1 pid=$2
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do alive "$pid" || { log "stopped $name ($pid)"; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null; log "killed $name ($pid)"
}

# 1. cancel all jobs while the daemons are still up, wait (max 15 s) for them to disappear
ctld=$(cat "$DIR/run/slurmctld.pid" 2>/dev/null || true)
if alive "$ctld" && scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// }" ]; then
    log "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null
    for _ in $(seq 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi
# 2. slurmd(s): read all PIDs first (slurmd deletes its own pidfile on exit), TERM them all, wait by PID
declare -A SLURMD_PIDS=()
for pf in "$DIR"/run/slurmd-*.pid; do
  [ -e "$pf" ] || continue
  n=${pf##*/slurmd-}; n=${n%.pid}; SLURMD_PIDS[$n]=$(cat "$pf" 2>/dev/null)
done
for n in "${!SLURMD_PIDS[@]}"; do alive "${SLURMD_PIDS[$n]}" && kill -TERM "${SLURMD_PIDS[$n]}" 2>/dev/null; done
for n in "${!SLURMD_PIDS[@]}"; do
  p=${SLURMD_PIDS[$n]}
  for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
  if alive "$p"; then kill -KILL "$p" 2>/dev/null; log "killed slurmd-$n ($p)"; else log "stopped slurmd-$n ($p)"; fi
  rm -f "$DIR/run/slurmd-$n.pid"
done
# then slurmctld, slurmdbd, mariadbd
stop_pid slurmctld "$ctld"; rm -f "$DIR/run/slurmctld.pid"
stop_pid slurmdbd "$(cat "$DIR/run/slurmdbd.pid" 2>/dev/null)"; rm -f "$DIR/run/slurmdbd.pid"
stop_pid mariadbd "$(cat "$DIR/mysql/mariadbd.pid" 2>/dev/null)"
# 3. network namespaces: kill whatever is still inside them (only our own processes live there), delete
if [ -f "$DIR/netns.list" ]; then
  while read -r ns; do
    [ -n "$ns" ] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "netns:$ns" "$p"; done
    ip netns del "$ns" 2>/dev/null && log "deleted netns $ns"
  done < "$DIR/netns.list"
  rm -f "$DIR/netns.list"
fi
ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR" && log "deleted bridge $BR"
if grep -q "# BEGIN $HOSTS_TAG" /etc/hosts 2>/dev/null; then
  # /etc/hosts may be a bind mount: edit in place
  tmp=$(mktemp); sed "/# BEGIN $HOSTS_TAG/,/# END $HOSTS_TAG/d" /etc/hosts > "$tmp" && cat "$tmp" > /etc/hosts; rm -f "$tmp"
  log "removed $HOSTS_TAG block from /etc/hosts"
fi
# 4. munged, only if we started it
if [ "$KEEP_MUNGE" = 0 ] && [ -s "$DIR/run/munged.pid" ]; then
  stop_pid munged "$(cat "$DIR/run/munged.pid")"; rm -f "$DIR/run/munged.pid"
fi
rm -f "$DIR/mode"
if [ "$PURGE" = 1 ]; then
  rm -rf "$DIR"; rm -f "$CONFDIR/slurm.conf" "$CONFDIR/gres.conf" "$CONFDIR/slurmdbd.conf"; log "purged $DIR and $CONFDIR/{slurm,gres}.conf"
fi
log "done"
exit 0
