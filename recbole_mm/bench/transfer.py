"""Transfer table (the ANT paper's Table III): pre-train on source domains, adapt to a target.

    python -m recbole_mm.bench.transfer --target=mm_target \\
        --sources=mm_src_a,mm_src_b,mm_src_conflict --models=ANT,UniSRec --out=results/transfer_synthetic

For every model: one multi-domain pre-training run on ``--sources`` (``--pretrain_epochs``),
then three runs on ``--target``: ground-built (from scratch), fine-tune and re-learning from
the pre-trained checkpoint. Cells are test Recall@10 and NDCG@10. Every other ``--key=value`` is
a config override for every run. Each run is a child process kept as ``<out>/<model>-<stage>.json``
and skipped when the command runs again (an interrupted target run resumes from its last state).
Writes ``<out>/table.md``, ``table.csv`` and ``config.yaml`` (the settings and the command).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

import yaml

from recbole_mm.bench.runs import cached_run, parse_overrides
from recbole_mm.fileio import write_csv_atomic, write_text_atomic
from recbole_mm.config import ADAPTATION_MODES

MODE_TITLES = {"ground_built": "ground-built", "fine_tune": "fine-tune", "re_learning": "re-learning"}
METRICS = ("recall@10", "ndcg@10")


def transfer_table(models: List[str], target: str, sources: List[str], overrides: dict, out: str,
                   pretrain_epochs: int, modes=ADAPTATION_MODES, pretrain_overrides: dict = None) -> List[Dict]:
    """Run (or reload) every pre-training and target run; one row per (model, mode).
    ``pretrain_overrides`` apply to the pre-training runs only (on top of ``overrides``)."""
    rows = []
    for model in models:
        pretrain = None
        if any(mode != "ground_built" for mode in modes):
            pretrain = cached_run(out, f"{model}-pretrain", model, ",".join(sources),
                                {**overrides, **(pretrain_overrides or {}), "stage": "pretrain",
                                 "epochs": pretrain_epochs})
            if "error" in pretrain:
                raise RuntimeError(f"{model} pre-training failed: {pretrain['error']}")
        for mode in modes:
            config = {**overrides, "adaptation": mode}
            if mode != "ground_built":
                config["pretrained_checkpoint"] = pretrain["checkpoint"]
            result = cached_run(out, f"{model}-{mode}", model, target, config)
            test = result.get("test_result", {})
            rows.append({"model": model, "mode": mode, **{m: test.get(m) for m in METRICS},
                         "epochs": result.get("epochs_trained"), "trainable_parameters": result.get("parameters"),
                         "error": result.get("error", "")})
    return rows


def write_table(rows: List[Dict], out: str, target: str, sources: List[str]) -> str:
    """``table.md`` (models x modes, cells Recall@10 / NDCG@10) and ``table.csv`` (one row per run)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    by_key = {(r["model"], r["mode"]): r for r in rows}

    def cell(r):
        if r is None or r["error"] or r["recall@10"] is None:
            return f"failed: {r['error']}" if r and r["error"] else "–"
        return f"{r['recall@10']:.4f} / {r['ndcg@10']:.4f}"

    lines = [f"Target {target}; pre-trained on {', '.join(sources)}. Cells: test Recall@10 / NDCG@10 "
             f"(full ranking, history items masked).", "",
             "| model | " + " | ".join(MODE_TITLES.get(m, m) for m in modes) + " |",
             "| --- |" + " ---: |" * len(modes)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(cell(by_key.get((model, m))) for m in modes) + " |")
    table = "\n".join(lines)
    write_text_atomic(os.path.join(out, "table.md"), table + "\n")
    write_csv_atomic(os.path.join(out, "table.csv"), rows)
    return table


def main(argv=None) -> List[Dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="mm_target")
    parser.add_argument("--sources", default="mm_src_a,mm_src_b,mm_src_conflict", help="comma-separated domains")
    parser.add_argument("--models", default="ANT,UniSRec", help="comma-separated transferable models")
    parser.add_argument("--modes", default=",".join(ADAPTATION_MODES), help="comma-separated adaptation modes")
    parser.add_argument("--pretrain_epochs", type=int, default=10)
    parser.add_argument("--pretrain_batch_size", type=int, default=None,
                        help="train_batch_size of the pre-training runs (default: the shared one)")
    parser.add_argument("--out", default="results/transfer_synthetic")
    args, extra = parser.parse_known_args(argv)
    overrides = parse_overrides(extra)
    overrides.setdefault("show_progress", False)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ADAPTATION_MODES]
    if unknown:
        raise ValueError(f"--modes: unknown adaptation mode(s) {unknown}; expected some of {list(ADAPTATION_MODES)}")
    os.makedirs(args.out, exist_ok=True)
    settings = {"command": "python -m recbole_mm.bench.transfer " + " ".join(argv), "target": args.target,
                "sources": sources, "models": models, "modes": modes, "pretrain_epochs": args.pretrain_epochs,
                "pretrain_batch_size": args.pretrain_batch_size, "overrides": overrides}
    pretrain_overrides = {"train_batch_size": args.pretrain_batch_size} if args.pretrain_batch_size else {}
    write_text_atomic(os.path.join(args.out, "config.yaml"), yaml.safe_dump(settings, sort_keys=False))
    rows = transfer_table(models, args.target, sources, overrides, args.out, args.pretrain_epochs, modes,
                          pretrain_overrides)
    print(write_table(rows, args.out, args.target, sources))
    return rows


if __name__ == "__main__":
    main()
