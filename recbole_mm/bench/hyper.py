"""Hyper-parameter search as RecBole users know it: RecBole's ``HyperTuning`` (a params file;
exhaustive, random or Bayesian search) with the plugin's runner as the objective,
so plugin models and stock RecBole baselines are tuned the same way, on the same data and
evaluation (docs/tuning.md)::

    python -m recbole_mm.bench.hyper --model=ANT --dataset=Scientific --data_path=../shared/datasets \\
        --params_file=properties/hyper/ANT.hyper --algo=exhaustive

The params file is RecBole's: one line per key, ``<key> choice [v1,v2,...]``,
``<key> uniform low,high``, ``<key> loguniform low,high`` or ``<key> quniform low,high,q``. Every
other ``--key=value`` is fixed for every trial. Each trial is a run of the runner (its log, results
JSON and training curve in ``log/<Model>/``); ``--out`` (default ``results/hyper/<Model>-<dataset>``)
receives ``hyper.result`` (RecBole's export), ``best.json``, a copy of every trial's results JSON
under ``trials/`` and the table of all trials, ``report.md`` / ``report.csv``
(:mod:`recbole_mm.bench.report`; the tuned keys are its columns). Needs ``pip install hyperopt``
(the ``tune`` extra).

``random`` and ``bayes`` are RecBole's (hyperopt's ``rand`` and ``tpe``). ``exhaustive`` runs
every combination of the ``choice`` (and ``quniform``) values once, in the order written:
RecBole 1.2.1's own exhaustive sampler draws from a ``numpy.random.RandomState``, which hyperopt
>= 0.2.7 no longer accepts, and the hyperopt it pins (0.2.5) imports ``pkg_resources``, which
current setuptools no longer has. ``early_stop`` ends a search after that many trials without a
better validation score, as in RecBole.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import shutil
from typing import Callable, Dict, List, Optional

import numpy as np
from recbole.trainer.hyper_tuning import HyperTuning

from recbole_mm.bench.report import report
from recbole_mm.bench.runs import parse_overrides
from recbole_mm.fileio import write_json_atomic
from recbole_mm.runner import run_single
from recbole_mm.utils import quiet_known_warnings

ALGORITHMS = ("exhaustive", "random", "bayes")


def _plain_params(params: Dict) -> Dict:
    """hyperopt's values as the config expects them: ``quniform`` gives floats, 128.0 -> 128."""
    return {key: int(value) if isinstance(value, float) and value.is_integer() else value
            for key, value in params.items()}


