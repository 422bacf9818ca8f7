#!/usr/bin/env bash
# scripts/build_image.sh — build the Dockerfile with podman on a machine that cannot pull the official base image.
#
#   make image                       (= bash scripts/build_image.sh)
#   IMAGE=localhost/simclr-hpc:dev BASE_IMAGE=python:3.11.7-slim-bookworm bash scripts/build_image.sh
#
# 1. Tools: podman, runc, buildah, debootstrap from Debian (apt-get, only when missing and run as root).
# 2. Base: unless BASE_IMAGE is given, a minimal Debian bookworm root (debootstrap --variant=minbase, plus python3,
#    python3-venv and ca-certificates: Debian's Python 3.11.2) imported as localhost/simclr-base:bookworm. The root's
#    tarball is kept in $CACHE, so a new podman storage (or a fresh clone) re-imports it in seconds instead of
#    bootstrapping again (about 80 s).
# 3. Image: `podman build` of ./Dockerfile with --build-arg BASE_IMAGE, the same requirements.txt/constraints.txt as
#    the tests. Podman's layer cache keeps the dependency layer while the lock is unchanged. pip inside the build sees
#    this machine's pip configuration (files and PIP_* variables, merged into one pip.conf) and the local paths it
#    names (find-links, file:// indexes, certificates, constraints), bound read-only; --network=host for the index.
# Prints the time and the image size at the end. Settings podman needs here are in slurm/testing/containers.conf
# (CONTAINERS_CONF), see docs/containers.md.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-localhost/simclr-hpc:$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")}
LOCAL_BASE=localhost/simclr-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-}
CACHE=${SIMCLR_IMAGE_CACHE:-/var/cache/simclr-hpc}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv,ca-certificates
PYTHON=${PYTHON:-python3}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/slurm/testing/containers.conf}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

log() { echo "[build_image $(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
T0=$(date +%s)

# ---------------------------------------------------------------- 1. tools
missing=()
for tool in podman runc buildah debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: install them (apt-get install podman runc buildah debootstrap) or run as root"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc buildah debootstrap >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc buildah debootstrap >/dev/null; }
fi
mkdir -p "$CACHE"

# ---------------------------------------------------------------- 2. base image
if [ -z "$BASE_IMAGE" ]; then
    BASE_IMAGE=$LOCAL_BASE
    tarball=$CACHE/bookworm-minbase-${BASE_PACKAGES//,/-}.tar
    if podman image exists "$LOCAL_BASE"; then
        log "base $LOCAL_BASE already in podman's storage"
    else
        if [ ! -s "$tarball" ]; then
            [ "$(id -u)" = 0 ] || die "debootstrap needs root"
            root=$(mktemp -d "$CACHE/root.XXXXXX")
            log "debootstrap bookworm ($BASE_PACKAGES) from $MIRROR"
            debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
                || { tail -5 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
            # What a slim image leaves out too: package lists and caches, docs and man pages.
            rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
            tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
            rm -rf "$root"
        fi
        log "importing $tarball as $LOCAL_BASE"
        podman import --change 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" >/dev/null
    fi
fi

# ---------------------------------------------------------------- 3. pip configuration for the build
# pip inside the build reads /etc/pip.conf: write there what pip on this machine would use, and bind what it points to.
pipconf=$CACHE/pip.conf
mounts=()
: > "$pipconf"
if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip config list 2>/dev/null | "$PYTHON" -c '
import re, sys, configparser
conf = configparser.ConfigParser()
for line in sys.stdin:
    m = re.match(r"^([^.]*)\.([^=]+)=(.*)$", line.strip())
    if not m:
        continue
    section, key, value = m.groups()
    section = "global" if section in ("", ":env:") else section
    conf.setdefault(section, {})[key] = value.strip().strip("\x27\"")
conf.write(sys.stdout)' > "$pipconf"
    # Local paths named in the configuration: find-links dirs, cert and constraint files as they are; a file://
    # index by its parent, since a PEP 503 index (.../simple/) may link to its files with ../../files/NAME.
    while read -r path; do
        [ -e "$path" ] && mounts+=(--volume "$path:$path:ro")
    done < <(sed -n 's/^[^=]*= *//p' "$pipconf" | tr ' ' '\n' \
             | sed -n -e 's|^file://\(/.*\)/[^/]*/*$|\1|p' -e '\|^/|p' | sort -u)
fi
mounts+=(--volume "$pipconf:/etc/pip.conf:ro")

# ---------------------------------------------------------------- 4. build
revision=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
# Even a fully cached podman build re-hashes the multi-GB venv layer (minutes on 2 busy cores): skip it when the image
# was built from exactly this build context (the .dockerignore allow-list), Dockerfile and base.
context=$(cd "$REPO" && { echo "$BASE_IMAGE"; find Dockerfile requirements.txt constraints.txt pyproject.toml README.md \
          simclr_hpc -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-32)
stamp=$CACHE/$(echo "$IMAGE" | tr '/:' '__').context
if podman image exists "$IMAGE" && [ -s "$stamp" ] \
        && [ "$(cat "$stamp")" = "$context $(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    log "$IMAGE is up to date (build context $context): nothing to build"
    exit 0
fi
log "podman build $IMAGE from $BASE_IMAGE (revision $revision)"
T1=$(date +%s)
podman build --network=host --layers \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg GIT_REVISION="$revision" \
    "${mounts[@]}" --tag "$IMAGE" --file "$REPO/Dockerfile" "$REPO"
T2=$(date +%s)
echo "$context $(podman image inspect --format '{{.Id}}' "$IMAGE")" > "$stamp"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in $((T2 - T1)) s (total $((T2 - T0)) s), size $((size / 1000000)) MB"
