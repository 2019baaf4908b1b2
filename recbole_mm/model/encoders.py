"""Item-side token sources and token transformers for PMMRec and ODMT (issue 9).

A *token source* maps item ids to per-modality token states ``{modality: (states, mask)}``
with ``states`` (n, T, d_m) and ``mask`` (n, T) bool:

- :class:`FeatureTokens` (feature mode, ``item_inputs: pooled``): the data set's pooled feature
  vectors, one token per modality, masked where the item lacks the modality;
- :class:`FileTokens` (feature mode, ``item_inputs: tokens``): the frozen token-level features of
  ``<D>.text_tokens`` / ``<D>.image_tokens`` (:mod:`recbole_mm.data.token_features`), every
  stored token per modality, masked past each item's count; :func:`feature_token_source` picks;
- :class:`PretrainedEncoderTokens` (end-to-end mode): ``transformers`` text and vision encoders
  loaded from local folders run on each item's raw title and image; all but their top
  ``n_trainable_blocks`` blocks are frozen.

:class:`TokenTransformer` is a stack of post-LN (BERT-style) blocks over a set of tokens with
an explicit (n, T, T) "may attend" mask. The raw titles and images come from the data set
(``item_texts`` / ``item_images`` of :class:`~recbole_mm.data.dataset.MMSequentialDataset`,
read by :mod:`recbole_mm.data.raw_items`).
"""

from __future__ import annotations

from logging import getLogger
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from recbole.model.layers import TransformerEncoder

from recbole_mm.data.features import FeatureFileError, feature_folders
from recbole_mm.data.token_features import (
    TOKEN_COMMAND, ItemTokenFeature, load_token_features, locate_token_stem, token_file_paths, token_stem,
)
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


class FileTokens(nn.Module):
    """Feature mode over token files: each modality's stored tokens (memory-mapped, gathered per
    batch of item ids on the ids' device), ``mask`` False past an item's count and on every
    token of an item without the modality."""

    def __init__(self, items: Dict[str, ItemTokenFeature]):
        super().__init__()
        self.items = dict(items)
        self.modalities = list(items)
        self.dims = {m: feature.dim for m, feature in items.items()}

    def present(self, modality: str) -> torch.Tensor:
        """(n_items,) whether each item has ``modality``."""
        return torch.from_numpy(self.items[modality].present.copy())

    def forward(self, item_ids: torch.Tensor) -> Tokens:
        return {m: self.items[m][item_ids] for m in self.modalities}


ITEM_INPUTS = ("auto", "pooled", "tokens")


def feature_token_source(config, dataset, features: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor],
                         modalities: Sequence[str]) -> Tuple[nn.Module, str]:
    """The feature-mode token source of ``modalities`` and the inputs it reads (pooled | tokens).

    Config key ``item_inputs``: ``tokens`` reads ``<D>.<modality>_tokens`` for every modality,
    looked for in the folders of the pooled files (``feature_dir``, the data set folder,
    ``dataset/<D>``), and raises a one-line :class:`FeatureFileError` naming the first missing
    file and the command that builds it; ``pooled`` reads the pooled vectors of the data set, one
    token each; ``auto`` (or unset) reads tokens when all of them exist, the pooled vectors
    otherwise (and always for a multi-domain data set, which has no token files). The choice is
    logged.
    """
    choice = config["item_inputs"] or "auto"
    if choice not in ITEM_INPUTS:
        raise ValueError(f"config key `item_inputs` must be one of {ITEM_INPUTS}, got {choice!r}")
    name = config["model"]
    if choice != "pooled" and not hasattr(dataset, "dataset_path"):  # multi-domain pre-training
        if choice == "tokens":
            raise ValueError(f"{name}: item_inputs: tokens reads one data set's token files; the multi-domain data "
                             f"set {dataset.dataset_name} has pooled features only: set item_inputs: pooled")
        getLogger().info(f"{name}: pooled item inputs (multi-domain data set {dataset.dataset_name})")
    elif choice != "pooled":
        folders = feature_folders(config["feature_dir"], dataset.dataset_path, dataset.dataset_name)
        stems = {m: locate_token_stem(folders, dataset.dataset_name, m) for m in modalities}
        missing = [m for m in modalities if stems[m] is None]
        if missing and choice == "tokens":
            path = token_file_paths(token_stem(folders[0], dataset.dataset_name, missing[0]))[0]
            raise FeatureFileError(
                f"{name} with item_inputs: tokens needs {missing[0]} token features: {path} (+ .counts.npy, "
                f".keys) not found in {', '.join(folders)}; build them with `{TOKEN_COMMAND} --src <data folder> "
                f"--out {folders[0]}` (docs/data.md) or set item_inputs: pooled")
        if not missing:
            id2token = dataset.field2id_token[dataset.iid_field]
            unknown = config["feature_unknown_items"] or "error"
            items = {m: load_token_features(stems[m], m, id2token, unknown) for m in modalities}
            getLogger().info(f"{name}: token-level item inputs " + ", ".join(
                f"{m} {stems[m]}.npy (up to {f.max_tokens} x {f.dim}, {f.coverage:.1%} of items)"
                for m, f in items.items()))
            return FileTokens(items), "tokens"
        getLogger().info(f"{name}: pooled item inputs, one token per modality (item_inputs: auto, no "
                         f"{missing[0]} token file {token_stem(folders[0], dataset.dataset_name, missing[0])}.npy)")
    return FeatureTokens({m: features[m] for m in modalities}, {m: masks[m] for m in modalities}), "pooled"


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


def build_token_source(config, dataset, features, masks) -> Tuple[nn.Module, str]:
    """The token source named by ``encoder_mode`` (feature | end_to_end), text and image only,
    and the inputs it reads: pooled | tokens (feature mode, :func:`feature_token_source`) | raw."""
    mode = config["encoder_mode"] or "feature"
    if mode == "feature":
        keep = [m for m in ("text", "image") if m in features]
        if not keep:
            raise ValueError("feature mode needs the text and/or image modality (config key `modalities`)")
        return feature_token_source(config, dataset, features, masks, keep)
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
                                   n_trainable_blocks=config["n_trainable_blocks"], **kwargs), "raw"


def _raw_items(dataset, attribute: str, key: str):
    """The data set's raw items for an end-to-end encoder (loaded by MMSequentialDataset)."""
    raw = getattr(dataset, attribute, None)
    if raw is None:
        raise ValueError(f"end-to-end mode: config key `{key}` is set but the data set "
                         f"({type(dataset).__name__}) carries no raw items (`{attribute}`)")
    return raw
