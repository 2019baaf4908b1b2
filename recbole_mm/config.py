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
import re
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

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


class ConfigError(ValueError):
    """A config file or value the run cannot use; the message names the file or key and what was
    expected (the command line prints it as one ``error:`` line)."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class UnknownConfigKeyError(ConfigError, KeyError):
    """A config key that no RecBole or plugin YAML declares (a ``KeyError`` too, as it always was)."""


def global_rank(config) -> int:
    """This process's rank among all processes of all nodes (0 for a single-process run):
    ``local_rank`` on its node plus the node's ``offset`` (RecBole's ``group_offset``)."""
    def value(key):  # a RecBole Config gives None for a missing key, the final config dict has no default
        return config[key] if key in config else None

    if value("single_spec") is not False:  # single-process, or the device set-up has not run yet
        return 0
    return int(value("local_rank") or 0) + int(value("offset") or 0)


def check_choice(key: str, value, allowed: Sequence[str]) -> None:
    """``ConfigError`` naming the config key, its value and the allowed values unless ``value`` is one."""
    if value not in allowed:
        raise ConfigError(f"config key `{key}` must be one of {list(allowed)}, got {value!r}")


def adaptation_mode(config) -> str:
    """Config key ``adaptation`` (unset = ``ground_built``), checked."""
    mode = config["adaptation"] or "ground_built"
    check_choice("adaptation", mode, ADAPTATION_CHOICES)
    return mode


def check_stage_keys(config) -> None:
    """Validate ``stage`` and ``adaptation`` (unset = train / ground_built)."""
    check_choice("stage", config["stage"] or "train", STAGES)
    adaptation_mode(config)


def read_config_file(path: str, loader=yaml.SafeLoader) -> dict:
    """A user's YAML config file as a dict (an empty file is ``{}``); ``ConfigError`` naming the
    file when it is missing, not UTF-8, not valid YAML, or its top level is not a mapping."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} not found")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"config file {path}, line {line}: bytes that are not UTF-8 "
                          f"({raw[err.start:err.end]!r}); save the file as UTF-8") from None
    try:
        content = yaml.load(text, Loader=loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)  # where it began
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = "; ".join(p for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
        raise ConfigError(f"config file {path}{where}: not valid YAML ({problem or str(err).splitlines()[0]})") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of `key: value` lines, "
                          f"got a {type(content).__name__}")
    return content


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


# RecBole's YAML loader (``1e-3`` is a float): user files are read as RecBole reads them
RECBOLE_YAML_LOADER = Config._build_yaml_loader(None)


class _DefaultsLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """A fast loader for the 120 property files; ``1e-12`` (no dot) is a float here too."""


_DefaultsLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                      list("-+0123456789."))

# type words of the ``# (type) ...`` comments of the YAML files -> the names used here
_TYPE_WORDS = {"int": "int", "float": "float", "str": "str", "string": "str", "bool": "bool",
               "list": "list", "dict": "dict", "none": "none", "optional": "none"}
_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False",
             "list": "a list", "dict": "a mapping", "none": "~ (unset)"}
_TYPED_LINE = re.compile(r"^([A-Za-z_][\w.-]*)\s*:.*?#\s*\(([^)]*)\)")


def value_type(value) -> str:
    """The type name of a config value: int, float, str, bool, list, dict, none (else its class)."""
    if value is None:
        return "none"
    for name, kinds in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", (list, tuple)),
                        ("dict", dict)):
        if isinstance(value, kinds):
            return name
    return type(value).__name__


def _comment_types(text: str) -> Optional[Set[str]]:
    """``int``, ``list of int``, ``list or int or None``, ``str, optional`` -> type names; None
    when some part names no type (the key is then not checked)."""
    names = set()
    for part in re.split(r",|\bor\b", text):
        words = part.strip().lower().split()
        if not words or words[0] not in _TYPE_WORDS:
            return None
        names.add(_TYPE_WORDS[words[0]])
    return names


def _file_key_types(path: str) -> Dict[str, Optional[Set[str]]]:
    """Top-level keys of one YAML file -> the types its comment and its default give (None: unreadable)."""
    with open(path, "r", encoding="utf-8") as f:
        lines = f.readlines()
    defaults = yaml.load("".join(lines), Loader=_DefaultsLoader) or {}
    types: Dict[str, Optional[Set[str]]] = {key: {value_type(value)} for key, value in defaults.items()}
    for line in lines:
        match = _TYPED_LINE.match(line)
        if match and match.group(1) in types:
            declared = _comment_types(match.group(2))
            types[match.group(1)] = None if declared is None else declared | types[match.group(1)]
    return types


@functools.lru_cache(maxsize=1)
def config_key_types() -> Dict[str, FrozenSet[str]]:
    """Config key -> the types it accepts: the ``# (type)`` comments and default values of every
    RecBole and plugin YAML file that declares it, together (``none`` where a default is ``~``).
    Keys whose comment names no type, or that only ever default to ``~`` unannotated, are left out."""
    merged: Dict[str, Set[str]] = {}
    unreadable: Set[str] = set()
    for path in _all_yaml_files():
        for key, types in _file_key_types(path).items():
            if types is None:
                unreadable.add(key)
            else:
                merged.setdefault(key, set()).update(types)
    return {key: frozenset(types) for key, types in merged.items()
            if key not in unreadable and types - {"none"}}


