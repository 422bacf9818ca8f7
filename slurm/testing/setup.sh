#!/usr/bin/env bash
# slurm/testing/setup.sh [single|netns|multiport] [NNODES]      (default: netns 2)
#
# The simclr-hpc test cluster: a REAL local Slurm 22.05 cluster (Debian bookworm packages) as root, without systemd
# and without cgroups: munged + MariaDB + slurmdbd + slurmctld + slurmd(s). Started by the pytest fixture
# tests/slurm_cluster.py (or by hand / `make slurm-up`); stopped by teardown.sh. Adapted from the checked scripts in
# ../shared/slurm-test-cluster/: accounting is on by default (submitit reads job states from sacct), the default is two
# namespaced nodes node1 and node2 with 8 CPUs and 2 fake GPUs each, and packages come from install_deps.sh.
# Idempotent: if the cluster is already up in the requested mode with the same rendered config it does nothing;
# otherwise it tears down and restarts. About 2-4 s on 2 cores.
#
#   single    : one slurmd, NodeName=<short hostname>, NodeAddr=127.0.0.1
#   netns     : NNODES slurmds, each in its own network namespace (slnode<i>, 10.77.0.(10+i)/24 on
#               bridge slbr0 whose host side is 10.77.0.1) and its own UTS hostname node<i>.
#               Traffic never leaves this machine (no default route in the namespaces, no forwarding).
#   multiport : NNODES slurmds on 127.0.0.1, one port each (needs a MULTIPLE_SLURMD build; Debian's is)
#
# Env knobs: SLURM_LOCAL_DIR (default /tmp/slurm-local)  state/spool/logs/pidfiles/fake devices
#            SLURM_CONF_DIR  (default /etc/slurm)        where slurm.conf + gres.conf are written
#            SLURM_CRED_EXPIRE (default 10)              AuthInfo=cred_expire (= requeue hold time)
#            SLURM_FAKE_GPUS (default 2)                 fake GPUs per node
#            SLURM_LOCAL_CPUS (default 8, or 'real')     CPUs advertised per node (oversubscribes the VM)
#            SLURM_LOCAL_ACCOUNTING (default 1)          run MariaDB (own datadir, 127.0.0.1:33061) + slurmdbd so that
#                                                        sacct works (submitit needs it); 0 = no accounting
#            SLURM_LOCAL_KEEP_STATE=1                    do not wipe job state on (re)start
#            SLURM_LOCAL_NO_INSTALL=1                    never apt-get install (install_deps.sh)
set -euo pipefail
MODE=${1:-netns}
NNODES=${2:-${SLURM_LOCAL_NODES:-2}}
[ "$MODE" = single ] && NNODES=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CONFDIR=${SLURM_CONF_DIR:-/etc/slurm}
CRED_EXPIRE=${SLURM_CRED_EXPIRE:-10}
GPUS=${SLURM_FAKE_GPUS:-2}
VCPUS=${SLURM_LOCAL_CPUS:-8}
ACCT=${SLURM_LOCAL_ACCOUNTING:-1}
NET=10.77.0           # netns mode only: private /24 that exists only inside this machine
BR=slbr0
HOSTS_TAG="slurm-local"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

log() { echo "[slurm-testing setup $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { if [ -s "$1" ]; then cat "$1"; fi; }

case "$MODE" in single|netns|multiport) ;; *) die "unknown mode $MODE";; esac
[ "$(id -u)" = 0 ] || die "must run as root"
T_BEGIN=$(date +%s.%N)

# ---------------------------------------------------------------- 0. packages
need=(slurmctld slurmd sbatch munged ip unshare bc)
[ "$ACCT" = 1 ] && need+=(slurmdbd mariadbd)
for c in "${need[@]}"; do
  if ! command -v "$c" >/dev/null; then
    [ "${SLURM_LOCAL_NO_INSTALL:-0}" = 1 ] && die "$c not installed (run slurm/testing/install_deps.sh as root)"
    bash "$HERE/install_deps.sh" >&2
    command -v "$c" >/dev/null || die "$c still missing after install_deps.sh"
  fi
