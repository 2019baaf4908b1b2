"""Seconds per training epoch and per evaluation, and peak memory, for several settings in one run.

    python -m recbole_mm.bench.speed --dataset=Scientific --data_path=../shared/datasets
    python -m recbole_mm.bench.speed --settings=all --epochs=1
    python -m recbole_mm.bench.speed --settings=all --train --only=0,5     # also train to early stopping
    python -m recbole_mm.bench.speed --settings=stock --epochs=2             # stock models: prefix vs whole sequences
    python -m recbole_mm.bench.speed --dataset=Games --settings=scale --max_batches=30   # epochs estimated from 30 batches

Every setting uses the same data, hidden size, inner size and batch size; speed-ups are taken
against the first setting (stock RecBole SASRec). Each setting runs in a child process, so its
peak resident memory is its own. With ``--train`` each chosen setting is also trained to early
stopping through the runner and its test Recall@10 / NDCG@10 are reported (quality kept?).
With ``--max_batches=N`` an epoch is estimated from its first N batches (after one untimed warm-up
batch): seconds per batch x batches per epoch. The loaders shuffle (RecBole's) or draw their
length buckets in random order (the plugin's), so the first N batches are a random sample of the
epoch's; a stock epoch on a large data set then costs minutes, not hours.
Prints a markdown table and writes it, with a JSON, to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import time
from typing import Dict, List, Tuple

from recbole.utils import init_seed

from recbole_mm.bench.runs import run_in_child
from recbole_mm.fileio import write_json_atomic
from recbole_mm.runner import build_config, build_pipeline, run_single
from recbole_mm.utils import quiet_known_warnings

ALL_OFF = {"train_whole_sequence": False, "length_bucketing": False, "trim_batches": False,
           "cache_item_table": False, "sort_eval_by_length": False}
EVAL_ON = {"trim_batches": True, "cache_item_table": True, "sort_eval_by_length": True}

SETTINGS: Dict[str, List[Tuple[str, str, Dict]]] = {
    "basic": [
        ("SASRec (stock RecBole)", "SASRec", {}),
        ("ANT (defaults: whole sequences, length-bucketed, trimmed)", "ANT", {}),
        ("ANT defaults + enable_amp (bfloat16 autocast on the CPU)", "ANT", {"enable_amp": True}),
    ],
    "all": [
        ("SASRec (stock RecBole)", "SASRec", {}),
        ("ANT, all options off (prefix samples padded to 50)", "ANT", ALL_OFF),
        ("ANT + trimmed batches + cached, length-sorted eval", "ANT", {**ALL_OFF, **EVAL_ON}),
        ("ANT + length-bucketed prefix batches", "ANT", {**ALL_OFF, **EVAL_ON, "length_bucketing": True}),
        ("ANT + whole sequences", "ANT", {"train_whole_sequence": True, "length_bucketing": False}),
        ("ANT + whole sequences + length bucketing (default)", "ANT", {}),
        ("ANT defaults + enable_amp (bfloat16 autocast on the CPU)", "ANT", {"enable_amp": True}),
    ],
    # a larger data set: the plugin's default against stock SASRec on RecBole's loader and on whole sequences
    "scale": [
        ("SASRec (stock RecBole)", "SASRec", {}),
        ("SASRec + stock_whole_sequence", "SASRec", {"stock_whole_sequence": True}),
        ("ANT (defaults)", "ANT", {}),
    ],
    # stock RecBole models, their code unchanged: prefix samples, bucketed prefix samples, whole sequences
    "stock": [
        ("SASRec (stock RecBole)", "SASRec", {}),
        ("SASRec + stock_length_bucketing (prefix samples)", "SASRec", {"stock_length_bucketing": True}),
        ("SASRec + stock_whole_sequence", "SASRec", {"stock_whole_sequence": True}),
        ("GRU4Rec (stock RecBole)", "GRU4Rec", {}),
        ("GRU4Rec + stock_whole_sequence", "GRU4Rec", {"stock_whole_sequence": True}),
    ],
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seeded_pipeline(model: str, dataset: str, config_dict: dict):
    """The run's pipeline (data, model, trainer) built after seeding, as a run builds it."""
    config = build_config(model, dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    return build_pipeline(config)


class FirstBatches:
    """The first ``n`` batches of a training loader, standing in for the loader in one
    ``_train_epoch`` call (any other attribute is the loader's)."""

    def __init__(self, loader, n: int):
        self.loader = loader
        self.n = min(n, len(loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name):
        return getattr(self.loader, name)


def time_epoch(pipe, epoch: int, max_batches: int = 0) -> float:
    """Seconds of one training epoch of the pipeline's trainer; with ``max_batches`` the epoch's
    estimate from that many batches (timed after one untimed warm-up batch)."""
    show = pipe.config["show_progress"]
    if max_batches <= 0 or max_batches >= len(pipe.train_data):
        start = time.perf_counter()
        pipe.trainer._train_epoch(pipe.train_data, epoch, show_progress=show)
        return time.perf_counter() - start
    pipe.trainer._train_epoch(FirstBatches(pipe.train_data, 1), epoch, show_progress=show)
    sample = FirstBatches(pipe.train_data, max_batches)
    start = time.perf_counter()
    pipe.trainer._train_epoch(sample, epoch, show_progress=show)
    return (time.perf_counter() - start) / len(sample) * len(pipe.train_data)


def _time_setting(model: str, dataset: str, config_dict: dict, epochs: int, train: bool,
                  max_batches: int = 0, evaluate: bool = True) -> dict:
    """Time ``epochs`` training epochs (or their estimates from ``max_batches`` batches) and one
    evaluation (unless not ``evaluate``: ``eval_seconds`` None) of one setting (in its own
    process), and the time to build data, model and trainer."""
    start = time.perf_counter()
    pipe = seeded_pipeline(model, dataset, config_dict)
    build_seconds = time.perf_counter() - start
    seconds = [time_epoch(pipe, epoch, max_batches) for epoch in range(epochs)]
    start = time.perf_counter()
    if evaluate:
        pipe.trainer.evaluate(pipe.valid_data, load_best_model=False)
    row = {
        "model": model,
        "build_seconds": build_seconds,
        "train_epoch_seconds": sum(seconds) / len(seconds),
        "eval_seconds": time.perf_counter() - start if evaluate else None,
        "train_batches": len(pipe.train_data),
        "timed_batches": min(max_batches, len(pipe.train_data)) if max_batches > 0 else len(pipe.train_data),
        "parameters": sum(p.numel() for p in pipe.model.parameters() if p.requires_grad),
    }
    if train:
        result = run_single(model, dataset, config_dict={**config_dict, "state": "INFO"})
        row.update({"test_recall@10": result["test_result"]["recall@10"],
                    "test_ndcg@10": result["test_result"]["ndcg@10"],
                    "epochs_trained": result["epochs_trained"]})
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def run_setting(model: str, dataset: str, config_dict: dict, epochs: int, train: bool, max_batches: int = 0,
                evaluate: bool = True) -> dict:
    """One setting in a fresh child process (its own peak memory)."""
    row = run_in_child(_time_setting, model, dataset, config_dict, epochs, train, max_batches, evaluate)
    if "error" in row:
        raise RuntimeError(f"benchmark setting {model} {config_dict} failed: {row['error']}")
    return row


def markdown_table(rows: List[dict], args) -> str:
    base = rows[0]
    quality = any("test_recall@10" in r for r in rows)
    lines = [
        f"Data set {args.dataset}; hidden size {args.hidden_size}; batch size {args.train_batch_size} "
        f"(prefix samples, or target positions with whole sequences); {args.epochs} timed epoch(s) per setting"
        + (f", each estimated from {args.max_batches} batches" if args.max_batches else "")
        + f"; torch threads {args.threads or 'default'}.",
        "",
        "| setting | s / train epoch | speed-up | s / evaluation | batches / epoch | peak RSS (MB) |"
        + (" test Recall@10 | test NDCG@10 |" if quality else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if quality else ""),
    ]
    for row in rows:
        line = (
            f"| {row['setting']} | {row['train_epoch_seconds']:.1f} | "
            f"{base['train_epoch_seconds'] / row['train_epoch_seconds']:.1f}x | {row['eval_seconds']:.1f} | "
            f"{row['train_batches']} | {row['peak_rss_mb']:.0f} |"
        )
        if quality:
            line += (f" {row['test_recall@10']:.4f} | {row['test_ndcg@10']:.4f} |" if "test_recall@10" in row
                     else " – | – |")
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> List[dict]:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mm_synthetic")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--train_batch_size", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs timed per setting")
    parser.add_argument("--settings", default="basic", choices=sorted(SETTINGS))
    parser.add_argument("--only", default=None, help="comma-separated setting numbers (0-based) to run")
    parser.add_argument("--train", action="store_true", help="also train each setting to early stopping")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per setting")
    parser.add_argument("--max_batches", type=int, default=0,
                        help="estimate each epoch from its first N batches (0: time whole epochs)")
    parser.add_argument("--feature_dir", default=None, help="where the item feature files are (default: beside the data)")
    parser.add_argument("--out", default="results/speed")
    args = parser.parse_args(argv)

    shared = {
        "data_path": args.data_path,
        "hidden_size": args.hidden_size,
        "inner_size": args.hidden_size,
        "train_batch_size": args.train_batch_size,  # show_progress: bars when on a terminal (< 0.1 % of an epoch)
        "state": "WARNING",
    }
    if args.feature_dir:
        shared["feature_dir"] = args.feature_dir
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    chosen = list(enumerate(SETTINGS[args.settings]))
    if args.only:
        keep = {int(i) for i in args.only.split(",")}
        chosen = [(i, s) for i, s in chosen if i in keep or i == 0]  # the reference always runs
    rows = []
    for _, (label, model, overrides) in chosen:
        row = run_setting(model, args.dataset, {**shared, **overrides}, args.epochs, args.train, args.max_batches)
        row["setting"] = label
        rows.append(row)
        print(f"{label}: {row['train_epoch_seconds']:.1f} s/epoch, {row['eval_seconds']:.1f} s/eval, "
              f"{row['peak_rss_mb']:.0f} MB", flush=True)
    table = markdown_table(rows, args)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"speed-{args.dataset}-{args.settings}")
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(table + "\n")
    write_json_atomic(stem + ".json", {"args": vars(args), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
