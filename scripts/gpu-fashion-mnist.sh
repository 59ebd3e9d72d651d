#!/usr/bin/env bash
# Fashion-MNIST at the paper's hyper-parameters on one GPU, without Ray or MLflow (issue #12):
# resumable runs under `farm run --local`, one per phase, in the order PHASES names them
# (default "main cw resnet20"):
#   main      fashion-mnist-gpu           configs/paper/fashion-mnist-gpu.yaml: every method of
#                                         the config (all of the paper's but CW) on the 4 small_cnn models;
#   cw        fashion-mnist-gpu-cw        CW alone on the same zoo (--set 'methods=[{name: cw}]');
#   resnet20  fashion-mnist-gpu-resnet20  configs/paper/fashion-mnist-gpu-resnet20.yaml: the 4
#                                         resnet20 models (trained on the GPU) through ours, NC,
#                                         NC Prune, ABS, UAP;
# each followed by its tables. CW is apart because it costs about as much as everything else
# together (estimate in the config's header) and runs are model-major: inside one run a cut would
# leave the later models without any method; this way the first run's tables exist even if CW
# does not finish.
#
# Run from anywhere:  [PHASES="resnet20 cw"] bash scripts/gpu-fashion-mnist.sh [--set K=V ...]
# Extra arguments go to every run (the CW run then replaces `methods`); CW_ARGS (words split on
# spaces, e.g. CW_ARGS='--set methods.0.params.max_rounds=50') to the CW run only. A rerun that
# resumes must pass the same ones (they are part of the config hash).
# Needs python3 (or $PYTHON) with torch, torchvision, numpy, pandas, pyarrow, pyyaml, matplotlib
# (tqdm optional), no network, and the four Fashion-MNIST IDX files (.gz or not) in
# data/fashion-mnist/ (git-ignored): `apt-get install dataset-fashion-mnist` puts them in
# /usr/share/datasets/fashion-mnist; copy them there.
#
# Results: $OUT/results when $OUT is set, else results/: the run folders (Parquet rows, manifest,
# tables/), the trained zoo in zoo/ (zoo/manifest.json: clean accuracy and ASR) and this
# script's log gpu-fashion-mnist.log; with $OUT also all of it as $OUT/results.tgz.
#
# Resumable: shards are stored as they finish; rerunning continues each run (a finished one is
# a no-op). On a fresh machine (an empty $OUT), put the results folder a previous call returned
# at prev-results/ in the repository (git-ignored) and carry it: it is copied in first. The small_cnn
# zoo can be trained beforehand on any machine the same way (its checkpoints do not depend on
# the device they will run on): `farm zoo configs/paper/fashion-mnist-gpu.yaml --set
# run.output=prev-results`, which saves the GPU the ~2 minutes of training (the resnet20 zoo takes
# about an hour per model on 2 CPU cores: let the GPU train it).
# TABLES=0 skips `farm tables` after each run (they need no GPU: render them where the results land).
# FARM_TIME_LIMIT=SECONDS bounds all runs together: a run still going then is stopped cleanly
# (SIGTERM: stored shards kept, lock released) so the log and results come back intact.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=configs/paper/fashion-mnist-gpu.yaml
RUN_ID=fashion-mnist-gpu                      # run.id of $CONFIG
R20_CONFIG=configs/paper/fashion-mnist-gpu-resnet20.yaml
R20_RUN_ID=fashion-mnist-gpu-resnet20         # run.id of $R20_CONFIG
DATA=data/fashion-mnist                       # datasets.fashion_mnist.root of both configs
PHASES=${PHASES:-main cw resnet20}
RESULTS=${OUT:+$OUT/}results
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

