"""What ``adaptation: auto`` chooses, replayed from the runs of its candidate modes.

    python -m recbole_mm.bench.auto_replay results/scientific_from_games
    python -m recbole_mm.bench.auto_replay results/scientific_from_games --strategies=guarded:2.0,commit:1

Every candidate of an ``auto`` run is built, adapted, seeded and ordered exactly as the run of its
mode alone (docs/transfer.md), so its epochs are that run's epochs. The mode runs a transfer table
keeps (``<out>/<model>-<mode>[-seed<seed>].json``: the validation score after every epoch and the
seconds of every epoch) therefore determine, without training again, which mode ``auto`` picks
under each strategy, after how many epochs of each candidate, at what cost, and what it scores on
the test set: the winner's own test figures, exact when its best epoch falls inside the epochs
``auto`` gives it (otherwise the row says so and has no test figures).

Strategies are written ``guarded:<auto_budget>`` or ``commit:<auto_probe_epochs>``; guarded races
probe ``--probe_epochs`` (4, the default of ``auto_probe_epochs``) epochs. For every (model, seed):
the choice, its test Recall@10 / NDCG@10, the difference to the best of the candidate modes by
test Recall@10 in that mode's standard errors, and the cost (training + validation seconds of all
candidate epochs) as a multiple of the ground-built run's. Writes ``<out>/auto_replay.md`` and
``<out>/auto_replay.csv``; where the folder also holds a real ``auto`` run, its choice is shown
beside the replay's.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from recbole_mm.bench.transfer import MODE_TITLES, recall_standard_error
from recbole_mm.config import ADAPTATION_MODES, AUTO_STRATEGIES
from recbole_mm.fileio import write_csv_atomic, write_text_atomic

DEFAULT_STRATEGIES = "guarded:2.0,guarded:0.5,commit:4,commit:1"
RUN_FILE = re.compile(r"^(?P<model>.+?)-(?P<mode>" + "|".join(ADAPTATION_MODES + ("auto",))
                      + r")(?:-seed(?P<seed>\d+))?\.json$")


@dataclass
class CandidateRun:
    """One mode's run as ``auto`` would see it: validation score after each epoch (bigger is better),
    seconds of each epoch (training + validation), and its test figures."""

    scores: List[float]
    seconds: List[float]
    test: Dict[str, float]
    test_rows: Optional[int] = None

    @property
    def best_epoch(self) -> int:
        """The epoch whose model the run tests: the last one reaching the best score (RecBole keeps
        a model that equals the best so far)."""
        best = max(self.scores)
        return max(i for i, s in enumerate(self.scores) if s == best)

    @classmethod
    def from_result(cls, result: dict, path: str) -> "CandidateRun":
        """From a runner result (``run_single``'s JSON); ``ValueError`` naming the file if it lacks
        a validation after every epoch."""
        history = result.get("valid_history") or []
        epochs = [entry.get("epoch") for entry in history]
        if not history or epochs != list(range(len(history))):
            raise ValueError(f"{path}: needs `valid_history` with a validation after every epoch (eval_step 1; "
                             f"written by runs since the runner records it), got epochs {epochs[:6]}")
        sign = 1.0 if result.get("valid_metric_bigger", True) else -1.0
        train = result.get("train_epoch_seconds") or []
        valid = result.get("eval_seconds") or []
        seconds = [(train[i] if i < len(train) else 0.0) + (valid[i] if i < len(valid) else 0.0)
                   for i in range(len(history))]
        return cls([sign * float(entry["score"]) for entry in history], seconds, result.get("test_result") or {},
                   result.get("test_rows"))


class _Race:
    """Epoch counts of the candidates during a replayed race."""

    def __init__(self, runs: Dict[str, CandidateRun]):
        self.runs, self.epochs = runs, {mode: 0 for mode in runs}

    def stopped(self, mode: str) -> bool:  # a candidate stops where its own run stopped
        return self.epochs[mode] >= len(self.runs[mode].scores)

    def score(self, mode: str) -> float:
        return max(self.runs[mode].scores[:self.epochs[mode]]) if self.epochs[mode] else -math.inf

    def train(self, mode: str) -> None:
        self.epochs[mode] += 1


def _guarded(race: _Race, candidates: Sequence[str], probe_epochs: int, budget: float) -> None:
    """The runner's guarded race (``runner._guarded_race``), one epoch at a time."""
    baseline = "ground_built" if "ground_built" in candidates else candidates[0]
    transfer = [m for m in candidates if m != baseline]
    leader = None
    while True:
        progressed = False
        if not race.stopped(baseline):
            race.train(baseline)
            progressed = True
        racing = [m for m in transfer if not race.stopped(m)]
        if leader is None and all(race.epochs[m] >= probe_epochs or race.stopped(m) for m in transfer):
            leader = max(transfer, key=race.score) if transfer else None
        if leader is not None:
            racing = [leader] if leader in racing else []
        allowance = max(probe_epochs * len(transfer), budget * race.epochs[baseline])
        for mode in racing:
            if race.epochs[mode] < probe_epochs or sum(race.epochs[m] for m in transfer) < allowance:
                race.train(mode)
                progressed = True
        if not progressed:
            return


def _commit(race: _Race, candidates: Sequence[str], probe_epochs: int) -> None:
    """The runner's probe-then-commit strategy (``runner._probe_then_commit``)."""
    for mode in candidates:
        while race.epochs[mode] < probe_epochs and not race.stopped(mode):
            race.train(mode)
    leader = max(candidates, key=race.score)
    while not race.stopped(leader):
        race.train(leader)


def replay(runs: Dict[str, CandidateRun], strategy: str = "guarded", probe_epochs: int = 4,
           budget: float = 2.0, candidates: Sequence[str] = ADAPTATION_MODES) -> dict:
    """What ``adaptation: auto`` with these settings does given its candidates' own runs: the
    winner, every candidate's epochs and best validation score, the seconds spent, and the winner's
    test figures (``None`` when the race cut it before the epoch its own run tested)."""
    if strategy not in AUTO_STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {list(AUTO_STRATEGIES)}")
    missing = [m for m in candidates if m not in runs]
    if missing:
        raise ValueError(f"no run of candidate mode(s) {missing}")
    race = _Race({m: runs[m] for m in candidates})
    if strategy == "commit":
        _commit(race, list(candidates), probe_epochs)
    else:
        _guarded(race, list(candidates), probe_epochs, budget)
    winner = max(candidates, key=race.score)
    run, trained = runs[winner], race.epochs[winner]
    exact = run.best_epoch < trained
    return {"winner": winner,
            "candidates_run": {m: {"epochs": race.epochs[m], "best_valid_score": race.score(m)} for m in candidates},
            "seconds": sum(sum(runs[m].seconds[:race.epochs[m]]) for m in candidates),
            "epochs_all_candidates": sum(race.epochs.values()),
            "test": dict(run.test) if exact else None, "winner_best_epoch": run.best_epoch}


def parse_strategy(text: str, probe_epochs: int) -> Tuple[str, int, float]:
    """``guarded:2.0`` -> ("guarded", probe_epochs, 2.0); ``commit:1`` -> ("commit", 1, 0.0)."""
    name, _, value = text.partition(":")
    try:
        if name == "guarded":
            return name, probe_epochs, float(value) if value else 2.0
        if name == "commit":
            return name, int(value) if value else probe_epochs, 0.0
    except ValueError:
        pass
    raise ValueError(f"--strategies: {text!r} is not guarded:<auto_budget> or commit:<auto_probe_epochs>")


def load_runs(folder: str) -> Dict[Tuple[str, Optional[int]], Dict[str, dict]]:
    """(model, seed) -> {mode: result JSON} for the plain-mode runs (and real ``auto`` runs) kept in
    a transfer table's folder; runs of modes with settings of their own are not candidates."""
    groups: Dict[Tuple[str, Optional[int]], Dict[str, dict]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        match = RUN_FILE.match(os.path.basename(path))
        if not match:
            continue
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        result["_path"] = path
        seed = int(match["seed"]) if match["seed"] else None
        groups.setdefault((match["model"], seed), {})[match["mode"]] = result
    return groups


def replay_folder(folder: str, strategies: Sequence[str], probe_epochs: int = 4) -> List[dict]:
    """One row per (model, seed, strategy) with every candidate mode's run in ``folder``."""
    rows = []
    for (model, seed), results in load_runs(folder).items():
        if not all(m in results for m in ADAPTATION_MODES):
            continue
        runs = {m: CandidateRun.from_result(results[m], results[m]["_path"]) for m in ADAPTATION_MODES}
        best_mode = max(ADAPTATION_MODES, key=lambda m: runs[m].test.get("recall@10", -1.0))
        best = runs[best_mode].test
        se = recall_standard_error(best.get("recall@10"), runs[best_mode].test_rows)
        baseline_seconds = sum(runs["ground_built"].seconds)
        real = ((results.get("auto") or {}).get("adaptation") or {}).get("auto") or {}
        for text in strategies:
            strategy, probes, budget = parse_strategy(text, probe_epochs)
            outcome = replay(runs, strategy, probes, budget)
            test = outcome["test"] or {}
            recall = test.get("recall@10")
            same_settings = (real.get("strategy", "guarded") == strategy  # runs before auto_strategy: guarded and real.get("probe_epochs") == probes
                             and (strategy == "commit" or real.get("budget") == budget))
            rows.append({
                "model": model, "seed": seed, "strategy": text, "choice": outcome["winner"],
                "recall@10": recall, "ndcg@10": test.get("ndcg@10"),
                "best_mode": best_mode, "best_recall@10": best.get("recall@10"),
                "difference_in_se": (recall - best["recall@10"]) / se if recall is not None and se else None,
                "cost": outcome["seconds"] / baseline_seconds if baseline_seconds else None,
                "epochs": {m: r["epochs"] for m, r in outcome["candidates_run"].items()},
                "winner_best_epoch": outcome["winner_best_epoch"],
                "real_auto_choice": real.get("winner") if same_settings else None})
    return rows


def write_report(rows: List[dict], folder: str) -> str:
    """``auto_replay.md`` (per strategy: every model and seed, then how often within one standard
    error of the best mode, and the cost range) and ``auto_replay.csv``."""
    lines = ["Test Recall@10 of the mode `auto` picks, against the best candidate mode of the same model and "
             "seed (in that mode's standard errors); cost: seconds of all candidate epochs / the ground-built "
             "run's. Replayed from the mode runs (`python -m recbole_mm.bench.auto_replay`).", ""]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        group = [r for r in rows if r["strategy"] == strategy]
        lines += [f"**{strategy}**", "", "| model | seed | choice | epochs (GB / FT / ReL) | Recall@10 / NDCG@10 | "
                  "best mode | − best (SE) | cost |", "| --- | ---: | --- | --- | --- | --- | ---: | ---: |"]
        for r in group:
            figures = (f"{r['recall@10']:.4f} / {r['ndcg@10']:.4f}" if r["recall@10"] is not None else
                       f"unknown: cut after {r['epochs'][r['choice']]} epochs, its run tested epoch "
                       f"{r['winner_best_epoch'] + 1}")
            real = f" (real run: {MODE_TITLES[r['real_auto_choice']]})" if r["real_auto_choice"] else ""
            diff = f"{r['difference_in_se']:+.1f}" if r["difference_in_se"] is not None else "–"
            lines.append(f"| {r['model']} | {r['seed'] if r['seed'] is not None else '–'} | "
                         f"{MODE_TITLES[r['choice']]}{real} | {' / '.join(str(r['epochs'][m]) for m in ADAPTATION_MODES)}"
                         f" | {figures} | {MODE_TITLES[r['best_mode']]} {r['best_recall@10']:.4f} | {diff} | "
                         f"{r['cost']:.2f}x |")
        within = [r for r in group if r["difference_in_se"] is not None and r["difference_in_se"] >= -1.0]
        costs = [r["cost"] for r in group if r["cost"] is not None]
        lines += ["", f"Within one standard error of the best mode: {len(within)} of {len(group)}; cost "
                  f"{min(costs):.2f}x–{max(costs):.2f}x a ground-built run." if costs else "", ""]
    report = "\n".join(lines)
    write_text_atomic(os.path.join(folder, "auto_replay.md"), report + "\n")
    write_csv_atomic(os.path.join(folder, "auto_replay.csv"),
                     [{**r, "epochs": " / ".join(str(r["epochs"][m]) for m in ADAPTATION_MODES)} for r in rows])
    return report


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a transfer table's --out folder (its <model>-<mode>-seed<seed>.json runs)")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                        help="comma-separated guarded:<auto_budget> or commit:<auto_probe_epochs>")
    parser.add_argument("--probe_epochs", type=int, default=4, help="auto_probe_epochs of the guarded races")
    args = parser.parse_args(argv)
    try:
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        for text in strategies:
            parse_strategy(text, args.probe_epochs)
        if not os.path.isdir(args.folder):
            raise ValueError(f"{args.folder}: no such folder")
        rows = replay_folder(args.folder, strategies, args.probe_epochs)
        if not rows:
            raise ValueError(f"{args.folder}: no model and seed with a run of every mode "
                             f"({', '.join(ADAPTATION_MODES)}) as <model>-<mode>[-seed<seed>].json")
    except ValueError as err:
        parser.error(str(err))
    print(write_report(rows, args.folder))
    return rows


if __name__ == "__main__":
    main()
