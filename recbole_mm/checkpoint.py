"""Checkpoint files of the plugin: reading RecBole's, and the two formats the plugin writes.

- Every checkpoint is read with ``torch.load(weights_only=True)`` (:func:`load_checkpoint`: a
  pickle payload, a truncated, empty or corrupt file is refused in one line naming it) and written
  as tensors and plain data (:func:`save_checkpoint`, :func:`plain`), atomically. RecBole's
  best-model and resume checkpoints hold the Config as a plain dict (:func:`plain_config`).
- Transferable checkpoints (``stage: pretrain``, docs/transfer.md)::

      {"format": "recbole_mm.transferable/1",
       "metadata": {"model", "family", "modalities", "feature_dims", "hidden_size", ...,
                    "domains", "n_items", "epochs", "pretrain_loss"},
       "state_dict": {...}}

  :func:`save_pretrained`, :func:`load_pretrained`, :func:`check_checkpoint_fits`.
- Pre-training resume states (``<checkpoint>-last.pth``): :func:`save_pretrain_state`,
  :func:`load_resume_state`.
- Runs' file names (a run id in every name: :func:`new_run_id`, :func:`with_run_id`) and what a
  training resume state must agree on with the run resuming it (:func:`training_resume_settings`,
  :func:`check_training_resume`); RNG states as plain containers (:func:`rng_state_dict`).
- Files of earlier recbole-mm versions (a pickled Config, pickle protocol 4) are refused like any
  other file ``weights_only`` cannot read: rerun the run that wrote them.

Bottom layer: imports nothing of the plugin but :mod:`recbole_mm.fileio`.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import warnings
import zipfile
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from recbole_mm.fileio import atomic_output

class CheckpointError(ValueError):
    """A checkpoint that cannot be used (unreadable, unsafe, of another run or model): the message
    names the file and the config key, in one line."""


class _CorruptRecord(ValueError):
    """A zip record of a checkpoint failed its CRC-32 check (reported as a CheckpointError)."""


CHECKPOINT_FORMAT = "recbole_mm.transferable/1"
RESUME_FORMAT = "recbole_mm.pretrain_resume/1"
# configuration keys that fix the shapes of a transferable model's parameters
ARCHITECTURE_KEYS = ("hidden_size", "n_layers", "n_heads", "inner_size", "n_experts", "MAX_ITEM_LIST_LENGTH",
                     "price_embedding_size")
# config keys a resumed pre-training run must share with the run that wrote the state (besides
# the model and the domains); `epochs`, paths and logging may differ
RESUME_KEYS = ARCHITECTURE_KEYS + (
    "modalities", "learner", "learning_rate", "weight_decay", "train_batch_size", "seed", "length_bucketing",
    "trim_batches", "temperature", "hidden_dropout_prob", "attn_dropout_prob", "adaptor_dropout_prob",
    "fusion_beta", "pretrain_image_text_weight", "pretrain_seq_seq_weight", "item_drop_ratio", "clip_grad_norm",
)


# ----- reading and writing, safely ----------------------------------------------------------------
def _where(key: Optional[str]) -> str:
    return f"config key `{key}`: " if key else ""


def _refusal(err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line (its own message is a page long)."""
    text = str(err)
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    if found:
        return (f"it holds the Python object {found.group(1)}; only tensors and plain data are loaded "
                f"(weights_only), nothing in it was run")
    found = re.search(r"Unsupported operand \d+", text)
    if found:
        reason = f"its pickle data is not what torch.save writes ({found.group(0)})"
    elif isinstance(err, EOFError):
        reason = "the file ends early"
    else:
        reason = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(err).__name__
    return (f"{reason}; it is truncated, corrupt, or not written by this version of recbole-mm "
            f"(rerun the run that wrote it)")


