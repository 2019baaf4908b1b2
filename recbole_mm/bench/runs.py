"""Run a configuration in a child process, and keep its result: the one helper every benchmark
(compare, transfer, adaptation, speed) uses.

- :func:`run_in_child`: call a function in a fresh ``spawn`` process (its own memory, peak RSS
  and torch state) and return what it returned, or ``{"error": ...}``;
- :func:`cached_run`: one runner run kept as ``<out>/<key>.json``, skipped when that file exists,
  resumed from its last saved state (``<out>/saved/<key>/*-last.pth``) when it was interrupted;
- :func:`parse_overrides`: ``--key=value`` command-line pairs -> a typed config dict.
"""

from __future__ import annotations

import ast
import glob
import json
import multiprocessing
import os
from typing import Callable, Dict, List, Optional

from recbole_mm.config import ADAPTATION_MODES
from recbole_mm.fileio import write_json_atomic
from recbole_mm.runner import run_single
from recbole_mm.utils import quiet_known_warnings


def _typed(value: str):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null", "~"):
            return None
        return value


def parse_overrides(extra: List[str]) -> Dict[str, object]:
    """``--key=value`` pairs -> config dict (numbers, lists, booleans typed)."""
    pairs = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"unrecognised argument {arg!r}: config overrides are written --key=value")
        key, value = arg[2:].split("=", 1)
        pairs[key] = _typed(value)
    return pairs


def parse_entry(entry: str):
    """``"PMMRec:similarity=cosine:learning_rate=0.001"`` -> ("PMMRec", {its own overrides}): a
    model (or an adaptation mode) with settings of its own, one row of a table."""
    name, *pairs = entry.split(":")
    return name, parse_overrides([f"--{pair}" for pair in pairs])


def safe_name(entry: str) -> str:
    """A file-name-safe key for a table entry."""
    return entry.replace("+", "p").replace("/", "_").replace(":", "__").replace("=", "-")


def _child(function: Callable, args: tuple, queue) -> None:
    quiet_known_warnings()  # a benchmark is a command line: RecBole's known warnings are hidden
    try:
        queue.put(("ok", function(*args)))
    except Exception as err:  # reported to the caller; the other runs of a table still run
        queue.put(("error", f"{type(err).__name__}: {err}"))


def run_in_child(function: Callable, *args) -> dict:
    """``function(*args)`` in a fresh spawned process; its result, or ``{"error": message}``."""
    context = multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    process = context.Process(target=_child, args=(function, args, queue))
    process.start()
    process.join()
    if queue.empty():
        return {"error": f"process ended with exit code {process.exitcode}"}
    status, payload = queue.get()
    return payload if status == "ok" else {"error": payload}


def run_resume_state(checkpoint_dir: str) -> Optional[str]:
    """The newest resume state of a run in ``checkpoint_dir`` (``*-last.pth``), or None. An
    ``adaptation: auto`` run's candidates write theirs (``<run>-<mode>-last.pth``) beside its race
    state (``<run>-last.pth``): the race state is the one to resume from."""
    candidates = tuple(f"-{mode}-last.pth" for mode in ADAPTATION_MODES)
    states = [path for path in glob.glob(os.path.join(checkpoint_dir, "*-last.pth")) if not path.endswith(candidates)]
    return max(states, key=os.path.getmtime) if states else None


def cached_run(out: str, key: str, model: str, dataset: str, config_dict: dict,
               config_files: Optional[List[str]] = None) -> dict:
    """One runner run in a child process, kept as ``<out>/<key>.json`` (see the module docstring).
    A failed run is returned with its ``error`` and not kept, so the next call runs it again."""
    done_file = os.path.join(out, f"{key}.json")
    if os.path.isfile(done_file):
        with open(done_file, encoding="utf-8") as f:
            print(f"{key}: done before, skipped", flush=True)
            return json.load(f)
    checkpoint_dir = os.path.join(out, "saved", key)
    config_dict = {**config_dict, "checkpoint_dir": checkpoint_dir}
    resume_from = run_resume_state(checkpoint_dir)
    if resume_from:
        config_dict["resume_from"] = resume_from
        print(f"{key}: resuming from {resume_from}", flush=True)
    print(f"{key}: running {model} on {dataset}", flush=True)
    result = run_in_child(run_single, model, dataset, config_files, config_dict)
    result["model"] = model
    if "error" not in result:
        write_json_atomic(done_file, result)
    print(f"{key}: {result.get('test_result') or result.get('error') or result.get('checkpoint')}", flush=True)
    return result
