#!/usr/bin/env bash
# Install raymill into ./.venv (or the active virtualenv) on a CPU machine.
# CPU torch is installed first and pinned, so that no dependency drags in a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q -U pip
python -m pip install -q "torch==${RAYMILL_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[dev]"
python -c "import curate, synth, train, schemas, torch; print('raymill installed; torch', torch.__version__)"
