"""Every run of a folder in one table: ``python -m recbole_mm.bench.report log/``.

Reads each run's results JSON under the folder (the runner writes one beside every log:
``log/<Model>/<run>.json``; the benchmarks keep copies under ``results/``, counted once) and
writes one markdown and one CSV table: model, data set, the settings that differ between the
rows (what the runs were given: command line, config files, a benchmark's overrides), the test
metrics, the best validation score, epochs and seconds per epoch.

    python -m recbole_mm.bench.report log/ --out results/report    # report.md, report.csv
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Dict, List, Optional

from recbole_mm.fileio import write_csv_atomic, write_text_atomic

MISSING = "–"


def load_runs(folder: str) -> List[dict]:
    """The results of every training run under ``folder`` (JSON files with a ``test_result`` and the
    run's ``log_file``), each run once (a benchmark's copy and the run's own file name the same log), oldest log first."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder (give the folder that holds the runs' logs, e.g. log/)")
    runs: Dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True)):
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or not isinstance(result.get("test_result"), dict) or "log_file" not in result:
            continue  # not a run's results (a table's settings, a search's summary)
        result["_file"] = path
        runs.setdefault(result.get("log_file") or path, result)
    return sorted(runs.values(), key=lambda r: (os.path.basename(r.get("log_file") or r["_file"])))


def _format(value) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def differing_settings(runs: List[dict]) -> List[str]:
    """Setting keys whose value is not the same in every run (a key some runs lack counts)."""
    keys = sorted({key for run in runs for key in (run.get("settings") or {})})
    return [key for key in keys
            if len({json.dumps((run.get("settings") or {}).get(key, MISSING), sort_keys=True) for run in runs}) > 1]


def report_rows(runs: List[dict]) -> List[Dict[str, object]]:
    """One row per run: model, dataset, the differing settings, test metrics, best valid score,
    epochs trained, seconds per epoch, results file."""
    settings = differing_settings(runs)
    metrics = list(dict.fromkeys(m for run in runs for m in run["test_result"]))
    rows = []
    for run in runs:
        seconds = run.get("train_epoch_seconds") or []
        row: Dict[str, object] = {"model": run.get("model"), "dataset": run.get("dataset")}
        row.update({key: (run.get("settings") or {}).get(key) for key in settings})
        row.update({f"test {m}": run["test_result"].get(m) for m in metrics})
        row[f"valid {run.get('valid_metric') or 'score'}"] = run.get("best_valid_score")
        row["epochs trained"] = run.get("epochs_trained")
        row["s/epoch"] = round(sum(seconds) / len(seconds), 2) if seconds else None
        row["file"] = os.path.relpath(run["_file"])
        rows.append(row)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return [{c: row.get(c) for c in columns} for row in rows]


def markdown(rows: List[Dict[str, object]], title: str) -> str:
    if not rows:
        return f"{title}\n\nno run results found.\n"
    columns = list(rows[0])
    numeric = [c for c in columns if any(isinstance(r[c], (int, float)) and not isinstance(r[c], bool) for r in rows)]
    lines = [title, "", "| " + " | ".join(columns) + " |",
             "|" + "|".join(" ---: " if c in numeric else " --- " for c in columns) + "|"]
    for row in rows:
        cells = [_format(row[c]) if c != "s/epoch" or row[c] is None else f"{row[c]:.2f}" for c in columns]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def report(folder: str, out: Optional[str] = None) -> List[Dict[str, object]]:
    """Write ``<out>/report.md`` and ``report.csv`` (``out`` defaults to ``folder``); returns the rows."""
    runs = load_runs(folder)
    rows = report_rows(runs)
    out = out or folder
    text = markdown(rows, f"{len(rows)} runs under {folder}.")
    write_text_atomic(os.path.join(out, "report.md"), text)
    write_csv_atomic(os.path.join(out, "report.csv"),
                     [{k: _format(v) if isinstance(v, (list, dict)) else v for k, v in row.items()} for row in rows])
    print(text)
    print(f"written: {os.path.join(out, 'report.md')}, {os.path.join(out, 'report.csv')}")
    return rows


def main(argv=None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="folder searched (recursively) for the runs' results JSON, e.g. log/")
    parser.add_argument("--out", default=None, help="where report.md and report.csv go (default: the folder)")
    args = parser.parse_args(argv)
    return report(args.folder, args.out)


if __name__ == "__main__":
    main()
