#!/usr/bin/env bash
# The registry cycle on UCSD Ped2: train a version, measure it, make it the champion only if
# it is at least as good as the current one, then score with whatever the champion is.
#   bash examples/registry_cycle.sh [DATA]
# DATA: a labelled folder written by `mnad ingest` (default: mnad-runs/ped2/data, which
# `mnad run examples/ped2.yaml` writes). The store is ./mnad-runs/mlflow.db unless
# MLFLOW_TRACKING_URI names a server; `mnad ui` shows each version's tags there.
set -euo pipefail
DATA=${1:-mnad-runs/ped2/data}
MODEL=models:/mnad-ped2@latest   # the version train registers; evaluate and promote pin it

# 1. a new version of mnad-ped2 (no --alias: the champion moves only through promote)
mnad train "$DATA" --preset small

# 2. its AUCs on the test split, as tags mnad.eval.ped2.test.* on the version
mnad evaluate "$MODEL" "$DATA" --split test

# 3. champion moves to it only if its micro AUC is at least the champion's, both measured
#    on ped2 test (the champion is evaluated first if it never was); exit status 1 if not
status=0
mnad promote "$MODEL" --alias champion --on "$DATA" --split test --metric micro_auc || status=$?
case $status in
    0) echo "the new version is the champion" ;;
    1) echo "the champion stays" ;;
    *) exit "$status" ;;   # 2: an error (one line above), nothing decided
esac

# 4. production scoring follows the alias
mnad score "$DATA" --model models:/mnad-ped2@champion --out mnad-runs/ped2/champion-scores
