"""Argument handling of `run_recbole_mm.py` and `python -m recbole_mm` (RecBole's CLI habits)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import List, Optional

import yaml

from recbole_mm.checkpoint import CheckpointError
from recbole_mm.config import (
    RECBOLE_PROPERTIES_DIR,
    ConfigError,
    plugin_model_yaml_files,
    read_config_file,
    yaml_key_docs,
)
from recbole_mm.data.atomic_files import DataFileError
from recbole_mm.data.synthetic import DEFAULT_SYNTHETIC
from recbole_mm.fileio import DiskFullError
from recbole_mm.resources import plugin_yaml, properties_dir
from recbole_mm.runner import run
from recbole_mm.utils import MODEL_ALIASES, get_model, quiet_known_warnings


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser; its ``--help`` lists the config keys of the plugin (and of the model and data
    set named in ``argv``) with their defaults and comments."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recbole_mm or RecBole model. Any other --key=value "
        "overrides a config key (RecBole style); list keys also take a,b (--modalities=text,image).",
        epilog=keys_help(argv or []),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", default="ANT", help="model name (plugin first, then RecBole)")
    parser.add_argument("--dataset", "-d", default=None,
                        help=f"data set name; A,B,C = several domains (--stage=pretrain); default: the "
                             f"config files' `dataset`, else {DEFAULT_SYNTHETIC}")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, later wins")
    parser.add_argument("--nproc", type=int, default=1, help="processes for torch.distributed training")
    parser.add_argument("--port", type=int, default=29533, help="TCP port of the distributed rendezvous")
    parser.add_argument("--world_size", type=int, default=None,
                        help="several machines: all processes of all machines (default: --nproc)")
    parser.add_argument("--ip", default="127.0.0.1", help="several machines: address of machine 0 (the rendezvous)")
    parser.add_argument("--group_offset", type=int, default=0,
                        help="several machines: global rank of this machine's first process")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an input error (also with --state=DEBUG)")
    return parser


# errors of the user's input (config files and values, data files): one `error:` line, no traceback
INPUT_ERRORS = (ConfigError, DataFileError, CheckpointError, DiskFullError, FileNotFoundError)


def _format_value(value) -> str:
    if value is None:
        return "~"
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return str(value)


def _yaml_section(title: str, path: str) -> List[str]:
    docs = yaml_key_docs(path) if os.path.isfile(path) else []
    if not docs:
        return []
    shown = "properties/" + os.path.relpath(path, properties_dir())
    if path.startswith(RECBOLE_PROPERTIES_DIR):
        shown = "recbole/properties/" + os.path.relpath(path, RECBOLE_PROPERTIES_DIR)
    lines = [f"{title} ({shown}):"]
    for key, value, comment in docs:
        lines.append(textwrap.fill(comment or "", width=100, initial_indent=f"  --{key}={_format_value(value)}  ",
                                   subsequent_indent=" " * 8) if comment else f"  --{key}={_format_value(value)}")
    return lines + [""]


def keys_help(argv: List[str]) -> str:
    """Help text: the plugin's keys (properties/overall.yaml), then those of the model named in
    ``argv`` (default ANT; the plugin's YAML, or RecBole's for a stock model) and of its data set."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--model", "-m", default="ANT")
    probe.add_argument("--dataset", "-d", default=None)
    args, _ = probe.parse_known_args(argv)
    sections = _yaml_section("plugin keys, every run", plugin_yaml("overall.yaml"))
    try:
        model_class = get_model(args.model)
    except ValueError:
        model_class = None
    name = MODEL_ALIASES.get(args.model, args.model)
    if model_class is not None and model_class.__module__.startswith("recbole_mm."):
        for path in plugin_model_yaml_files(name, model_class):
            sections += _yaml_section(f"model keys of {os.path.basename(path)[:-5]}", path)
    elif model_class is not None:
        sections += _yaml_section(f"RecBole's model keys of {model_class.__name__}",
                                  os.path.join(RECBOLE_PROPERTIES_DIR, "model", f"{model_class.__name__}.yaml"))
    if args.dataset:
        sections += _yaml_section(f"data set keys of {args.dataset}", plugin_yaml("dataset", f"{args.dataset}.yaml"))
    sections.append("RecBole's own keys (epochs, learning_rate, train_batch_size, eval_step, gpu_id, seed, ...) "
                    "work as in RecBole: https://recbole.io/docs/user_guide/config_settings.html")
    return "\n".join(sections)


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the command line; an input error (:data:`INPUT_ERRORS`) prints one ``error: ...`` line to
    stderr and exits with status 2, with its traceback only under ``--debug`` or ``--state=DEBUG``."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_known_warnings()
    args, _ = build_parser(argv).parse_known_args(argv)
    try:
        return _run(args, [a for a in argv if a != "--debug"])
    except INPUT_ERRORS as err:
        if args.debug or _debug_state(argv, args.config_files):
            raise
        message = err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(args: argparse.Namespace, argv: List[str]) -> dict:
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (processes on this machine), got {args.nproc}")
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    dataset = args.dataset
    if dataset is None and not _files_name_dataset(config_files):
        dataset = DEFAULT_SYNTHETIC

    sys.argv = [sys.argv[0]] + list(argv)
    result = run(args.model, dataset, config_file_list=config_files, read_command_line=True,
                 nproc=args.nproc, port=args.port, world_size=args.world_size,
                 ip=args.ip, group_offset=args.group_offset)
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


def _debug_state(argv: List[str], config_files: Optional[str]) -> bool:
    """Whether the run asks for RecBole's ``state: DEBUG`` (command line or a readable config file)."""
    states = []
    for path in (config_files or "").split():
        try:
            states.append(read_config_file(path).get("state"))
        except ConfigError:
            continue
    states += [a.split("=", 1)[1] for a in argv if a.startswith("--state=")]  # the command line wins
    return bool(states) and str(states[-1]).upper() == "DEBUG"


def _files_name_dataset(config_files: Optional[List[str]]) -> bool:
    """Whether one of the YAML files sets `dataset` (a name or a list of domains)."""
    return any("dataset" in read_config_file(path) for path in config_files or [])
