#!/usr/bin/env bash
# install_deps.sh: the Debian packages the local Slurm test cluster needs (called by `make test` / `make slurm-deps`).
#
# Idempotent. When everything is installed it does nothing. When something is missing:
#   - as root: apt-get install it (about 20 s on 2 cores, from the distribution's package registry);
#   - not root: print what an administrator should install and exit 0, so `make test` goes on and the tests marked
#     `slurm` then fail loudly (the `slurm_cluster` fixture fails, it never skips).
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server iproute2 bc)
# command -> package that provides it
declare -A PROVIDES=(
  [slurmctld]=slurmctld [slurmd]=slurmd [sbatch]=slurm-client [sacct]=slurm-client [slurmdbd]=slurmdbd
  [munged]=munge [mariadbd]=mariadb-server [mariadb-install-db]=mariadb-server [ip]=iproute2 [bc]=bc
)
missing=()
for cmd in "${!PROVIDES[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PROVIDES[$cmd]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "slurm test cluster: packages present ($(slurmctld -V 2>/dev/null || echo slurm))"
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ]; then
  echo "slurm test cluster: missing packages: ${missing[*]}" >&2
  echo "slurm test cluster: as root run: apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
  echo "slurm test cluster: continuing; the tests marked 'slurm' will fail until these are installed" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "slurm test cluster: missing ${missing[*]} and no apt-get here; install Slurm 22.05+, munge and MariaDB by hand" >&2
  exit 0
fi
echo "slurm test cluster: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)
# Try without refreshing the package lists first (fast when they are fresh), then with.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
echo "slurm test cluster: installed in $(( $(date +%s) - t0 )) s"