def load_checkpoint(path: str, map_location=None, key: Optional[str] = None, mmap: bool = False) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors, numbers, strings and plain
    containers only, so a file cannot run code. ``ValueError`` (one line naming ``path`` and the
    config ``key``) for a truncated, empty, corrupt or pickle-payload file. ``mmap``: tensors are
    mapped, not read (a cheap check)."""
    where = _where(key)
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"{where}checkpoint file {path} not found")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{where}checkpoint file {path} is empty (0 bytes): a run was cut off while writing it, "
                              f"or it is not a checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{where}checkpoint file {path} refused: it is not the zip archive torch.save writes; "
                              f"it is truncated, corrupt, or not a checkpoint")
    try:
        _check_records(path)
        with warnings.catch_warnings():  # an old file's protocol warning: the refusal below says it in one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except PermissionError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever fails to decode (torch raises a dozen types) is refused
        raise CheckpointError(f"{where}checkpoint file {path} refused: {_refusal(err)}") from None


def _check_records(path: str) -> None:
    """A zip checkpoint (torch.save's format) must pass its CRC-32 checks: torch.load does not check
    them, so a flipped byte in a tensor would load silently."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise _CorruptRecord(f"record {bad} fails its CRC-32 check")


def load_model_checkpoint(path: str, key: str, map_location=None) -> dict:
    """A trained model's checkpoint (:func:`load_checkpoint`): a dict with ``state_dict``."""
    checkpoint = load_checkpoint(path, map_location=map_location, key=key)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"config key `{key}`: {path} holds no model (expected the checkpoint of a training run, "
                              f"a dict with `state_dict`)")
    return checkpoint


def plain(value):
    """``value`` as ``torch.load(weights_only=True)`` reads it back: tensors, Python numbers,
    strings, ``None`` and dicts / lists / tuples of them (a numpy array becomes a tensor, a numpy
    number a Python number, any other object its ``str``)."""
    if value is None or isinstance(value, torch.Tensor) or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return str(value)


def plain_config(config) -> Dict:
    """A RecBole Config as a plain dict (saved instead of the Config object, which needs pickle)."""
    return plain(dict(config.final_config_dict))


def plain_other_parameter(model: torch.nn.Module) -> Dict:
    """RecBole's ``model.other_parameter()`` as plain data: sub-modules are left out (their
    parameters are in the state dict), numbers and arrays kept, other objects dropped."""
    kept = {}
    for name, value in (model.other_parameter() or {}).items():
        if isinstance(value, torch.nn.Module):
            continue
        converted = plain(value)
        if not isinstance(converted, str) or isinstance(value, str):
            kept[name] = converted
    return kept


def save_checkpoint(payload: dict, path: str) -> str:
    """Write ``payload`` (tensors and plain data: see :func:`plain`) to ``path`` atomically, in the
    format :func:`load_checkpoint` reads (torch's default pickle protocol)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: a full disk raises OSError(ENOSPC), not RuntimeError
            torch.save(payload, f)
    return path


# ----- files a run is given --------------------------------------------------------------------
# config keys naming a checkpoint a run reads: the plugin's, and those a stock RecBole model reads
# itself with a bare torch.load while it is built (S3Rec's fine-tuning stage: pre_model_path)
CHECKPOINT_KEYS = ("pretrained_checkpoint", "resume_from", "init_checkpoint", "source_checkpoint")
STOCK_PRETRAINED_KEYS = ("pre_model_path", "pretrain_path", "mf_pretrain_path", "mlp_pretrain_path", "warm_up")


def check_checkpoint_files(config) -> None:
    """Check every checkpoint the run is given (:data:`CHECKPOINT_KEYS`, :data:`STOCK_PRETRAINED_KEYS`)
    with :func:`load_checkpoint` before any data loads or any model is built: a missing, empty,
    truncated, corrupt or pickle-payload file fails in one line naming it and its key."""
    for key in CHECKPOINT_KEYS + STOCK_PRETRAINED_KEYS:
        path = config.final_config_dict.get(key)
        if isinstance(path, str) and path:
            load_checkpoint(path, key=key, mmap=True)


# ----- transferable checkpoints -------------------------------------------------------------------
def save_pretrained(model: torch.nn.Module, path: str, extra: dict = None) -> str:
    """Write ``model``'s transferable parameters and metadata to ``path`` atomically (``model``
    implements :class:`recbole_mm.model.transferable.Transferable`)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "metadata": plain({**model.transfer_metadata(), **(extra or {})}),
        "state_dict": model.transferable_state_dict(),
    }
    return save_checkpoint(payload, path)


def load_pretrained(path: str) -> dict:
    """Read a checkpoint written by :func:`save_pretrained` (clear errors for other files)."""
    if not path:
        raise CheckpointError("config key `pretrained_checkpoint` is empty: name the file written by a "
                              "--stage=pretrain run (its results JSON gives the path)")
    checkpoint = load_checkpoint(path, map_location="cpu", key="pretrained_checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a transferable checkpoint (format {CHECKPOINT_FORMAT!r}); a RecBole best-model "
            f"checkpoint cannot be used: pre-train with --stage=pretrain"
        )
    return checkpoint


