#!/usr/bin/env bash
# Set up, then run the test suite (tests needing ../shared/datasets skip with a reason when it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest -q -rs tests
