"""Adaptation benchmark: a backbone trained on a source domain, six ways to serve a target domain
from a small labelled target sample (issue 16; docs/multitask.md).

    python -m recbole_mm.preprocess.tabular --preset census_income --src ../shared/datasets/census_income --out dataset
    python -m recbole_mm.bench.adaptation --data=census_income --data_path=dataset \\
        --shifts=sex,citizenship,year --shares=0.01,0.1 --backbones=SharedBottom,MMoE,PLE --seeds=5

For every shift (source -> target data set) and backbone: one source model (``--source_seed``),
and one model trained on the full target training split (the time TAA's speed claim compares
with, and the AUC a full target set gives). Then for every target sample share and seed (the seed
draws the sample, initialises and orders the run):

- ``source as is``: the source model applied to the target test split (no seed: one row);
- ``target only``: the backbone trained from scratch on the sample;
- ``fine-tune``: the source model trained further on the sample (task loss every batch);
- ``public-code equivalent``: what the released TAA/DAA code effectively runs (its critics'
  LogSoftmax over one unit is identically 0): fine-tuning on the sample at every fifth batch
  (TAA with ``adv_weight: 0``);
- ``TAA``, ``DAA``: the adversarial adaptations with their defaults.

Every sample run selects its model on a stratified target validation sample as large as its
training sample, by the mean AUC of the tasks. Each run is kept as ``<out>/<key>.json`` and
skipped when the command runs again (an interrupted run resumes from its last state).
``--report_only`` rewrites the tables from the kept runs. Writes ``<out>/adaptation.md``,
``adaptation_runs.csv`` (one row per run), ``adaptation_summary.csv`` and ``adaptation_auc.png``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np

from recbole_mm.bench.runs import cached_run, parse_entry, parse_overrides
from recbole_mm.fileio import write_csv_atomic, write_figure_atomic, write_text_atomic
from recbole_mm.utils import quiet_known_warnings

SETTINGS = OrderedDict([
    ("as_is", "source model as is"),
    ("target_only", "target only"),
    ("fine_tune", "fine-tune"),
    ("public_code", "public-code equivalent"),
    ("TAA", "TAA"),
    ("DAA", "DAA"),
])
FULL_TARGET = "full target (reference)"
REFERENCES = ("as_is", "full_target")  # the one-run rows of a (shift, backbone)
METRICS = ("ctr_auc", "ctcvr_auc", "mean_auc", "ctr_logloss", "ctcvr_logloss")
CENSUS_SHIFTS = ("sex", "citizenship", "year")


def shift_datasets(data: str, shift: str) -> Tuple[str, str]:
    """(source, target) data set names of a shift: ``census_<shift>_src`` / ``_tgt`` for
    census_income, ``<source>:<target>`` as given otherwise (``AE_SRC:AE_TGT``)."""
    if data == "census_income":
        return f"census_{shift}_src", f"census_{shift}_tgt"
    if ":" not in shift:
        raise ValueError(f"--shifts: {shift!r} is no source:target pair of data set names (or use --data=census_income)")
    source, target = shift.split(":", 1)
    return source, target


def setting_key(entry: str) -> str:
    """A setting's part of a run's file name (``TAA:adv_weight=0.1`` -> ``TAA+adv_weight-0.1``)."""
    return entry.replace(":", "+").replace("=", "-")


def setting_label(key: str) -> str:
    name, *pairs = key.split("+")
    return SETTINGS.get(name, name) + (f" ({', '.join(p.replace('-', '=', 1) for p in pairs)})" if pairs else "")


def run_key(shift: str, backbone: str, *parts: str) -> str:
    """A run's file name: shift (``AE_SRC:AE_TGT`` -> ``AE_SRC_to_AE_TGT``), backbone and the run's
    parts (``source``, ``as_is``, ``full_target``, or share, setting and seed), joined by ``__``
    (what :func:`run_rows` splits)."""
    return "__".join((shift.replace(":", "_to_"), backbone) + parts)


def check_census(data_path: str, shifts: List[str]) -> None:
    """Exit with the conversion command when ``data_path`` lacks a census split."""
    for shift in shifts:
        if not os.path.isdir(os.path.join(data_path, f"census_{shift}_tgt")):
            raise SystemExit(f"error: {data_path} holds no census_{shift}_tgt; convert census_income first: "
                             f"python -m recbole_mm.preprocess.tabular --preset census_income "
                             f"--src ../shared/datasets/census_income --out {data_path}")


def fit_seconds(result: dict) -> float:
    """Training plus validation time of a run (what adapting costs; data loading left out)."""
    return float(sum(result.get("train_epoch_seconds") or []) + sum(result.get("eval_seconds") or []))


class Plan:
    """The runs of the benchmark and their configurations."""

    def __init__(self, args, shared: dict):
        self.args, self.shared = args, shared
        self.seeds = [args.first_seed + i for i in range(args.seeds)]

    def sample_config(self, share: float, seed: int) -> dict:
        return {**self.shared, "train_sample_ratio": share, "seed": seed, "valid_sample": "same_as_train",
                "train_batch_size": self.args.batch_size, "epochs": self.args.adapt_epochs,
                "stopping_step": self.args.stopping_step}

    def setting_run(self, entry: str, backbone: str, source: str, checkpoint: str, share: float, seed: int):
        """(model, config) of one sample run; ``entry`` a setting, optionally with config overrides
        of its own (``TAA:adversarial_loss=domain_classifier``)."""
        setting, overrides = parse_entry(entry)
        base = self.sample_config(share, seed)
        tuned = {"learning_rate": self.args.adapt_learning_rate, "weight_decay": self.args.adapt_weight_decay}
        adapter = {**base, "backbone": backbone, "source_checkpoint": checkpoint, "source_dataset": source}
        runs = {
            "target_only": (backbone, base),
            "fine_tune": (backbone, {**base, **tuned, "init_checkpoint": checkpoint}),
            "public_code": ("TAA", {**adapter, "adv_weight": 0.0}),
            "TAA": ("TAA", adapter),
            "DAA": ("DAA", adapter),
        }
        model, config = runs[setting]
        return model, {**config, **overrides}

    def run_all(self) -> None:
        args = self.args
        for backbone in args.backbones:  # a backbone's table over every shift first
            for shift in args.shifts:
                source, target = shift_datasets(args.data, shift)
                src = cached_run(args.out, run_key(shift, backbone, "source"), backbone, source,
                                 {**self.shared, "seed": args.source_seed})
                if "error" in src:
                    continue
                checkpoint = src["checkpoint"]
                cached_run(args.out, run_key(shift, backbone, "as_is"), backbone, target,
                           {**self.shared, "init_checkpoint": checkpoint, "epochs": 0})
                if args.full_target:
                    cached_run(args.out, run_key(shift, backbone, "full_target"), backbone, target,
                               {**self.shared, "seed": args.source_seed})
                for share in args.shares:
                    for seed in self.seeds:
                        for setting in args.settings:
                            if setting == "as_is":
                                continue
                            model, config = self.setting_run(setting, backbone, source, checkpoint, share, seed)
                            cached_run(args.out, run_key(shift, backbone, f"{share:g}", setting_key(setting), f"seed{seed}"), model,
                                       target, config)


# ----- the tables -------------------------------------------------------------------------------
def load_results(out: str) -> Dict[str, dict]:
    results = {}
    for path in glob.glob(os.path.join(out, "*.json")):
        with open(path, encoding="utf-8") as f:
            results[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
    return results


def run_rows(results: Dict[str, dict]) -> List[dict]:
    """One row per kept run: shift, backbone, share, setting, seed, test metrics, epochs, seconds."""
    rows = []
    for key, result in sorted(results.items()):
        parts = key.split("__")
        test = result.get("test_result") or {}
        row = {"shift": parts[0], "backbone": parts[1]}
        if len(parts) == 3 and parts[2] in REFERENCES:
            row.update(share=1.0 if parts[2] == "full_target" else 0.0, setting=parts[2], seed="")
        elif len(parts) == 5:
            row.update(share=float(parts[2]), setting=parts[3], seed=int(parts[4].replace("seed", "")))
        else:
            continue  # the source models
        row.update({m: test.get(m) for m in METRICS})
        row.update(epochs=result.get("epochs_trained"), fit_seconds=round(fit_seconds(result), 2))
        rows.append(row)
    return rows


def references(rows: List[dict], setting: str) -> Dict[Tuple[str, str], dict]:
    """The ``as_is`` or ``full_target`` row of every (shift, backbone)."""
    return {(r["shift"], r["backbone"]): r for r in rows if r["setting"] == setting}


def mean_std(values: List[float]) -> Tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def _ratio(gain: float, std: float, n: int) -> float:
    """``gain / std``, or NaN with fewer than 3 seeds (a std of 2 values says little) or no spread."""
    return gain / std if n >= 3 and std > 1e-12 else float("nan")


def summary_rows(rows: List[dict]) -> List[dict]:
    """Mean and sample std over seeds per (shift, backbone, share, setting); for TAA and DAA, the
    per-seed paired gain in mean AUC over fine-tuning (same seed: same sample) in units of its std,
    and the gain over the source model as is in units of the method's std."""
    groups: Dict[tuple, List[dict]] = OrderedDict()
    for row in rows:
        if row["setting"] in REFERENCES:
            continue
        groups.setdefault((row["shift"], row["backbone"], row["share"], row["setting"]), []).append(row)
    as_is, full = references(rows, "as_is"), references(rows, "full_target")
    out = []
    order = list(SETTINGS)
    for (shift, backbone, share, setting), group in sorted(
            groups.items(), key=lambda item: (item[0][0], item[0][1], item[0][2],
                                              order.index(item[0][3].split("+")[0]), item[0][3])):
        summary = {"shift": shift, "backbone": backbone, "share": share, "setting": setting, "n": len(group)}
        for metric in METRICS + ("fit_seconds", "epochs"):
            summary[metric], summary[f"{metric}_std"] = mean_std([r[metric] for r in group])
        source = as_is.get((shift, backbone))
        fine_tune = {r["seed"]: r for r in groups.get((shift, backbone, share, "fine_tune"), [])}
        if setting.split("+")[0] in ("TAA", "DAA"):
            gains = [r["mean_auc"] - fine_tune[r["seed"]]["mean_auc"] for r in group if r["seed"] in fine_tune]
            gain, gain_std = mean_std(gains)
            summary["gain_vs_fine_tune"] = gain
            summary["z_vs_fine_tune"] = _ratio(gain, gain_std, len(gains))
            if source:
                summary["gain_vs_as_is"] = summary["mean_auc"] - source["mean_auc"]
                std = summary["mean_auc_std"]
                summary["z_vs_as_is"] = _ratio(summary["gain_vs_as_is"], std, len(group))
        reference = full.get((shift, backbone))
        if reference:
            summary["full_target_fit_seconds"] = reference["fit_seconds"]
        out.append(summary)
    columns = list(OrderedDict((k, None) for row in out for k in row))
    return [{c: row.get(c) for c in columns} for row in out]