done
mkdir -p "$DIR"/{state,spool,log,run,fakedev} "$CONFDIR"

# ---------------------------------------------------------------- 1. render slurm.conf / gres.conf (into $DIR first)
HOST=$(hostname -s)
read -r CPUS BOARDS SOCKETS CORES THREADS MEMTOT < <(slurmd -C 2>/dev/null | head -1 | tr ' ' '\n' | awk -F= '
  $1=="CPUs"{c=$2} $1=="Boards"{b=$2} $1=="SocketsPerBoard"{s=$2} $1=="CoresPerSocket"{k=$2}
  $1=="ThreadsPerCore"{t=$2} $1=="RealMemory"{m=$2} END{print c,b,s,k,t,m}')
# Each node advertises $VCPUS CPUs even on a 2-core VM (needs SlurmdParameters=config_overrides),
# so that several 1-CPU test jobs can run at once. SLURM_LOCAL_CPUS=real advertises the detected topology.
if [ "$VCPUS" = real ]; then
  TOPO="CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS"
else
  TOPO="CPUs=$VCPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$VCPUS ThreadsPerCore=1"
fi
MEM=$((MEMTOT * 8 / 10 / NNODES))
if [ "$ACCT" = 1 ]; then ACCT_TYPE=accounting_storage/slurmdbd; else ACCT_TYPE=accounting_storage/none; fi
case "$MODE" in
  single)    CTLADDR=127.0.0.1; NODES=("$HOST") ;;
  netns)     CTLADDR=$NET.1;    NODES=(); for i in $(seq 1 "$NNODES"); do NODES+=("node$i"); done ;;
  multiport) CTLADDR=127.0.0.1; NODES=(); for i in $(seq 1 "$NNODES"); do NODES+=("node$i"); done ;;
esac
{
  sed -e "s|@CTLHOST@|$HOST|g" -e "s|@CTLADDR@|$CTLADDR|g" -e "s|@DIR@|$DIR|g" \
      -e "s|@CRED_EXPIRE@|$CRED_EXPIRE|g" -e "s|@ACCT_TYPE@|$ACCT_TYPE|g" "$HERE/slurm.conf.common.tmpl"
  echo "# ---- nodes: mode=$MODE ----"
  i=0
  for n in "${NODES[@]}"; do
    i=$((i + 1))
    case "$MODE" in
      single)    echo "NodeName=$n NodeAddr=127.0.0.1 $TOPO RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN" ;;
      netns)     echo "NodeName=$n NodeHostname=$n NodeAddr=$NET.$((10 + i)) $TOPO RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN" ;;
      multiport) echo "NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((17000 + i)) $TOPO RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN" ;;
    esac
  done
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$DIR/slurm.conf.rendered"
{
  echo "AutoDetect=off"
  for n in "${NODES[@]}"; do
    mkdir -p "$DIR/fakedev/$n"
    for g in $(seq 0 $((GPUS - 1))); do
      # fake GPU = char device 1:3 (same as /dev/null). Regular files give
      # "error: ... is not a valid character or block device, fix your gres.conf"
      [ -e "$DIR/fakedev/$n/nvidia$g" ] || mknod "$DIR/fakedev/$n/nvidia$g" c 1 3
    done
    echo "NodeName=$n Name=gpu File=$DIR/fakedev/$n/nvidia[0-$((GPUS - 1))]"
  done
} > "$DIR/gres.conf.rendered"