def accepts(types: FrozenSet[str], value) -> bool:
    """Whether a value fits the declared types. As RecBole reads them: an int is a float, a number
    may stand for a string (``--gpu_id=0``), a string for a one-item list (``--metrics=Recall``),
    0 / 1 for a bool."""
    kind = value_type(value)
    return (kind in types
            or (kind == "int" and "float" in types)
            or (kind in ("int", "float") and "str" in types)
            or (kind == "str" and "list" in types)
            or (kind == "int" and value in (0, 1) and "bool" in types))


def expected_text(types: FrozenSet[str]) -> str:
    """``an integer``, ``a number or ~ (unset)``, ..."""
    order = ["int", "float", "bool", "str", "list", "dict", "none"]
    if "int" in types and "float" in types:
        order.remove("int")
    return " or ".join(_EXPECTED[t] for t in order if t in types)


# ---- settings that a stage or adaptation mode ignores -----------------------------------------
_SCOPE = re.compile(r"^(?:\([^)]*\)\s*)?(stage pretrain|adaptation (\w+)):")
ADAPTATION_KEYS = ("adaptation", "pretrained_checkpoint")  # read by stage train only


@functools.lru_cache(maxsize=1)
def scoped_keys() -> Dict[str, Tuple[str, str]]:
    """Plugin keys whose comment starts ``stage pretrain:`` or ``adaptation <mode>:`` ->
    ``("stage", "pretrain")`` / ``("adaptation", mode)``: the only runs that read them."""
    scopes: Dict[str, Tuple[str, str]] = {}
    for path in glob.glob(os.path.join(properties_dir(), "**", "*.yaml"), recursive=True):
        for key, _, comment in yaml_key_docs(path):
            match = _SCOPE.match(comment)
            if match:
                scopes[key] = ("adaptation", match.group(2)) if match.group(2) else ("stage", "pretrain")
    return scopes


def ignored_settings(config) -> List[str]:
    """One warning per key the user set that this run's stage or adaptation mode never reads
    (pre-training keys in a train run, ``adaptation`` in a pretrain run, fine-tune keys with
    ground-built training, ...)."""
    stage = config["stage"] or "train"
    mode = adaptation_mode(config)
    modes = {mode} | (set(config["auto_candidates"] or []) if mode == "auto" else set())
    warnings = []
    for key in sorted(config.external_config_dict):
        scope = scoped_keys().get(key)
        if stage == "pretrain" and (key in ADAPTATION_KEYS or (scope and scope[0] == "adaptation")):
            warnings.append(f"config key `{key}` is ignored with stage pretrain: it applies to stage train "
                            f"(adapting a pre-trained model)")
        elif stage == "train" and scope == ("stage", "pretrain"):
            warnings.append(f"config key `{key}` is ignored with stage train: it is a pre-training setting "
                            f"(stage pretrain)")
        elif stage == "train" and scope and scope[0] == "adaptation" and scope[1] not in modes:
            warnings.append(f"config key `{key}` is ignored with adaptation {mode}: it applies to "
                            f"adaptation {scope[1]}")
    return warnings


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
        self.file_contents: Dict[str, dict] = {}  # each user YAML file, as read
        super().__init__(model, dataset, config_file_list, config_dict)
        if self.final_config_dict.get("show_progress") is None:  # overall.yaml's default: ~
            self.final_config_dict["show_progress"] = progress_on_terminal()
        if strict_keys and self.final_config_dict.get("strict_config_keys", True):
            self._check_unknown_keys()
        check_stage_keys(self)  # before any data set loads
        self.ignored_settings: List[str] = ignored_settings(self)  # the runner logs them

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

    def _load_config_files(self, file_list):
        """The user's YAML files, later wins; each must be a UTF-8 YAML mapping (``ConfigError``)."""
        merged = {}
        for path in file_list or []:
            self.file_contents[path] = read_config_file(path, RECBOLE_YAML_LOADER)
            merged.update(self.file_contents[path])
        return merged

    def _merge_external_config_dict(self):
        super()._merge_external_config_dict()
        self._check_value_types()  # before RecBole or the run reads any value

    def _check_value_types(self) -> None:
        """``ConfigError`` naming the first user key whose value is not of its declared type."""
        types = config_key_types()
        for key, value in self.external_config_dict.items():
            if key in types and not accepts(types[key], value):
                raise ConfigError(f"config key `{key}` ({self._value_source(key)}): expected "
                                  f"{expected_text(types[key])}, got {value!r}")

    def _value_source(self, key: str) -> str:
        """Where the user's value of ``key`` comes from (the last layer that sets it)."""
        if key in self.cmd_config_dict:
            return f"--{key} on the command line"
        if key in self.variable_config_dict:
            return "config dict"
        for path in reversed(list(self.file_contents)):
            if key in self.file_contents[path]:
                return f"config file {path}"
        return "user setting"

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
            raise UnknownConfigKeyError(
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
        if global_rank(config) != 0:  # one process of all machines logs
            config["state"] = "error"
            config["show_progress"] = False
            config["verbose"] = False
