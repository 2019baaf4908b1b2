"""Item-side token sources and token transformers for PMMRec and ODMT (issue 9).

A *token source* maps item ids to per-modality token states ``{modality: (states, mask)}``
with ``states`` (n, T, d_m) and ``mask`` (n, T) bool:

- :class:`FeatureTokens` (feature mode): the data set's pooled feature vectors, one token per
  modality, masked where the item lacks the modality;
- :class:`PretrainedEncoderTokens` (end-to-end mode): ``transformers`` text and vision encoders
  loaded from local folders run on each item's raw title and image; all but their top
  ``n_trainable_blocks`` blocks are frozen.

:class:`TokenTransformer` is a stack of post-LN (BERT-style) blocks over a set of tokens with
an explicit (n, T, T) "may attend" mask. The raw titles and images come from the data set
(``item_texts`` / ``item_images`` of :class:`~recbole_mm.data.dataset.MMSequentialDataset`,
read by :mod:`recbole_mm.data.raw_items`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from recbole.model.layers import TransformerEncoder

from recbole_mm.model.layers import ItemFeatureTable

Tokens = Dict[str, Tuple[torch.Tensor, torch.Tensor]]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TokenTransformer(nn.Module):
    """``n_layers`` post-LN transformer blocks (RecBole's ``TransformerEncoder``) over tokens.

    ``allowed[i, q, k]`` says whether query ``q`` of item ``i`` may attend to key ``k``; every
    query may always attend to itself, so no row is fully masked.
    """

    def __init__(self, hidden_size: int, n_layers: int, n_heads: int, inner_size: int,
                 dropout: float, hidden_act: str = "gelu", layer_norm_eps: float = 1e-12):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the fusion heads {n_heads}")
        self.encoder = TransformerEncoder(n_layers=n_layers, n_heads=n_heads, hidden_size=hidden_size,
                                          inner_size=inner_size, hidden_dropout_prob=dropout,
                                          attn_dropout_prob=dropout, hidden_act=hidden_act,
                                          layer_norm_eps=layer_norm_eps)

    def forward(self, tokens: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(tokens.size(1), dtype=torch.bool, device=tokens.device)
        allowed = allowed | eye
        additive = torch.zeros(allowed.shape, dtype=tokens.dtype, device=tokens.device)
        additive = additive.masked_fill(~allowed, torch.finfo(tokens.dtype).min / 2).unsqueeze(1)
        return self.encoder(tokens, additive, output_all_encoded_layers=False)[-1]


def key_mask(mask: torch.Tensor) -> torch.Tensor:
    """(n, T) valid tokens -> (n, T, T): every query may attend to every valid key."""
    return mask.unsqueeze(1).expand(-1, mask.size(1), -1)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n, T, d) states, (n, T) mask -> (n, d) mean over valid tokens (0 where none is valid)."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class FeatureTokens(nn.Module):
    """Feature mode: each modality's pooled vector (from an :class:`ItemFeatureTable`) is one token."""

    def __init__(self, features: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor]):
        super().__init__()
        self.table = ItemFeatureTable(features, masks)
        self.modalities = self.table.modalities
        self.dims = self.table.dims

    def present(self, modality: str) -> torch.Tensor:
        """(n_items,) whether each item has ``modality``."""
        return self.table.mask(modality)

    def forward(self, item_ids: torch.Tensor) -> Tokens:
        out = {}
        for m in self.modalities:
            feat, mask = self.table.lookup(m, item_ids)
            out[m] = feat.unsqueeze(1), mask.unsqueeze(1)
        return out


