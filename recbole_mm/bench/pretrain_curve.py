"""Pre-training loss per epoch, drawn from transferable checkpoints (their metadata keeps it).

    python -m recbole_mm.bench.pretrain_curve saved/ANT-pretrain-Games-<time>.pth \\
        --out=results/pretrain_games

Writes ``<out>.png`` (loss against epoch, one line per checkpoint and loss part) and ``<out>.md``
(the losses as a table, with each epoch's fall). Several checkpoints draw side by side
(``--labels`` names them).
"""

from __future__ import annotations

import argparse
import os
from typing import List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recbole_mm.checkpoint import load_pretrained  # noqa: E402
from recbole_mm.fileio import write_figure_atomic, write_text_atomic  # noqa: E402


def loss_history(path: str) -> List[dict]:
    """The per-epoch loss records (``seq_item``, ``auxiliary``, ``total``) of a checkpoint."""
    history = load_pretrained(path)["metadata"].get("pretrain_loss") or []
    if not history:
        raise ValueError(f"{path} records no pre-training loss (metadata key `pretrain_loss`)")
    return history


def draw(paths: List[str], out: str, labels: Optional[List[str]] = None) -> str:
    """``<out>.png`` and ``<out>.md`` for the checkpoints in ``paths``; returns the markdown."""
    labels = labels or [os.path.basename(p) for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f"--labels names {len(labels)} curves, {len(paths)} checkpoints given")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    lines = []
    for path, label in zip(paths, labels):
        history = loss_history(path)
        epochs = list(range(1, len(history) + 1))
        ax.plot(epochs, [r["total"] for r in history], marker=".", label=f"{label} (total)")
        if any(r.get("auxiliary") for r in history):
            ax.plot(epochs, [r["seq_item"] for r in history], linestyle="--", label=f"{label} (sequence-item)")
        lines += [f"### {label}", "", "| epoch | total | sequence-item | auxiliary | fall |", "| ---: | ---: | ---: | ---: | ---: |"]
        for e, record in zip(epochs, history):
            fall = f"{history[e - 2]['total'] - record['total']:.4f}" if e > 1 else "–"
            lines.append(f"| {e} | {record['total']:.4f} | {record['seq_item']:.4f} | {record['auxiliary']:.4f} | "
                         f"{fall} |")
        lines.append("")
    ax.set_xlabel("epoch")
    ax.set_ylabel("pre-training loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_figure_atomic(fig, out + ".png")
    plt.close(fig)
    text = "\n".join(lines)
    write_text_atomic(out + ".md", text + "\n")
    return text


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="transferable checkpoints (or their snapshots)")
    parser.add_argument("--labels", default=None, help="comma-separated curve names")
    parser.add_argument("--out", default="results/pretrain_curve", help="output stem: <out>.png and <out>.md")
    args = parser.parse_args(argv)
    text = draw(args.checkpoints, args.out, args.labels.split(",") if args.labels else None)
    print(f"{args.out}.png, {args.out}.md")
    return text


if __name__ == "__main__":
    main()
