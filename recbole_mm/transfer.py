"""Transferable checkpoints and the adaptation stage (docs/transfer.md).

A pre-training run (``stage: pretrain``) writes a checkpoint with only the model's transferable
parameters and the metadata they depend on::

    {"format": "recbole_mm.transferable/1",
     "metadata": {"model", "family", "modalities", "feature_dims", "hidden_size", "n_layers", ...,
                  "domains", "n_items", "epochs", "pretrain_loss"},
     "state_dict": {...}}

A training run on a target (``stage: train``) with ``adaptation: fine_tune | re_learning`` and
``pretrained_checkpoint: <file>`` hands the checkpoint to the model's hook
``adapt_from_pretrained(checkpoint, mode, config)`` before the trainer is built.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import torch

from recbole_mm.fileio import atomic_output
from recbole_mm.model.transfer import ADAPTATION_MODES, ARCHITECTURE_KEYS

CHECKPOINT_FORMAT = "recbole_mm.transferable/1"
STAGES = ("train", "pretrain")


def check_choice(key: str, value, allowed: Sequence[str]) -> None:
    """``ValueError`` naming the config key, its value and the allowed values unless ``value`` is one."""
    if value not in allowed:
        raise ValueError(f"config key `{key}` must be one of {list(allowed)}, got {value!r}")


def check_stage_keys(config) -> None:
    """Validate ``stage`` and ``adaptation`` (unset = train / ground_built) as soon as the config exists."""
    check_choice("stage", config["stage"] or "train", STAGES)
    check_choice("adaptation", config["adaptation"] or "ground_built", ADAPTATION_MODES)


def save_pretrained(model: torch.nn.Module, path: str, extra: Optional[dict] = None) -> str:
    """Write ``model``'s transferable parameters and metadata to ``path`` atomically."""
    for hook in ("transferable_state_dict", "transfer_metadata"):
        if not hasattr(model, hook):
            raise TypeError(f"{type(model).__name__} has no {hook}(): it cannot be pre-trained for transfer")
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
    from recbole_mm.trainer.trainer import load_checkpoint

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
    if sorted(saved["modalities"]) != sorted(target["modalities"]):
        problems.append(f"modalities {saved['modalities']} in the checkpoint, {target['modalities']} on the "
                        f"target (config key `modalities`)")
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


def adaptation_mode(config) -> str:
    """Config key ``adaptation`` (unset = ``ground_built``), checked."""
    mode = config["adaptation"] or "ground_built"
    check_choice("adaptation", mode, ADAPTATION_MODES)
    return mode


def apply_adaptation(model: torch.nn.Module, config, logger=None) -> dict:
    """Prepare ``model`` for the adaptation mode in config key ``adaptation`` (runner hook).

    ``ground_built`` leaves the freshly initialised model alone (a ``pretrained_checkpoint`` is
    then ignored, with a warning); the other modes load ``pretrained_checkpoint`` through the
    model's ``adapt_from_pretrained(checkpoint, mode, config)``.
    """
    mode = adaptation_mode(config)
    if mode == "ground_built":
        if config["pretrained_checkpoint"] and logger is not None:
            logger.warning("adaptation: ground_built trains from scratch; pretrained_checkpoint is ignored")
        return {"mode": mode}
    hook = getattr(model, "adapt_from_pretrained", None)
    if hook is None:
        raise TypeError(f"adaptation {mode!r}: model {type(model).__name__} has no adapt_from_pretrained() "
                        f"hook (docs/transfer.md); only ground_built applies to it")
    summary = hook(load_pretrained(config["pretrained_checkpoint"]), mode, config)
    if logger is not None:
        logger.info(f"adaptation {mode} from {config['pretrained_checkpoint']}: {len(summary.get('frozen', []))} "
                    f"frozen parameters, re-initialised {summary.get('reinitialised', [])}")
    return summary