def checkpoint_mismatches(saved: Dict, target: Dict) -> List[str]:
    """Human-readable differences between a checkpoint's metadata and the target model's."""
    problems = []
    if saved.get("family") != target["family"]:
        problems.append(f"it was pre-trained by {saved.get('model')} (family {saved.get('family')}), "
                        f"the target model is {target['model']} (family {target['family']})")
    if not set(saved["modalities"]) & set(target["modalities"]):
        problems.append(f"no modality in common: {saved['modalities']} in the checkpoint, {target['modalities']} "
                        f"on the target (config key `modalities`)")
    for modality in sorted(set(saved["feature_dims"]) & set(target["feature_dims"])):
        a, b = saved["feature_dims"][modality], target["feature_dims"][modality]
        if a != b:
            problems.append(f"{modality} features have dimension {a} in the checkpoint, {b} on the target "
                            f"(the target's {modality} feature file; same encoder needed)")
    for key in ARCHITECTURE_KEYS:
        if key in saved and saved[key] != target.get(key):
            problems.append(f"config key `{key}` is {saved[key]} in the checkpoint, {target.get(key)} on the target")
    return problems


def check_checkpoint_fits(checkpoint: dict, target: Dict, path: str) -> None:
    """Raise ``ValueError`` listing every way ``checkpoint`` does not fit the target model."""
    problems = checkpoint_mismatches(checkpoint["metadata"], target)
    if problems:
        raise CheckpointError(f"pre-trained checkpoint {path} does not fit the target: " + "; ".join(problems))


# ----- pre-training resume states -----------------------------------------------------------------
def resume_state_file(checkpoint_file: str) -> str:
    """The resume state written beside a pre-training checkpoint: ``<checkpoint>-last.pth``."""
    return os.path.splitext(checkpoint_file)[0] + "-last.pth"


def resume_settings(config, names: Sequence[str]) -> Dict:
    """What a resume state must agree on with the run resuming it (config side)."""
    settings = {"model": config["model"], "dataset": list(names)}
    settings.update({key: config.final_config_dict.get(key) for key in RESUME_KEYS})
    return settings


def check_resume_settings(state: dict, settings: Dict, path: str) -> None:
    """Raise ``ValueError`` listing each key of ``settings`` whose value differs in ``state``."""
    saved = state.get("settings", {})
    problems = [f"key `{key}` is {saved.get(key)!r} in the resume file, {value!r} in this run"
                for key, value in settings.items() if saved.get(key) != value]
    if problems:
        raise CheckpointError(f"cannot resume pre-training from {path}: " + "; ".join(problems))


def load_resume_state(path: str, settings: Dict) -> dict:
    """Read a pre-training resume state; ``ValueError`` naming every key that differs from ``settings``."""
    state = load_checkpoint(path, map_location="cpu", key="resume_from")
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"config key `resume_from`: {path} is not a pre-training resume state (format "
                              f"{RESUME_FORMAT!r}, the <checkpoint>-last.pth of a --stage=pretrain run)")
    check_resume_settings(state, settings, path)
    return state


def rng_states() -> dict:
    """Every random-number generator's state (torch, numpy, random, CUDA), as tensors and plain
    data (numpy's key array as an int64 tensor)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian))
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "random": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(states["random"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_pretrain_state(path: str, state: dict) -> str:
    """Write a pre-training resume state (``format`` added) to ``path`` atomically."""
    return save_checkpoint({"format": RESUME_FORMAT, **plain_state(state)}, path)


def plain_state(state: dict) -> dict:
    """A resume state's entries as plain data, the model's and optimiser's state dicts as they are."""
    kept = ("state_dict", "optimizer")
    return {key: value if key in kept else plain(value) for key, value in state.items()}


# ----- runs: file names, training resume checks, plain RNG states ----------------------------------
def new_run_id() -> str:
    """A short random id that tells apart runs started in the same second (6 hex digits)."""
    return secrets.token_hex(3)


def with_run_id(path: str, run_id: str) -> str:
    """``<stem>.pth`` -> ``<stem>-<run_id>.pth``: a run's own file name."""
    stem, ext = os.path.splitext(path)
    return f"{stem}-{run_id}{ext}"


