#!/usr/bin/env bash
# The benchmark suite on the GPU machine (docs/benchmarks.md): one call, results under $OUT/suite.
#
# Run from the repository root with the staged wheels carried along (`scripts/stage_wheels.sh` here first,
# then a device call with carry [".whl"] running `bash scripts/gpu_suite.sh`). The machine has torch, lightning,
# torchmetrics, scipy, numpy, pillow, opencv but not open_clip_torch, ftfy, wcwidth, jsonargparse, docstring-parser,
# typeshed-client, PyAV or wandb, and no package registry: the wheels in .whl/ provide them.
#
# Environment:
#   OUT           output folder (the device machine sets it; default ./gpu_suite_out)
#   SUITE_ARGS    suite options (default "--device cuda"; "--device cpu --quick" tries the script on a CPU)
#   SITE          where the wheels are installed (default /tmp/site)
#   WHEELS        folder of the wheels (default .whl; a CPU trial on Python 3.11 leaves out the cp312 av wheel)
#   PYTHON        interpreter (default python3)
# Exits non-zero when the installation, the suite or its output files fail.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_suite_out}
SUITE_ARGS=${SUITE_ARGS:---device cuda}
SITE=${SITE:-/tmp/site}
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  echo "gpu_suite.sh: no wheels in $WHEELS/ (run scripts/stage_wheels.sh and carry .whl)" >&2
  exit 1
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}"
export PYTHONPATH="$SITE:$PWD/src" WANDB_MODE=disabled HF_HUB_OFFLINE=1

mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>/dev/null || true
start=$(date +%s)
set +e
# shellcheck disable=SC2086  # SUITE_ARGS is a list of options
"$PYTHON" -m arn_lightning.cli benchmark suite $SUITE_ARGS --out "$OUT/suite" 2>&1 | tee "$OUT/suite.log"
status=${PIPESTATUS[0]}
set -e
echo "gpu_suite.sh: suite exit status $status after $(( $(date +%s) - start )) s" | tee -a "$OUT/suite.log"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
for file in suite.json suite.md; do
  if [ ! -s "$OUT/suite/$file" ]; then
    echo "gpu_suite.sh: $OUT/suite/$file is missing" >&2
    exit 1
  fi
done
