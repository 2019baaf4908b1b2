"""Transferable sequential models: what a pre-trained checkpoint holds and how it is adapted.

:class:`TransferableRecommender` is the base of ANT and UniSRec. Items are represented only
through a :class:`~recbole_mm.model.layers.MultiModalItemEncoder` (MoE adaptors over fixed
features) and sequences by a :class:`~recbole_mm.model.layers.CausalTransformer`, so every
parameter except an optional item-ID embedding (``_e`` variants) is independent of the item set
and can move to another domain. The class provides

- the pre-training objective (:meth:`pretrain_loss`): a sequence-item contrastive loss (negatives:
  the batch's other items, or every item of every pre-training domain with
  ``pretrain_negatives: all``) plus a model-specific auxiliary term (:meth:`auxiliary_pretrain_loss`);
- the transfer hook (:meth:`adapt_from_pretrained`) that the runner calls for the adaptation
  modes ``ground_built``, ``fine_tune`` and ``re_learning`` (docs/transfer.md).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_mm.checkpoint import ARCHITECTURE_KEYS, check_checkpoint_fits
from recbole_mm.model.abstract_recommender import MMSequentialRecommender
from recbole_mm.model.layers import CausalTransformer, MultiModalItemEncoder, cosine_scores
from recbole_mm.model.transferable import Transferable


def in_batch_contrastive(queries: torch.Tensor, keys: torch.Tensor, temperature: float,
                         ids: torch.Tensor = None) -> torch.Tensor:
    """InfoNCE of ``queries[i]`` against ``keys[i]`` with the other rows' keys as negatives.

    Cosine similarities divided by ``temperature``. Where ``ids`` is given, a negative with the
    same id as the positive (the same item twice in a batch) is masked out.
    """
    logits = cosine_scores(queries, keys, temperature)
    if ids is not None:
        same = ids.view(-1, 1) == ids.view(1, -1)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


PRETRAIN_NEGATIVES = ("in_batch", "all")


class TransferableRecommender(MMSequentialRecommender, Transferable):
    """Base of the plugin's transferable models (ANT, UniSRec); see the module docstring.

    Subclasses build ``self.item_encoder`` (MultiModalItemEncoder) and ``self.sequence_encoder``
    (CausalTransformer), set ``self.temperature`` and may add ``self.item_embedding`` (an item-ID
    embedding, never transferred). Scores are cosine similarities divided by ``temperature``.
    """

    # state-dict prefixes of the transferable parameters (all of them item-set independent)
    transferable_prefixes: Tuple[str, ...] = ("sequence_encoder.", "item_encoder.adaptors.")
    # frozen under re-learning (the ANT paper: the transformer encoder layers)
    relearn_frozen_prefixes: Tuple[str, ...] = ("sequence_encoder.encoder.",)
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.architecture = {k: config[k] for k in ARCHITECTURE_KEYS}
        self.pretrain_negatives = config["pretrain_negatives"] or "in_batch"
        if self.pretrain_negatives not in PRETRAIN_NEGATIVES:
            raise ValueError(f"config key `pretrain_negatives` must be one of {list(PRETRAIN_NEGATIVES)}, "
                             f"got {self.pretrain_negatives!r}")

    def build_encoders(self, config, features: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor],
                       fusion_beta: float = 0.0) -> None:
        """``item_encoder`` (MoE adaptors over ``features``) and ``sequence_encoder`` (causal
        transformer), both ``hidden_size`` wide; ``temperature`` of the cosine scores."""
        self.hidden_size = config["hidden_size"]
        self.temperature = config["temperature"]
        self.item_encoder = MultiModalItemEncoder(
            features, masks, hidden_size=self.hidden_size, n_experts=config["n_experts"],
            dropout=config["adaptor_dropout_prob"], fusion_beta=fusion_beta,
            price_embedding_size=config["price_embedding_size"] or 64,
            price_frequency=config["price_frequency"] or 50000.0,
            missing_modality=config["missing_modality"] or "zero",
        )
        self.sequence_encoder = CausalTransformer(config, self.hidden_size)
        self.sequence_encoder.apply(self.init_weights)

    # ----- item and sequence representations ----------------------------------------------
    def item_table(self) -> torch.Tensor:
        return self.item_reps(None)

    def item_reps(self, item_ids=None) -> torch.Tensor:
        """Representations of ``item_ids`` (all items when None): adaptors (+ ID embedding)."""
        reps = self.item_encoder(item_ids)
        embedding = getattr(self, "item_embedding", None)
        if embedding is not None:
            reps = reps + (embedding.weight if item_ids is None else embedding(item_ids))
        return reps

    def encode_sequence(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.sequence_encoder(item_seq, table[item_seq])

    def score(self, seq_output: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return cosine_scores(seq_output, table, self.temperature)

    # ----- pre-training -------------------------------------------------------------------
    def pretrain_loss(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        """(sequence-item loss, weighted auxiliary loss) on a whole-sequence batch.

        ``pretrain_negatives: in_batch`` (default): only the items of the batch are encoded and the
        other targets of the batch are the negatives, so the cost does not grow with the number of
        items of all pre-training domains together. ``all``: a full softmax over every item of every
        pre-training domain (the padding id excluded).
        """
        if self.TARGET_SEQ not in interaction:
            raise KeyError(f"pre-training needs whole-sequence batches with field {self.TARGET_SEQ!r}")
        item_seq, targets = self.training_targets(interaction)
        unique, inverse = torch.unique(torch.cat([item_seq.flatten(), targets.flatten()]), return_inverse=True)
        reps = self.item_reps(unique)
        n = item_seq.numel()
        seq_emb = reps[inverse[:n]].view(*item_seq.shape, -1)
        output = self.sequence_encoder(item_seq, seq_emb)
        valid = targets > 0
        target_reps = reps[inverse[n:]].view(*targets.shape, -1)[valid]
        if self.pretrain_negatives == "all":
            seq_item = self.full_softmax_loss(output[valid], targets[valid])
        else:
            seq_item = in_batch_contrastive(output[valid], target_reps, self.temperature, targets[valid])
        aux = self.auxiliary_pretrain_loss(interaction, item_seq, output, unique)
        return seq_item, aux

    def full_softmax_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``outputs`` over the scores of every item (the padding id 0 masked)."""
        logits = self.score(outputs, self.item_table())
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, targets)

    def auxiliary_pretrain_loss(self, interaction, item_seq: torch.Tensor, output: torch.Tensor,
                                batch_items: torch.Tensor) -> torch.Tensor:
        """Model-specific weighted pre-training term (zero here)."""
        return output.new_zeros(())

    # ----- transfer -----------------------------------------------------------------------
    def transferable_state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()
                if k.startswith(self.transferable_prefixes)}

    def transfer_metadata(self) -> dict:
        """What a checkpoint must agree on with the model it is loaded into."""
        encoder = self.item_encoder
        meta = {
            "model": type(self).__name__,
            "family": self.transfer_family or type(self).__name__,
            "modalities": list(encoder.modalities),
            "feature_dims": {m: int(encoder.feature(m).shape[1]) for m in encoder.modalities},
        }
        meta.update(self.architecture)
        return meta

    def relearning_reinitialise(self) -> List[str]:
        """Re-initialise the position embedding (normal), the MoE experts (Xavier) and the gates."""
        with torch.no_grad():
            self.sequence_encoder.position_embedding.weight.normal_(0.0, self.initializer_range)
        for adaptor in self.item_encoder.adaptors.values():
            adaptor.reset_experts("xavier")
            adaptor.reset_gate()
        return ["sequence_encoder.position_embedding.*", "item_encoder.adaptors.*"]

    def freeze(self, prefixes: Tuple[str, ...]) -> List[str]:
        frozen = []
        for name, param in self.named_parameters():
            if name.startswith(prefixes):
                param.requires_grad_(False)
                frozen.append(name)
        return frozen

    def adapt_from_pretrained(self, checkpoint: dict, mode: str, config) -> dict:
        """The transfer hook the runner calls (docs/transfer.md): load ``checkpoint`` (see
        :func:`recbole_mm.checkpoint.save_pretrained`) for adaptation ``mode``.

        Adaptors of modalities only the target has start fresh (a source domain without
        images leaves the image adaptor to be learnt on the target); those only the checkpoint
        has are ignored. ``fine_tune`` loads every transferable parameter and trains all (with
        ``fine_tune_freeze_encoder`` the transformer encoder and position embedding stay fixed,
        UniSRec's own fine-tuning); ``re_learning`` loads, freezes the transformer encoder layers
        and re-initialises the position embedding, MoE experts and gates. Returns a summary.
        """
        check_checkpoint_fits(checkpoint, self.transfer_metadata(), config["pretrained_checkpoint"])
        own_modalities = list(self.item_encoder.modalities)
        saved_modalities = list(checkpoint["metadata"]["modalities"])
        fresh = [m for m in own_modalities if m not in saved_modalities]  # the source domains lacked it
        ignored = [m for m in saved_modalities if m not in own_modalities]  # the target lacks it
        state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(_adaptor_prefixes(ignored))}
        own = {k for k in self.transferable_state_dict() if not k.startswith(_adaptor_prefixes(fresh))}
        missing = sorted(own - set(state))
        unexpected = sorted(set(state) - own)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {config['pretrained_checkpoint']} does not hold {type(self).__name__}'s "
                f"transferable parameters: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.load_state_dict(state, strict=False)
        summary = {"mode": mode, "loaded": len(state), "frozen": [], "reinitialised": [],
                   "fresh_modalities": fresh, "ignored_modalities": ignored}
        if mode == "fine_tune" and config["fine_tune_freeze_encoder"]:
            summary["frozen"] = self.freeze(("sequence_encoder.encoder.", "sequence_encoder.position_embedding."))
        elif mode == "re_learning":
            summary["reinitialised"] = self.relearning_reinitialise()
            summary["frozen"] = self.freeze(self.relearn_frozen_prefixes)
        return summary


def _adaptor_prefixes(modalities) -> tuple:
    return tuple(f"item_encoder.adaptors.{m}." for m in modalities)


def new_item_embedding(model: TransferableRecommender) -> nn.Embedding:
    """An item-ID embedding for an ``_e`` variant (RecBole's normal initialisation, zero padding row)."""
    embedding = nn.Embedding(model.n_items, model.hidden_size, padding_idx=0)
    model.init_weights(embedding)
    with torch.no_grad():
        embedding.weight[0].zero_()
    return embedding
