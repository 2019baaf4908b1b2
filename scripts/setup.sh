#!/usr/bin/env bash
# Install recbole-mm and its dependencies. torch==2.13.0 goes first: a plain `torch` requirement with no
# torch installed would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test,encoders,tune]"
