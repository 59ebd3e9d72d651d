#!/usr/bin/env bash
# Fashion-MNIST at the paper's hyper-parameters on one GPU, without Ray or MLflow (issue #12):
#   farm run configs/paper/fashion-mnist-gpu.yaml --local, then farm tables --no-mlflow.
#
# Run from anywhere (it works in the repository root):  bash scripts/gpu-fashion-mnist.sh
# Needs python3 with torch, torchvision, numpy, pandas, pyarrow, pyyaml, matplotlib (tqdm and
# tabulate optional), no network, and the four Fashion-MNIST IDX files (.gz or not) in
# data/fashion-mnist/ (git-ignored): `apt-get install dataset-fashion-mnist` puts them in
# /usr/share/datasets/fashion-mnist; copy them there.
#
# Results: $OUT/results when $OUT is set, else results/ (the run folder fashion-mnist-gpu/ with
# Parquet rows, manifest and tables/, the trained zoo in zoo/, and this script's log
# gpu-fashion-mnist.log).
#
# Resumable: shards are stored as they finish; rerunning continues the run. On a fresh machine
# (an empty $OUT), put the results folder a previous call returned at prev-results/ in the
# repository (git-ignored) and carry it: it is copied in and the run resumes from it.
# FARM_TIME_LIMIT=SECONDS stops the run cleanly (SIGTERM: stored shards kept, lock released)
# before an outer time limit, so the tables step and the copy of results still happen.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=configs/paper/fashion-mnist-gpu.yaml
RUN_ID=fashion-mnist-gpu                      # run.id of $CONFIG
DATA=data/fashion-mnist                       # datasets.fashion_mnist.root of $CONFIG
RESULTS=${OUT:+$OUT/}results
PY=${PYTHON:-python3}
LOG=$RESULTS/gpu-fashion-mnist.log
mkdir -p "$RESULTS"
exec > >(tee -a "$LOG") 2>&1

missing=()
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [[ -f $DATA/$f.gz || -f $DATA/$f ]] || missing+=("$f")
done
if ((${#missing[@]})); then
  echo "error: Fashion-MNIST IDX files missing in $PWD/$DATA: ${missing[*]} (.gz or not)." >&2
  echo "  Fix: apt-get install dataset-fashion-mnist && mkdir -p $DATA && cp /usr/share/datasets/fashion-mnist/* $DATA/" >&2
  echo "  (on the device machine: copy them into $DATA/ of the checkout and carry that folder)" >&2
  exit 2
fi
if ! "$PY" -c 'import torch, torchvision, numpy, pandas, pyarrow, yaml, matplotlib' 2>/dev/null; then
  echo "error: $PY lacks one of torch, torchvision, numpy, pandas, pyarrow, pyyaml, matplotlib" >&2
  exit 2
fi

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
farm() { "$PY" -m farm "$@"; }

if [[ -d prev-results/$RUN_ID && ! -d $RESULTS/$RUN_ID ]]; then
  echo "resuming from prev-results/ (copied into $RESULTS)"
  cp -a prev-results/. "$RESULTS/"
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)")'

args=(run "$CONFIG" --local --set "run.output=$RESULTS")
if [[ -f $RESULTS/$RUN_ID/manifest.json ]]; then
  args+=(--resume "$RUN_ID")      # same config, so the hash check passes; only missing pairs run
fi
start=$SECONDS
status=0
if [[ -n ${FARM_TIME_LIMIT:-} ]]; then
  timeout --signal=TERM --kill-after=30 "$FARM_TIME_LIMIT" "$PY" -m farm "${args[@]}" || status=$?
else
  farm "${args[@]}" || status=$?
fi
echo "farm run: exit $status after $((SECONDS - start)) s"

if [[ $status -eq 0 ]]; then
  farm tables "$RUN_ID" --output "$RESULTS" --no-mlflow
  echo "done: $RESULTS/$RUN_ID (tables in $RESULTS/$RUN_ID/tables; zoo accuracy/ASR in $RESULTS/zoo/manifest.json)"
else
  echo "incomplete (exit $status): stored shards are kept in $RESULTS/$RUN_ID; rerun this script to continue"
fi
exit "$status"
