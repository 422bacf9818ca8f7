#!/usr/bin/env bash
# The GPU checks of issue 21 in one shot, on a machine with one CUDA GPU and no network (sized for one H100 or H200 in
# under 10 minutes):
#   bash scripts/gpu_wheels.sh          # here, where the package index is reachable: fills .whl/ (about 7 MiB)
#   bash scripts/gpu_check.sh           # there: installs .whl/ beside the image's torch, runs every check
#   bash scripts/gpu_check.sh --no-cuda # anywhere: every check that needs no GPU, on the CPU at a tiny size
# Other options go to scripts/gpu_checks.py (--only A,B, --skip A,B; --jobs N: N checks at once, CPU only). Logs, bench_gpu.json and summary.json go to
# $OUT (or runs/gpu-check); the last lines say which checks ran, passed, failed or were skipped. Exit 1 if one failed.
#
# Python: $PYTHON, else the machine's python3 (torch 2.11 there; `make gpu-check` and tests/test_gpu_check.py pass the
# venv's interpreter, which need not be on PATH). What it lacks (pydantic, submitit, webdataset, deepspeed, pytest)
# is installed from .whl/ with `pip install --no-index --no-deps --target` into $OUT/site, first on PYTHONPATH. Where
# .whl/ is absent and python3 already imports them (this repository's venv), nothing is installed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT=${OUT:-$PWD/runs/gpu-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
    SITE="$OUT/site"
    rm -rf "$SITE"
    if [ "$("$PY" -c 'import sys; print(sys.version_info[:2] == (3, 12))')" = True ]; then
        echo "gpu_check: installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl || exit 1
        export SIMCLR_GPU_SITE="$SITE" PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        # Not the GPU machine's Python 3.12: install for 3.12 all the same (what that machine will do, checked here),
        # but run the checks with this python's own packages (a cp312 extension does not load in another Python).
        echo "gpu_check: $PY is not Python 3.12: installing .whl/ for 3.12 into $SITE as a check only"
        "$PY" -m pip install -q --no-index --no-deps --target "$SITE" --python-version 3.12 --implementation cp \
            --abi cp312 --abi abi3 --abi none --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux_2_28_x86_64 --platform any --only-binary=:all: .whl/*.whl || exit 1
        echo "gpu_check: $(ls "$SITE" | grep -c dist-info) packages would install there"
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
else
    echo "gpu_check: no .whl/ (bash scripts/gpu_wheels.sh makes it): using what $PY imports"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c 'import pydantic, submitit, webdataset, torch' || {
    echo "gpu_check: $PY cannot import what the checks need; run bash scripts/gpu_wheels.sh where PyPI is reachable," \
         "or set PYTHON to an interpreter that has them (PYTHON=.venv/bin/python)"
    exit 2
}
nvidia-smi > "$OUT/nvidia-smi.log" 2>&1 || true
exec "$PY" scripts/gpu_checks.py --out "$OUT" "$@"
