#!/usr/bin/env bash
# The prepared GPU check (issues 14 and 21): on one GPU with no network, iteration 1 served by
# `transformers serve` (its memory freed before training), DPO launched with accelerate and
# ZeRO-3 at world size 1 in bf16 with precomputed reference log-probabilities and gradient
# checkpointing, the same with LoRA and the merge, and the checkpoint served again. Under 9
# minutes; the model is built on the machine (scripts/gpu_check.py).
#   here, once (PyPI):  scripts/gpu_wheels.sh         wheels into .whl/ (ignored by git)
#   on the GPU machine: scripts/gpu_check.sh [REPORT]  (default $OUT/gpu_check.md when $OUT is
#                       set, else results/gpu_check.md)
#   on a CPU, to try the script: GPU_CHECK_TIMEOUT=3000 scripts/gpu_check.sh /tmp/x.md --cpu
# What a bare GPU image lacks (pydantic, trl, datasets, deepspeed, ...) is installed from .whl/
# with no index; metajudge itself is imported from this checkout (PYTHONPATH), by this script,
# the launched training ranks and the process guard (python -m metajudge.processes) alike.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
  # shellcheck disable=SC2046
  # --no-compile: no .pyc written for the installed packages (minutes of a short device call)
  "$PY" -m pip install -q --no-index --no-cache-dir --no-compile --disable-pip-version-check \
    --find-links "$WHEELS" $(sed -n 's/^top: //p' scripts/gpu_check_requirements.txt)
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# fail here, naming the package, rather than minutes later in a launched rank
"$PY" -c "import pydantic, trl, datasets, deepspeed, peft, accelerate, transformers, fastapi, \
uvicorn, openai, metajudge.processes, metajudge.cli; print('imports ok:', 'trl', trl.__version__, \
'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
# from another folder, so the import comes from PYTHONPATH as in the ranks and servers
pushd / >/dev/null
"$PY" -m metajudge.processes "$$" 1 -- "$PY" -c "import metajudge.stages.train"
popd >/dev/null
DEFAULT_REPORT=results/gpu_check.md
if [ -n "${OUT:-}" ]; then DEFAULT_REPORT="$OUT/gpu_check.md"; fi
timeout "${GPU_CHECK_TIMEOUT:-540}" "$PY" scripts/gpu_check.py --out "${1:-$DEFAULT_REPORT}" "${@:2}"
