"""Checkpoint files of the plugin: reading RecBole's, and the two formats the plugin writes.

- RecBole best-model / resume checkpoints: :func:`load_checkpoint` (they pickle the run's
  Config, so ``weights_only=False``; only for files a run of this plugin wrote).
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

Bottom layer: imports nothing of the plugin but :mod:`recbole_mm.fileio`.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
from typing import Dict, List, Mapping, Sequence

import numpy as np
import torch

from recbole_mm.fileio import atomic_output

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


# ----- RecBole checkpoints ------------------------------------------------------------------------
def load_checkpoint(path: str, map_location=None) -> dict:
    """``torch.load`` for the plugin's own (trusted) RecBole checkpoints.

    They pickle the run's Config, which ``weights_only=True`` (torch >= 2.6 default) refuses.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} not found") from None


@contextlib.contextmanager
def trusted_torch_load():
    """Within the block ``torch.load`` defaults to ``weights_only=False``.

    For stock RecBole code that loads the run's own checkpoints itself (S3Rec's fine-tuning stage
    reads its pre-trained model with a bare ``torch.load``), which torch >= 2.6 would refuse.
    """
    original = torch.load

    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


# ----- transferable checkpoints -------------------------------------------------------------------
def save_pretrained(model: torch.nn.Module, path: str, extra: dict = None) -> str:
    """Write ``model``'s transferable parameters and metadata to ``path`` atomically (``model``
    implements :class:`recbole_mm.model.transferable.Transferable`)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "metadata": {**model.transfer_metadata(), **(extra or {})},
        "state_dict": model.transferable_state_dict(),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp, pickle_protocol=4)
    return path


def load_pretrained(path: str) -> dict:
    """Read a checkpoint written by :func:`save_pretrained` (clear errors for other files)."""
    if not path:
        raise ValueError("config key `pretrained_checkpoint` is empty: name the file written by a "
                         "--stage=pretrain run (its results JSON gives the path)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config key `pretrained_checkpoint`: checkpoint file {path} not found")
    checkpoint = load_checkpoint(path, map_location="cpu")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
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
        raise ValueError(f"pre-trained checkpoint {path} does not fit the target: " + "; ".join(problems))


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
        raise ValueError(f"cannot resume pre-training from {path}: " + "; ".join(problems))


def load_resume_state(path: str, settings: Dict) -> dict:
    """Read a pre-training resume state; ``ValueError`` naming every key that differs from ``settings``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config key `resume_from`: resume file {path} not found")
    state = load_checkpoint(path, map_location="cpu")
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ValueError(f"config key `resume_from`: {path} is not a pre-training resume state (format "
                         f"{RESUME_FORMAT!r}, the <checkpoint>-last.pth of a --stage=pretrain run)")
    check_resume_settings(state, settings, path)
    return state


def rng_states() -> dict:
    """Every random-number generator's state (torch, numpy, random, CUDA)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["random"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_pretrain_state(path: str, state: dict) -> str:
    """Write a pre-training resume state (``format`` added) to ``path`` atomically."""
    with atomic_output(path) as tmp:
        torch.save({"format": RESUME_FORMAT, **state}, tmp, pickle_protocol=4)
    return path


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
    return {key: _plain_setting(config[key]) for key in TRAINING_RESUME_KEYS}


def check_training_resume(saved: Mapping, settings: Mapping, path: str) -> None:
    """``ValueError`` naming each config key whose value in the state (``saved``) differs from this run's."""
    problems = [f"config key `{key}` is {saved.get(key)!r} in the resume file, {value!r} in this run "
                f"({TRAINING_RESUME_KEYS.get(key, 'the state was written with it')})"
                for key, value in settings.items() if key in saved and saved[key] != value]
    if problems:
        raise ValueError(f"cannot resume training from {path}: " + "; ".join(problems))


def check_state_dict_shapes(saved: Mapping, own: Mapping, path: str) -> None:
    """``ValueError`` naming the parameters whose shapes differ (or that one side lacks)."""
    problems = [f"`{name}` is missing in the resume file" for name in own if name not in saved]
    problems += [f"`{name}` is not in this run's model" for name in saved if name not in own]
    problems += [f"`{name}` has shape {list(saved[name].shape)} in the resume file, {list(own[name].shape)} in "
                 f"this run" for name in own if name in saved and hasattr(saved[name], "shape")
                 and tuple(saved[name].shape) != tuple(own[name].shape)]
    if problems:
        raise ValueError(f"cannot resume training from {path}: the model's architecture differs (a config key that "
                         f"shapes it changed): " + "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))


def rng_state_dict() -> dict:
    """Every random-number generator's state (torch, numpy, random, CUDA) as plain containers of
    tensors, numbers and lists, which ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "random": [version, list(internal), gauss_next],
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
    }


def load_rng_state_dict(states: Mapping) -> None:
    """Set every random-number generator from :func:`rng_state_dict`'s output."""
    numpy_state = states["numpy"]
    torch.set_rng_state(states["torch"])
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss_next = states["random"]
    random.setstate((version, tuple(internal), gauss_next))
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
