#!/usr/bin/env bash
# The GPU checks, in one go, on a machine with one CUDA GPU (sized for one H200 in under 8 minutes):
#   doctor (GPU, memory, NCCL lines), `pytest -m gpu`, an fp16 pretrain through the CLI, and the GPU benchmarks
#   (`python -m bench.gpu`) if present.
# Logs go to $OUT (or runs/gpu-check); the exit code is the first failing step's.
#
# Python: .venv if it exists, else `make install` builds it. On a GPU machine that cannot reach a package index but
# has torch in its python3, a venv on top of that python (--system-site-packages) gets the missing packages from wheels
# in .whl/ (`pip download --no-deps -d .whl NAME==VERSION` elsewhere, as pinned in constraints.txt).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
LOG_DIR=${OUT:-runs/gpu-check}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ ! -x .venv/bin/python ]; then
    if [ -d .whl ] && python3 -c 'import torch' 2>/dev/null; then
        python3 -m venv --system-site-packages .venv
        .venv/bin/pip install -q --no-index --no-deps .whl/*.whl
    else
        make install || exit 1
    fi
fi
PY=.venv/bin/python

status=0
step() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$LOG_DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc"
    # pytest's 5 is "no test selected": nothing is marked gpu yet, which is not a failure of this machine.
    if [ "$name" = pytest-gpu ] && [ "$rc" -eq 5 ]; then
        rc=0
    fi
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$rc
    fi
}

nvidia-smi > "$LOG_DIR/nvidia-smi.log" 2>&1 || true
step doctor 60 "$PY" -m simclr_hpc.cli.main doctor --offline --run-root "$LOG_DIR/runs"
step pytest-gpu 300 "$PY" -m pytest -m gpu -p no:cacheprovider --timeout=240 -q "--junitxml=$LOG_DIR/pytest-gpu.xml"
# fp16 with dynamic loss scaling end to end through the CLI (the path V100 and T4 nodes take with precision=auto).
rm -rf "$LOG_DIR/fp16-shards" "$LOG_DIR/runs/adhoc/pretrain/fp16"  # a rerun builds and trains again
step fp16-shards 60 "$PY" -m simclr_hpc.cli.main data shards shapes:4:40:16 "$LOG_DIR/fp16-shards"
step fp16-pretrain 120 "$PY" -m simclr_hpc.cli.main run pretrain --set "data.shards=$LOG_DIR/fp16-shards" \
    --set "run.root=$LOG_DIR/runs" --set run.name=fp16 --set train.precision=fp16 --set data.image_size=16 \
    --set model.width=0.25 --set train.global_batch=64 --set train.steps=20 --set train.ckpt_every_steps=10
if [ -f bench/gpu.py ] || [ -f bench/gpu/__init__.py ]; then
    step bench-gpu 200 "$PY" -m bench.gpu
fi
exit "$status"
