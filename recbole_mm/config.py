"""The plugin's Config: layered YAML, plugin model lookup, unknown-key check, gloo on CPU.

Layers, later wins (RecBole's own defaults sit underneath all of them)::

    properties/overall.yaml < properties/model/<Model>.yaml < properties/dataset/<dataset>.yaml
      < user YAML files (in the order given) < config_dict < command line (--key=value)
"""

from __future__ import annotations

import difflib
import functools
import glob
import os
from typing import Iterable, List, Optional, Sequence, Set, Tuple

import recbole
import torch
import yaml
from recbole.config import Config
from recbole.utils import ModelType

from recbole_mm.fileio import progress_on_terminal
from recbole_mm.resources import plugin_yaml, properties_dir
from recbole_mm.utils import get_model

RECBOLE_PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.abspath(recbole.__file__)), "properties")

# keys that RecBole or the runner set or read without declaring them in a YAML file
RUNTIME_KEYS = {
    "model", "dataset", "config_files", "nproc", "world_size", "ip", "port", "offset", "local_rank",
    "group_offset", "single_spec", "device", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type",
    "train_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args", "eval_neg_sample_args",
    "neg_sampling", "eval_setting", "data_path", "benchmark_filename", "additional_feat_suffix",
    "save_dataset", "save_dataloaders", "saved", "stage", "results_dir",
}


STAGES = ("train", "pretrain")
ADAPTATION_MODES = ("ground_built", "fine_tune", "re_learning")
# `auto`: choose among ADAPTATION_MODES by validation score (runner, docs/transfer.md)
ADAPTATION_CHOICES = ADAPTATION_MODES + ("auto",)
# adaptation auto: guarded = ground-built always trains to its end (never worse by validation);
# commit = every candidate is probed, then only the leader trains on (cheaper, no guard)
AUTO_STRATEGIES = ("guarded", "commit")


def check_choice(key: str, value, allowed: Sequence[str]) -> None:
    """``ValueError`` naming the config key, its value and the allowed values unless ``value`` is one."""
    if value not in allowed:
        raise ValueError(f"config key `{key}` must be one of {list(allowed)}, got {value!r}")


def adaptation_mode(config) -> str:
    """Config key ``adaptation`` (unset = ``ground_built``), checked."""
    mode = config["adaptation"] or "ground_built"
    check_choice("adaptation", mode, ADAPTATION_CHOICES)
    return mode


def check_stage_keys(config) -> None:
    """Validate ``stage`` and ``adaptation`` (unset = train / ground_built)."""
    check_choice("stage", config["stage"] or "train", STAGES)
    adaptation_mode(config)


def _yaml_contents(paths: Iterable[str]) -> List[dict]:
    contents = []
    for path in paths:
        with open(path, "r", encoding="utf-8") as f:
            content = yaml.safe_load(f) or {}
        if isinstance(content, dict):
            contents.append(content)
    return contents


def _all_yaml_files() -> List[str]:
    files = glob.glob(os.path.join(RECBOLE_PROPERTIES_DIR, "**", "*.yaml"), recursive=True)
    return files + glob.glob(os.path.join(properties_dir(), "**", "*.yaml"), recursive=True)


def known_config_keys() -> Set[str]:
    """Every key that some RecBole or plugin YAML file declares, plus runtime keys."""
    return {key for content in _yaml_contents(_all_yaml_files()) for key in content} | RUNTIME_KEYS


@functools.lru_cache(maxsize=1)
def list_config_keys() -> Set[str]:
    """Keys whose value is a list in some RecBole or plugin YAML file (``modalities``, ``metrics``,
    ``topk``, ...): on the command line they may also be written ``a,b``."""
    return {key for content in _yaml_contents(_all_yaml_files()) for key, value in content.items()
            if isinstance(value, list)}


def parse_list_value(value) -> list:
    """A list key's command-line value as a list: ``text,image``, ``[text, image]`` (RecBole's
    Python-literal form, quotes optional) and ``(10, 50)`` all work; items are typed as YAML
    scalars (``10`` -> 10)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, str):
        return [value]
    text = value.strip()
    if text[:1] + text[-1:] in ("[]", "()"):
        text = text[1:-1]
    items = [part.strip().strip("'\"") for part in text.split(",")]
    return [yaml.safe_load(item) if item else item for item in items if item != ""]


def plugin_model_yaml_files(model: str, model_class) -> List[str]:
    """The plugin YAML files of a model, in layer order (some may not exist): a plugin model
    inherits the YAML of the plugin models it subclasses (ANT_e <- ANT) and of its ``yaml_bases``."""
    lineage = [c.__name__ for c in reversed(model_class.__mro__) if c.__module__.startswith("recbole_mm.")]
    lineage = list(getattr(model_class, "yaml_bases", ())) + lineage  # YAMLs of related classes it reuses
    files = [plugin_yaml("model", f"{name}.yaml") for name in lineage]
    if model not in lineage:
        files.append(plugin_yaml("model", f"{model}.yaml"))
    return files


def yaml_key_docs(path: str) -> List[Tuple[str, object, str]]:
    """``(key, default, comment)`` for every top-level key of a plugin YAML file, in file order;
    the comment joins the key's own line comment and the indented comment lines continuing it."""
    with open(path, "r", encoding="utf-8") as f:
        lines = f.readlines()
    values = yaml.safe_load("".join(lines)) or {}
    docs: List[Tuple[str, object, str]] = []
    for line in lines:
        stripped = line.strip()
        if line[:1] not in ("", " ", "\t", "#", "\n") and ":" in line:
            key = line.split(":", 1)[0].strip()
            docs.append((key, values.get(key), line.partition(" #")[2].strip()))
        elif docs and line[:1] == " " and stripped.startswith("#"):  # a comment continued below its key
            key, value, comment = docs[-1]
            docs[-1] = (key, value, f"{comment} {stripped.lstrip('#').strip()}".strip())
    return docs


