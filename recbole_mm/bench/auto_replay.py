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

The race is the runner's own (``runner.guarded_race`` / ``runner.probe_then_commit``), driven by
the recorded epochs instead of training. A run that ended neither by early stopping nor at its
epoch limit (cut short, e.g. resumed with fewer ``--epochs``) cannot stand in for a candidate: its
model and seed are skipped, with the reason printed. Strategies are written
``guarded:<auto_budget>`` or ``commit:<auto_probe_epochs>``; guarded races probe
``--probe_epochs`` (4, the default of ``auto_probe_epochs``) epochs. For every (model, seed):
the choice, its test Recall@10 / NDCG@10, the difference to the best of the candidate modes by
test Recall@10 in that mode's standard errors, and the cost (training + validation seconds of all
candidate epochs) as a multiple of the ground-built run's. Writes ``<out>/auto_replay.md`` and
``<out>/auto_replay.csv``; where the folder also holds a real ``auto`` run, its choice is shown
beside the replay's.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from recbole_mm.bench.transfer import MODE_TITLES, load_runs, recall_standard_error
from recbole_mm.config import ADAPTATION_MODES, AUTO_STRATEGIES
from recbole_mm.fileio import write_csv_atomic, write_text_atomic
from recbole_mm.runner import best_by_early_stopping, check_auto_race_settings, guarded_race, probe_then_commit

DEFAULT_STRATEGIES = "guarded:2.0,guarded:0.5,commit:4,commit:1"
_QUIET = logging.getLogger("recbole_mm.bench.auto_replay.race")  # the race's own log lines are not wanted here
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass
class CandidateRun:
    """One mode's run as ``auto`` would see it: the validation score after each epoch, times
    ``sign`` (+1 where a bigger metric is better), the seconds of each epoch (training +
    validation), its test figures, and whether it ended as a race would end it."""

    scores: List[float]
    seconds: List[float]
    test: Dict[str, float]
    test_rows: Optional[int] = None
    sign: float = 1.0
    complete: bool = True

    def best_until(self, epochs: int) -> Tuple[float, Optional[int]]:
        """Best (signed) score after ``epochs`` epochs and the epoch of the model kept then, by
        RecBole's early-stopping rule (the runner's, as a resumed race replays its epochs)."""
        best, at, _ = best_by_early_stopping(enumerate(self.scores), epochs)
        return best, at

    @property
    def tested_epoch(self) -> Optional[int]:
        """The epoch whose model the run tested."""
        return self.best_until(len(self.scores))[1]

    @classmethod
    def from_result(cls, result: dict, path: str) -> "CandidateRun":
        """From a runner result (``run_single``'s JSON); ``ValueError`` naming the file and the key
        where it lacks what a replay needs."""
        if not isinstance(result, dict):
            raise ValueError(f"{path}: expected a run's result (a JSON object), got {type(result).__name__}")
        if "_unreadable" in result:
            raise ValueError(result["_unreadable"])
        history = result.get("valid_history") or []
        if not history or [entry.get("epoch") if isinstance(entry, dict) else None for entry in history] \
                != list(range(len(history))):
            raise ValueError(f"{path}: needs `valid_history` with a validation after every epoch (eval_step 1; "
                             f"written by runs since the runner records it)")
        try:
            raw = [float(entry["score"]) for entry in history]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: every `valid_history` entry needs a numeric `score`") from None
        train, valid = result.get("train_epoch_seconds") or [], result.get("eval_seconds") or []
        if len(train) < len(history):
            raise ValueError(f"{path}: `train_epoch_seconds` has {len(train)} entries for {len(history)} epochs")
        test = result.get("test_result") or {}
        if not all(isinstance(test.get(metric), (int, float)) for metric in ("recall@10", "ndcg@10")):
            raise ValueError(f"{path}: `test_result` needs recall@10 and ndcg@10")
        sign = 1.0 if result.get("valid_metric_bigger", True) else -1.0
        seconds = [train[i] + (valid[i] if i < len(valid) else 0.0) for i in range(len(history))]
        run = cls([sign * score for score in raw], seconds, test, result.get("test_rows"), sign)
        if "stopped_early" in result:  # runs before the runner recorded how they ended are taken as complete
            run.complete = bool(result["stopped_early"]) or len(history) >= int(result.get("epochs_limit") or 0)
        return run