def _pm(mean: float, std: float) -> str:
    return "–" if mean != mean else f"{mean:.4f} ± {std:.4f}"


def _z(value) -> str:
    return "" if value is None else ("–" if value != value else f"{value:+.1f}")


def markdown(rows: List[dict], summary: List[dict], seeds: int) -> str:
    as_is, full = references(rows, "as_is"), references(rows, "full_target")
    lines = [f"Test split of the target; mean ± std over seeds ({seeds} per cell unless `n` says fewer). "
             "`z FT`: TAA/DAA's per-seed gain in mean AUC over fine-tuning on the same sample, in units of "
             "that gain's std; `z src`: gain over the source model as is, in units of the method's std. "
             "`fit s`: training + validation seconds (the full-target row: training on all target rows).", ""]
    keys = OrderedDict((s["shift"], None) for s in summary)
    for shift in keys:
        lines += [f"### shift {shift}", "",
                  "| backbone | share | setting | n | CTR AUC | CTCVR AUC | mean AUC | CTR LogLoss | CTCVR LogLoss "
                  "| epochs | fit s | z FT | z src |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        backbones = OrderedDict((s["backbone"], None) for s in summary if s["shift"] == shift)
        for backbone in backbones:
            for reference, label in ((as_is.get((shift, backbone)), SETTINGS["as_is"]),
                                     (full.get((shift, backbone)), FULL_TARGET)):
                if reference:
                    lines.append(f"| {backbone} | {'–' if reference['setting'] == 'as_is' else '100%'} | {label} | 1 | "
                                 + " | ".join(f"{reference[m]:.4f}" for m in METRICS)
                                 + f" | {reference['epochs']} | {reference['fit_seconds']:.1f} | | |")
            for s in (s for s in summary if s["shift"] == shift and s["backbone"] == backbone):
                z_ft = s.get("z_vs_fine_tune")
                z_src = s.get("z_vs_as_is")
                lines.append(f"| {backbone} | {s['share']:.0%} | {setting_label(s['setting'])} | {s['n']} | "
                             + " | ".join(_pm(s[m], s[f'{m}_std']) for m in METRICS)
                             + f" | {s['epochs']:.1f} | {s['fit_seconds']:.1f} | "
                             + f"{_z(z_ft)} | {_z(z_src)} |")
        lines.append("")
    return "\n".join(lines)


GOAL_Z = 2.0  # issue 16's goal: TAA or DAA above fine-tuning and the source model by more than 2 sd


def goal_rows(rows: List[dict], summary: List[dict]) -> List[dict]:
    """Per (shift, backbone, share): the source model as is, fine-tuning and TAA / DAA (their plain
    settings) with their z against both, and whether either clears both by more than ``GOAL_Z``."""
    as_is = references(rows, "as_is")
    cells: Dict[tuple, Dict[str, dict]] = OrderedDict()
    for s in summary:
        cells.setdefault((s["shift"], s["backbone"], s["share"]), {})[s["setting"]] = s
    out = []
    for (shift, backbone, share), by_setting in cells.items():
        row = {"shift": shift, "backbone": backbone, "share": share,
               "source": as_is.get((shift, backbone), {}).get("mean_auc"),
               "fine_tune": by_setting.get("fine_tune", {}).get("mean_auc")}
        met = False
        for method in ("TAA", "DAA"):
            s = by_setting.get(method)
            if s is None:
                continue
            row[method] = s["mean_auc"]
            row[f"{method}_z_fine_tune"] = s.get("z_vs_fine_tune", float("nan"))
            row[f"{method}_z_source"] = s.get("z_vs_as_is", float("nan"))
            met = met or (row[f"{method}_z_fine_tune"] > GOAL_Z and row[f"{method}_z_source"] > GOAL_Z)
        row["met"] = met
        out.append(row)
    return out


def goal_markdown(goals: List[dict]) -> str:
    """The goal check as a table: one row per (shift, backbone, share)."""
    def method_cell(row, method):
        if method not in row:
            return "–"
        return (f"{row[method]:.4f} ({_z(row[f'{method}_z_fine_tune'])} / {_z(row[f'{method}_z_source'])})")

    lines = ["### Goal check: TAA or DAA above fine-tuning and the source model by more than 2 sd", "",
             "Mean AUC; in brackets z against fine-tuning (paired) / against the source model as is.", "",
             "| shift | backbone | share | source as is | fine-tune | TAA | DAA | met |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in goals:
        source, fine_tune = ("–" if row[k] is None else f"{row[k]:.4f}" for k in ("source", "fine_tune"))
        lines.append(f"| {row['shift']} | {row['backbone']} | {row['share']:.0%} | {source} | {fine_tune} | "
                     f"{method_cell(row, 'TAA')} | {method_cell(row, 'DAA')} | {'yes' if row['met'] else 'no'} |")
    return "\n".join(lines)


def plot(rows: List[dict], summary: List[dict], path: str) -> Optional[str]:
    """Mean AUC (± std) against the target sample share: a grid of panels, one row per shift and
    one column per backbone."""
    if not summary:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shifts = list(OrderedDict((s["shift"], None) for s in summary))
    backbones = list(OrderedDict((s["backbone"], None) for s in summary))
    fig, grid = plt.subplots(len(shifts), len(backbones), figsize=(4.2 * len(backbones), 3.4 * len(shifts)),
                             squeeze=False)
    panels = [(shift, backbone) for shift in shifts for backbone in backbones]
    for ax, (shift, backbone) in zip(grid.flat, panels):
        shown = []  # the values the y-axis is fitted to: every setting but target-only training
        for setting, label in SETTINGS.items():
            points = sorted((s["share"], s["mean_auc"], s["mean_auc_std"]) for s in summary
                            if (s["shift"], s["backbone"], s["setting"]) == (shift, backbone, setting))
            if points:
                x, y, e = zip(*points)
                ax.errorbar(x, y, yerr=e, marker="o", markersize=3, capsize=2, label=label)
                if setting != "target_only":
                    shown += [v - d for v, d in zip(y, e)] + [v + d for v, d in zip(y, e)]
        for r in rows:
            if (r["shift"], r["backbone"]) == (shift, backbone) and r["setting"] in REFERENCES:
                style = ":" if r["setting"] == "as_is" else "--"
                ax.axhline(r["mean_auc"], linestyle=style, color="grey", linewidth=1,
                           label=SETTINGS["as_is"] if r["setting"] == "as_is" else FULL_TARGET)
                shown.append(r["mean_auc"])
        if not ax.lines:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
        elif shown:  # target-only training lies far below the others: fit the axis to the rest
            low, high = min(shown), max(shown)
            margin = max(0.002, 0.1 * (high - low))
            ax.set_ylim(low - margin, high + margin)
            ax.text(0.02, 0.02, "target only: below, if not shown", fontsize=6, transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_xlabel("target sample share")
        ax.set_ylabel("test mean AUC")
        ax.set_title(f"{shift} / {backbone}")
    grid[0][0].legend(fontsize=7)
    fig.tight_layout()
    write_figure_atomic(fig, path)
    plt.close(fig)
    return path


def write_report(out: str, seeds: int) -> str:
    rows = run_rows(load_results(out))
    summary = summary_rows(rows)
    table = markdown(rows, summary, seeds)
    if summary:
        table += "\n" + goal_markdown(goal_rows(rows, summary)) + "\n"
    write_text_atomic(os.path.join(out, "adaptation.md"), table + "\n")
    write_csv_atomic(os.path.join(out, "adaptation_runs.csv"), rows)
    if summary:
        write_csv_atomic(os.path.join(out, "adaptation_summary.csv"), summary)
        plot(rows, summary, os.path.join(out, "adaptation_auc.png"))
    return table


def main(argv=None) -> str:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="census_income", help="census_income, or any: then --shifts are "
                        "source:target data set names (e.g. AE_SRC:AE_TGT)")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--shifts", default=",".join(CENSUS_SHIFTS))
    parser.add_argument("--shares", default="0.01,0.1", help="target sample shares")
    parser.add_argument("--backbones", default="SharedBottom,MMoE,PLE")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"of {', '.join(SETTINGS)}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first_seed", type=int, default=2020)
    parser.add_argument("--source_seed", type=int, default=2020, help="seed of the source and full-target models")
    parser.add_argument("--batch_size", type=int, default=64, help="training batch of the sample runs")
    parser.add_argument("--adapt_epochs", type=int, default=50, help="upper bound for the sample runs")
    parser.add_argument("--stopping_step", type=int, default=5)
    parser.add_argument("--adapt_learning_rate", type=float, default=1e-4, help="fine-tuning (TAA/DAA's own default)")
    parser.add_argument("--adapt_weight_decay", type=float, default=1e-3, help="fine-tuning (TAA/DAA's own default)")
    parser.add_argument("--no_full_target", dest="full_target", action="store_false",
                        help="skip the full-target reference training")
    parser.add_argument("--out", default="results/adaptation")
    parser.add_argument("--report_only", action="store_true", help="rewrite the tables from the kept runs")
    args, extra = parser.parse_known_args(argv)
    args.shifts = args.shifts.split(",")
    args.shares = [float(s) for s in args.shares.split(",")]
    args.backbones = args.backbones.split(",")
    args.settings = args.settings.split(",")
    unknown = [s for s in args.settings if s.split(":")[0] not in SETTINGS]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; expected of {list(SETTINGS)}")
    os.makedirs(args.out, exist_ok=True)
    if not args.report_only:
        if args.data == "census_income":
            check_census(args.data_path, args.shifts)
        shared = {"data_path": args.data_path, "state": "WARNING", "show_progress": False, **parse_overrides(extra)}
        Plan(args, shared).run_all()
    table = write_report(args.out, args.seeds)
    print(table)
    return table


if __name__ == "__main__":
    main()
