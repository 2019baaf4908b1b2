"""Adaptation table: a backbone trained on a source country, five ways to serve a target country.

    python -m recbole_mm.bench.adaptation --backbones=MMoE,PLE --source=AE_SRC --target=AE_TGT

For every backbone: train on the source; then on the target test split report per-task AUC of
(1) the source model applied as is, (2) target-only training on the stratified sample,
(3) fine-tuning the source model on the sample, (4) TAA, (5) DAA. Finished runs are kept in
``<out>/<backbone>-<setting>.json`` and skipped when the command is run again. Writes
``<out>/adaptation.md`` and ``adaptation.csv``.
"""

from __future__ import annotations

import argparse
import os
from typing import Dict, List

from recbole_mm.bench.runs import cached_run
from recbole_mm.fileio import write_csv_atomic, write_text_atomic
from recbole_mm.utils import quiet_known_warnings

SETTINGS = ("source model as is", "target only (sample)", "fine-tune (sample)", "TAA", "DAA")


def adaptation_table(backbones: List[str], source: str, target: str, shared: dict, out: str,
                     sample_ratio: float, adapt_epochs: int) -> List[Dict]:
    rows = []
    for backbone in backbones:
        base = dict(shared)
        src = cached_run(out, f"{backbone}-source-training", backbone, source, base)
        ckpt = src["checkpoint"]
        runs = {
            SETTINGS[0]: (backbone, {**base, "init_checkpoint": ckpt, "epochs": 0}),
            SETTINGS[1]: (backbone, {**base, "train_sample_ratio": sample_ratio}),
            SETTINGS[2]: (backbone, {**base, "train_sample_ratio": sample_ratio, "init_checkpoint": ckpt}),
            SETTINGS[3]: ("TAA", {**base, "backbone": backbone, "source_checkpoint": ckpt, "source_dataset": source,
                                  "train_sample_ratio": sample_ratio, "epochs": adapt_epochs}),
            SETTINGS[4]: ("DAA", {**base, "backbone": backbone, "source_checkpoint": ckpt, "source_dataset": source,
                                  "train_sample_ratio": sample_ratio, "epochs": adapt_epochs}),
        }
        for i, (setting, (model, config)) in enumerate(runs.items()):
            result = cached_run(out, f"{backbone}-{i}", model, target, config)
            test = result["test_result"]
            rows.append({"backbone": backbone, "setting": setting, **{k: test[k] for k in
                         ("ctr_auc", "ctcvr_auc", "ctr_logloss", "ctcvr_logloss")},
                         "epochs": result["epochs_trained"]})
            print(f"{backbone} | {setting}: {test}", flush=True)
    return rows


def write_table(rows: List[Dict], out: str, source: str, target: str, sample_ratio: float) -> str:
    lines = [f"Source {source}, target {target}; target sample {sample_ratio:.0%} of the target training rows "
             f"(stratified); target test split.", "",
             "| backbone | setting | CTR AUC | CTCVR AUC | CTR LogLoss | CTCVR LogLoss | epochs |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['setting']} | {r['ctr_auc']:.4f} | {r['ctcvr_auc']:.4f} | "
                     f"{r['ctr_logloss']:.4f} | {r['ctcvr_logloss']:.4f} | {r['epochs']} |")
    table = "\n".join(lines)
    write_text_atomic(os.path.join(out, "adaptation.md"), table + "\n")
    write_csv_atomic(os.path.join(out, "adaptation.csv"), rows)
    return table


def main(argv=None) -> List[Dict]:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="MMoE,PLE")
    parser.add_argument("--source", default="AE_SRC")
    parser.add_argument("--target", default="AE_TGT")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--sample_ratio", type=float, default=0.01)
    parser.add_argument("--adapt_epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30, help="upper bound for the other trainings")
    parser.add_argument("--out", default="results/adaptation")
    args = parser.parse_args(argv)
    shared = {"data_path": args.data_path, "epochs": args.epochs, "state": "WARNING"}
    os.makedirs(args.out, exist_ok=True)
    rows = adaptation_table(args.backbones.split(","), args.source, args.target, shared, args.out,
                            args.sample_ratio, args.adapt_epochs)
    print(write_table(rows, args.out, args.source, args.target, args.sample_ratio))
    return rows


if __name__ == "__main__":
    main()