# ---------------------------------------------------------------- 2. already up with this config?
cluster_up() {
  alive "$(pid_of "$DIR/run/slurmctld.pid")" || return 1
  [ "$(cat "$DIR/mode" 2>/dev/null)" = "$MODE:$NNODES" ] || return 1
  cmp -s "$DIR/slurm.conf.rendered" "$CONFDIR/slurm.conf" || return 1
  cmp -s "$DIR/gres.conf.rendered" "$CONFDIR/gres.conf" || return 1
  if [ "$MODE" != single ]; then grep -q "# BEGIN $HOSTS_TAG" /etc/hosts || return 1; fi
  if [ "$ACCT" = 1 ]; then alive "$(pid_of "$DIR/run/slurmdbd.pid")" || return 1; fi
  local n; for n in "${NODES[@]}"; do alive "$(pid_of "$DIR/run/slurmd-$n.pid")" || return 1; done
  scontrol ping >/dev/null 2>&1 || return 1
  local states; states=$(sinfo -h -N -o '%T' 2>/dev/null | sort -u)
  [ -n "$states" ] && ! echo "$states" | grep -qvE '^(idle|allocated|mixed|completing)$'
}
if cluster_up; then log "cluster already up (mode $MODE, $NNODES node(s)), nothing to do"; sinfo; exit 0; fi
if alive "$(pid_of "$DIR/run/slurmctld.pid")" || ls "$DIR"/run/slurmd-*.pid >/dev/null 2>&1 || [ -f "$DIR/netns.list" ]; then
  log "cluster running with another mode/config or unhealthy: tearing it down first"
  SLURM_LOCAL_DIR="$DIR" SLURM_CONF_DIR="$CONFDIR" bash "$HERE/teardown.sh" --keep-munge
fi
T_START=$(date +%s.%N)
cp "$DIR/slurm.conf.rendered" "$CONFDIR/slurm.conf"
cp "$DIR/gres.conf.rendered" "$CONFDIR/gres.conf"
echo "$MODE:$NNODES" > "$DIR/mode"

# ---------------------------------------------------------------- 3. munge
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey -c -f -k /etc/munge/munge.key; else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0755 /run/munge
  setpriv --reuid munge --regid munge --init-groups /usr/sbin/munged
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
  cp /run/munge/munged.pid "$DIR/run/munged.pid"     # teardown only kills munged if WE started it
  log "munged started pid $(cat "$DIR/run/munged.pid")"
else
  log "munged already running"
fi

# ---------------------------------------------------------------- 4. network namespaces (netns mode)
if [ "$MODE" = netns ]; then
  if ! ip link show "$BR" >/dev/null 2>&1; then
    ip link add "$BR" type bridge
    ip addr add "$NET.1/24" dev "$BR"
    ip link set "$BR" up
  fi
  : > "$DIR/netns.list"
  for i in $(seq 1 "$NNODES"); do
    ns=slnode$i
    ip netns add "$ns" 2>/dev/null || true
    echo "$ns" >> "$DIR/netns.list"
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
      ip link add "slveth$i" type veth peer name eth0 netns "$ns"
      ip link set "slveth$i" master "$BR" up
      ip -n "$ns" addr add "$NET.$((10 + i))/24" dev eth0
      ip -n "$ns" link set eth0 up
    fi
    ip -n "$ns" link set lo up
  done
fi
if [ "$MODE" != single ]; then
  # node names must resolve everywhere (MASTER_ADDR=node1 ...); all namespaces share /etc/hosts.
  # edit in place (/etc/hosts may be a bind mount); teardown removes the block again.
  tmp=$(mktemp); sed "/# BEGIN $HOSTS_TAG/,/# END $HOSTS_TAG/d" /etc/hosts > "$tmp" && cat "$tmp" > /etc/hosts; rm -f "$tmp"
  {
    echo "# BEGIN $HOSTS_TAG"
    [ "$MODE" = netns ] && echo "$NET.1 slurmctl"
    for i in $(seq 1 "$NNODES"); do
      if [ "$MODE" = netns ]; then echo "$NET.$((10 + i)) node$i"; else echo "127.0.0.1 node$i"; fi
    done
    echo "# END $HOSTS_TAG"
  } >> /etc/hosts
fi

