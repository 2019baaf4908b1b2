"""Seconds per training epoch and per evaluation, measured in one process for several settings.

    python -m recbole_mm.bench.speed --dataset=Scientific --data_path=../shared/datasets
    python -m recbole_mm.bench.speed --epochs=2 --hidden_size=256 --train_batch_size=2048

Every setting uses the same data, hidden size, inner size and batch size; ratios are taken
against the first setting (stock RecBole SASRec). Prints a markdown table and writes it (and a
JSON) to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from typing import Dict, List, Tuple

from recbole.utils import init_seed

from recbole_mm.config import MMConfig
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.runner import write_json_atomic
from recbole_mm.utils import get_model, get_trainer

BASIC_SETTINGS: List[Tuple[str, str, Dict]] = [
    ("SASRec (stock RecBole)", "SASRec", {}),
    ("ANT (prefix samples)", "ANT", {"train_whole_sequence": False}),
    ("ANT (whole sequences)", "ANT", {"train_whole_sequence": True}),
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_setting(model: str, dataset: str, config_dict: dict, epochs: int) -> dict:
    config = MMConfig(model, dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, _ = prepare_data(config, data)
    model_obj = get_model(model)(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, model_obj)
    train_seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train, epoch, show_progress=config["show_progress"])
        train_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    result = trainer.evaluate(valid, load_best_model=False)
    eval_seconds = time.perf_counter() - start
    return {
        "model": model,
        "train_epoch_seconds": sum(train_seconds) / len(train_seconds),
        "eval_seconds": eval_seconds,
        "train_batches": len(train),
        "valid_ndcg@10_after": float(result["ndcg@10"]),
        "parameters": sum(p.numel() for p in model_obj.parameters() if p.requires_grad),
    }


def markdown_table(rows: List[dict], hidden: int, batch: int, dataset: str) -> str:
    base = rows[0]
    lines = [
        f"Data set {dataset}, hidden size {hidden}, batch size {batch} (prefix samples / target positions).",
        "",
        "| setting | s / train epoch | speed-up vs first | s / evaluation | batches / epoch |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} | {row['train_epoch_seconds']:.1f} | "
            f"{base['train_epoch_seconds'] / row['train_epoch_seconds']:.1f}x | {row['eval_seconds']:.1f} | "
            f"{row['train_batches']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mm_synthetic")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--train_batch_size", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs timed per setting")
    parser.add_argument("--only", default=None, help="comma-separated setting numbers to run (0-based)")
    parser.add_argument("--out", default="results/speed")
    args = parser.parse_args(argv)

    shared = {
        "data_path": args.data_path,
        "hidden_size": args.hidden_size,
        "inner_size": args.hidden_size,
        "train_batch_size": args.train_batch_size,
        "show_progress": False,
        "state": "WARNING",
    }
    chosen = BASIC_SETTINGS
    if args.only:
        chosen = [BASIC_SETTINGS[int(i)] for i in args.only.split(",")]
    rows = []
    for label, model, overrides in chosen:
        row = time_setting(model, args.dataset, {**shared, **overrides}, args.epochs)
        row["setting"] = label
        rows.append(row)
        print(f"{label}: {row['train_epoch_seconds']:.1f} s/epoch, {row['eval_seconds']:.1f} s/eval", flush=True)
        gc.collect()
    table = markdown_table(rows, args.hidden_size, args.train_batch_size, args.dataset)
    table += f"\n\nPeak resident memory of the benchmark process: {peak_rss_mb():.0f} MB."
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"speed-{args.dataset}.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    write_json_atomic(os.path.join(args.out, f"speed-{args.dataset}.json"), {"args": vars(args), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
