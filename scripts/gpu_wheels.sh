#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels a lent GPU machine lacks, so that scripts/gpu_check.sh runs there without
# a network: Python 3.12, manylinux x86_64, at most 64 MiB in all. Run it here, where the package index is reachable.
#
# The GPU machine's image has (docs: /work/shared/DESIGN.md) torch 2.11, torchvision 0.26, accelerate 1.15, safetensors,
# tensorboard, typer, rich, numpy, scipy, pillow, pyyaml and matplotlib. It lacks pydantic, submitit, webdataset and
# deepspeed; their dependencies that the image may lack come too (small), and pytest for tests/test_gpu.py.
# Versions are the ones constraints.txt pins. DeepSpeed ships only a source archive: its wheel is built here
# (`pip wheel --no-deps`, against this venv's torch, no ops compiled: DeepSpeed builds what it needs at run time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PY=${PYTHON:-python}
DIR=.whl
LIMIT_MIB=64
BINARY=(pydantic pydantic_core annotated-types typing-inspection typing_extensions submitit cloudpickle webdataset
        braceexpand hjson msgpack ninja py-cpuinfo einops psutil tqdm packaging pytest pluggy iniconfig pytest-timeout)

pin() {  # the version constraints.txt pins for a package (names compared as pip does: case, - and _ alike)
    local want
    want=$(echo "$1" | tr 'A-Z_' 'a-z-')
    awk -F'==' -v want="$want" '{ name = tolower($1); gsub("_", "-", name); if (name == want) print $2 }' constraints.txt
}

specs=()
for name in "${BINARY[@]}"; do
    version=$(pin "$name")
    if [ -z "$version" ]; then
        echo "gpu_wheels: $name is not pinned in constraints.txt" >&2
        exit 2
    fi
    specs+=("$name==$version")
done

rm -rf "$DIR"
mkdir -p "$DIR"
echo "gpu_wheels: downloading ${#specs[@]} wheels for cp312 manylinux x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: --dest "$DIR" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any "${specs[@]}"

echo "gpu_wheels: building deepspeed==$(pin deepspeed) (pure Python; no ops compiled)"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation --wheel-dir "$DIR" "deepspeed==$(pin deepspeed)"
# DeepSpeed's wheel records the torch it was built against; with no ops compiled it runs on any torch >= 2.0.
compgen -G "$DIR/deepspeed-*-py3-none-any.whl" > /dev/null || { echo "gpu_wheels: deepspeed wheel is not pure" >&2; exit 1; }

size_kib=$(du -sk "$DIR" | cut -f1)
ls -1 "$DIR"
echo "gpu_wheels: $(ls "$DIR" | wc -l) wheels, $((size_kib / 1024)) MiB ($size_kib KiB) in $DIR"
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
    echo "gpu_wheels: more than $LIMIT_MIB MiB: the GPU machine takes no more" >&2
    exit 1
fi
