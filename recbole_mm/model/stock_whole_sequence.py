"""Whole-sequence training for stock RecBole models whose output at position t depends only on
the items up to t (``stock_whole_sequence: True``).

RecBole trains a sequential model on one prefix sample per position: (history up to t, item
t + 1), each a separate forward pass. For a causal model the hidden state at position t of the
whole sequence equals the one at the end of that prefix, so one pass per user sequence with the
loss at every position does the same work once. The adapters here give every position's hidden
state **from the model's own modules** (RecBole's code runs unchanged; only the last-position
readout ``gather_indexes`` is skipped); :func:`whole_sequence_loss` applies RecBole's CE loss to
the positions that have a target. The batches come from
:class:`recbole_mm.data.batching.SequenceTrainDataLoader`, whose rows reproduce RecBole's prefix
set exactly, truncation to ``MAX_ITEM_LIST_LENGTH`` included, so the loss is the mean of
RecBole's prefix-sample losses (tests/model/test_stock_whole_sequence.py).

Which models are served, and why the others are refused, is decided in
:func:`recbole_mm.data.utils.stock_whole_sequence_refusal` (one list, :data:`ADAPTERS` holds
one adapter for each name on it).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator

import torch
from recbole.data.interaction import Interaction

from recbole_mm.data.utils import STOCK_WHOLE_SEQUENCE_MODELS


@contextmanager
def _no_last_position_readout(model: torch.nn.Module) -> Iterator[None]:
    """Inside it, the model's ``gather_indexes`` (RecBole's pick of the last position) returns
    its input unchanged, so the model's own ``forward`` gives a state at every position."""
    model.gather_indexes = lambda output, gather_index: output
    try:
        yield
    finally:
        del model.gather_indexes  # back to the class's method


def _readout_skipped(model: torch.nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """SASRec, SASRecF, FDSA (causal attention masks; per-item feature attention), GRU4Rec,
    GRU4RecF (unidirectional GRUs): ``forward`` runs per position up to its last-position
    readout; everything after that readout (FDSA's concat layer and LayerNorm, GRU4Rec's
    dense layer before it) acts on each position alone."""
    lengths = (item_seq != 0).sum(dim=1)  # not read once the readout is skipped
    with _no_last_position_readout(model):
        return model.forward(item_seq, lengths)


def _s3rec_finetune(model: torch.nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """S3Rec's fine-tuning stage: ``forward(item_seq, bidirectional=False)`` already returns
    every position (RecBole gathers the last one in ``calculate_loss``)."""
    return model.forward(item_seq, bidirectional=False)


AllPositions = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]

# model name -> (model, item_seq [B, L]) -> hidden states [B, L, H]
ADAPTERS: Dict[str, AllPositions] = {
    "SASRec": _readout_skipped,
    "SASRecF": _readout_skipped,
    "FDSA": _readout_skipped,
    "GRU4Rec": _readout_skipped,
    "GRU4RecF": _readout_skipped,
    "S3Rec": _s3rec_finetune,
}
if set(ADAPTERS) != set(STOCK_WHOLE_SEQUENCE_MODELS):
    raise AssertionError("stock whole-sequence adapters and the accepted model list differ")


def all_position_outputs(model: torch.nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """The model's hidden state at every position of ``item_seq`` ([B, L] -> [B, L, H])."""
    return ADAPTERS[type(model).__name__](model, item_seq)


def whole_sequence_loss(model: torch.nn.Module, interaction: Interaction, target_field: str) -> torch.Tensor:
    """RecBole's CE loss (``model.loss_fct`` on scores against every item embedding) at every
    position with a target (``interaction[target_field] > 0``), averaged over those positions:
    the mean of the losses of the prefix samples the batch stands for."""
    targets = interaction[target_field]
    hidden = all_position_outputs(model, interaction[model.ITEM_SEQ])
    has_target = targets > 0
    logits = torch.matmul(hidden[has_target], model.item_embedding.weight.transpose(0, 1))
    return model.loss_fct(logits, targets[has_target])
