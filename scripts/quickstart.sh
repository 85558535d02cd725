#!/usr/bin/env bash
# The main job (run through `make quickstart`): LoRA-train the bundled SmolLM2-135M-Instruct on the
# shipped robot dataset with 2 Ray Train workers running DeepSpeed, on the CPU or on GPUs, then score
# the adapter's generated code on the validation split.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
OUT=${OUT:-models/quickstart-$(date +%Y%m%d-%H%M%S)}

echo "== validate the dataset: every record's fields, duplicates, every output against the robot API"
"$BIN/robolora" data validate data/robot_dataset.json

echo "== train (examples/smollm2-135m.yaml) into $OUT"
"$BIN/robolora" train --config examples/smollm2-135m.yaml --output-dir "$OUT"

echo "== evaluate the adapter on its validation split ($OUT/val.jsonl), constrained to the robot API"
"$BIN/robolora" eval --lora-path "$OUT" \
    --predictions-out "$OUT/eval_predictions.jsonl" --json-out "$OUT/eval.json"
