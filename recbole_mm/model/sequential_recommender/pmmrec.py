"""PMMRec: an ID-free multi-modal sequential recommender built for transfer."""

from __future__ import annotations

from logging import getLogger
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_mm.checkpoint import check_checkpoint_fits
from recbole_mm.model.abstract_recommender import MMSequentialRecommender
from recbole_mm.model.encoders import TokenTransformer, build_token_source, key_mask, masked_mean
from recbole_mm.model.losses import (
    InBatch, corrupt_sequence, in_batch_ce, in_batch_layout, in_batch_logits, multi_positive_info_nce, nicl_masks,
    symmetric_info_nce,
)
from recbole_mm.model.layers import CausalTransformer, masked_positions
from recbole_mm.model.transferable import Transferable

PRETRAIN_PARTS = {"item_encoder": ("item_tower.",), "user_encoder": ("user_encoder.", "nid_head.")}
# config keys that fix the shapes (or meaning) of the transferable parameters
TRANSFER_KEYS = ("hidden_size", "n_layers", "n_heads", "inner_size", "MAX_ITEM_LIST_LENGTH", "item_tower",
                 "fusion_n_heads", "fusion_inner_size", "encoder_mode")


class PMMRec(MMSequentialRecommender, Transferable):
    r"""PMMRec (Li et al., ICDE 2024: "Multi-Modality is All You Need for Transferable
    Recommender Systems"). No item IDs: an item is the masked mean of one post-LN "merged
    attention" layer over its projected text and image tokens (or one modality alone,
    ``item_tower``); a SASRec-style user encoder; dot-product scores trained with an in-batch
    softmax (logQ-corrected for popularity, the user's other items masked), plus NICL, NID and
    RCL; AdamW with weight decay on the recommender and its own learning rate for end-to-end
    encoder blocks (:meth:`optimizer_param_groups`), as the reference.

    Popularity correction: the candidates are the *distinct* target items of the batch, so the
    logit of candidate ``v`` is lowered by ``log(1 - (1 - p_v)^N)`` — the probability that ``v``
    is among the distinct items of the batch's ``N`` target draws (``p_v``: training popularity)
    — not by ``log p_v``, which is right only when every draw is its own column (the reference:
    every item slot of the batch a column, duplicates kept) and over-corrects popular items of a
    distinct set (for rare items both differ by the constant ``log N``).

    Item inputs: ``encoder_mode: end_to_end`` runs the text and image encoders on the raw items
    (the reference); ``encoder_mode: feature`` reads frozen features, ``item_inputs`` choosing
    the token-level files ``<D>.text_tokens`` / ``<D>.image_tokens`` (every text token and image
    patch token enters the merged attention, as the reference's encoder outputs do) or one
    pooled vector per modality as a single token (``auto``: tokens when both files exist;
    :func:`~recbole_mm.model.encoders.feature_token_source`). The item vector is the masked mean
    of the merged-attention outputs over the valid tokens (reference: src/model/Attention_Fusion.py,
    ``MergedAttention.forward``, "# mean"); an item with neither modality is the zero vector.

    Differences from the paper: NICL/NID/RCL are designed from the paper's text (the public
    code has none; docs/models/PMMRec.md gives the exact definitions); feature mode runs no
    encoder (frozen features); a missing image is masked tokens; in-batch candidates are
    the batch's distinct target items (with the correction above); hidden size 256 and max
    length 50 by default (paper: 768, 20); ``similarity: cosine`` is an optional extra.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden = config["hidden_size"]
        self.item_tower_kind = config["item_tower"]
        if self.item_tower_kind not in ("merged", "text", "image"):
            raise ValueError(f"config key `item_tower` must be merged, text or image, got {self.item_tower_kind!r}")
        features, masks = self.load_modalities(config, dataset)
        self.item_tower = nn.Module()
        self.item_tower.source, self.item_inputs = build_token_source(config, dataset, features, masks)
        available = self.item_tower.source.modalities
        self.tower_modalities = available if self.item_tower_kind == "merged" else [self.item_tower_kind]
        missing = [m for m in self.tower_modalities if m not in available]
        if missing:
            raise ValueError(f"item_tower {self.item_tower_kind!r} needs modality {missing[0]!r}, which is not loaded")
        self.item_tower.projections = nn.ModuleDict(
            {m: nn.Linear(self.item_tower.source.dims[m], hidden) for m in available})
        self.item_tower.fusion = TokenTransformer(hidden, 1, config["fusion_n_heads"], config["fusion_inner_size"],
                                                  config["fusion_dropout_prob"], config["hidden_act"],
                                                  config["layer_norm_eps"])
        self.user_encoder = CausalTransformer(config, hidden)
        self.nid_head = nn.Linear(hidden, 1)
        has_image = (self.item_tower.source.present("image") if "image" in available
                     else torch.zeros(self.n_items, dtype=torch.bool))
        self.register_buffer("has_image", has_image.clone(), persistent=False)
        prior = torch.tensor(dataset.item_log_popularity(), dtype=torch.float32)  # the training split's
        self.register_buffer("log_prior", prior if config["popularity_correction"] else None, persistent=False)
        self.nicl_weight, self.nicl_temperature = config["nicl_weight"], config["nicl_temperature"]
        self.nid_weight, self.nid_noise_ratio = config["nid_weight"], config["nid_noise_ratio"]
        self.rcl_weight, self.rcl_temperature = config["rcl_weight"], config["rcl_temperature"]
        self.auxiliary_when_adapting = bool(config["auxiliary_when_adapting"])
        self.item_chunk_size = config["item_chunk_size"]
        self.architecture = {k: config[k] for k in TRANSFER_KEYS}
        self.similarity = config["similarity"] or "dot"
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"config key `similarity` must be dot or cosine, got {self.similarity!r}")
        self.score_temperature = config["score_temperature"]
        for module in (self.item_tower.projections, self.item_tower.fusion, self.user_encoder, self.nid_head):
            module.apply(self.init_weights)

    # ----- items ---------------------------------------------------------------------------
    def encode_items(self, item_ids: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(n,) ids -> fused item vectors (n, d) and per-modality vectors {m: (n, d)} (masked
        mean of the projected tokens, used by NICL). Padding (id 0) gives zero vectors."""
        tokens = self.item_tower.source(item_ids)
        states, masks, per_modality = [], [], {}
        for m in self.tower_modalities:
            projected = self.item_tower.projections[m](tokens[m][0])
            mask = tokens[m][1] & (item_ids > 0).unsqueeze(1)
            per_modality[m] = masked_mean(projected, mask)
            states.append(projected)
            masks.append(mask)
        if self.item_tower_kind == "merged":
            states, mask = torch.cat(states, dim=1), torch.cat(masks, dim=1)
            fused = masked_mean(self.item_tower.fusion(states, key_mask(mask)), mask)
        else:
            fused = per_modality[self.item_tower_kind]
        return fused, per_modality

    def item_table(self) -> torch.Tensor:
        ids = torch.arange(self.n_items, device=self.has_image.device)
        return torch.cat([self.encode_items(chunk)[0] for chunk in ids.split(self.item_chunk_size)])

    def encode_sequence(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.user_encoder(item_seq, table[item_seq])

    def scoring_vectors(self, users: torch.Tensor, items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Users and items as they enter the dot product: unchanged (``similarity: dot``, the
        paper) or unit-normalised with the users divided by ``score_temperature`` (``cosine``)."""
        if self.similarity == "dot":
            return users, items
        return F.normalize(users, dim=-1) / self.score_temperature, F.normalize(items, dim=-1)

    def score(self, seq_output: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        users, items = self.scoring_vectors(seq_output, table)
        return users @ items.transpose(-1, -2)

    # ----- training ------------------------------------------------------------------------
    def calculate_loss(self, interaction, return_parts: bool = False):
        inputs, targets = self.training_targets(interaction)
        use_noise = self.nid_weight > 0 or self.rcl_weight > 0
        noised, nid_labels = corrupt_sequence(inputs, self.nid_noise_ratio, self.n_items) if use_noise else (None, None)
        parts = [inputs.reshape(-1), targets.reshape(-1)] + ([noised.reshape(-1)] if use_noise else [])
        ids = torch.unique(torch.cat(parts + [inputs.new_zeros(1)]), sorted=True)  # id 0 first
        fused, per_modality = self.encode_items(ids)

        def local(x):
            return torch.searchsorted(ids, x)

        output = self.user_encoder(inputs, fused[local(inputs)])
        logits, layout = self.next_item_logits(output, inputs, targets, lambda items: fused[local(items)])
        loss = next_item_loss = in_batch_ce(logits, layout)
        if self.nicl_weight > 0:
            loss = loss + self.nicl_weight * self.nicl_loss(inputs, targets, ids, per_modality)
        if use_noise:
            noised_output = self.user_encoder(noised, fused[local(noised)])
            valid = inputs > 0
            if self.nid_weight > 0:
                nid_logits = self.nid_head(noised_output[valid]).squeeze(-1)
                loss = loss + self.nid_weight * F.binary_cross_entropy_with_logits(nid_logits, nid_labels[valid])
            if self.rcl_weight > 0:
                lengths = valid.sum(1)
                clean_user = masked_positions(output, lengths)
                noised_user = masked_positions(noised_output, lengths)
                users_of_rows = interaction[self.USER_ID] if self.USER_ID in interaction else None
                loss = loss + self.rcl_weight * symmetric_info_nce(  # rows of one user are no negatives
                    clean_user, noised_user, self.rcl_temperature, groups=users_of_rows)
        return (loss, next_item_loss) if return_parts else loss

    def next_item_logits(self, output: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor,
                         item_vectors: Callable[[torch.Tensor], torch.Tensor]) -> Tuple[torch.Tensor, InBatch]:
        """The in-batch training logits (loss positions x distinct target items) and their layout.

        ``output``: the user encoder's states on ``inputs``; ``item_vectors``: item ids -> fused
        item vectors. With ``popularity_correction`` each candidate column is lowered by
        ``log(1 - (1 - p)^N)``, the log probability that the item is among the distinct targets
        of the batch's ``N`` loss positions (``p``: training popularity), history items -inf.
        """
        layout = in_batch_layout(inputs, targets)
        users, candidates = self.scoring_vectors(output[layout.rows, layout.positions], item_vectors(layout.candidates))
        return in_batch_logits(users, candidates, layout, self.log_prior, distinct_candidates=True), layout

    def nicl_loss(self, inputs: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor,
                  per_modality: Dict[str, torch.Tensor]) -> torch.Tensor:
        """NICL over the batch (see :func:`recbole_mm.model.losses.nicl_masks`); cosine
        similarities / ``nicl_temperature``. Needs the text modality; without images only the
        text-to-next-text positives remain."""
        if "text" not in per_modality:
            return per_modality[next(iter(per_modality))].sum() * 0.0
        text = per_modality["text"]
        image = per_modality.get("image")
        has_image = self.has_image if image is not None else torch.zeros_like(self.has_image)
        image = torch.zeros_like(text) if image is None else image  # never used: no image takes part
        masks = nicl_masks(inputs, targets, has_image)

        def both(items):
            rows = torch.searchsorted(ids, items[: len(items) // 2])
            return F.normalize(torch.cat([text[rows], image[rows]]), dim=-1)

        sim = both(masks.anchor_items) @ both(masks.candidate_items).t()
        return multi_positive_info_nce(sim, masks.positive, masks.negative, self.nicl_temperature)

    # ----- optimiser (the plugin's trainer calls it: recbole_mm.trainer.trainer.ModelParamGroupsMixin) -----
    def optimizer_param_groups(self, config) -> List[dict]:
        """Parameter groups as the reference builds its AdamW (``learner: adamw``): the
        recommender (projections, fusion layer, user encoder, NID head) at ``learning_rate`` with
        ``weight_decay``; in end-to-end mode the trainable blocks of the text and of the image
        encoder at ``encoder_learning_rate`` (~ = ``learning_rate``) with ``encoder_weight_decay``.
        ``decay_bias_and_norm: False`` moves the recommender's biases and LayerNorm weights to a
        group without weight decay (the reference decays them). Frozen parameters are left out.
        Each group carries a ``name``: recommender, recommender_no_decay, text_encoder, image_encoder.
        """
        lr = _non_negative(config, "learning_rate")
        decay = _non_negative(config, "weight_decay")
        encoder_lr = lr if config["encoder_learning_rate"] is None else _non_negative(config, "encoder_learning_rate")
        encoder_decay = _non_negative(config, "encoder_weight_decay")
        decay_bias_and_norm = config["decay_bias_and_norm"]
        if not isinstance(decay_bias_and_norm, bool):
            raise ValueError(f"config key `decay_bias_and_norm` must be True or False, got {decay_bias_and_norm!r}")
        no_decay = set()
        if not decay_bias_and_norm:
            for module_name, module in self.named_modules():
                for param_name, _ in module.named_parameters(recurse=False):
                    if param_name == "bias" or isinstance(module, nn.LayerNorm):
                        no_decay.add(f"{module_name}.{param_name}" if module_name else param_name)
        encoders = {"text_encoder": "item_tower.source.text_encoder.",
                    "image_encoder": "item_tower.source.image_encoder."}
        members: Dict[str, List[nn.Parameter]] = {name: [] for name in
                                                  ("recommender", "recommender_no_decay", *encoders)}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            group = next((g for g, prefix in encoders.items() if name.startswith(prefix)), None)
            if group is None:
                group = "recommender_no_decay" if name in no_decay else "recommender"
            members[group].append(param)
        settings = {"recommender": (lr, decay), "recommender_no_decay": (lr, 0.0),
                    "text_encoder": (encoder_lr, encoder_decay), "image_encoder": (encoder_lr, encoder_decay)}
        return [{"name": g, "params": ps, "lr": settings[g][0], "weight_decay": settings[g][1]}
                for g, ps in members.items() if ps]

    # ----- transfer (docs/transfer.md) -----------------------------------------------------------
    def pretrain_loss(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        """``--stage=pretrain``: the training objective, reported as (next-item CE, NICL + NID + RCL)."""
        total, next_item = self.calculate_loss(interaction, return_parts=True)
        return next_item, total - next_item

    def transferable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Every persistent parameter: nothing of PMMRec depends on the item set."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def transfer_metadata(self) -> dict:
        source = self.item_tower.source
        return {"model": type(self).__name__, "family": "PMMRec", "modalities": list(source.modalities),
                "feature_dims": {m: int(d) for m, d in source.dims.items()}, "item_inputs": self.item_inputs,
                **self.architecture}

    def adapt_from_pretrained(self, checkpoint: dict, mode: str, config) -> dict:
        """The runner's adaptation hook: ``adaptation: fine_tune`` loads the part named by
        ``pretrain_part`` (full | item_encoder | user_encoder | none) and trains everything."""
        if mode != "fine_tune":
            raise ValueError(f"PMMRec adapts with adaptation=fine_tune and config key `pretrain_part`; "
                             f"{mode!r} is not defined for it")
        check_checkpoint_fits(checkpoint, self.transfer_metadata(), config["pretrained_checkpoint"])
        saved_inputs = checkpoint.get("metadata", {}).get("item_inputs")
        if saved_inputs and saved_inputs != self.item_inputs:  # same shapes, other inputs: allowed, but say so
            getLogger().warning(f"PMMRec: the pre-trained checkpoint read {saved_inputs} item inputs, this run reads "
                                f"{self.item_inputs} (config key `item_inputs`)")
        part = config["pretrain_part"] or "full"
        loaded = self.load_pretrained(checkpoint["state_dict"], part)
        if not self.auxiliary_when_adapting:  # the reference fine-tunes with the recommendation loss alone
            self.nicl_weight = self.nid_weight = self.rcl_weight = 0.0
        return {"mode": mode, "pretrain_part": part, "loaded": len(loaded), "frozen": [], "reinitialised": [],
                "auxiliary_objectives": self.auxiliary_when_adapting}

    def load_pretrained(self, state_dict: dict, pretrain_part: str) -> List[str]:
        """Load one part of a pre-trained PMMRec: ``full`` | ``item_encoder`` | ``user_encoder``
        | ``none`` (train from scratch; nothing is loaded). Parts not loaded keep their fresh
        initialisation. ``state_dict`` may also be a RecBole checkpoint (``{"state_dict": ...}``).

        Raises ``KeyError`` when a key of the part is missing from ``state_dict`` or ``state_dict``
        has an unknown key under the part, ``ValueError`` on a shape mismatch or an unknown
        part. Returns the loaded keys.
        """
        if pretrain_part not in ("full", "item_encoder", "user_encoder", "none"):
            raise ValueError(f"pretrain_part must be full, item_encoder, user_encoder or none, got {pretrain_part!r}")
        if pretrain_part == "none":
            return []
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            state_dict = state_dict["state_dict"]
        own = self.state_dict()
        prefixes = (tuple(p for ps in PRETRAIN_PARTS.values() for p in ps) if pretrain_part == "full"
                    else PRETRAIN_PARTS[pretrain_part])
        expected = {k for k in own if k.startswith(prefixes)}
        given = {k for k in state_dict if k.startswith(prefixes)}
        if pretrain_part == "full":
            given = set(state_dict)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        if missing or unexpected:
            raise KeyError(f"pretrain_part {pretrain_part!r}: checkpoint lacks {len(missing)} key(s) {missing[:5]} "
                           f"and has {len(unexpected)} unknown key(s) {unexpected[:5]} (architectures differ?)")
        wrong = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(expected)
                 if tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if wrong:
            raise ValueError(f"pretrain_part {pretrain_part!r}: shape mismatch for {len(wrong)} key(s): {wrong[:5]}")
        self.load_state_dict({k: state_dict[k] for k in expected}, strict=False)
        self._cached_item_table = None
        return sorted(expected)


def _non_negative(config, key: str) -> float:
    """``config[key]`` as a float >= 0, else one ValueError line naming the key."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"config key `{key}` must be a number >= 0, got {value!r}")
    return float(value)
