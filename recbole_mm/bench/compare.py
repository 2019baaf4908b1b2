"""Run a list of models on one data set with shared settings and tabulate them.

    python -m recbole_mm.bench.compare --models=SASRec,ANT,ANT_e,NOVA,SASRec++ \
        --dataset=Scientific --data_path=../shared/datasets --hidden_size=256 --paper=ant

Every other ``--key=value`` is a config override applied to every model (hidden size, epochs,
early stopping, history masking, seed, ...). A model entry may carry settings of its own, as a
row of its own: ``--models=PMMRec,PMMRec:similarity=cosine:learning_rate=0.001``. Each model runs in its own process through the
runner, with checkpoints under ``<out>/saved/<model>/``. Re-running the same command skips the
models already done (their ``<out>/<model>.json``) and resumes an interrupted model from its
last saved state. Writes ``<out>/comparison.md``, ``comparison.csv`` and ``comparison.png``.
"""

from __future__ import annotations

import argparse
import csv
import os
from typing import List, Optional

from recbole_mm.bench.runs import cached_run, parse_entry, parse_overrides, safe_name
from recbole_mm.fileio import atomic_output, write_figure_atomic, write_json_atomic
from recbole_mm.utils import quiet_known_warnings

METRICS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50")

# Published Recall@10 on the same split (ANT paper, Table II), for the --paper column
PAPER_FIGURES = {
    "ant": {"NPE": 0.0772, "SASRec": 0.1060, "BERT4Rec": 0.0500, "FDSA": 0.0907, "S3Rec": 0.0500,
            "NOVA": 0.0962, "SASRec++": 0.1260, "UniSRec": 0.1071, "ANT": 0.1334, "ANT_e": 0.1347},
}


def compare(models: List[str], dataset: str, overrides: dict, out: str, config_files=None,
            paper: Optional[str] = None) -> List[dict]:
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, "settings.json"),
                      {"models": models, "dataset": dataset, "overrides": overrides, "config_files": config_files})
    rows = []
    for entry in models:
        model, own = parse_entry(entry)
        row = cached_run(out, safe_name(entry), model, dataset, {**overrides, **own}, config_files)
        row["model"] = entry
        rows.append(row)
    write_outputs(rows, out, dataset, paper)
    return rows


def _row_values(row: dict, paper: Optional[str]) -> dict:
    test = row.get("test_result", {})
    seconds = row.get("train_epoch_seconds") or []
    values = {"model": row["model"]}
    values.update({m: test.get(m) for m in METRICS})
    values["s_per_epoch"] = sum(seconds) / len(seconds) if seconds else None
    values["epochs"] = row.get("epochs_trained")
    values["parameters"] = row.get("parameters")
    if paper:
        model, _ = parse_entry(row["model"])  # a row with settings of its own: its model's figure
        values["paper_recall@10"] = PAPER_FIGURES[paper].get(model)
    values["error"] = row.get("error", "")
    return values


def write_outputs(rows: List[dict], out: str, dataset: str, paper: Optional[str]) -> None:
    table = [_row_values(r, paper) for r in rows]
    columns = list(table[0]) if table else []
    with atomic_output(os.path.join(out, "comparison.csv")) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(table)

    def fmt(value, digits=4):
        if value is None or value == "":
            return "–"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    header = ["model", "Recall@10", "Recall@50", "NDCG@10", "NDCG@50", "s / epoch", "epochs", "parameters"]
    if paper:
        header.append("paper Recall@10")
    lines = [f"Data set {dataset}.", "", "| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (len(header) - 1)]
    for v in table:
        cells = [v["model"] + (f" (failed: {v['error']})" if v["error"] else "")]
        cells += [fmt(v[m]) for m in METRICS] + [fmt(v["s_per_epoch"], 1), fmt(v["epochs"]), fmt(v["parameters"])]
        if paper:
            cells.append(fmt(v["paper_recall@10"]))
        lines.append("| " + " | ".join(cells) + " |")
    with atomic_output(os.path.join(out, "comparison.md")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_bars(table, os.path.join(out, "comparison.png"), dataset)


def plot_bars(table: List[dict], path: str, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [v for v in table if v["recall@10"] is not None]
    if not done:
        return
    x = np.arange(len(done))
    width = 0.2
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(done)), 4))
    for i, metric in enumerate(METRICS):
        ax.bar(x + (i - 1.5) * width, [v[metric] for v in done], width, label=metric)
    ax.set_xticks(x)
    ax.set_xticklabels([v["model"] for v in done], rotation=20)
    ax.set_ylabel("test score")
    ax.set_title(f"{dataset}: full ranking, history masked")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    write_figure_atomic(fig, path)
    plt.close(fig)


def main(argv=None) -> List[dict]:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--dataset", default="mm_synthetic")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every model")
    parser.add_argument("--out", default=None, help="output folder (default: results/compare/<dataset>)")
    parser.add_argument("--paper", default=None, choices=sorted(PAPER_FIGURES), help="add published figures")
    args, extra = parser.parse_known_args(argv)
    overrides = parse_overrides(extra)  # show_progress: RecBole's bars in each run when on a terminal
    out = args.out or os.path.join("results", "compare", args.dataset)
    files = args.config_files.split() if args.config_files else None
    return compare([m.strip() for m in args.models.split(",") if m.strip()], args.dataset, overrides, out,
                   files, args.paper)


if __name__ == "__main__":
    main()