# config keys a resumed training run must share with the state (value: why); `epochs`, the
# stopping rule, paths and logging may change
TRAINING_RESUME_KEYS = {
    "model": "the state holds that model",
    "dataset": "the state was trained on that data set",
    **{key: "it shapes the model's parameters" for key in ARCHITECTURE_KEYS + ("embedding_size", "modalities")},
    "learner": "the state's optimiser would override it",
    "learning_rate": "the state's optimiser would override it",
    "weight_decay": "the state's optimiser would override it",
    "seed": "the state's random-number states would override it",
    "valid_metric": "the state's best validation score is of that metric",
}


def _plain_setting(value):
    """A config value as plain data (lists for tuples, text for other objects), to compare and save."""
    if isinstance(value, (list, tuple)):
        return [_plain_setting(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_setting(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def training_resume_settings(config) -> Dict:
    """The run's values of :data:`TRAINING_RESUME_KEYS` (plain data: saved in the state)."""
    return {key: _plain_setting(config[key] if key in config else None) for key in TRAINING_RESUME_KEYS}


def check_training_resume(saved: Mapping, settings: Mapping, path: str) -> None:
    """``ValueError`` naming each config key whose value in the state (``saved``) differs from this run's."""
    problems = [f"config key `{key}` is {saved.get(key)!r} in the resume file, {value!r} in this run "
                f"({TRAINING_RESUME_KEYS.get(key, 'the state was written with it')})"
                for key, value in settings.items() if key in saved and saved[key] != value]
    if problems:
        raise CheckpointError(f"cannot resume training from {path}: " + "; ".join(problems))


def check_state_dict_shapes(saved: Mapping, own: Mapping, path: str) -> None:
    """``ValueError`` naming the parameters whose shapes differ (or that one side lacks)."""
    problems = [f"`{name}` is missing in the resume file" for name in own if name not in saved]
    problems += [f"`{name}` is not in this run's model" for name in saved if name not in own]
    problems += [f"`{name}` has shape {list(saved[name].shape)} in the resume file, {list(own[name].shape)} in "
                 f"this run" for name in own if name in saved and hasattr(saved[name], "shape")
                 and tuple(saved[name].shape) != tuple(own[name].shape)]
    if problems:
        raise CheckpointError(f"cannot resume training from {path}: the model's architecture differs (a config key "
                              f"that shapes it changed): " + "; ".join(problems[:3])
                              + (" ..." if len(problems) > 3 else ""))


# ----- adaptation auto: the race's resume state -------------------------------------------------
AUTO_RACE_FORMAT = "recbole_mm.auto_race/1"
# what decides an auto race beyond each candidate's own training settings (those its states check)
AUTO_RACE_KEYS = ("auto_strategy", "auto_candidates", "auto_probe_epochs", "auto_budget", "pretrained_checkpoint",
                  "epochs", "stopping_step", "eval_step", "valid_metric", "valid_metric_bigger")


def auto_race_settings(config) -> Dict:
    """The run's values of :data:`AUTO_RACE_KEYS` (plain data: saved in the race state)."""
    return {key: _plain_setting(config[key] if key in config else None) for key in AUTO_RACE_KEYS}


def save_auto_race_state(path: str, run_id: str, settings: Dict, candidate_files: Dict[str, str]) -> str:
    """The state an ``adaptation: auto`` run resumes from: its settings and each candidate's
    best-model file (its ``-last.pth`` state lies beside it). Written once, as the race starts."""
    return save_checkpoint({"format": AUTO_RACE_FORMAT, "run_id": run_id, "settings": plain(settings),
                            "candidates": dict(candidate_files)}, path)


def load_auto_race_state(path: str, settings: Dict) -> dict:
    """An auto run's race state (:func:`save_auto_race_state`); ``ValueError`` naming the file, and
    each config key whose value differs from this run's (the race would not be the one resumed)."""
    state = load_checkpoint(path, key="resume_from")
    if not isinstance(state, dict) or state.get("format") != AUTO_RACE_FORMAT:
        raise CheckpointError(f"config key `resume_from`: {path} is not the state of an adaptation auto run (resume "
                              f"one with the <run>-last.pth its log names; a candidate's own -<mode>-last.pth "
                              f"resumes as --adaptation=<mode>)")
    problems = [f"config key `{key}` is {state['settings'].get(key)!r} in the resume file, {value!r} in this run"
                for key, value in settings.items() if state["settings"].get(key) != value]
    if problems:
        raise CheckpointError(f"cannot resume adaptation auto from {path}: " + "; ".join(problems))
    return state
