#!/usr/bin/env bash
# The prepared GPU check (issue 14): one iteration's stages on the GPU, DPO launched with
# accelerate (FSDP, or ZeRO-3 where DeepSpeed is installed) in bf16 mixed precision on 1 and,
# with 2 GPUs, 2 processes, and the checkpoint loaded again for iteration 2. Under 9 minutes on
# one GPU; needs no network: the model is built on the machine (scripts/gpu_check.py).
#   usage: scripts/gpu_check.sh [REPORT]        (default results/gpu_check.md)
# The packages metajudge needs that a bare GPU image lacks (pydantic, trl, datasets, ...) can be
# carried as wheels in .wheels/ (pip download -d .wheels pydantic trl datasets on a machine
# with network); they are installed from there without an index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .wheels ]; then
  $PY -m pip install -q --no-index --find-links .wheels pydantic pyyaml trl datasets tqdm
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
timeout 540 $PY scripts/gpu_check.py --out "${1:-results/gpu_check.md}"