# ----- end-to-end mode ------------------------------------------------------------------------
def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a ``transformers`` encoder (BERT / RoBERTa / XLM-R /
    CLIP vision / ViT layouts)."""
    for path in ("encoder.layer", "vision_model.encoder.layers", "encoder.layers", "text_model.encoder.layers"):
        obj = model
        for name in path.split("."):
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")


def freeze_except_top_blocks(model: nn.Module, n_trainable: int) -> List[str]:
    """Freeze every parameter of ``model`` except those of its top ``n_trainable`` blocks;
    returns the names of the trainable parameters."""
    for param in model.parameters():
        param.requires_grad_(False)
    blocks = transformer_blocks(model)
    if n_trainable > 0:
        for block in list(blocks)[-n_trainable:]:
            for param in block.parameters():
                param.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]


class PretrainedEncoderTokens(nn.Module):
    """End-to-end mode: token states of a text and/or a vision ``transformers`` encoder.

    Titles are tokenised once (``max_text_length`` tokens); images are kept as uint8 and
    normalised with CLIP's mean and std on the fly. Items without a title get an empty one and
    a False mask; items without an image get a False mask over all image tokens.
    """

    def __init__(self, n_items: int, text_path: Optional[str] = None, texts: Optional[List[str]] = None,
                 text_present: Optional[np.ndarray] = None, image_path: Optional[str] = None,
                 images: Optional[torch.Tensor] = None, image_present: Optional[np.ndarray] = None,
                 max_text_length: int = 50, n_trainable_blocks: int = 2):
        super().__init__()
        # transformers is a heavy dependency that only end-to-end mode needs: imported here, lazily
        from transformers import AutoModel, AutoTokenizer, CLIPVisionModel

        self.modalities, self.dims = [], {}
        if text_path:
            tokenizer = AutoTokenizer.from_pretrained(text_path, local_files_only=True)
            self.text_encoder = AutoModel.from_pretrained(text_path, local_files_only=True)
            freeze_except_top_blocks(self.text_encoder, n_trainable_blocks)
            enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_text_length,
                            return_tensors="pt")
            self.register_buffer("text_ids", enc["input_ids"], persistent=False)
            self.register_buffer("text_attention", enc["attention_mask"].bool(), persistent=False)
            self.register_buffer("text_present", torch.as_tensor(text_present, dtype=torch.bool), persistent=False)
            self.modalities.append("text")
            self.dims["text"] = self.text_encoder.config.hidden_size
        if image_path:
            self.image_encoder = CLIPVisionModel.from_pretrained(image_path, local_files_only=True)
            freeze_except_top_blocks(self.image_encoder, n_trainable_blocks)
            self.register_buffer("images", images, persistent=False)
            self.register_buffer("image_present", torch.as_tensor(image_present, dtype=torch.bool), persistent=False)
            self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
            self.modalities.append("image")
            self.dims["image"] = self.image_encoder.config.hidden_size
        if not self.modalities:
            raise ValueError("end-to-end mode needs `text_encoder_path` and/or `image_encoder_path`")
        self.n_items = n_items

    def present(self, modality: str) -> torch.Tensor:
        return getattr(self, f"{modality}_present")

    def forward(self, item_ids: torch.Tensor) -> Tokens:
        out = {}
        if "text" in self.modalities:
            ids, attention = self.text_ids[item_ids], self.text_attention[item_ids]
            states = self.text_encoder(input_ids=ids, attention_mask=attention.long()).last_hidden_state
            out["text"] = states, attention & self.text_present[item_ids].unsqueeze(1)
        if "image" in self.modalities:
            pixels = (self.images[item_ids].float() / 255.0 - self.pixel_mean) / self.pixel_std
            states = self.image_encoder(pixel_values=pixels).last_hidden_state  # CLS + patches
            mask = self.image_present[item_ids].unsqueeze(1).expand(-1, states.size(1))
            out["image"] = states, mask
        return out


def build_token_source(config, dataset, features, masks) -> nn.Module:
    """The token source named by ``encoder_mode`` (feature | end_to_end), text and image only."""
    mode = config["encoder_mode"] or "feature"
    if mode == "feature":
        keep = [m for m in ("text", "image") if m in features]
        if not keep:
            raise ValueError("feature mode needs the text and/or image modality (config key `modalities`)")
        return FeatureTokens({m: features[m] for m in keep}, {m: masks[m] for m in keep})
    if mode != "end_to_end":
        raise ValueError(f"config key `encoder_mode` must be feature or end_to_end, got {mode!r}")
    kwargs = {}
    if config["text_encoder_path"]:
        texts, present = _raw_items(dataset, "item_texts", "text_encoder_path")
        kwargs.update(text_path=config["text_encoder_path"], texts=texts, text_present=present)
    if config["image_encoder_path"]:
        images, present = _raw_items(dataset, "item_images", "image_encoder_path")
        kwargs.update(image_path=config["image_encoder_path"], images=images, image_present=present)
    return PretrainedEncoderTokens(dataset.num(dataset.iid_field), max_text_length=config["text_max_length"],
                                   n_trainable_blocks=config["n_trainable_blocks"], **kwargs)


def _raw_items(dataset, attribute: str, key: str):
    """The data set's raw items for an end-to-end encoder (loaded by MMSequentialDataset)."""
    raw = getattr(dataset, attribute, None)
    if raw is None:
        raise ValueError(f"end-to-end mode: config key `{key}` is set but the data set "
                         f"({type(dataset).__name__}) carries no raw items (`{attribute}`)")
    return raw
