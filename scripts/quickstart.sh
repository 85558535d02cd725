#!/usr/bin/env bash
# The main job on the bundled model and the shipped dataset (run through `make quickstart`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
mkdir -p outputs

echo "== 1. generate a dataset (the shipped one is this command with --num-examples 4000 --seed 0)"
"$BIN/robolora" data generate --num-examples 4000 --seed 0 --output outputs/robot_dataset.json --force
cmp -s outputs/robot_dataset.json data/robot_dataset.json && echo "   identical to data/robot_dataset.json"

echo "== 2. validate it: every record's fields, duplicates, and every output against the robot API"
"$BIN/robolora" data validate data/robot_dataset.json

echo "== 3. prepare the bundled model (converted once from GGUF into the cache)"
"$BIN/robolora" model prepare smollm2-135m

echo "== 4. dataset statistics with the model's tokenizer and chat template"
"$BIN/robolora" data stats data/robot_dataset.json --model-name smollm2-135m --max-length 256

echo "== 5. the resolved training config for the bundled model"
"$BIN/robolora" config --config examples/smollm2-135m.yaml
