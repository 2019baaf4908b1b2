"""How training time, evaluation time and memory grow with the number of users.

    python -m recbole_mm.bench.growth --scales=1,10,100 --max_batches=30

Writes one synthetic data set per scale, shaped like Scientific (``--base_users`` 8,442 users,
5,000 items, sequences of 5 to 9 items, about 7 as on Scientific) with ``scale`` times its users,
and times three settings on it, each in its own process: stock SASRec on RecBole's loader, stock
SASRec on whole sequences, ANT's defaults (seconds to load the data and build the model, seconds per
training epoch estimated from ``--max_batches`` batches, seconds per full evaluation, peak resident
memory). Stock SASRec's evaluation is RecBole's with either training loader, so it is timed once,
in the whole-sequence row. Every (data set, setting) cell is kept as
``<out>/growth-<data set name>-<setting number>.json`` and skipped when it exists, so an
interrupted run resumes. Writes ``growth.md``, ``growth.csv`` and ``growth.png``
(time and memory against users, log-log).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import List

from recbole_mm.bench.speed import run_setting
from recbole_mm.data.synthetic import SyntheticSpec, write_dataset
from recbole_mm.fileio import write_csv_atomic, write_figure_atomic, write_json_atomic, write_text_atomic
from recbole_mm.utils import quiet_known_warnings

SCIENTIFIC_USERS = 8442
# (label, model, config overrides, timed evaluation?)
SETTINGS = [
    ("SASRec (stock RecBole)", "SASRec", {}, False),  # RecBole's evaluation: timed in the next row
    ("SASRec + stock_whole_sequence", "SASRec", {"stock_whole_sequence": True}, True),
    ("ANT (defaults)", "ANT", {}, True),
]
COLUMNS = ["scale", "users", "setting", "model", "build_seconds", "train_epoch_seconds", "eval_seconds",
           "train_batches", "timed_batches", "peak_rss_mb"]


def scaled_spec(scale: float, base_users: int, n_items: int) -> SyntheticSpec:
    """A Scientific-shaped synthetic data set with ``scale`` x ``base_users`` users (its name holds
    the user and item counts, so data sets of other sizes never share a folder)."""
    n_users = int(round(scale * base_users))
    return SyntheticSpec(name=f"mm_growth_{n_users}u_{n_items}i", seed=2026, n_users=n_users,
                         n_items=n_items, n_categories=64, min_length=5, max_length=9)


def measure(args) -> List[dict]:
    """Every (scale, setting) cell, run or read back from its file."""
    numbers = args.only or range(len(SETTINGS))
    shared = {"data_path": args.data_path, "hidden_size": args.hidden_size, "inner_size": args.hidden_size,
              "train_batch_size": args.train_batch_size, "state": "WARNING"}
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for scale in [float(s) for s in args.scales.split(",")]:
        spec = scaled_spec(scale, args.base_users, args.n_items)
        for number in numbers:
            label, model, overrides, evaluate = SETTINGS[number]
            cell = os.path.join(args.out, f"growth-{spec.name}-{number}.json")
            if os.path.isfile(cell):
                with open(cell, encoding="utf-8") as f:
                    rows.append(json.load(f))
                print(f"{spec.name} / {label}: done before, skipped", flush=True)
                continue
            write_dataset(spec, args.data_path)
            row = run_setting(model, spec.name, {**shared, **overrides}, 1, False, args.max_batches, evaluate)
            row.update({"scale": scale, "users": spec.n_users, "setting": label})
            write_json_atomic(cell, row)
            rows.append(row)
            print(f"{spec.name} / {label}: build {row['build_seconds']:.1f} s, "
                  f"{row['train_epoch_seconds']:.1f} s/epoch, {_seconds(row['eval_seconds'])} s/eval, "
                  f"{row['peak_rss_mb']:.0f} MB", flush=True)
    return rows


def _seconds(value) -> str:
    return "as below" if value is None else f"{value:.1f}"


def markdown_table(rows: List[dict], args) -> str:
    lines = [
        f"Synthetic data shaped like Scientific ({args.base_users:,} users x scale, {args.n_items:,} items); "
        f"hidden size {args.hidden_size}, batch size {args.train_batch_size}; epochs estimated from "
        f"{args.max_batches or 'all'} batches; torch threads {args.threads or 'default'}.",
        "",
        "| users | setting | s to load + build | s / train epoch | s / evaluation | batches / epoch | peak RSS (MB) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| {row['users']:,} | {row['setting']} | {row['build_seconds']:.1f} | "
                     f"{row['train_epoch_seconds']:.1f} | {_seconds(row['eval_seconds'])} | {row['train_batches']} | "
                     f"{row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def plot(rows: List[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("train_epoch_seconds", "s / training epoch"), ("eval_seconds", "s / evaluation"),
              ("peak_rss_mb", "peak resident memory (MB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4))
    for axis, (key, title) in zip(axes, panels):
        for setting in dict.fromkeys(r["setting"] for r in rows):
            points = sorted((r["users"], r[key]) for r in rows if r["setting"] == setting and r[key] is not None)
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=setting)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("users")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    write_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None) -> List[dict]:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,10,100", help="comma-separated multiples of --base_users")
    parser.add_argument("--base_users", type=int, default=SCIENTIFIC_USERS)
    parser.add_argument("--n_items", type=int, default=5000)
    parser.add_argument("--only", default=None, help="comma-separated setting numbers (0-based) to run")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--train_batch_size", type=int, default=2048)
    parser.add_argument("--max_batches", type=int, default=30, help="batches timed per epoch (0: whole epochs)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per setting")
    parser.add_argument("--out", default="results/growth")
    args = parser.parse_args(argv)
    if args.only:
        numbers = [int(i) for i in args.only.split(",") if i.strip().isdigit()]
        if len(numbers) != len(args.only.split(",")) or any(i >= len(SETTINGS) for i in numbers):
            parser.error(f"--only: comma-separated setting numbers from 0 to {len(SETTINGS) - 1}, got {args.only!r}")
        args.only = numbers

    rows = measure(args)
    table = markdown_table(rows, args)
    print(table)
    write_text_atomic(os.path.join(args.out, "growth.md"), table + "\n")
    write_csv_atomic(os.path.join(args.out, "growth.csv"), [{key: row.get(key) for key in COLUMNS} for row in rows])
    plot(rows, os.path.join(args.out, "growth.png"))
    return rows


if __name__ == "__main__":
    main()
