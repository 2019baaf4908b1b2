"""The transferable-model contract and the adaptation step (docs/transfer.md).

A model takes part in multi-domain pre-training (``stage: pretrain``) and in the adaptation
modes ``fine_tune`` / ``re_learning`` by implementing :class:`Transferable`; callers check
``isinstance(model, Transferable)`` (or ``issubclass`` on the class). ANT, ANT_e, UniSRec and
UniSRec_e implement it through :class:`recbole_mm.model.transfer.TransferableRecommender`,
PMMRec directly.
"""

from __future__ import annotations

import abc
from typing import Dict, Tuple, Union

import torch

from recbole_mm.checkpoint import load_pretrained
from recbole_mm.config import adaptation_mode


class Transferable(abc.ABC):
    """What a pre-trainable, adaptable model provides.

    - :meth:`pretrain_loss`: the pre-training objective on whole-sequence batches with global
      item ids (one tensor, or a tuple (main, auxiliary) reported separately);
    - :meth:`transferable_state_dict` / :meth:`transfer_metadata`: what a transferable checkpoint
      holds (:func:`recbole_mm.checkpoint.save_pretrained`) and what it must agree on with a
      target model (:func:`recbole_mm.checkpoint.check_checkpoint_fits`);
    - :meth:`adapt_from_pretrained`: load, freeze and re-initialise for an adaptation mode.
    """

    # checkpoints of one family load into each other (ANT <-> ANT_e, UniSRec <-> UniSRec_e)
    transfer_family: str = ""

    @abc.abstractmethod
    def pretrain_loss(self, interaction) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """The pre-training loss of one batch."""

    @abc.abstractmethod
    def transferable_state_dict(self) -> Dict[str, torch.Tensor]:
        """The parameters a checkpoint carries to another domain (none may depend on the item set)."""

    @abc.abstractmethod
    def transfer_metadata(self) -> dict:
        """``model``, ``family``, ``modalities``, ``feature_dims`` and the architecture keys."""

    @abc.abstractmethod
    def adapt_from_pretrained(self, checkpoint: dict, mode: str, config) -> dict:
        """Load ``checkpoint`` (format checked) for ``mode`` (``fine_tune`` | ``re_learning``):
        load, freeze (``requires_grad_(False)``) and re-initialise in place; return a summary
        such as ``{"mode": mode, "loaded": n, "frozen": [names], "reinitialised": [names]}``."""


def apply_adaptation(model: torch.nn.Module, config, logger=None) -> dict:
    """Prepare ``model`` for the adaptation mode in config key ``adaptation`` (a pipeline step
    between building the model and building its trainer, so the optimiser sees the final flags).

    ``ground_built`` leaves the freshly initialised model alone (a ``pretrained_checkpoint`` is
    then ignored, with a warning); the other modes load ``pretrained_checkpoint`` through
    :meth:`Transferable.adapt_from_pretrained`.
    """
    mode = adaptation_mode(config)
    if mode == "auto":
        raise ValueError("adaptation auto chooses among the other modes: the runner resolves it "
                         "(recbole_mm.runner), a model is adapted with one concrete mode")
    if mode == "ground_built":
        if config["pretrained_checkpoint"] and logger is not None:
            logger.warning("adaptation: ground_built trains from scratch; pretrained_checkpoint is ignored")
        return {"mode": mode}
    if not isinstance(model, Transferable):
        raise TypeError(f"adaptation {mode!r}: model {type(model).__name__} is not transferable (it does not "
                        f"implement recbole_mm.model.transferable.Transferable, docs/transfer.md); only "
                        f"ground_built applies to it")
    summary = model.adapt_from_pretrained(load_pretrained(config["pretrained_checkpoint"]), mode, config)
    if logger is not None:
        logger.info(f"adaptation {mode} from {config['pretrained_checkpoint']}: {len(summary.get('frozen', []))} "
                    f"frozen parameters, re-initialised {summary.get('reinitialised', [])}")
    return summary
