"""Building blocks shared by the plugin's models, written once.

- :class:`ItemFeatureTable`: the one holder of an item set's fixed per-modality features and
  presence masks (non-persistent buffers, row = internal item id); every feature-reading
  module below reads through it.
- :class:`MoEAdaptor`: a mixture of experts over a frozen feature (whitening or linear experts)
  with a noisy Gaussian gate.
- :class:`SinusoidalScalarEncoder`: turns a scalar (price) into a sinusoidal vector.
- :class:`MultiModalItemEncoder`: per-modality adaptors over fixed feature tables, fused as
  ``image + text + price + beta * (image * text)``; missing modalities contribute nothing.
- :class:`CausalTransformer`: position embedding + RecBole ``TransformerEncoder`` with causal
  and padding masks.
- :func:`cosine_scores`: ANT's scoring, cosine similarity divided by a temperature.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.layers import TransformerEncoder


MISSING_MODALITY_MODES = ("zero", "adaptor")


def cosine_scores(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """ANT's logits: ``cos(query, key) / temperature``, (..., N, d) x (..., M, d) -> (..., N, M)."""
    return F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).transpose(-1, -2) / temperature


class ItemFeatureTable(nn.Module):
    """Fixed per-modality item features and presence masks, row ``i`` = internal item id ``i``.

    Non-persistent buffers: they follow the model to its device but are never saved in a
    checkpoint (they belong to the data set, and a transferred model meets another item set).
    """

    def __init__(self, features: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor]):
        super().__init__()
        self.modalities = list(features)
        self.dims = {m: int(features[m].shape[1]) for m in self.modalities}
        for m in self.modalities:
            self.register_buffer(f"feat_{m}", features[m].float(), persistent=False)
            self.register_buffer(f"mask_{m}", masks[m].bool(), persistent=False)
            # the full table's rows with and without the modality, found once (not at every batch)
            self.register_buffer(f"present_{m}", masks[m].bool().nonzero().squeeze(1), persistent=False)
            self.register_buffer(f"absent_{m}", (~masks[m].bool()).nonzero().squeeze(1), persistent=False)

    @property
    def n_items(self) -> int:
        return self.feature(self.modalities[0]).shape[0]

    def feature(self, modality: str) -> torch.Tensor:
        """(n_items, dim) features of ``modality`` (zero rows where an item lacks it)."""
        return getattr(self, f"feat_{modality}")

    def mask(self, modality: str) -> torch.Tensor:
        """(n_items,) whether each item has ``modality``."""
        return getattr(self, f"mask_{modality}")

    def lookup(self, modality: str, item_ids: Optional[torch.Tensor] = None):
        """(features, mask) of ``item_ids`` (all items when None)."""
        feat, mask = self.feature(modality), self.mask(modality)
        if item_ids is None:
            return feat, mask
        return feat[item_ids], mask[item_ids]

    def present_rows(self, modality: str, mask: torch.Tensor, item_ids: Optional[torch.Tensor] = None):
        """(rows with the modality, rows without it) of the flattened lookup of ``item_ids``, whose
        ``mask`` is given; for the full table (None) the indices found at construction."""
        if item_ids is None:
            return getattr(self, f"present_{modality}"), getattr(self, f"absent_{modality}")
        flat = mask.reshape(-1)
        return flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1)