class MMConfig(Config):
    """RecBole ``Config`` that knows the plugin's models and YAML layers.

    Args:
        read_command_line: read ``--key=value`` from ``sys.argv`` (the CLI does; library calls
            and tests do not, so that a host program's arguments never leak into the config).
        strict_keys: refuse user keys that no RecBole or plugin YAML declares (typos).
    """

    def __init__(
        self,
        model=None,
        dataset=None,
        config_file_list: Optional[List[str]] = None,
        config_dict: Optional[dict] = None,
        read_command_line: bool = False,
        strict_keys: bool = True,
    ):
        self._read_command_line = read_command_line
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file {path} not found")
        self.dataset_yaml_keys: Set[str] = set()
        super().__init__(model, dataset, config_file_list, config_dict)
        if self.final_config_dict.get("show_progress") is None:  # overall.yaml's default: ~
            self.final_config_dict["show_progress"] = progress_on_terminal()
        if strict_keys and self.final_config_dict.get("strict_config_keys", True):
            self._check_unknown_keys()
        check_stage_keys(self)  # before any data set loads

    def for_dataset(self, dataset: str, **overrides) -> "MMConfig":
        """The config of another data set with this run's own settings (everything the user set,
        except `dataset`): a pre-training domain, or the source data set of an adaptation. That
        data set's ``properties/dataset/<dataset>.yaml`` applies, as for a run on it."""
        external = {k: v for k, v in self.external_config_dict.items() if k != "dataset"}
        return MMConfig(self["model"], dataset, config_dict={**external, **overrides})

    def given(self, key: str) -> bool:
        """Whether ``key`` was set for this run by the user (YAML files, config dict, command line)
        or by the data set's own ``properties/dataset/<dataset>.yaml`` (not only by a default)."""
        return key in self.external_config_dict or key in self.dataset_yaml_keys

    def _load_cmd_line(self):
        if not self._read_command_line:
            return {}
        values = super()._load_cmd_line()
        for key in list_config_keys() & set(values):
            value = values[key]  # RecBole evaluated it: "[text]" and "text,image" stay strings
            if isinstance(value, tuple) or (isinstance(value, str) and ("," in value or value[:1] == "[")):
                values[key] = parse_list_value(value)
        return values

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("no model given: pass --model=<Name> (e.g. --model=ANT or --model=SASRec)")
        if isinstance(model, str):
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("no dataset given: pass --dataset=<name>")
        if isinstance(dataset, (list, tuple)):  # several domains (stage pretrain): one "A,B,C" name
            dataset = ",".join(str(d) for d in dataset)
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        model_files = plugin_model_yaml_files(model, model_class)
        for path in [plugin_yaml("overall.yaml")] + model_files + [plugin_yaml("dataset", f"{dataset}.yaml")]:
            if os.path.isfile(path):
                added = self._update_internal_config_dict(path) or {}
                if path.endswith(os.path.join("dataset", f"{dataset}.yaml")):
                    self.parameters["Dataset"] += [k for k in added if k not in self.parameters["Dataset"]]
                    self.dataset_yaml_keys.update(added)
        # RecBole needs train_neg_sample_args: ~ with CE loss; its model YAMLs leave that to the user
        loss_type = self.external_config_dict.get("loss_type", self.internal_config_dict.get("loss_type"))
        if self.internal_config_dict.get("MODEL_TYPE") == ModelType.SEQUENTIAL and loss_type == "CE":
            self.internal_config_dict["train_neg_sample_args"] = None

    def _check_unknown_keys(self) -> None:
        known = known_config_keys()
        unknown = sorted(k for k in self.external_config_dict if k not in known)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise KeyError(
                "unknown config key(s): " + ", ".join(hints)
                + ". Keys must be declared in a RecBole or recbole_mm properties YAML; "
                "set strict_config_keys: False to allow free keys"
            )

    def _init_device(self):
        """RecBole's device set-up (gloo instead of NCCL when there is no usable GPU); ``use_gpu``
        then says whether the run really uses one (RecBole leaves its default True on a CPU)."""
        self._init_device_and_backend()
        device = self.final_config_dict.get("device")
        self.final_config_dict["use_gpu"] = isinstance(device, torch.device) and device.type == "cuda"

    def _init_device_and_backend(self):
        gpu_id = str(self.final_config_dict["gpu_id"]).strip("()").replace(" ", "")
        use_cuda = (
            self.final_config_dict.get("use_gpu", True) and len(gpu_id) > 0 and torch.cuda.is_available()
        )
        if "local_rank" not in self.final_config_dict or use_cuda:
            if not self.final_config_dict.get("use_gpu", True):
                os.environ["CUDA_VISIBLE_DEVICES"] = ""
            super()._init_device()
            return
        config = self.final_config_dict
        config["gpu_id"] = gpu_id
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend="gloo",
                rank=config["local_rank"] + config.get("offset", 0),
                world_size=config["world_size"],
                init_method=f"tcp://{config['ip']}:{config['port']}",
            )
        config["device"] = torch.device("cpu")
        config["single_spec"] = False
        if config["local_rank"] != 0:
            config["state"] = "error"
            config["show_progress"] = False
            config["verbose"] = False
