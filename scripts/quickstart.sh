#!/usr/bin/env bash
# Set up, then train and evaluate ANT on the embedded synthetic data (written to dataset/ on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python run_recbole_mm.py --model=ANT "$@"
