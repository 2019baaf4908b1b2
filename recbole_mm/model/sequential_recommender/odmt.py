"""ODMT: ID-aware multi-modal transformer with online distillation between three branches."""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn

from recbole_mm.model.abstract_recommender import MMSequentialRecommender
from recbole_mm.model.encoders import TokenTransformer, feature_token_source, masked_mean
from recbole_mm.model.losses import (
    distillation_kl, in_batch_ce, in_batch_layout, in_batch_logits, ramp_weight,
)
from recbole_mm.model.layers import CausalTransformer

BRANCHES = ("id", "text", "image")


class GRUBackbone(nn.Module):
    """GRU4Rec-style backbone: dropout, a GRU, a linear layer back to ``hidden_size``."""

    def __init__(self, config, hidden: int):
        super().__init__()
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.gru = nn.GRU(hidden, hidden, num_layers=config["n_layers"], batch_first=True, bias=False)
        self.dense = nn.Linear(hidden, hidden)
        for weight in (self.gru.weight_hh_l0, self.gru.weight_ih_l0):
            nn.init.xavier_uniform_(weight)

    def forward(self, item_seq: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        return self.dense(self.gru(self.dropout(item_emb))[0])


class ODMT(MMSequentialRecommender):
    r"""ODMT (Ji et al., ACM MM 2023: "Online Distillation-enhanced Multi-modal Transformer for
    Sequential Recommendation"), feature mode.

    Per item an ID token, the projected text token(s) and the projected image token(s) pass
    through ``imt_layers`` post-LN blocks, padding tokens masked as keys; the ID token's output
    feeds the ID branch, the mean of the text tokens' outputs (``text_readout: mean``; public
    code: the first text token, BERT's CLS) the text branch, the first image token the image
    branch (public code: modules.py ``MergedAttentionFusion.forward``), each through its own
    MLP head and its own sequence backbone (``backbone``: sasrec | gru4rec). Loss: the sum of
    the branches' in-batch CE plus ``w * [KL(text<-ID) + KL(image<-ID) + KL(ID<-ensemble)]`` with
    the ramped weight ``w``; evaluation scores are the mean of the three branches' scores
    (:meth:`branch_full_sort_predict` gives each branch's, for ``branch_metrics``).

    Item inputs (``item_inputs``, :func:`~recbole_mm.model.encoders.feature_token_source`):
    ``tokens`` reads the frozen token-level files ``<D>.text_tokens`` (the text encoder's last
    layer, every token) and ``<D>.image_tokens`` (CLS + patch tokens), as the public code's
    ``t_feat`` / ``v_feat`` (feature_extractors.py); ``pooled`` one pooled vector per modality;
    ``auto`` tokens when both files exist.

    ID token: as the public code, an ID table in the raw feature space (``id_init: raw_mean``:
    each row starts as the mean of the item's raw text and image features) through its own
    Linear layer (``id_projection``); ``id_init: projected_mean`` is the plugin's earlier
    variant (a ``hidden_size`` table starting as the mean of the projected features).

    Differences from the public code (docs/models/ODMT.md): the KD term is the KL divergence
    (soft CE minus the teacher's entropy, same student gradient, zero on agreement); the
    padding row is zero; candidates are the batch's distinct target items; text and image
    features of different sizes are zero-padded to the larger size for ``raw_mean``; the text
    summary (readout and ``raw_mean``) is the tokens' mean by default (``text_readout``).
    """

    ID_INITS = ("raw_mean", "projected_mean", "random")
    TEXT_READOUTS = ("first", "mean")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden = self.hidden_size = config["hidden_size"]
        if config["backbone"] not in ("sasrec", "gru4rec"):
            raise ValueError(f"config key `backbone` must be sasrec or gru4rec, got {config['backbone']!r}")
        features, masks = self.load_modalities(config, dataset)
        missing = [m for m in ("text", "image") if m not in features]
        if missing:
            raise ValueError(f"ODMT needs the text and image modalities; {missing} not in config key `modalities`")
        self.item_chunk_size = config["item_chunk_size"]
        self.source, self.item_inputs = feature_token_source(config, dataset, features, masks, ("text", "image"))
        self.id_init = "projected_mean" if config["id_init"] == "features" else config["id_init"]  # old name
        if self.id_init not in self.ID_INITS:
            raise ValueError(f"config key `id_init` must be one of {self.ID_INITS}, got {config['id_init']!r}")
        self.text_readout = config["text_readout"] or "mean"
        if self.text_readout not in self.TEXT_READOUTS:
            raise ValueError(f"config key `text_readout` must be one of {self.TEXT_READOUTS}, "
                             f"got {config['text_readout']!r}")
        self.projections = nn.ModuleDict({m: nn.Linear(self.source.dims[m], hidden) for m in ("text", "image")})
        if self.id_init == "projected_mean":  # the ID table lives in the hidden space, no ID projection
            self.id_embedding = nn.Embedding(self.n_items, hidden, padding_idx=0)
            self.id_projection = None
        else:  # the public code: the ID table lives in the raw feature space, then its own Linear layer
            raw = max(self.source.dims["text"], self.source.dims["image"])
            self.id_embedding = nn.Embedding(self.n_items, raw, padding_idx=0)
            self.id_projection = nn.Linear(raw, hidden)
        self.token_dropout = nn.Dropout(config["hidden_dropout_prob"])  # on the IMT input tokens, as the public IMT
        self.imt = TokenTransformer(hidden, config["imt_layers"], config["imt_n_heads"], config["imt_inner_size"],
                                    config["hidden_dropout_prob"], config["hidden_act"], config["layer_norm_eps"])
        self.heads = nn.ModuleDict({b: nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(),
                                                     nn.Linear(hidden, hidden)) for b in BRANCHES})
        backbone = CausalTransformer if config["backbone"] == "sasrec" else GRUBackbone
        self.backbones = nn.ModuleDict({b: backbone(config, hidden) for b in BRANCHES})
        self.block_id_key = bool(config["block_id_key"])
        self.kd_temperature, self.kd_alpha = config["kd_temperature"], config["kd_alpha"]
        self.kd_weight, self.kd_detach_teacher = config["kd_weight"], bool(config["kd_detach_teacher"])
        prior = torch.tensor(dataset.item_log_popularity(), dtype=torch.float32)  # the training split's
        self.register_buffer("log_prior", prior if config["popularity_correction"] else None, persistent=False)
        # training epochs started (model.train() calls); saved with the model: a resumed run continues the ramp
        self.register_buffer("epochs_started", torch.zeros((), dtype=torch.long))
        # RecBole's N(0, 0.02) initialisation, except with GRU backbones: those get Xavier GRUs and
        # keep torch's default for their output layers and the MLP heads (with N(0, 0.02) item and
        # user vectors start tiny, so do the logits and their gradients, and the GRU barely trains)
        gru = config["backbone"] == "gru4rec"
        for name, module in self.named_children():
            if not (gru and name in ("backbones", "heads")):
                module.apply(self.init_weights)
        if self.id_init != "random":
            self.init_id_from_features(projected=self.id_init == "projected_mean")
        with torch.no_grad():
            self.id_embedding.weight[0].zero_()

    @torch.no_grad()
    def init_id_from_features(self, projected: bool = False) -> None:
        """ID embedding := mean of the item's text and image summaries (those it has), computed
        ``item_chunk_size`` items at a time; a summary is the modality's first token, or for text
        with ``text_readout: mean`` the mean of its valid tokens.

        ``projected=False`` (``raw_mean``, the public code's ``init 1``: ``(v_feat[:, 0] +
        t_feat[:, 0]) / 2``, model.py): the raw features, the smaller one zero-padded to the larger
        size (the public code has equal sizes); ``projected=True`` (``projected_mean``): each
        feature through its initial projection first. With token inputs the first token is the
        text encoder's first (CLS) token and the image encoder's CLS token, as in the public code."""
        ids = torch.arange(self.n_items, device=self.id_embedding.weight.device)
        size = self.id_embedding.embedding_dim
        for chunk in ids.split(self.item_chunk_size):
            tokens = self.source(chunk)
            total = torch.zeros(len(chunk), size, device=ids.device)
            count = torch.zeros(len(chunk), 1, device=ids.device)
            for m in ("text", "image"):
                states, mask = tokens[m]
                summary = self.summary(m, states.to(total.dtype), mask)
                vector = self.projections[m](summary) if projected else summary
                present = mask[:, 0].to(total.dtype).unsqueeze(-1)
                total[:, : vector.size(1)] += vector * present
                count += present
            self.id_embedding.weight[chunk] = total / count.clamp(min=1.0)

    def summary(self, modality: str, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(n, T, d) states of one modality -> (n, d): the first token's, or for text with
        ``text_readout: mean`` the mean over the item's valid tokens."""
        if modality == "text" and self.text_readout == "mean":
            return masked_mean(states, mask)
        return states[:, 0]

    def id_tokens(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(n,) ids -> (n, d) the ID token that enters the IMT (the public code: ``id_proj(id_encoder(ids))``)."""
        embedded = self.id_embedding(item_ids)
        return embedded if self.id_projection is None else self.id_projection(embedded)

    @property
    def epoch(self) -> int:
        """Number of the current training epoch counted from 1, as the public code counts it for the
        ramp (0 before the first training epoch)."""
        return int(self.epochs_started)

    def train(self, mode: bool = True):
        if mode and hasattr(self, "epochs_started"):
            self.epochs_started += 1  # RecBole's trainer calls model.train() once per training epoch
        return super().train(mode)

    # ----- items ---------------------------------------------------------------------------
    def attention_allowed(self, masks: List[torch.Tensor]) -> torch.Tensor:
        """(n, T, T) mask over [ID, text tokens, image tokens]: valid keys only; with
        ``block_id_key`` the text and image queries never see the ID key."""
        keys = torch.cat([torch.ones_like(masks[0][:, :1])] + masks, dim=1)
        allowed = keys.unsqueeze(1).expand(-1, keys.size(1), -1).clone()
        if self.block_id_key:
            allowed[:, 1:, 0] = False
        return allowed

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(n,) ids -> (n, 3, d) representations of the ID, text and image branches (0 for padding).

        IMT input per item: [ID token, text tokens, image tokens] (the public code orders them
        [text, image, ID]; without position embeddings the order does not matter); the branches
        read the outputs at the ID token, the first text token and the first image token."""
        tokens = self.source(item_ids)
        text, text_mask = tokens["text"]
        image, image_mask = tokens["image"]
        states = torch.cat([self.id_tokens(item_ids).unsqueeze(1), self.projections["text"](text),
                            self.projections["image"](image)], dim=1)
        out = self.imt(self.token_dropout(states), self.attention_allowed([text_mask, image_mask]))
        n_text = text.size(1)
        picks = {"id": out[:, 0], "text": self.summary("text", out[:, 1:1 + n_text], text_mask),
                 "image": out[:, 1 + n_text]}
        reps = torch.stack([self.heads[b](picks[b]) for b in BRANCHES], dim=1)
        return reps * (item_ids > 0).view(-1, 1, 1).to(reps.dtype)

    def item_table(self) -> torch.Tensor:
        ids = torch.arange(self.n_items, device=self.id_embedding.weight.device)
        reps = torch.cat([self.encode_items(chunk) for chunk in ids.split(self.item_chunk_size)])
        return reps.flatten(1)  # (n_items, 3d): [ID | text | image]

    def encode_sequence(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        per_branch = table[item_seq].view(*item_seq.shape, len(BRANCHES), self.hidden_size)
        return torch.cat([self.backbones[b](item_seq, per_branch[..., k, :]) for k, b in enumerate(BRANCHES)], -1)

    def score(self, seq_output: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Mean of the three branches' dot products (a dot product of the concatenations / 3)."""
        return seq_output @ table.transpose(-1, -2) / len(BRANCHES)

    def branch_full_sort_predict(self, interaction) -> Dict[str, torch.Tensor]:
        """{branch: (B, n_items) scores} of the ID, text and image branches; their mean is
        :meth:`full_sort_predict` (the public evaluation reports each besides the fused one)."""
        table = self._eval_table()
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        d = self.hidden_size
        return {b: seq_output[:, k * d:(k + 1) * d] @ table[:, k * d:(k + 1) * d].t() for k, b in enumerate(BRANCHES)}

    # ----- training ------------------------------------------------------------------------
    def branch_logits(self, interaction):
        """In-batch logits of every branch, {branch: (N, C)}, and the batch layout."""
        inputs, targets = self.training_targets(interaction)
        ids = torch.unique(torch.cat([inputs.reshape(-1), targets.reshape(-1), inputs.new_zeros(1)]), sorted=True)
        reps = self.encode_items(ids)
        layout = in_batch_layout(inputs, targets)
        seq_reps, cand_reps = reps[torch.searchsorted(ids, inputs)], reps[torch.searchsorted(ids, layout.candidates)]
        logits = {}
        for k, b in enumerate(BRANCHES):
            output = self.backbones[b](inputs, seq_reps[..., k, :])
            logits[b] = in_batch_logits(output[layout.rows, layout.positions], cand_reps[:, k], layout,
                                        self.log_prior, distinct_candidates=True)
        return logits, layout

    def distillation_loss(self, logits) -> torch.Tensor:
        """KL(text <- ID) + KL(image <- ID) + KL(ID <- mean of the three), unweighted."""
        ensemble = (logits["id"] + logits["text"] + logits["image"]) / len(BRANCHES)
        tau, detach = self.kd_temperature, self.kd_detach_teacher
        return (distillation_kl(logits["text"], logits["id"], tau, detach)
                + distillation_kl(logits["image"], logits["id"], tau, detach)
                + distillation_kl(logits["id"], ensemble, tau, detach))

    def calculate_loss(self, interaction):
        logits, layout = self.branch_logits(interaction)
        loss = sum(in_batch_ce(logits[b], layout) for b in BRANCHES)
        weight = self.kd_weight * ramp_weight(self.epoch, self.kd_alpha)
        if weight > 0:
            loss = loss + weight * self.distillation_loss(logits)
        return loss