def replay(runs: Dict[str, CandidateRun], strategy: str = "guarded", probe_epochs: int = 4,
           budget: float = 2.0, candidates: Sequence[str] = ADAPTATION_MODES) -> Dict[str, object]:
    """What ``adaptation: auto`` with these settings does given its candidates' own runs: the
    winner, every candidate's epochs and best validation score, the seconds spent, and the winner's
    test figures (``None`` when the race cut it before the epoch its own run tested). The race is
    the runner's, each "epoch" read from the runs."""
    if strategy not in AUTO_STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {list(AUTO_STRATEGIES)}")
    check_auto_race_settings(probe_epochs, budget)
    candidates = list(candidates)
    missing = [m for m in candidates if m not in runs]
    if missing:
        raise ValueError(f"no run of candidate mode(s) {missing}")
    state = {m: {"epochs": 0, "stopped": False} for m in candidates}

    def train_one_epoch(mode: str) -> None:
        state[mode]["epochs"] += 1
        state[mode]["stopped"] = state[mode]["epochs"] >= len(runs[mode].scores)

    def score(mode: str) -> float:
        return runs[mode].best_until(state[mode]["epochs"])[0]

    if strategy == "commit":
        probe_then_commit(state, candidates, probe_epochs, train_one_epoch, score, 1.0, _QUIET)
    else:
        guarded_race(state, candidates, probe_epochs, budget, train_one_epoch, score, 1.0, _QUIET)
    winner = max(candidates, key=score)  # as runner._choose_adaptation
    run = runs[winner]
    kept = run.best_until(state[winner]["epochs"])[1]
    return {"winner": winner,
            "candidates_run": {m: {"epochs": state[m]["epochs"], "best_valid_score": runs[m].sign * score(m)}
                               for m in candidates},
            "seconds": sum(sum(runs[m].seconds[:state[m]["epochs"]]) for m in candidates),
            "epochs_all_candidates": sum(r["epochs"] for r in state.values()),
            "test": dict(run.test) if kept == run.tested_epoch else None, "winner_tested_epoch": run.tested_epoch}


def parse_strategy(text: str, probe_epochs: int) -> Tuple[str, int, float]:
    """``guarded:2.0`` -> ("guarded", probe_epochs, 2.0); ``commit:1`` -> ("commit", 1, 0.0)."""
    name, _, value = text.partition(":")
    try:
        if name == "guarded":
            parsed = name, probe_epochs, float(value) if value else 2.0
        elif name == "commit":
            parsed = name, int(value) if value else probe_epochs, 0.0
        else:
            parsed = None
        if parsed:
            check_auto_race_settings(parsed[1], parsed[2])
            return parsed
    except ValueError as err:
        if "auto_probe_epochs" in str(err):
            raise ValueError(f"--strategies / --probe_epochs: {text!r}: {err}") from None
    raise ValueError(f"--strategies: {text!r} is not guarded:<auto_budget> or commit:<auto_probe_epochs>")


def _real_choice(results: Dict[str, Tuple[dict, str]], strategy: str, probes: int, budget: float,
                 candidates: Sequence[str]) -> Optional[str]:
    """The choice of a real ``auto`` run kept beside the mode runs, where it raced the same way."""
    real = ((results.get("auto", ({}, ""))[0].get("adaptation") or {}).get("auto")) or {}
    same = (real.get("strategy", "guarded") == strategy  # runs before auto_strategy existed: guarded
            and real.get("probe_epochs") == probes and list(real.get("candidates") or []) == list(candidates)
            and (strategy == "commit" or real.get("budget") == budget))
    return real.get("winner") if same else None


def replay_folder(folder: str, strategies: Sequence[str], probe_epochs: int = 4,
                  candidates: Sequence[str] = ADAPTATION_MODES) -> List[dict]:
    """One row per (model, seed, strategy) with a complete run of every candidate mode in ``folder``;
    a model and seed whose runs cannot be replayed are skipped, the reason printed."""
    races = [(text, *parse_strategy(text, probe_epochs)) for text in strategies]
    rows = []
    for (model, seed), results in load_runs(folder).items():
        if not all(m in results for m in candidates):
            continue
        try:
            runs = {m: CandidateRun.from_result(*results[m]) for m in candidates}
        except ValueError as err:
            print(f"{model}, seed {seed}: skipped: {err}")
            continue
        cut = [m for m in candidates if not runs[m].complete]
        if cut:
            print(f"{model}, seed {seed}: skipped: the run of {', '.join(cut)} ended neither by early stopping nor "
                  f"at its epoch limit, so it cannot stand in for a candidate of the race")
            continue
        best_mode = max(candidates, key=lambda m: runs[m].test["recall@10"])
        best = runs[best_mode].test
        se = recall_standard_error(best["recall@10"], runs[best_mode].test_rows)
        baseline_seconds = sum(runs[candidates[0]].seconds)
        for text, strategy, probes, budget in races:
            outcome = replay(runs, strategy, probes, budget, candidates)
            test = outcome["test"] or {}
            recall = test.get("recall@10")
            rows.append({
                "model": model, "seed": seed, "strategy": text, "choice": outcome["winner"],
                "recall@10": recall, "ndcg@10": test.get("ndcg@10"),
                "best_mode": best_mode, "best_recall@10": best["recall@10"],
                "difference_in_se": (recall - best["recall@10"]) / se if recall is not None and se else None,
                "cost": outcome["seconds"] / baseline_seconds if baseline_seconds else None,
                "epochs": {m: r["epochs"] for m, r in outcome["candidates_run"].items()},
                "winner_tested_epoch": outcome["winner_tested_epoch"],
                "real_auto_choice": _real_choice(results, strategy, probes, budget, candidates)})
    return rows


