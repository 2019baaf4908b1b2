"""Multi-domain pre-training (``--stage=pretrain --dataset=A,B,C``), docs/transfer.md.

Every domain is loaded as its own data set (own item ids, own feature files), the domains'
training sequences are shuffled together into mixed batches
(:mod:`recbole_mm.data.multidomain`) and the model's ``pretrain_loss`` (in-batch contrastive)
is minimised for ``epochs`` epochs. No validation: after every epoch the transferable
checkpoint (:func:`recbole_mm.transfer.save_pretrained`) is rewritten atomically, and so is a
full resume state beside it (``<checkpoint>-last.pth``: model, optimiser, RNG states, epoch,
losses); ``--resume_from=<that file>`` continues at the next epoch. The batch order of epoch
``e`` depends only on (``seed``, ``e``), so a resumed run ends with the weights of an
uninterrupted one.
"""

from __future__ import annotations

import os
import random
from logging import getLogger
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from recbole.utils import get_local_time, set_color

from recbole_mm.fileio import atomic_output
from recbole_mm.model.transfer import ARCHITECTURE_KEYS
from recbole_mm.trainer.trainer import MMTrainer, load_checkpoint
from recbole_mm.transfer import save_pretrained

RESUME_FORMAT = "recbole_mm.pretrain_resume/1"
# config keys a resumed pre-training run must share with the run that wrote the state (besides
# the model and the domains); `epochs`, paths and logging may differ
RESUME_KEYS = ARCHITECTURE_KEYS + (
    "modalities", "learner", "learning_rate", "weight_decay", "train_batch_size", "seed", "length_bucketing",
    "trim_batches", "temperature", "hidden_dropout_prob", "attn_dropout_prob", "adaptor_dropout_prob",
    "fusion_beta", "pretrain_image_text_weight", "pretrain_seq_seq_weight", "item_drop_ratio", "clip_grad_norm",
)


def resume_state_file(checkpoint_file: str) -> str:
    """The resume state written beside a pre-training checkpoint: ``<checkpoint>-last.pth``."""
    return os.path.splitext(checkpoint_file)[0] + "-last.pth"


def resume_settings(config, names: Sequence[str]) -> Dict:
    """What a resume state must agree on with the run resuming it (config side)."""
    settings = {"model": config["model"], "dataset": list(names)}
    settings.update({key: config.final_config_dict.get(key) for key in RESUME_KEYS})
    return settings


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


def check_resume_settings(state: dict, settings: Dict, path: str) -> None:
    """Raise ``ValueError`` listing each key of ``settings`` whose value differs in ``state``."""
    saved = state.get("settings", {})
    problems = [f"key `{key}` is {saved.get(key)!r} in the resume file, {value!r} in this run"
                for key, value in settings.items() if saved.get(key) != value]
    if problems:
        raise ValueError(f"cannot resume pre-training from {path}: " + "; ".join(problems))


def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["random"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class PretrainTrainer(MMTrainer):
    """RecBole trainer loop on ``model.pretrain_loss``; writes the transferable checkpoint and
    the resume state after every epoch."""

    def pretrain(self, train_data, checkpoint_file: str, metadata: dict, show_progress: bool = False,
                 history: Optional[List[dict]] = None, settings: Optional[Dict] = None) -> List[dict]:
        """Train epochs ``start_epoch .. epochs - 1``; returns the mean loss parts of every epoch
        (``history``, the epochs before ``start_epoch``, first)."""
        history = list(history or [])
        for epoch in range(self.start_epoch, self.epochs):
            if hasattr(train_data, "begin_epoch"):
                train_data.begin_epoch(epoch)  # batch order from (seed, epoch), also after a resume
            total = self._train_epoch(train_data, epoch, loss_func=self.model.pretrain_loss,
                                      show_progress=show_progress)
            parts = total if isinstance(total, tuple) else (total, 0.0)
            record = {"seq_item": parts[0] / len(train_data), "auxiliary": parts[1] / len(train_data)}
            record["total"] = record["seq_item"] + record["auxiliary"]
            history.append(record)
            self.logger.info(set_color(f"pretrain epoch {epoch}", "green") + f": {record}")
            save_pretrained(self.model, checkpoint_file, {**metadata, "epochs": epoch + 1, "pretrain_loss": history})
            self.save_pretrain_state(epoch, history, checkpoint_file, settings or {})
        return history

    def save_pretrain_state(self, epoch: int, history: List[dict], checkpoint_file: str, settings: Dict) -> str:
        """Write everything a resumed run needs after ``epoch`` to ``<checkpoint>-last.pth``, atomically."""
        state = {
            "format": RESUME_FORMAT,
            "epoch": epoch,
            "settings": settings,
            "checkpoint": checkpoint_file,
            "pretrain_loss": history,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_states(),
        }
        path = resume_state_file(checkpoint_file)
        with atomic_output(path) as tmp:
            torch.save(state, tmp, pickle_protocol=4)
        return path

    def restore_pretrain_state(self, state: dict, path: str) -> List[dict]:
        """Load a resume state (checked by :func:`load_resume_state`); training continues at the
        next epoch. Returns the loss history so far."""
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] + 1
        _set_rng_states(state["rng"])
        self.logger.info(f"Resumed pre-training from {path}: continues at epoch {self.start_epoch}")
        return list(state["pretrain_loss"])


