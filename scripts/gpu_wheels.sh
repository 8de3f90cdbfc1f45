#!/usr/bin/env bash
# Wheels that scripts/gpu_check.sh installs on a bare GPU machine with no network: what the GPU
# image lacks (pydantic, trl, datasets, deepspeed, ...) or may carry in a version these pins do
# not accept (pyarrow, fsspec, typing-extensions, peft). Run here, where PyPI answers; the wheels
# land in .whl/ (ignored by git), at most 64 MiB in all, for CPython 3.12 manylinux x86-64 (the
# GPU image's python3). DeepSpeed publishes a source archive only: its pure-python wheel is built
# here with no ops compiled (they are JIT-compiled on the GPU when first used).
#   usage: scripts/gpu_wheels.sh [DEST] [PYTHON_VERSION]   (defaults .whl 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYVER=${2:-3.12}
PY=${PYTHON:-.venv/bin/python}
LIMIT=$((64 * 1024 * 1024))
# tested together (the versions of .venv); the first line is what gpu_check.sh installs
TOP=$(sed -n 's/^top: //p' scripts/gpu_check_requirements.txt)
DEPS=$(sed -n 's/^deps: //p' scripts/gpu_check_requirements.txt)
rm -rf "$DEST"
mkdir -p "$DEST"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --abi "cp${PYVER/./}" --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d "$DEST" \
  $(echo $TOP | tr ' ' '\n' | grep -v '^deepspeed==') $DEPS
# shellcheck disable=SC2046
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps -w "$DEST" $(echo $TOP | tr ' ' '\n' | grep '^deepspeed==')
SIZE=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
ls -1 "$DEST"
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $((SIZE / 1024 / 1024)) MiB in $DEST"
if [ "$SIZE" -gt "$LIMIT" ]; then
  echo "error: over the 64 MiB a device call carries" >&2
  exit 1
fi