main() {
  local missing=() f
  for f in $PHASES; do
    [[ $f == @(main|cw|resnet20) ]] || { echo "error: unknown phase '$f' in PHASES (main, cw, resnet20)" >&2; return 2; }
  done
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [[ -f $DATA/$f.gz || -f $DATA/$f ]] || missing+=("$f")
  done
  if ((${#missing[@]})); then
    echo "error: Fashion-MNIST IDX files missing in $PWD/$DATA: ${missing[*]} (.gz or not)." >&2
    echo "  Fix: apt-get install dataset-fashion-mnist && mkdir -p $DATA && cp /usr/share/datasets/fashion-mnist/* $DATA/" >&2
    echo "  (on the device machine: copy them into $DATA/ of the checkout and carry that folder)" >&2
    return 2
  fi
  if ! "$PY" -c 'import torch, torchvision, numpy, pandas, pyarrow, yaml, matplotlib' 2>/dev/null; then
    echo "error: $PY lacks one of torch, torchvision, numpy, pandas, pyarrow, pyyaml, matplotlib" >&2
    return 2
  fi
  if [[ -d prev-results ]]; then
    # No-clobber: what this machine already has wins; a zoo trained elsewhere (`farm zoo
    # CONFIG --set run.output=prev-results` on any machine) is reused, not retrained.
    echo "copying prev-results/ into $RESULTS (files already there are kept)"
    cp -an prev-results/. "$RESULTS/"
  fi
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda:",
                                torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)")'

  local cw_args=() name status=0
  read -ra cw_args <<< "${CW_ARGS:-}"
  for name in $PHASES; do
    case $name in
      main) phase "$CONFIG" "$RUN_ID" "$@" || status=$? ;;
      cw) phase "$CONFIG" "$RUN_ID-cw" "$@" --set 'methods=[{name: cw}]' --set "run.id=$RUN_ID-cw" \
            "${cw_args[@]}" || status=$? ;;
      resnet20) phase "$R20_CONFIG" "$R20_RUN_ID" "$@" || status=$? ;;
    esac
    ((status != 124)) || return 124  # time spent: the later phases would not start either
  done
  return "$status"
}

# One resumable run (config $1, id $2, extra farm run arguments after them) and its tables.
phase() {
  local config=$1 run_id=$2 status=0 limit=() begin=$SECONDS
  shift 2
  local args=(run "$config" --local --set "run.output=$RESULTS" "$@")
  if [[ -f $RESULTS/$run_id/manifest.json ]]; then
    args+=(--resume "$run_id")  # same config, so the hash check passes; only the missing pairs run
  fi
  if [[ -n ${FARM_TIME_LIMIT:-} ]]; then
    local left=$((FARM_TIME_LIMIT - SECONDS))
    if ((left < 30)); then
      echo "$run_id: not started, FARM_TIME_LIMIT=$FARM_TIME_LIMIT s is spent; rerun this script to continue"
      return 124
    fi
    limit=(timeout --signal=TERM --kill-after=30 "$left")
  fi
  echo "=== $run_id"
  "${limit[@]}" "$PY" -m farm "${args[@]}" || status=$?
  echo "$run_id: farm run exit $status after $((SECONDS - begin)) s"
  if ((status != 0)); then
    echo "$run_id: incomplete; stored shards are kept in $RESULTS/$run_id; rerun this script to continue"
    return "$status"
  fi
  if [[ ${TABLES:-1} == 0 ]]; then
    echo "$run_id: tables skipped (TABLES=0): farm tables $run_id --output RESULTS renders them anywhere"
  elif [[ $RESULTS/$run_id/tables -nt $RESULTS/$run_id/manifest.json ]]; then
    echo "$run_id: tables are up to date in $RESULTS/$run_id/tables"
  else
    "$PY" -m farm tables "$run_id" --output "$RESULTS" --no-mlflow
  fi
}

mkdir -p "$RESULTS"
set +e
main "$@" 2>&1 | tee -a "$RESULTS/gpu-fashion-mnist.log"
status=${PIPESTATUS[0]}
set -e
if [[ -n ${OUT:-} ]]; then
  # One archive beside the folder, whatever happened: a machine lent for one call may give back
  # only shallow files of $OUT (the project's device tool drops deep folders such as the Parquet
  # partitions), and an interrupted run's stored shards are exactly what a rerun resumes from.
  tar czf "$OUT/results.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
  echo "archive: $OUT/results.tgz (unpack at prev-results/ to resume elsewhere: tar xzf results.tgz && mv results prev-results)"
fi
exit "$status"
