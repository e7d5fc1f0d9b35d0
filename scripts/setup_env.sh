#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in ./.venv and install the package with its test extras.
# Re-installs only when pyproject.toml or environment.yml changed (the stamp holds their hash).
# Usage: bash scripts/setup_env.sh            (set up)
#        bash scripts/setup_env.sh --print-pins (the torch/torchvision pins it installs, read from environment.yml)
set -euo pipefail
cd "$(dirname "$0")/.."
# The tested torch/torchvision versions are stated once, in environment.yml's pip section; this script reads them.
PINS="$(sed -n 's/^ *- *\(torch\(vision\)\{0,1\}==[0-9][0-9A-Za-z.+]*\).*$/\1/p' environment.yml | tr '\n' ' ')"
if [[ "$(wc -w <<< "$PINS")" -ne 2 ]]; then
  echo "environment.yml must pin torch==X and torchvision==Y in its pip section (found: '$PINS')" >&2
  exit 2
fi
if [[ "${1:-}" == "--print-pins" ]]; then
  echo "$PINS"
  exit 0
fi
VENV="${PCL_VENV:-.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.pcl-installed"
want="$(cat pyproject.toml environment.yml | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setting up $VENV (one-off; several minutes, most of it torch)" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, the pinned CUDA build that also runs on CPU-only machines; then the package and its test extras.
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $PINS
"$VENV/bin/python" -m pip install -q -e ".[test]"
"$VENV/bin/python" -c "import torch, torchvision, sacred, pymongo, submitit, pandas, pypdfium2, secantus, pcl"
echo "$want" > "$stamp"