class MoEAdaptor(nn.Module):
    """Mixture of ``n_experts`` experts with a noisy Gaussian gate.

    Whitening experts (UniSRec / ANT) compute ``(x - b_k) W_k`` with no output bias; linear
    experts compute ``x W_k + c_k``. The gate logits are ``x W_g + eps * softplus(x W_n)``
    with ``eps ~ N(0, 1)`` while training and ``x W_g`` at evaluation; ``W_g`` and ``W_n``
    start at zero, so the experts start equally weighted. Dropout applies to the experts'
    input. All experts run as one matrix product.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        n_experts: int = 8,
        dropout: float = 0.2,
        expert_type: str = "whitening",
        noisy_gate: bool = True,
        init_std: float = 0.02,
    ):
        super().__init__()
        if expert_type not in ("whitening", "linear"):
            raise ValueError(f"expert_type must be 'whitening' or 'linear', got {expert_type!r}")
        self.input_dim, self.output_dim, self.n_experts = input_dim, output_dim, n_experts
        self.expert_type = expert_type
        self.noisy_gate = noisy_gate
        self.init_std = init_std
        self.dropout = nn.Dropout(dropout)
        self.expert_weight = nn.Parameter(torch.empty(n_experts, input_dim, output_dim))
        if expert_type == "whitening":
            self.expert_bias = nn.Parameter(torch.zeros(n_experts, input_dim))  # subtracted from x
        else:
            self.expert_bias = nn.Parameter(torch.zeros(n_experts, output_dim))  # added to output
        self.gate_weight = nn.Parameter(torch.zeros(input_dim, n_experts))
        self.noise_weight = nn.Parameter(torch.zeros(input_dim, n_experts))
        self.reset_experts()

    def reset_experts(self, init: str = "normal") -> None:
        """(Re-)initialise the experts: ``normal`` (std ``init_std``) or ``xavier``."""
        with torch.no_grad():
            if init == "xavier":
                for k in range(self.n_experts):
                    nn.init.xavier_normal_(self.expert_weight[k])
            else:
                self.expert_weight.normal_(0.0, self.init_std)
            self.expert_bias.zero_()

    def reset_gate(self) -> None:
        with torch.no_grad():
            self.gate_weight.zero_()
            self.noise_weight.zero_()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Gate weights (..., n_experts); noisy while training, the mean at evaluation."""
        logits = x @ self.gate_weight
        if self.training and self.noisy_gate:
            noise_std = F.softplus(x @ self.noise_weight)
            logits = logits + torch.randn_like(logits) * noise_std
        return torch.softmax(logits, dim=-1)

    def _projections(self, x: torch.Tensor) -> torch.Tensor:
        """``dropout(x) W_k`` for every expert, as one product: (..., n_experts, output_dim)."""
        flat_weight = self.expert_weight.permute(1, 0, 2).reshape(self.input_dim, -1)
        return (self.dropout(x) @ flat_weight).view(*x.shape[:-1], self.n_experts, self.output_dim)

    def _offsets(self) -> torch.Tensor:
        """Per-expert constant added to the projection: ``-b_k W_k`` (whitening) or ``c_k``."""
        if self.expert_type == "whitening":
            return -torch.einsum("ki,kio->ko", self.expert_bias, self.expert_weight)
        return self.expert_bias

    def experts(self, x: torch.Tensor) -> torch.Tensor:
        """All experts' outputs (..., n_experts, output_dim)."""
        return self._projections(x) + self._offsets()

    def zero_input_output(self, n: int) -> torch.Tensor:
        """``forward`` of ``n`` zero inputs without the projection (zero): the gate's mixture of
        the experts' constants, (n, output_dim)."""
        weights = self.gate(self.gate_weight.new_zeros(n, self.input_dim))
        return weights @ self._offsets()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(x)
        mixed = (weights.unsqueeze(-2) @ self._projections(x)).squeeze(-2)
        # sum_k g_k (p_k + o_k) = sum_k g_k p_k + g @ o: no (n, experts, dim) temporary for the offsets
        return mixed + weights @ self._offsets()


