"""Transfer table (the ANT paper's Table III): pre-train on source domains, adapt to a target.

    python -m recbole_mm.bench.transfer --target=mm_target \\
        --sources=mm_src_a,mm_src_b,mm_src_conflict --models=ANT,UniSRec --out=results/transfer_synthetic
    python -m recbole_mm.bench.transfer --target=Scientific --sources=Games --models=ANT \\
        --checkpoints=ANT:saved/ANT-pretrain-Games.pth --seeds=2020,2021,2022 \\
        --modes=ground_built,fine_tune,fine_tune:fine_tune_freeze_encoder=False,re_learning \\
        --data_path=../shared/datasets --out=results/transfer_scientific

For every model: one multi-domain pre-training run on ``--sources`` (``--pretrain_epochs``;
or an existing checkpoint from ``--checkpoints``), then one run on ``--target`` per adaptation
mode and seed. A mode may carry settings of its own (``fine_tune:fine_tune_freeze_encoder=False``).
Cells are test Recall@10 and NDCG@10: with one seed, Recall@10's standard error over the test
users in brackets; with several, mean ± standard deviation over the seeds. Every other
``--key=value`` is a config override for every run. Each run is a child process kept as
``<out>/<key>.json`` and skipped when the command runs again (an interrupted run resumes from its
last state). Writes ``<out>/table.md`` (with a second table: each mode's difference to ground-built,
paired by seed), ``table.csv``, ``table.png`` and ``config.yaml``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from recbole_mm.bench.runs import cached_run, parse_entry, parse_overrides, safe_name  # noqa: E402
from recbole_mm.config import ADAPTATION_CHOICES, ADAPTATION_MODES  # noqa: E402
from recbole_mm.fileio import write_csv_atomic, write_figure_atomic, write_text_atomic  # noqa: E402
from recbole_mm.utils import quiet_known_warnings

MODE_TITLES = {"ground_built": "ground-built", "fine_tune": "fine-tune", "re_learning": "re-learning", "auto": "auto"}
METRICS = ("recall@10", "ndcg@10")


def recall_standard_error(recall: float, n_users: int) -> Optional[float]:
    """One standard error of Recall@k with one target per user (a mean of 0/1 hits)."""
    if recall is None or not n_users:
        return None
    return math.sqrt(recall * (1 - recall) / n_users)


def run_key(model: str, entry: str, seed: Optional[int]) -> str:
    """The key (file name without ``.json``) of one target run in a transfer table's folder."""
    return f"{model}-{safe_name(entry)}" + (f"-seed{seed}" if seed is not None else "")


_PLAIN_RUN_KEY = re.compile(r"^(?P<model>.+?)-(?P<mode>" + "|".join(ADAPTATION_CHOICES)
                            + r")(?:-seed(?P<seed>\d+))?$")


def parse_run_key(key: str) -> Optional[Tuple[str, str, Optional[int]]]:
    """(model, mode, seed) of a :func:`run_key` whose entry is a plain mode (no settings of its own);
    ``None`` for any other key."""
    match = _PLAIN_RUN_KEY.match(key)
    if not match:
        return None
    return match["model"], match["mode"], int(match["seed"]) if match["seed"] else None