def write_report(rows: List[dict], folder: str) -> str:
    """``auto_replay.md`` (per strategy: every model and seed, then how often within one standard
    error of the best mode, and the cost range) and ``auto_replay.csv``."""
    modes = list(rows[0]["epochs"]) if rows else list(ADAPTATION_MODES)
    short = {"ground_built": "GB", "fine_tune": "FT", "re_learning": "ReL"}
    lines = ["Test Recall@10 of the mode `auto` picks, against the best candidate mode of the same model and "
             "seed (in that mode's standard errors); cost: seconds of all candidate epochs / the "
             f"{MODE_TITLES[modes[0]]} run's. Replayed from the mode runs (`python -m recbole_mm.bench.auto_replay`).",
             ""]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        group = [r for r in rows if r["strategy"] == strategy]
        lines += [f"**{strategy}**", "",
                  f"| model | seed | choice | epochs ({' / '.join(short.get(m, m) for m in modes)}) | "
                  "Recall@10 / NDCG@10 | best mode | − best (SE) | cost |",
                  "| --- | ---: | --- | --- | --- | --- | ---: | ---: |"]
        for r in group:
            figures = (f"{r['recall@10']:.4f} / {r['ndcg@10']:.4f}" if r["recall@10"] is not None else
                       f"unknown: cut after {r['epochs'][r['choice']]} epochs, its run tested epoch "
                       f"{r['winner_tested_epoch'] + 1}")
            real = f" (real run: {MODE_TITLES[r['real_auto_choice']]})" if r["real_auto_choice"] else ""
            diff = f"{r['difference_in_se']:+.1f}" if r["difference_in_se"] is not None else "–"
            cost = f"{r['cost']:.2f}x" if r["cost"] is not None else "–"
            lines.append(f"| {r['model']} | {r['seed'] if r['seed'] is not None else '–'} | "
                         f"{MODE_TITLES[r['choice']]}{real} | {' / '.join(str(r['epochs'][m]) for m in modes)}"
                         f" | {figures} | {MODE_TITLES[r['best_mode']]} {r['best_recall@10']:.4f} | {diff} | {cost} |")
        known = [r for r in group if r["difference_in_se"] is not None]
        within = [r for r in known if r["difference_in_se"] >= -1.0]
        costs = [r["cost"] for r in group if r["cost"] is not None]
        summary = f"Within one standard error of the best mode: {len(within)} of {len(known)} known"
        summary += f" ({len(group) - len(known)} unknown)" if len(known) < len(group) else ""
        if costs:
            spread = f"{min(costs):.2f}x" + (f"–{max(costs):.2f}x" if max(costs) > min(costs) else "")
            summary += f"; cost {spread} a {MODE_TITLES[modes[0]]} run."
        else:
            summary += "."
        lines += ["", summary, ""]
    report = "\n".join(lines)
    write_text_atomic(os.path.join(folder, "auto_replay.md"), report + "\n")
    write_csv_atomic(os.path.join(folder, "auto_replay.csv"),
                     [{**r, "epochs": " / ".join(str(r["epochs"][m]) for m in modes)} for r in rows])
    return report


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a transfer table's --out folder (its <model>-<mode>-seed<seed>.json runs)")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                        help="comma-separated guarded:<auto_budget> or commit:<auto_probe_epochs>")
    parser.add_argument("--probe_epochs", type=int, default=4, help="auto_probe_epochs of the guarded races")
    parser.add_argument("--candidates", default=",".join(ADAPTATION_MODES),
                        help="comma-separated modes auto races (auto_candidates); the first is the guard")
    args = parser.parse_args(argv)
    try:
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        for text in strategies:  # a bad strategy is reported before the folder is looked at
            parse_strategy(text, args.probe_epochs)
        candidates = [m.strip() for m in args.candidates.split(",") if m.strip()]
        unknown = [m for m in candidates if m not in ADAPTATION_MODES]
        if unknown or not candidates:
            raise ValueError(f"--candidates: {unknown or 'none'}; expected some of {list(ADAPTATION_MODES)}")
        if not os.path.isdir(args.folder):
            raise ValueError(f"{args.folder}: no such folder")
        rows = replay_folder(args.folder, strategies, args.probe_epochs, candidates)
        if not rows:
            raise ValueError(f"{args.folder}: no model and seed with a complete run of every candidate mode "
                             f"({', '.join(candidates)}) as <model>-<mode>[-seed<seed>].json")
    except ValueError as err:
        parser.error(str(err))
    print(write_report(rows, args.folder))
    return rows


if __name__ == "__main__":
    main()
