"""Argument handling of `run_recbole_mm.py` and `python -m recbole_mm` (RecBole's CLI habits)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import yaml

from recbole_mm.data.synthetic import DEFAULT_SYNTHETIC
from recbole_mm.runner import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recbole_mm or RecBole model. Any other --key=value "
        "overrides a config key (RecBole style).",
    )
    parser.add_argument("--model", "-m", default="ANT", help="model name (plugin first, then RecBole)")
    parser.add_argument("--dataset", "-d", default=None,
                        help=f"data set name; A,B,C = several domains (--stage=pretrain); default: the "
                             f"config files' `dataset`, else {DEFAULT_SYNTHETIC}")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, later wins")
    parser.add_argument("--nproc", type=int, default=1, help="processes for torch.distributed training")
    parser.add_argument("--port", type=int, default=29533, help="TCP port of the distributed rendezvous")
    return parser


def main(argv: Optional[List[str]] = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, _ = build_parser().parse_known_args(argv)
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    dataset = args.dataset
    if dataset is None and not _files_name_dataset(config_files):
        dataset = DEFAULT_SYNTHETIC

    sys.argv = [sys.argv[0]] + list(argv)
    result = run(args.model, dataset, config_file_list=config_files, read_command_line=True,
                 nproc=args.nproc, port=args.port)
    if result.get("pretrained_model"):  # a stock model's pre-training stage (S3Rec)
        print(f"pre-trained model: {result['pretrained_model']}")
    elif result.get("stage") == "pretrain":
        print(f"pre-training loss per epoch: {[round(r['total'], 4) for r in result['pretrain_loss']]}")
        print(f"transferable checkpoint: {result['checkpoint']}")
    else:
        print(f"best valid ({result['valid_metric']}): {result['best_valid_result']}")
        print(f"test: {result['test_result']}")
    print(f"results written to {result.get('results_file')}")
    return result


def _files_name_dataset(config_files: Optional[List[str]]) -> bool:
    """Whether one of the YAML files sets `dataset` (a name or a list of domains)."""
    for path in config_files or []:
        with open(path, "r", encoding="utf-8") as f:
            if "dataset" in (yaml.safe_load(f) or {}):
                return True
    return False
