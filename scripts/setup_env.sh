#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in ./.venv and install the package with its test extras.
# Re-installs only when pyproject.toml changed (the stamp holds its hash). Usage: bash scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PCL_VENV:-.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.pcl-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setting up $VENV (one-off; several minutes, most of it torch)" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned to a CUDA build that also runs on CPU-only machines; then the package and its test extras.
"$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
"$VENV/bin/python" -m pip install -q -e ".[test]"
"$VENV/bin/python" -c "import torch, torchvision, sacred, pymongo, submitit, pandas, seaborn, secantus, pcl"
echo "$want" > "$stamp"