class SinusoidalScalarEncoder(nn.Module):
    """Encodes a scalar ``p`` as ``[sin(p / f^(2i/d)), cos(p / f^(2i/d))]`` (d dims, f = frequency).

    ANT uses d = 64 and f = 50,000 on prices normalised to [0, 100].
    """

    def __init__(self, dim: int = 64, frequency: float = 50000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"price_embedding_size must be even, got {dim}")
        inv_freq = torch.exp(-math.log(frequency) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.dim = dim

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        angles = value.reshape(-1, 1) * self.inv_freq
        out = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
        return out.view(*value.shape[:-1], self.dim) if value.dim() > 1 else out


class MultiModalItemEncoder(nn.Module):
    """Item representations from fixed per-modality feature tables.

    ``features[m]`` is an (n_items, d_m) table and ``masks[m]`` an (n_items,) bool table, both
    kept as non-persistent buffers (a checkpoint stays independent of the item set). Text and
    image use whitening experts; price is first encoded by :class:`SinusoidalScalarEncoder` and
    uses linear experts. ``item = image + text + price + beta * (image * text)``.
    """

    def __init__(
        self,
        features: Dict[str, torch.Tensor],
        masks: Dict[str, torch.Tensor],
        hidden_size: int,
        n_experts: int = 8,
        dropout: float = 0.2,
        fusion_beta: float = 0.1,
        price_embedding_size: int = 64,
        price_frequency: float = 50000.0,
        noisy_gate: bool = True,
        missing_modality: str = "zero",
    ):
        super().__init__()
        if not features:
            raise ValueError("MultiModalItemEncoder needs at least one modality (config key `modalities`)")
        if missing_modality not in MISSING_MODALITY_MODES:
            raise ValueError(f"config key `missing_modality` must be one of {list(MISSING_MODALITY_MODES)}, "
                             f"got {missing_modality!r}")
        self.missing_modality = missing_modality
        self.table = ItemFeatureTable(features, masks)
        self.modalities = self.table.modalities
        self.fusion_beta = fusion_beta
        self.adaptors = nn.ModuleDict()
        for m in self.modalities:
            if m == "price":
                if features[m].shape[1] != 1:
                    raise ValueError(f"price features must have dimension 1, got {features[m].shape[1]}")
                self.price_encoder = SinusoidalScalarEncoder(price_embedding_size, price_frequency)
                self.adaptors[m] = MoEAdaptor(
                    price_embedding_size, hidden_size, n_experts, dropout, "linear", noisy_gate
                )
            else:
                self.adaptors[m] = MoEAdaptor(
                    features[m].shape[1], hidden_size, n_experts, dropout, "whitening", noisy_gate
                )

    @property
    def n_items(self) -> int:
        return self.table.n_items

    def feature(self, modality: str) -> torch.Tensor:
        return self.table.feature(modality)

    def mask(self, modality: str) -> torch.Tensor:
        return self.table.mask(modality)

    def modality_embeddings(self, item_ids: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Adapted embedding per modality. Where the item lacks the modality: zero
        (``missing_modality: zero``), or the adaptor's output for the zero feature, a learned
        constant per modality (``missing_modality: adaptor``, the ANT reference code)."""
        out = {}
        for m in self.modalities:
            feat, mask = self.table.lookup(m, item_ids)
            if m == "price":  # a missing price is encoded, not a zero input: every row through the adaptor
                adapted = self.adaptors[m](self.price_encoder(feat))
                out[m] = adapted * mask.unsqueeze(-1).to(adapted.dtype) if self.missing_modality == "zero" else adapted
            else:
                rows, absent = self.table.present_rows(m, mask, item_ids)
                out[m] = self._adapt_present_rows(self.adaptors[m], feat, mask.shape, rows, absent)
        return out

    def _adapt_present_rows(self, adaptor: "MoEAdaptor", feat: torch.Tensor, shape: torch.Size,
                            rows: torch.Tensor, absent: torch.Tensor) -> torch.Tensor:
        """The adaptor's output per row, its projection computed on the rows that have the
        modality only (Scientific: images for 36 % of the items, so the image adaptor's products
        shrink to about a third). A missing row's feature is zero, so its output is zero
        (``missing_modality: zero``) or the adaptor's output for the zero input, the gate's
        mixture of the experts' constants (``adaptor``), which needs no projection. Equal to
        running every row in eval mode (tested); while training, dropout and gate noise are drawn
        per row as before, in a different order (the same distribution)."""
        present = adaptor(feat.reshape(-1, feat.shape[-1]).index_select(0, rows))
        n = len(rows) + len(absent)
        if self.missing_modality == "zero":
            out = present.new_zeros(n, present.shape[-1])
        else:
            out = present.new_empty(n, present.shape[-1]).index_copy(0, absent, adaptor.zero_input_output(len(absent)))
        return out.index_copy(0, rows, present).view(*shape, present.shape[-1])

    def forward(self, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fused item representations for ``item_ids`` (all items when None)."""
        emb = self.modality_embeddings(item_ids)
        fused = sum(emb.values())
        if self.fusion_beta and "image" in emb and "text" in emb:
            fused = fused + self.fusion_beta * emb["image"] * emb["text"]
        return fused


class CausalTransformer(nn.Module):
    """SASRec-style encoder: position embedding, LayerNorm, dropout, RecBole ``TransformerEncoder``.

    The attention mask is causal and hides padding (item id 0) keys.
    """

    def __init__(self, config, hidden_size: int):
        super().__init__()
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        self.position_embedding = nn.Embedding(self.max_len, hidden_size)
        self.encoder = TransformerEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            hidden_size=hidden_size,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
        )
        self.layer_norm = nn.LayerNorm(hidden_size, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])

    @staticmethod
    def attention_mask(item_seq: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        length = item_seq.size(1)
        keys_valid = (item_seq > 0).view(item_seq.size(0), 1, 1, length)
        causal = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()
        allowed = keys_valid & causal.view(1, 1, length, length)
        return torch.zeros(allowed.shape, dtype=dtype, device=item_seq.device).masked_fill(
            ~allowed, torch.finfo(dtype).min / 2
        )

    def forward(self, item_seq: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and (B, L, d) input embeddings -> (B, L, d) outputs at every position."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        x = self.dropout(self.layer_norm(item_emb + self.position_embedding(positions).unsqueeze(0)))
        mask = self.attention_mask(item_seq, x.dtype)
        return self.encoder(x, mask, output_all_encoded_layers=False)[-1]


def masked_positions(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, L, d) outputs -> (B, d) the output at position ``length - 1`` of each row."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, values.size(-1))
    return values.gather(1, index).squeeze(1)



class ModalityProjector(nn.Module):
    """Each modality's fixed features through its own projection to ``hidden_size``.

    Text and image: a linear layer; price: the sinusoidal encoding, then a linear layer. A
    modality an item lacks gives a zero vector. Features and masks are non-persistent buffers.
    """

    def __init__(self, features: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor], hidden_size: int,
                 price_embedding_size: int = 64, price_frequency: float = 50000.0):
        super().__init__()
        self.table = ItemFeatureTable(features, masks)
        self.modalities = self.table.modalities
        self.projections = nn.ModuleDict()
        for m in self.modalities:
            in_dim = features[m].shape[1]
            if m == "price":
                self.price_encoder = SinusoidalScalarEncoder(price_embedding_size, price_frequency)
                in_dim = price_embedding_size
            self.projections[m] = nn.Linear(in_dim, hidden_size)

    def forward(self, item_ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        for m in self.modalities:
            feat, mask = self.table.lookup(m, item_ids)
            if m == "price":
                feat = self.price_encoder(feat)
            out[m] = self.projections[m](feat) * mask.unsqueeze(-1).to(feat.dtype)
        return out


class FeatureFusion(nn.Module):
    """Fuses a list of same-sized vectors: ``sum``, ``concat`` (concat + linear) or ``gating``
    (softmax weights per position from a linear score of each input)."""

    def __init__(self, mode: str, n_inputs: int, hidden_size: int):
        super().__init__()
        if mode not in ("sum", "concat", "gating"):
            raise ValueError(f"config key `fusion_type` must be sum, concat or gating, got {mode!r}")
        self.mode = mode
        if mode == "concat":
            self.linear = nn.Linear(n_inputs * hidden_size, hidden_size)
        elif mode == "gating":
            self.score = nn.Linear(hidden_size, 1)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.mode == "sum":
            return torch.stack(list(inputs), dim=0).sum(0)
        if self.mode == "concat":
            return self.linear(torch.cat(list(inputs), dim=-1))
        stacked = torch.stack(list(inputs), dim=-2)  # (..., n, d)
        weights = torch.softmax(self.score(stacked), dim=-2)
        return (weights * stacked).sum(-2)
