"""Multi-domain pre-training trainer (``--stage=pretrain --dataset=A,B,C``), docs/transfer.md.

The runner builds the data (:mod:`recbole_mm.data.multidomain`: every domain's training
sequences shuffled together into mixed batches) and the model; this trainer minimises the
model's ``pretrain_loss`` (in-batch contrastive) for ``epochs`` epochs. No validation: after
every epoch the transferable checkpoint is rewritten atomically, and so is a full resume state
beside it (``<checkpoint>-last.pth``: model, optimiser, RNG states, epoch, losses); the formats
live in :mod:`recbole_mm.checkpoint`. The batch order of epoch ``e`` depends only on
(``seed``, ``e``), so a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from recbole.utils import set_color

from recbole_mm.checkpoint import (
    resume_state_file,
    rng_states,
    save_pretrain_state,
    save_pretrained,
    set_rng_states,
)
from recbole_mm.trainer.trainer import MMTrainer


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
        return save_pretrain_state(resume_state_file(checkpoint_file), {
            "epoch": epoch,
            "settings": settings,
            "checkpoint": checkpoint_file,
            "pretrain_loss": history,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_states(),
        })

    def restore_pretrain_state(self, state: dict, path: str) -> List[dict]:
        """Load a resume state (checked by :func:`recbole_mm.checkpoint.load_resume_state`);
        training continues at the next epoch. Returns the loss history so far."""
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] + 1
        set_rng_states(state["rng"])
        self.logger.info(f"Resumed pre-training from {path}: continues at epoch {self.start_epoch}")
        return list(state["pretrain_loss"])
