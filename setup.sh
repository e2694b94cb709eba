#!/usr/bin/env bash
# Sets up gankit on a fresh machine: a virtual environment in .venv with gankit
# (editable) and its test tools. Safe to run again.
#
# PyTorch: a CPU-only machine gets a CPU build, never the multi-GB CUDA build.
#   - torch already in .venv: kept as it is.
#   - an NVIDIA GPU (nvidia-smi lists one): the package index's default build, which is CUDA.
#   - otherwise: torch==$GANKIT_TORCH_VERSION (default 2.13.0), from $GANKIT_TORCH_INDEX when
#     set (point it at PyTorch's CPU wheel index), else from pip's configured sources.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: gankit needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }

if .venv/bin/python -c 'import torch' 2>/dev/null; then
  echo "setup: keeping the installed torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing a CUDA build of torch"
  pip install "torch>=2.1"
else
  version=${GANKIT_TORCH_VERSION:-2.13.0}
  echo "setup: no GPU, installing the CPU build of torch==$version"
  if [ -n "${GANKIT_TORCH_INDEX:-}" ]; then
    pip install "torch==$version" --index-url "$GANKIT_TORCH_INDEX"
  else
    pip install "torch==$version"
  fi
fi
pip install -e '.[test]'
.venv/bin/python -c 'import torch, gankit; print(f"setup: gankit {gankit.__version__} with torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")'