def search_grid(params_file: Optional[str] = None, params_dict: Optional[Dict] = None) -> List[Dict]:
    """Every combination of a search space's values, in the order written: ``choice`` lists, and
    ``quniform low,high,q`` as low, low + q, ..., high. ``uniform`` / ``loguniform`` have no grid:
    the error says to search them with ``random`` or ``bayes``."""
    spec: Dict[str, tuple] = {}
    if params_file:
        with open(params_file, "r", encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                parts = line.strip().split(" ")
                if len(parts) < 3:
                    continue
                name, kind, value = parts[0], parts[1], "".join(parts[2:])
                try:
                    spec[name] = (kind, ast.literal_eval(value) if kind == "choice" else
                                  [float(v) for v in value.split(",")])
                except (ValueError, SyntaxError):
                    raise ValueError(f"{params_file}, line {line_no}: cannot read the values {value!r} of "
                                     f"{name} ({kind})") from None
    for kind, entries in (params_dict or {}).items():
        spec.update({name: (kind, values) for name, values in entries.items()})
    values = {}
    for name, (kind, value) in spec.items():
        if kind == "choice":
            values[name] = list(value)
        elif kind == "quniform":
            low, high, step = value
            values[name] = [float(v) for v in np.arange(low, high + step / 2, step)]
        else:
            raise ValueError(f"exhaustive search needs a finite set of values; {name} is {kind}: use "
                             f"choice / quniform, or --algo=random / --algo=bayes")
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def objective(model: str, dataset: str, overrides: Dict, out: str) -> Callable:
    """RecBole's objective-function contract (``config_dict``, ``config_file_list``, ``saved``) ->
    ``model``, ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``,
    fulfilled by one run of the plugin's runner per trial."""
    trials = os.path.join(out, "trials")

    def objective_function(config_dict=None, config_file_list=None, saved=True) -> Dict:
        settings = {"checkpoint_dir": os.path.join(out, "saved"), **overrides, **_plain_params(config_dict or {})}
        result = run_single(model, dataset, config_file_list, settings, saved)
        os.makedirs(trials, exist_ok=True)
        shutil.copy(result["results_file"], os.path.join(trials, f"{len(os.listdir(trials)):03d}.json"))
        return {"model": model, "best_valid_score": result["best_valid_score"],
                "valid_score_bigger": result["valid_metric_bigger"], "best_valid_result": result["best_valid_result"],
                "test_result": result["test_result"], "results_file": result["results_file"]}

    return objective_function


def tune(model: str, dataset: str, params_file: Optional[str] = None, params_dict: Optional[Dict] = None,
         overrides: Optional[Dict] = None, config_files: Optional[List[str]] = None, algo: str = "exhaustive",
         max_evals: int = 100, early_stop: int = 10, out: Optional[str] = None) -> Dict:
    """Run the search; write the outputs of the module docstring; return ``best.json``'s content."""
    if algo not in ALGORITHMS:
        raise ValueError(f"--algo must be one of {list(ALGORITHMS)}, got {algo!r}")
    if params_file and not os.path.isfile(params_file):
        raise FileNotFoundError(f"--params_file {params_file} not found")
    out = out or os.path.join("results", "hyper", f"{model}-{dataset}")
    os.makedirs(out, exist_ok=True)
    hyper = HyperTuning(objective(model, dataset, dict(overrides or {}), out), params_file=params_file,
                        params_dict=params_dict, fixed_config_file_list=config_files,
                        algo="random" if algo == "exhaustive" else algo, max_evals=max_evals, early_stop=early_stop)
    if algo == "exhaustive":
        best_loss, without_progress = None, 0
        for params in search_grid(params_file, params_dict):
            loss = hyper.trial(params)["loss"]
            best_loss, without_progress = (loss, 0) if best_loss is None or loss < best_loss else \
                (best_loss, without_progress + 1)
            if without_progress >= early_stop:
                break
    else:
        hyper.run()
    hyper.export_result(output_file=os.path.join(out, "hyper.result"))
    best = hyper.params2result[hyper.params2str(hyper.best_params)]
    summary = {"model": model, "dataset": dataset, "algo": algo, "trials": len(hyper.params2result),
               "best_params": _plain_params(hyper.best_params), "best_valid_score": best["best_valid_score"],
               "best_valid_result": best["best_valid_result"], "test_result": best["test_result"],
               "results_file": best["results_file"], "fixed": overrides or {}, "config_files": config_files}
    write_json_atomic(os.path.join(out, "best.json"), summary)
    report(out)
    print(f"best parameters: {summary['best_params']} (valid {summary['best_valid_score']:.4f}); "
          f"test: {summary['test_result']}")
    return summary


def main(argv=None) -> Dict:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", "-m", required=True, help="plugin or stock RecBole model")
    parser.add_argument("--dataset", "-d", default="mm_synthetic")
    parser.add_argument("--params_file", required=True, help="RecBole's params file: <key> choice [a,b] per line")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every trial")
    parser.add_argument("--algo", default="exhaustive", choices=ALGORITHMS,
                        help="exhaustive (every combination), random or bayes (hyperopt's TPE)")
    parser.add_argument("--max_evals", type=int, default=100, help="trials of random / bayes")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without improvement")
    parser.add_argument("--out", default=None, help="output folder (default results/hyper/<model>-<dataset>)")
    args, extra = parser.parse_known_args(argv)
    files = args.config_files.split() if args.config_files else None
    return tune(args.model, args.dataset, args.params_file, overrides=parse_overrides(extra), config_files=files,
                algo=args.algo, max_evals=args.max_evals, early_stop=args.early_stop, out=args.out)


if __name__ == "__main__":
    main()
