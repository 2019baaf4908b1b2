"""The image feature step: images from the lmdb store -> ``<D>.image.npy/.keys`` with any local
``transformers`` vision encoder (CLIP, CLIP vision, ViT, Swin, ...), resumable.

An item's feature is the mean of the embeddings of its first ``max_images_per_item`` images
(default 4). Items without a stored image are absent from the file (missing mask).

Embedding of one image, ``pooling``:
  ``auto``   CLIP's projected image embedding when the model has one (``get_image_features`` /
             ``image_embeds``), else the model's ``pooler_output``, else the first token
  ``pooler`` ``pooler_output``; ``cls`` first token of ``last_hidden_state``; ``mean`` mean of it
"""

from __future__ import annotations

import io
import os
import time
from logging import getLogger
from typing import Callable, List, Optional

import numpy as np
import torch
from PIL import Image

from recbole_mm.data.features import write_feature_file
from recbole_mm.data.lmdb_store import ImageStore, lmdb_content_sha256
from recbole_mm.preprocess.chunked import clear_work_dir, extract_in_chunks
from recbole_mm.preprocess.hashing import folder_sha256, settings_sha256

POOLINGS = ("auto", "pooler", "cls", "mean")


def load_vision_encoder(path: str, device: str = "cpu"):
    """(image processor, model) from a local folder; the error names the path."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, CLIPModel

    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"config key `image_encoder`: {path} is not a folder (expected a local transformers model)")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model_cls = CLIPModel if config.model_type == "clip" else AutoModel
        model = model_cls.from_pretrained(path, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot load a transformers vision encoder and image processor from {path}: {err}") from err
    return processor, model.to(device).eval()


@torch.no_grad()
def embed_images(processor, model, images: List[Image.Image], pooling: str = "auto", device: str = "cpu") -> np.ndarray:
    """(len(images), d) float32 embeddings of PIL images."""
    if pooling not in POOLINGS:
        raise ValueError(f"config key `image_pooling`: expected one of {list(POOLINGS)}, got {pooling!r}")
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
    if pooling == "auto" and hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixels)
        emb = out if isinstance(out, torch.Tensor) else out.pooler_output
        return emb.float().cpu().numpy()
    tower = getattr(model, "vision_model", model) if hasattr(model, "get_image_features") else model
    out = tower(pixel_values=pixels)  # a full CLIP model: its vision tower, without the projection
    if pooling == "auto":
        emb = getattr(out, "image_embeds", None)
        if emb is None:
            emb = getattr(out, "pooler_output", None)
        if emb is None:
            emb = out.last_hidden_state[:, 0]
    elif pooling == "pooler":
        emb = getattr(out, "pooler_output", None)
        if emb is None:
            raise ValueError(f"image_pooling: pooler, but {type(model).__name__} returns no pooler_output; use cls or mean")
    elif pooling == "cls":
        emb = out.last_hidden_state[:, 0]
    else:
        hidden = out.last_hidden_state
        emb = hidden.mean(dim=1) if hidden.dim() == 3 else hidden.flatten(2).mean(-1)
    if emb.dim() > 2:
        emb = emb.flatten(1)
    return emb.float().cpu().numpy()


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def build_image_features(
    lmdb_dir: str,
    stem: str,
    encoder_path: str,
    pooling: str = "auto",
    batch_size: int = 32,
    max_images_per_item: int = 4,
    device: str = "cpu",
    chunk_size: int = 256,
    work_dir: Optional[str] = None,
    after_chunk: Optional[Callable[[int], None]] = None,
    show_progress: bool = True,
) -> dict:
    """Write ``<stem>.npy/.keys``: one row per item with at least one stored image."""
    if max_images_per_item < 1:
        raise ValueError(f"config key `max_images_per_item` must be >= 1, got {max_images_per_item}")
    processor, model = load_vision_encoder(encoder_path, device)
    fingerprint = settings_sha256({
        "store": lmdb_content_sha256(lmdb_dir), "encoder": folder_sha256(encoder_path), "pooling": pooling,
        "batch_size": batch_size, "max_images_per_item": max_images_per_item,
    })
    work_dir = work_dir or os.path.join(os.path.dirname(os.path.abspath(stem)), ".preprocess", "work",
                                        os.path.basename(stem))
    start_time = time.perf_counter()
    with ImageStore(lmdb_dir) as store:
        counts = store.counts()

        def encode(start: int, end: int) -> np.ndarray:
            owners, images = [], []
            for row, (token, n) in enumerate(counts[start:end]):
                for k in range(min(n, max_images_per_item)):
                    owners.append(row)
                    images.append(_decode(store.get(token, k)))
            parts = [embed_images(processor, model, images[b:b + batch_size], pooling, device)
                     for b in range(0, len(images), batch_size)]
            emb = np.concatenate(parts, axis=0)
            sums = np.zeros((end - start, emb.shape[1]), dtype=np.float64)
            np.add.at(sums, np.asarray(owners), emb.astype(np.float64))
            per_item = np.bincount(owners, minlength=end - start).reshape(-1, 1)
            return (sums / per_item).astype(np.float32)

        matrix = extract_in_chunks(len(counts), encode, work_dir, chunk_size, fingerprint, desc="image features",
                                   after_chunk=after_chunk, show_progress=show_progress)
    if not counts:
        getLogger().warning(f"{lmdb_dir}: no stored images; {stem}.npy lists no item (every item misses its image)")
        matrix = np.zeros((0, 1), dtype=np.float32)
    write_feature_file(stem, [token for token, _ in counts], matrix)
    clear_work_dir(work_dir)
    getLogger().info(f"{stem}.npy: {matrix.shape} in {time.perf_counter() - start_time:.1f}s")
    return {"items": len(counts), "dim": int(matrix.shape[1]), "images_used": sum(min(n, max_images_per_item) for _, n in counts)}