def load_runs(folder: str) -> Dict[Tuple[str, Optional[int]], Dict[str, Tuple[dict, str]]]:
    """(model, seed) -> {mode: (result JSON, its path)} for the plain-mode runs (and plain ``auto``
    runs) kept in a transfer table's folder; runs of modes with settings of their own are skipped.
    An unreadable file stands as ``{"_unreadable": reason}``, so that its model and seed are skipped."""
    groups: Dict[Tuple[str, Optional[int]], Dict[str, Tuple[dict, str]]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        parsed = parse_run_key(os.path.splitext(os.path.basename(path))[0])
        if parsed is None:
            continue
        model, mode, seed = parsed
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            result = {"_unreadable": f"{path}: not a readable JSON run result ({err})"}
        groups.setdefault((model, seed), {})[mode] = (result, path)
    return groups


def transfer_table(models: List[str], target: str, sources: List[str], overrides: dict, out: str,
                   pretrain_epochs: int, modes: Sequence[str] = ADAPTATION_MODES,
                   pretrain_overrides: dict = None, checkpoints: Dict[str, str] = None,
                   seeds: Sequence[Optional[int]] = (None,)) -> List[Dict]:
    """Run (or reload) every pre-training and target run; one row per (model, mode, seed).
    ``pretrain_overrides`` apply to the pre-training runs only (on top of ``overrides``);
    ``checkpoints`` maps a model to an existing transferable checkpoint (no pre-training run)."""
    rows = []
    for model in models:
        checkpoint = (checkpoints or {}).get(model)
        if checkpoint is None and any(parse_entry(mode)[0] != "ground_built" for mode in modes):
            pretrain = cached_run(out, f"{model}-pretrain", model, ",".join(sources),
                                  {**overrides, **(pretrain_overrides or {}), "stage": "pretrain",
                                   "epochs": pretrain_epochs})
            if "error" in pretrain:
                raise RuntimeError(f"{model} pre-training failed: {pretrain['error']}")
            checkpoint = pretrain["checkpoint"]
        for entry in modes:
            mode, own = parse_entry(entry)
            for seed in seeds:
                config = {**overrides, **own, "adaptation": mode}
                if mode != "ground_built":
                    config["pretrained_checkpoint"] = checkpoint
                key = run_key(model, entry, seed)
                if seed is not None:
                    config["seed"] = seed
                result = cached_run(out, key, model, target, config)
                test = result.get("test_result", {})
                rows.append({"model": model, "mode": entry, "seed": seed, **{m: test.get(m) for m in METRICS},
                             "recall@10_se": recall_standard_error(test.get("recall@10"), result.get("test_rows")),
                             "epochs": result.get("epochs_trained"),
                             "seconds": _run_seconds(result),
                             "chosen_mode": (result.get("adaptation") or {}).get("mode") if mode == "auto" else None,
                             "trainable_parameters": result.get("parameters"), "error": result.get("error", "")})
    return rows


def _run_seconds(result: dict) -> Optional[float]:
    """Training + evaluation seconds of a run (with adaptation auto: the other candidates' too)."""
    if "error" in result:
        return None
    auto = (result.get("adaptation") or {}).get("auto") or {}
    return (sum(result.get("train_epoch_seconds") or []) + sum(result.get("eval_seconds") or [])
            + auto.get("other_candidates_seconds", 0.0))


def summarise(rows: List[Dict]) -> Dict[tuple, Dict]:
    """(model, mode) -> mean and spread of every metric over its seeds."""
    groups: Dict[tuple, List[Dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["mode"]), []).append(row)
    summary = {}
    for key, group in groups.items():
        done = [r for r in group if not r["error"] and r["recall@10"] is not None]
        entry = {"n": len(done), "error": next((r["error"] for r in group if r["error"]), "")}
        for metric in METRICS + ("epochs", "seconds"):
            values = [float(r[metric]) for r in done if r[metric] is not None]
            entry[metric] = statistics.mean(values) if values else None
            entry[metric + "_std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["recall@10_se"] = done[0]["recall@10_se"] if len(done) == 1 else None
        entry["chosen"] = sorted({r["chosen_mode"] for r in done if r.get("chosen_mode")})
        summary[key] = entry
    return summary


def paired_differences(rows: List[Dict], baseline: str = "ground_built") -> Dict[tuple, Dict]:
    """(model, mode) -> every metric's difference to ``baseline`` of the same model, paired by seed:
    mean and standard error of the mean over the seeds both finished (``n``); the standard error is
    ``None`` with one pair. Modes without a finished pair are left out."""
    done = {(r["model"], r["mode"], r["seed"]): r for r in rows if not r["error"] and r["recall@10"] is not None}
    pairs: Dict[tuple, List[Tuple[Dict, Dict]]] = {}
    for (model, mode, seed), row in done.items():
        base = done.get((model, baseline, seed))
        if mode != baseline and base is not None:
            pairs.setdefault((model, mode), []).append((row, base))
    differences = {}
    for key, group in pairs.items():
        entry = {"n": len(group)}
        for metric in METRICS:
            values = [row[metric] - base[metric] for row, base in group]
            entry[metric] = statistics.mean(values)
            entry[metric + "_sem"] = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
        differences[key] = entry
    return differences


def _difference_lines(rows: List[Dict], models: List[str], modes: List[str]) -> List[str]:
    """Markdown table of :func:`paired_differences` against ground-built (empty without a pair)."""
    differences = paired_differences(rows)
    others = [m for m in modes if any((model, m) in differences for model in models)]
    if not others:
        return []

    def cell(d):
        if d is None:
            return "–"
        return " / ".join(f"{d[m]:+.4f}" + (f" ± {d[m + '_sem']:.4f}" if d[m + "_sem"] is not None else "")
                          for m in METRICS) + f" ({d['n']} seed{'s' if d['n'] > 1 else ''})"

    lines = ["", "Difference to ground-built, paired by seed: Recall@10 / NDCG@10, mean ± standard error of "
             "the mean over the seeds.", "",
             "| model | " + " | ".join(_mode_title(m) for m in others) + " |", "| --- |" + " ---: |" * len(others)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(cell(differences.get((model, m))) for m in others) + " |")
    return lines


def _mode_title(entry: str) -> str:
    mode, own = parse_entry(entry)
    extra = ", ".join(f"{k}={v}" for k, v in own.items())
    return MODE_TITLES.get(mode, mode) + (f" ({extra})" if extra else "")


def write_table(rows: List[Dict], out: str, target: str, sources: List[str]) -> str:
    """``table.md`` (models x modes), ``table.csv`` (one row per run) and ``table.png``."""
    summary = summarise(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))

    def cell(s):
        if s is None or s["n"] == 0:
            return f"failed: {s['error']}" if s and s["error"] else "–"
        if s["n"] > 1:
            chosen = f", chose {'/'.join(MODE_TITLES.get(m, m) for m in s['chosen'])}" if s["chosen"] else ""
            return (f"{s['recall@10']:.4f} ± {s['recall@10_std']:.4f} / {s['ndcg@10']:.4f} ± {s['ndcg@10_std']:.4f}"
                    f" ({s['epochs']:.0f} ep., {s['n']} seeds{chosen})")
        se = f" (SE {s['recall@10_se']:.4f})" if s["recall@10_se"] is not None else ""
        chosen = f", chose {'/'.join(MODE_TITLES.get(m, m) for m in s['chosen'])}" if s["chosen"] else ""
        return f"{s['recall@10']:.4f}{se} / {s['ndcg@10']:.4f} ({s['epochs']:.0f} ep.{chosen})"

    lines = [f"Target {target}; pre-trained on {', '.join(sources)}. Cells: test Recall@10 / NDCG@10 "
             f"(full ranking, history items masked), epochs trained.", "",
             "| model | " + " | ".join(_mode_title(m) for m in modes) + " |",
             "| --- |" + " ---: |" * len(modes)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(cell(summary.get((model, m))) for m in modes) + " |")
    table = "\n".join(lines + _difference_lines(rows, models, modes))
    write_text_atomic(os.path.join(out, "table.md"), table + "\n")
    write_csv_atomic(os.path.join(out, "table.csv"), rows)
    _plot(summary, models, modes, os.path.join(out, "table.png"), target)
    return table


def _plot(summary: Dict[tuple, Dict], models: List[str], modes: List[str], path: str, target: str) -> None:
    """Recall@10 per model and mode, error bars: std over seeds, else one standard error."""
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(models) * len(modes) / 2, 3.2))
    width = 0.8 / max(1, len(modes))
    for j, mode in enumerate(modes):
        values, errors = [], []
        for model in models:
            s = summary.get((model, mode)) or {}
            values.append(s.get("recall@10") or 0.0)
            errors.append(s.get("recall@10_std") or s.get("recall@10_se") or 0.0)
        ax.bar([i + j * width for i in range(len(models))], values, width, yerr=errors, capsize=3,
               label=_mode_title(mode))
    ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(models))], models)
    ax.set_ylabel("test Recall@10")
    ax.set_title(f"transfer to {target}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure_atomic(fig, path)
    plt.close(fig)


def main(argv=None) -> List[Dict]:
    quiet_known_warnings()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="mm_target")
    parser.add_argument("--sources", default="mm_src_a,mm_src_b,mm_src_conflict", help="comma-separated domains")
    parser.add_argument("--models", default="ANT,UniSRec", help="comma-separated transferable models")
    parser.add_argument("--modes", default=",".join(ADAPTATION_MODES),
                        help="comma-separated adaptation modes, each optionally with settings (fine_tune:key=value)")
    parser.add_argument("--checkpoints", default=None,
                        help="Model:path,... existing transferable checkpoints (no pre-training run for those models)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds: every cell is run once per seed")
    parser.add_argument("--pretrain_epochs", type=int, default=10)
    parser.add_argument("--pretrain_batch_size", type=int, default=None,
                        help="train_batch_size of the pre-training runs (default: the shared one)")
    parser.add_argument("--out", default="results/transfer_synthetic")
    args, extra = parser.parse_known_args(argv)
    overrides = parse_overrides(extra)  # show_progress: RecBole's bars in each run when on a terminal
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if parse_entry(m)[0] not in ADAPTATION_CHOICES]
    if unknown:
        raise ValueError(f"--modes: unknown adaptation mode(s) {unknown}; expected some of {list(ADAPTATION_CHOICES)}")
    checkpoints = dict(item.split(":", 1) for item in args.checkpoints.split(",")) if args.checkpoints else {}
    for model, path in checkpoints.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--checkpoints: {model}'s checkpoint {path} not found")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    os.makedirs(args.out, exist_ok=True)
    settings = {"command": "python -m recbole_mm.bench.transfer " + " ".join(argv), "target": args.target,
                "sources": sources, "models": models, "modes": modes, "pretrain_epochs": args.pretrain_epochs,
                "pretrain_batch_size": args.pretrain_batch_size, "checkpoints": checkpoints, "seeds": seeds,
                "overrides": overrides}
    pretrain_overrides = {"train_batch_size": args.pretrain_batch_size} if args.pretrain_batch_size else {}
    write_text_atomic(os.path.join(args.out, "config.yaml"), yaml.safe_dump(settings, sort_keys=False))
    rows = transfer_table(models, args.target, sources, overrides, args.out, args.pretrain_epochs, modes,
                          pretrain_overrides, checkpoints, seeds)
    print(write_table(rows, args.out, args.target, sources))
    return rows


if __name__ == "__main__":
    main()