# ---------------------------------------------------------------- 5. daemons
if [ "$ACCT" = 1 ]; then
  # MariaDB with its own datadir/socket/port (does not touch /var/lib/mysql), then slurmdbd
  M=$DIR/mysql
  mkdir -p "$M"; chown mysql:mysql "$M"
  if [ ! -d "$M/data/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$M/data" --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed, see $DIR/log/mariadb-install.log"
  fi
  if ! alive "$(pid_of "$M/mariadbd.pid")"; then
    setsid /usr/sbin/mariadbd --user=mysql --datadir="$M/data" --socket="$M/mysqld.sock" --pid-file="$M/mariadbd.pid" \
      --bind-address=127.0.0.1 --port=33061 --skip-log-bin --innodb-buffer-pool-size=64M --log-error="$M/mariadb.err" \
      </dev/null >/dev/null 2>&1 &
  fi
  for _ in $(seq 200); do mariadb --socket="$M/mysqld.sock" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb --socket="$M/mysqld.sock" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;" || die "mariadb not usable, see $M/mariadb.err"
  log "mariadbd pid $(cat "$M/mariadbd.pid")"
  sed -e "s|@DIR@|$DIR|g" "$HERE/slurmdbd.conf.tmpl" > "$CONFDIR/slurmdbd.conf"; chmod 600 "$CONFDIR/slurmdbd.conf"
  if ! alive "$(pid_of "$DIR/run/slurmdbd.pid")"; then rm -f "$DIR/run/slurmdbd.pid"; /usr/sbin/slurmdbd; fi
  for _ in $(seq 200); do [ -s "$DIR/run/slurmdbd.pid" ] && grep -q 'slurmdbd version .* started' "$DIR/log/slurmdbd.log" 2>/dev/null && break; sleep 0.1; done
  alive "$(pid_of "$DIR/run/slurmdbd.pid")" || { tail "$DIR/log/slurmdbd.log" >&2; die "slurmdbd did not start"; }
  log "slurmdbd pid $(cat "$DIR/run/slurmdbd.pid")"
fi
CTLD_OPTS=(-c)                     # fresh cluster: forget old jobs
[ "${SLURM_LOCAL_KEEP_STATE:-0}" = 1 ] && CTLD_OPTS=()
rm -f "$DIR/run/slurmctld.pid"
/usr/sbin/slurmctld "${CTLD_OPTS[@]}"
for _ in $(seq 100); do
  scontrol ping >/dev/null 2>&1 && break
  [ -s "$DIR/run/slurmctld.pid" ] && ! alive "$(cat "$DIR/run/slurmctld.pid")" && break   # died (fatal)
  sleep 0.1
done
scontrol ping >/dev/null 2>&1 || { tail -20 "$DIR/log/slurmctld.log" >&2; die "slurmctld did not come up"; }
log "slurmctld pid $(cat "$DIR/run/slurmctld.pid")"

i=0
for n in "${NODES[@]}"; do
  i=$((i + 1))
  rm -f "$DIR/run/slurmd-$n.pid"
  case "$MODE" in
    single|multiport) /usr/sbin/slurmd -N "$n" || true ;;
    # NOT "ip netns exec": it remounts /sys, hiding /sys/fs/cgroup, and slurmd 22.05 then dies with
    # "error: No filesystem mounted on /sys/fs/cgroup / Unable to initialize cgroup plugin" even with
    # proctrack/linuxproc + task/none.  nsenter --net only switches the network namespace.
    netns)  nsenter --net=/run/netns/slnode$i -- unshare --uts -- sh -c "hostname $n && exec /usr/sbin/slurmd -N $n" || true ;;
  esac
  for _ in $(seq 100); do [ -s "$DIR/run/slurmd-$n.pid" ] && break; sleep 0.05; done
  [ -s "$DIR/run/slurmd-$n.pid" ] || { tail -20 "$DIR/log/slurmd-$n.log" >&2; die "slurmd $n did not start"; }
  log "slurmd $n pid $(cat "$DIR/run/slurmd-$n.pid")"
done

# ---------------------------------------------------------------- 6. wait until all nodes idle
states=""
for _ in $(seq 300); do
  states=$(sinfo -h -N -o '%T' 2>/dev/null | sort -u | tr '\n' ' ')
  [ "$states" = "idle " ] && break
  sleep 0.1
done
[ "$states" = "idle " ] || { sinfo -N -l >&2; tail -20 "$DIR/log/slurmctld.log" >&2; die "nodes not idle: $states"; }
log "cluster up (mode=$MODE nodes=${#NODES[@]}): daemons started+idle in $(echo "$(date +%s.%N) - $T_START" | bc) s, script total $(echo "$(date +%s.%N) - $T_BEGIN" | bc) s"
sinfo
