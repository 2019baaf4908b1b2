#!/usr/bin/env bash
# Wheel check (CI, after the test suite): a plain `pip install .` must ship the plugin's YAML
# defaults and run. Builds a wheel of this checkout, proves every properties/**/*.yaml is in it
# under recbole_mm/properties/, installs it into a fresh virtual environment (torch==2.13.0 first:
# a CPU build; a bare `torch` requirement would pull a multi-GB CUDA build), then runs the default
# ANT command as `python -m recbole_mm` from a folder outside the checkout and checks that the
# plugin's defaults were applied. Exits non-zero with a message on any failure; removes its
# temporary folder in every case.
#
#   bash scripts/wheel_check.sh                        # EPOCHS=2 by default
#   WHEEL_CHECK_EPOCHS=1 PYTHON=python3.11 bash scripts/wheel_check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python}"
EPOCHS="${WHEEL_CHECK_EPOCHS:-2}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/recbole_mm_wheel_check.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
unset PYTHONPATH  # the installed wheel alone must be imported
fail() { echo "wheel check FAILED: $*" >&2; exit 1; }
step() { echo "wheel check [$(date +%H:%M:%S)]: $*"; }

step "copying the checkout's files (tracked and untracked, not ignored: no stale build/ or egg-info)"
mkdir -p "$TMP/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$TMP/src" || fail "could not copy $ROOT (a git checkout?)"

step "building the wheel"
"$PYTHON" -m pip wheel --no-deps -q -w "$TMP/dist" "$TMP/src" || fail "pip wheel could not build $ROOT"
WHEEL="$(ls "$TMP"/dist/recbole_mm-*.whl 2>/dev/null | head -n 1)"
[ -n "$WHEEL" ] || fail "no recbole_mm wheel in $TMP/dist"

step "checking that $(basename "$WHEEL") holds every properties/**/*.yaml"
"$PYTHON" - "$WHEEL" "$ROOT/properties" <<'EOF' || fail "YAML missing from the wheel (see above)"
import os, sys, zipfile
wheel, properties = sys.argv[1], sys.argv[2]
names = set(zipfile.ZipFile(wheel).namelist())
expected = sorted(
    "recbole_mm/properties/" + os.path.relpath(os.path.join(d, f), properties).replace(os.sep, "/")
    for d, _, files in os.walk(properties) for f in files if f.endswith(".yaml")
)
missing = [name for name in expected if name not in names]
if not expected or missing:
    sys.exit(f"{len(missing)} of {len(expected)} YAML files missing from {wheel}: {missing}")
print(f"{len(expected)} YAML files in the wheel, e.g. {expected[0]}")
EOF

step "fresh virtual environment: torch==2.13.0 first, then the wheel and its dependencies"
"$PYTHON" -m venv "$TMP/venv" || fail "python -m venv failed"
VPY="$TMP/venv/bin/python"
"$VPY" -m pip install -q torch==2.13.0 || fail "pip install torch==2.13.0 failed"
"$VPY" -m pip install -q "$WHEEL" || fail "pip install of the wheel failed"

mkdir -p "$TMP/run"
cd "$TMP/run"  # outside the checkout: nothing of it can be imported or read
step "the installed package reads its own YAML"
"$VPY" - "$TMP/venv" <<'EOF' || fail "the installed package does not find its own YAML (see above)"
import os, sys
import recbole_mm
from recbole_mm.resources import properties_dir
venv = os.path.realpath(sys.argv[1])
for what, path in (("recbole_mm", recbole_mm.__file__), ("properties_dir()", properties_dir())):
    if not os.path.realpath(path).startswith(venv + os.sep):
        sys.exit(f"{what} is {path}, not inside the virtual environment {venv}")
print(f"properties_dir() = {properties_dir()}")
EOF
"$TMP/venv/bin/recbole-mm" --help > /dev/null || fail "the recbole-mm console script does not start"

step "python -m recbole_mm --model=ANT --epochs=$EPOCHS (from $TMP/run)"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$VPY" -m recbole_mm --model=ANT --epochs="$EPOCHS" 2>&1 | tee "$TMP/run.out" \
    || fail "python -m recbole_mm --model=ANT exited non-zero"
grep -q '^test: ' "$TMP/run.out" || fail "python -m recbole_mm printed no test result"
RESULTS="$(sed -n 's/^results written to //p' "$TMP/run.out" | tail -n 1)"
[ -n "$RESULTS" ] || fail "python -m recbole_mm named no results file"
"$VPY" - "$RESULTS" <<'EOF' || fail "the plugin's YAML defaults were not applied (see above)"
import json, re, sys
with open(sys.argv[1]) as f:
    result = json.load(f)
with open(result["log_file"]) as f:
    log = re.sub(r"\x1b\[[0-9;]*m", "", f.read())  # colours, where the log keeps them
# properties/overall.yaml sets topk [10, 50] (RecBole's own default: [10]) and mask_history_items
problems = [f"test_result lacks {key} (topk from overall.yaml)" for key in ("ndcg@10", "ndcg@50")
            if key not in result["test_result"]]
if not re.search(r"\bmask_history_items\s*=\s*True\b", log):
    problems.append(f"the log {result['log_file']} does not list mask_history_items = True")
if problems:
    sys.exit("; ".join(problems))
print(f"plugin defaults applied: test {result['test_result']}")
EOF
step "passed"
