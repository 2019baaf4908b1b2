"""The pre-training recipe study as one table: a row per pre-training variant.

    python -m recbole_mm.bench.recipe ../recipe_runs     # writes recipe.md and recipe.csv there

Reads the folder that ``scripts/experiments/recipe_games_to_scientific.sh`` fills:
``pretrain_<variant>/snapshots/e<epochs>.pth`` (the variant's pre-training, whose metadata keeps the
loss per epoch) and ``cells_<variant>/<model>-<mode>[-seed<s>].json`` (its target runs, as
:mod:`recbole_mm.bench.transfer` keeps them). A variant may have cells and no pre-training of its own
(``titles``: other target features, the default pre-training). Each cell gives test Recall@10 /
NDCG@10 (the mean over its seeds) and epochs; the differences to the reference variant's same mode
are in standard errors of the difference of two runs (one seed each: the two Recall@10 standard
errors added in quadrature).
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import re
import statistics
from typing import Dict, List, Optional, Tuple

from recbole_mm.bench.pretrain_curve import loss_history
from recbole_mm.bench.transfer import MODE_TITLES, load_runs, recall_standard_error
from recbole_mm.config import ADAPTATION_MODES
from recbole_mm.fileio import write_csv_atomic, write_text_atomic


def variant_names(root: str, reference: str = "default") -> List[str]:
    """Variants with a pre-training or cells folder under ``root``; the reference first, the rest sorted."""
    names = {os.path.basename(p).split("_", 1)[1] for p in glob.glob(os.path.join(root, "pretrain_*"))
             + glob.glob(os.path.join(root, "cells_*")) if os.path.isdir(p)}
    return sorted(names, key=lambda name: (name != reference, name))


def loss_span(root: str, variant: str) -> Optional[Tuple[float, float, int]]:
    """(first epoch's loss, last epoch's loss, epochs) of the variant's longest snapshot; ``None`` if it has none."""
    snapshots = glob.glob(os.path.join(root, f"pretrain_{variant}", "snapshots", "e*.pth"))
    epochs = {int(m.group(1)): path for path in snapshots if (m := re.search(r"e(\d+)\.pth$", path))}
    if not epochs:
        return None
    history = loss_history(epochs[max(epochs)])
    return history[0]["total"], history[-1]["total"], len(history)


def cell_results(root: str, variant: str, model: str) -> Dict[str, List[dict]]:
    """mode -> the finished runs (one per seed) of ``model`` in ``cells_<variant>``."""
    cells: Dict[str, List[dict]] = {}
    for (run_model, _), runs in load_runs(os.path.join(root, f"cells_{variant}")).items():
        for mode, (result, _) in runs.items():
            if "_unreadable" in result:
                raise ValueError(result["_unreadable"])
            if run_model == model and "error" not in result and result.get("test_result"):
                cells.setdefault(mode, []).append(result)
    return cells


def _summary(runs: List[dict]) -> Dict[str, float]:
    """Mean Recall@10, NDCG@10, epochs and the standard error of the mean Recall@10 over ``runs``."""
    recalls = [r["test_result"]["recall@10"] for r in runs]
    errors = [recall_standard_error(r["test_result"]["recall@10"], r.get("test_rows")) or 0.0 for r in runs]
    return {"recall@10": statistics.mean(recalls),
            "ndcg@10": statistics.mean(r["test_result"]["ndcg@10"] for r in runs),
            "epochs": statistics.mean(r.get("epochs_trained") or 0 for r in runs),
            "se": math.sqrt(sum(e * e for e in errors)) / len(errors), "seeds": len(runs)}


def recipe_rows(root: str, model: str = "ANT", reference: str = "default") -> List[Dict]:
    """One row per variant: its loss span and, per mode, the summary and the difference to the reference."""
    rows = []
    summaries = {v: {mode: _summary(runs) for mode, runs in cell_results(root, v, model).items()}
                 for v in variant_names(root, reference)}
    for variant, cells in summaries.items():
        span = loss_span(root, variant)
        row = {"variant": variant, "loss_first": span[0] if span else None,
               "loss_last": span[1] if span else None, "pretrain_epochs": span[2] if span else None}
        for mode in ADAPTATION_MODES:
            cell, base = cells.get(mode), summaries.get(reference, {}).get(mode)
            for key in ("recall@10", "ndcg@10", "epochs", "seeds"):
                row[f"{mode}_{key}"] = cell[key] if cell else None
            row[f"{mode}_diff_se"] = ((cell["recall@10"] - base["recall@10"]) / math.hypot(cell["se"], base["se"])
                                      if cell and base and variant != reference and cell["se"] and base["se"]
                                      else None)
        rows.append(row)
    return rows


def _cell_text(row: Dict, mode: str) -> str:
    if row[f"{mode}_recall@10"] is None:
        return "–"
    text = f"{row[f'{mode}_recall@10']:.4f} / {row[f'{mode}_ndcg@10']:.4f} ({row[f'{mode}_epochs']:.0f})"
    if row[f"{mode}_diff_se"] is not None:
        text += f", {row[f'{mode}_diff_se']:+.1f} SE"
    return text


def markdown(rows: List[Dict], reference: str = "default") -> str:
    """The table: variant, pre-training loss, and per mode Recall@10 / NDCG@10 (epochs), ± SE to the reference."""
    lines = ["| variant | loss, first → last epoch | " + " | ".join(MODE_TITLES[m] for m in ADAPTATION_MODES) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in ADAPTATION_MODES) + " |"]
    for row in rows:
        loss = (f"{row['loss_first']:.3f} → {row['loss_last']:.3f} ({row['pretrain_epochs']})"
                if row["loss_first"] is not None else "–")
        lines.append(f"| {row['variant']} | {loss} | " + " | ".join(_cell_text(row, m) for m in ADAPTATION_MODES) + " |")
    lines += ["", f"Test Recall@10 / NDCG@10 (epochs), mean over seeds; \"SE\": the Recall@10 difference to the "
                  f"`{reference}` variant's same mode, in standard errors of that difference."]
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the recipe study's folder (the script's OUT)")
    parser.add_argument("--model", default="ANT")
    parser.add_argument("--reference", default="default", help="the variant the others are compared with")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        raise SystemExit(f"recipe: {args.root} is not a folder")
    rows = recipe_rows(args.root, args.model, args.reference)
    if not rows:
        raise SystemExit(f"recipe: {args.root} holds no pretrain_<variant> or cells_<variant> folder")
    text = markdown(rows, args.reference)
    write_text_atomic(os.path.join(args.root, "recipe.md"), text + "\n")
    write_csv_atomic(os.path.join(args.root, "recipe.csv"), rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
