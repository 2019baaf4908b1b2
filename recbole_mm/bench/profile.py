"""Where one training epoch of a plugin model goes, and how far it is from this machine's
arithmetic floor (issue 18; docs/speed.md).

    python -m recbole_mm.bench.profile --model=ANT --dataset=Scientific --data_path=../shared/datasets --threads=1

One pass over the training loader times, per batch, each part of a training step on its own:

- ``data``: producing the batch (the loader's iteration);
- ``item table``: the item encoder over every item (ANT: the MoE adaptors), forward + backward;
- ``sequence encoder``: the transformer over the batch's sequences, forward + backward;
- ``scores + loss``: the scores of every loss position against every item and the
  cross-entropy, forward + backward;
- ``optimiser``: one optimiser step;

each part with detached inputs and a backward of its own (so they add up to a little more than
one fused step, which is timed too: ``whole step``). A second pass counts every part's
floating-point operations with PyTorch's ``torch.utils.flop_counter.FlopCounterMode``; the
floor of a part is its operations at the rate this machine reaches on a large matrix product
(``torch.mm``, measured in the same run and thread count). Applies to models trained by
:class:`recbole_mm.model.abstract_recommender.MMSequentialRecommender`'s ``calculate_loss``
(ANT, ANT_e, UniSRec, UniSRec_e, NOVA, SASRec++). Writes ``<out>/profile-<model>-<dataset>.md``
and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import OrderedDict
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from recbole_mm.bench.runs import parse_overrides
from recbole_mm.bench.speed import seeded_pipeline, time_epoch
from recbole_mm.fileio import write_json_atomic, write_text_atomic
from recbole_mm.model.abstract_recommender import MMSequentialRecommender
from recbole_mm.utils import quiet_known_warnings

PARTS = ("data", "item table", "sequence encoder", "scores + loss", "optimiser")


def matmul_rate(n: int = 2048, k: int = 256, m: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of ``torch.mm`` on an (n, k) x (k, m) float32 product, best of ``repeats``."""
    a, b = torch.randn(n, k), torch.randn(k, m)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n * k * m / best


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().requires_grad_(True)


def part_steps(model: MMSequentialRecommender, batch) -> Dict[str, Callable[[], None]]:
    """Forward + backward of each part of ``model.calculate_loss`` on ``batch``, each from detached
    inputs, as closures (what :func:`profile_epoch` times and counts)."""
    with torch.no_grad():
        table = model.item_table()
        item_seq, targets = model.training_targets(batch)
        output = model.encode_sequence(item_seq, table)
    valid = targets > 0

    def item_table():
        reps = model.item_table()
        reps.backward(torch.ones_like(reps))

    def sequence_encoder():
        out = model.encode_sequence(item_seq, _leaf(table))
        out.backward(torch.ones_like(out))

    def scores_and_loss():
        logits = model.score(_leaf(output)[valid], _leaf(table))
        logits[:, 0] = float("-inf")
        F.cross_entropy(logits, targets[valid]).backward()

    return OrderedDict([("item table", item_table), ("sequence encoder", sequence_encoder),
                        ("scores + loss", scores_and_loss)])


def profile_epoch(pipe, max_batches: int = 0) -> dict:
    """Seconds and FLOPs per part over one pass of the training loader (``max_batches`` > 0: that many)."""
    model, trainer, loader = pipe.model, pipe.trainer, pipe.train_data
    if type(model).calculate_loss is not MMSequentialRecommender.calculate_loss:
        raise ValueError(f"bench.profile: {type(model).__name__} has a loss of its own; the profile splits "
                         f"MMSequentialRecommender.calculate_loss (ANT, ANT_e, UniSRec, UniSRec_e, NOVA, SASRec++)")
    model.train()
    seconds = OrderedDict((p, 0.0) for p in PARTS)
    seconds["whole step"] = 0.0
    flops = OrderedDict((p, 0) for p in PARTS[1:4])
    batches, positions = 0, 0
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        batch = batch.to(model.device)
        seconds["data"] += time.perf_counter() - start
        for name, step in part_steps(model, batch).items():
            trainer.optimizer.zero_grad()
            start = time.perf_counter()
            step()
            seconds[name] += time.perf_counter() - start
            trainer.optimizer.zero_grad()
            counter = FlopCounterMode(display=False)
            with counter:
                step()
            flops[name] += counter.get_total_flops()
        trainer.optimizer.zero_grad()
        start = time.perf_counter()
        model.calculate_loss(batch).backward()
        seconds["whole step"] += time.perf_counter() - start
        start = time.perf_counter()
        trainer.optimizer.step()
        seconds["optimiser"] += time.perf_counter() - start
        batches += 1
        positions += int((model.training_targets(batch)[1] > 0).sum())
        if max_batches and batches >= max_batches:
            break
    return {"seconds": dict(seconds), "flops": dict(flops), "batches": batches, "positions": positions}


def markdown(profile: dict, rate: float, epoch_seconds: float, args) -> str:
    seconds, flops = profile["seconds"], profile["flops"]
    parts_total = sum(seconds[p] for p in PARTS)
    floor_total = sum(flops.values()) / rate
    lines = [f"{args.model} on {args.dataset}: one pass of the training loader ({profile['batches']} batches, "
             f"{profile['positions']:,} loss positions), torch threads {torch.get_num_threads()}; matmul rate "
             f"{rate / 1e9:.1f} GFLOP/s (torch.mm 2048x256 @ 256x4096, best of 5); a plain training epoch "
             f"(the trainer's) {epoch_seconds:.1f} s.", "",
             "| part | s / epoch | share | GFLOP / epoch (fwd + bwd) | floor s | time / floor |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for part in PARTS:
        line = f"| {part} | {seconds[part]:.2f} | {seconds[part] / parts_total:.0%} |"
        if part in flops:
            floor = flops[part] / rate
            line += f" {flops[part] / 1e9:.1f} | {floor:.2f} | {seconds[part] / floor:.1f}x |" if floor else " 0 | – | – |"
        else:
            line += " – | – | – |"
        lines.append(line)
    lines.append(f"| **sum of parts** | {parts_total:.2f} | 100% | {sum(flops.values()) / 1e9:.1f} | "
                 f"{floor_total:.2f} | {parts_total / floor_total:.1f}x |")
    lines.append(f"| whole step (fused forward + backward, no data, no optimiser) | {seconds['whole step']:.2f} | | | | |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ANT")
    parser.add_argument("--dataset", default="mm_synthetic")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--max_batches", type=int, default=0, help="stop after this many batches (0: a whole epoch)")
    parser.add_argument("--out", default="results/speed")
    args, extra = parser.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = seeded_pipeline(args.model, args.dataset, {"data_path": args.data_path, "state": "WARNING",
                                                      "show_progress": False, **parse_overrides(extra)})
    epoch_seconds = time_epoch(pipe, 0)
    profile = profile_epoch(pipe, args.max_batches)
    rate = matmul_rate()
    table = markdown(profile, rate, epoch_seconds, args)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"profile-{args.model}-{args.dataset}")
    write_text_atomic(stem + ".md", table + "\n")
    result = {**profile, "matmul_flops_per_second": rate, "train_epoch_seconds": epoch_seconds,
              "threads": torch.get_num_threads(), "args": vars(args)}
    write_json_atomic(stem + ".json", result)
    return result


if __name__ == "__main__":
    main()
