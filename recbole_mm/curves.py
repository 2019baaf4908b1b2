"""The training curve of a run: loss and validation metric per epoch, one PNG beside the run's
results JSON (``log/<Model>/<run>.png``; docs/quickstart.md)."""

from __future__ import annotations

from typing import Optional

from recbole_mm.fileio import write_figure_atomic


def plot_training_curve(result: dict, path: str) -> Optional[str]:
    """Draw ``result["train_loss_history"]`` (left axis) and the validation metric of
    ``result["valid_history"]`` (right axis) per epoch, mark the best epoch, and write the PNG
    atomically; returns ``path``, or None when the run recorded no epoch."""
    losses = result.get("train_loss_history") or []
    valid = [v for v in result.get("valid_history") or [] if v.get("epoch") is not None]
    if not losses and not valid:
        return None
    # matplotlib is a heavy third-party import that only the drawing needs: imported here, lazily
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, loss_axis = plt.subplots(figsize=(6.4, 3.6))
    if losses:
        loss_axis.plot(range(len(losses)), losses, color="tab:blue", marker="o", markersize=3, label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axis.set_ylabel("train loss", color="tab:blue")
    if valid:
        metric = result.get("valid_metric") or "valid score"
        score_axis = loss_axis.twinx()
        epochs, scores = [v["epoch"] for v in valid], [v["score"] for v in valid]
        score_axis.plot(epochs, scores, color="tab:orange", marker="s", markersize=3, label=f"valid {metric}")
        score_axis.set_ylabel(f"valid {metric}", color="tab:orange")
        best = max(range(len(scores)), key=scores.__getitem__) if result.get("valid_metric_bigger", True) \
            else min(range(len(scores)), key=scores.__getitem__)
        score_axis.axvline(epochs[best], color="grey", linestyle=":", linewidth=1)
        score_axis.annotate(f"best {scores[best]:.4f}", (epochs[best], scores[best]), textcoords="offset points",
                            xytext=(4, 6), fontsize=8)
    test = result.get("test_result") or {}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in list(test.items())[:2])
    loss_axis.set_title(f"{result.get('model')} on {result.get('dataset')}" + (f" (test {shown})" if shown else ""),
                        fontsize=9)
    fig.tight_layout()
    write_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path
