#!/usr/bin/env bash
# Speed check on a machine with an accelerator (issue #11): pair-epochs/s of ours and NC on
# small_cnn and ResNet20 at P = 1, 8, 64, 512 and the autotuned P, fp32 and bf16 autocast,
# the paper-style baseline and peak memory. Needs only torch, torchvision, pandas, pyarrow and
# pyyaml (no Ray, no MLflow, no network); about 5 minutes on one H100-class GPU.
#   scripts/device-check.sh [--out table.csv] [--device cuda]
#   FARM_CHECK_TINY=1 scripts/device-check.sh      # seconds on a CPU: proves it runs
# Paste the printed table into docs/benchmarks.md with the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m farm.devicecheck "$@"