def run_pretrain(config, log_file: str) -> dict:
    """Pre-train ``config['model']`` on the domains named in ``config['dataset']`` (comma list).

    Each domain's config is the run's external settings with that domain as ``dataset`` (so a
    ``properties/dataset/<domain>.yaml`` applies per domain).
    """
    from recbole_mm.config import MMConfig
    from recbole_mm.data.multidomain import MultiDomainDataset, MultiDomainTrainLoader, domain_names
    from recbole_mm.data.utils import create_dataset
    from recbole_mm.utils import get_model

    logger = getLogger()
    if not config["single_spec"]:
        raise NotImplementedError("stage pretrain runs in one process: drop --nproc")
    model_class = get_model(config["model"])
    if not hasattr(model_class, "pretrain_loss"):
        raise TypeError(f"model {config['model']} has no pretrain_loss(): stage pretrain needs a transferable "
                        f"model (ANT, UniSRec, docs/transfer.md)")
    names = domain_names(config["dataset"])
    settings = resume_settings(config, names)
    resume = load_resume_state(config["resume_from"], settings) if config["resume_from"] else None
    external = {k: v for k, v in config.external_config_dict.items() if k != "dataset"}
    datasets = []
    for name in names:
        datasets.append(create_dataset(MMConfig(config["model"], name, config_dict=external)))
        logger.info(datasets[-1])
    multi = MultiDomainDataset(datasets, names)
    logger.info(multi)
    train_data = MultiDomainTrainLoader(config, multi, shuffle=True)
    model = model_class(config, multi).to(config["device"])
    logger.info(model)
    trainer = PretrainTrainer(config, model)
    metadata = {"domains": names, "n_items": multi.domain_items}
    settings.update(n_items=multi.domain_items, feature_dims=model.transfer_metadata()["feature_dims"])
    history: List[dict] = []
    if resume is not None:  # keep writing the interrupted run's checkpoint
        check_resume_settings(resume, settings, config["resume_from"])
        history = trainer.restore_pretrain_state(resume, config["resume_from"])
        checkpoint = resume["checkpoint"]
    else:
        checkpoint = os.path.join(config["checkpoint_dir"], f"{config['model']}-pretrain-{'+'.join(names)}-"
                                                            f"{get_local_time()}.pth")
    logger.info(f"state after every epoch: {resume_state_file(checkpoint)} (resume with --resume_from=<it>)")
    history = trainer.pretrain(train_data, checkpoint, metadata, show_progress=config["show_progress"],
                               history=history, settings=settings)
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "stage": "pretrain",
        "domains": names,
        "n_items": multi.domain_items,
        "pretrain_loss": history,
        "epochs_trained": max(0, len(history) - trainer.start_epoch),  # in this run (as stage train counts)
        "epochs": len(history),
        "resumed_from": config["resume_from"] or None,
        "train_epoch_seconds": getattr(trainer, "train_epoch_seconds", []),
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "checkpoint": checkpoint if history else None,
        "resume_state": resume_state_file(checkpoint) if history else None,
        "log_file": log_file,
        "device": str(config["device"]),
    }
