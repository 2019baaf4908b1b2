"""Token-level item features (:mod:`recbole_mm.data.token_features`) for a data set folder:
``<D>.text_tokens`` = the text encoder's last-layer hidden states of every item text (the first
``max_tokens`` tokens, [CLS] and [SEP] included), ``<D>.image_tokens`` = a CLIP vision encoder's
last-layer tokens (CLS + patches) of each item's first image, or, where only pooled image
vectors exist (``<D>.clip_image.npz``), each vector as one token. Resumable by chunks; no
half-written file is ever left.

    python -m recbole_mm.preprocess.token_features --src ../shared/datasets/Scientific --out dataset/Scientific \\
        --max_tokens 32
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import time
from logging import getLogger
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from recbole_mm.data.features import PREPROCESS_OUTPUT_DIR
from recbole_mm.data.lmdb_store import ImageStore, lmdb_content_sha256
from recbole_mm.data.raw_items import read_item2index, read_text_file
from recbole_mm.data.token_features import (token_feature_writer, token_file_paths, token_stem,
                                            write_token_feature_file)
from recbole_mm.fileio import atomic_output, progress_on_terminal
from recbole_mm.preprocess.attributes import TEXT_FIELDS, select_text_fields
from recbole_mm.preprocess.chunked import clear_work_dir, open_work_dir
from recbole_mm.preprocess.hashing import file_sha256, folder_sha256, settings_sha256
from recbole_mm.preprocess.image import load_vision_encoder
from recbole_mm.preprocess.text import default_text_encoder_path, load_encoder

TokenBlock = Tuple[np.ndarray, np.ndarray]  # float16 (n, T, d) left-aligned tokens, int32 (n,) counts
EncodeFn = Callable[[int, int], TokenBlock]


def left_align(hidden: torch.Tensor, mask: torch.Tensor, max_tokens: int) -> TokenBlock:
    """Hidden states (n, L, d) and attention mask (n, L) -> the first ``max_tokens`` unmasked
    tokens of each row moved to the front (left or right padding alike), and their counts."""
    mask = mask.bool()
    counts = mask.sum(1).clamp(max=max_tokens)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # unmasked positions first, in order
    gathered = torch.gather(hidden, 1, order.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))[:, :max_tokens]
    out = torch.zeros(hidden.shape[0], max_tokens, hidden.shape[-1], dtype=torch.float32)
    out[:, :gathered.shape[1]] = gathered.float().cpu()
    out[torch.arange(max_tokens)[None, :] >= counts.cpu()[:, None]] = 0.0
    return out.numpy().astype(np.float16), counts.cpu().numpy().astype(np.int32)


@torch.no_grad()
def embed_text_tokens(tokenizer, model, texts: Sequence[str], max_tokens: int, batch_size: int = 64,
                      device: str = "cpu") -> TokenBlock:
    """Last-layer hidden states of ``texts``, each truncated to ``max_tokens`` tokens before
    encoding -> (float16 (n, max_tokens, d), counts (n,))."""
    tokens, counts = [], []
    for start in range(0, len(texts), batch_size):
        batch = [str(t) for t in texts[start:start + batch_size]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt").to(device)
        block = left_align(model(**enc).last_hidden_state, enc["attention_mask"], max_tokens)
        tokens.append(block[0])
        counts.append(block[1])
    if not tokens:
        return np.zeros((0, max_tokens, model.config.hidden_size), np.float16), np.zeros(0, np.int32)
    return np.concatenate(tokens), np.concatenate(counts)


@torch.no_grad()
def embed_image_tokens(processor, model, images: List, max_tokens: int, device: str = "cpu") -> TokenBlock:
    """Last-layer tokens (CLS + patches) of a vision encoder's tower for PIL images -> (float16
    (n, max_tokens, d), counts (n,)); a full CLIP model uses its vision tower, unprojected."""
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
    tower = getattr(model, "vision_model", model)
    hidden = tower(pixel_values=pixels).last_hidden_state
    if hidden.dim() != 3:
        raise ValueError(f"{type(model).__name__}: last_hidden_state has shape {tuple(hidden.shape)}, "
                         f"expected (images, tokens, dim)")
    return left_align(hidden, torch.ones(hidden.shape[:2], dtype=torch.bool), max_tokens)


def write_tokens_in_chunks(stem: str, keys: Sequence[str], encode: EncodeFn, max_tokens: int, dim: int,
                           fingerprint: str, chunk_size: int = 1024, work_dir: Optional[str] = None,
                           desc: str = "tokens", after_chunk: Optional[Callable[[int], None]] = None,
                           show_progress: Optional[bool] = None) -> None:
    """``encode(start, end)`` for every chunk of rows, each chunk saved to a work folder as it is
    done (a rerun with the same ``fingerprint`` reuses them), then the file ``<stem>`` written
    from the chunks (one in memory at a time) and the work folder removed."""
    show_progress = progress_on_terminal() if show_progress is None else show_progress
    work_dir = work_dir or os.path.join(os.path.dirname(os.path.abspath(stem)), ".preprocess", "work",
                                        os.path.basename(stem))
    n_chunks = open_work_dir(work_dir, len(keys), chunk_size, fingerprint, desc)
    chunk_path = lambda i: os.path.join(work_dir, f"chunk_{i:06d}.npz")  # noqa: E731
    done = sum(os.path.isfile(chunk_path(i)) for i in range(n_chunks))
    if done:
        getLogger().info(f"{desc}: resuming, {done} of {n_chunks} chunks already in {work_dir}")
    start_time = time.perf_counter()
    for i in tqdm(range(n_chunks), desc=desc, disable=not show_progress, ncols=100):
        if os.path.isfile(chunk_path(i)):
            continue
        start, end = i * chunk_size, min(len(keys), (i + 1) * chunk_size)
        tokens, counts = encode(start, end)
        if tokens.shape != (end - start, max_tokens, dim) or counts.shape != (end - start,):
            raise ValueError(f"{desc}: chunk {i} has shapes {tokens.shape} / {counts.shape}, "
                             f"expected ({end - start}, {max_tokens}, {dim}) / ({end - start},)")
        with atomic_output(chunk_path(i)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, tokens=tokens.astype(np.float16), counts=counts.astype(np.int32))
        getLogger().info(f"{desc}: rows {end} of {len(keys)} ({time.perf_counter() - start_time:.0f}s)")
        if after_chunk is not None:
            after_chunk(i)
    with token_feature_writer(stem, keys, max_tokens, dim) as writer:
        for i in range(n_chunks):
            with np.load(chunk_path(i), allow_pickle=False) as chunk:
                writer.write(i * chunk_size, chunk["tokens"], chunk["counts"])
    clear_work_dir(work_dir)


def build_text_token_features(text_file: str, item2index_file: str, stem: str, max_tokens: int = 32,
                              encoder_path: Optional[str] = None, batch_size: int = 64, device: str = "cpu",
                              chunk_size: int = 1024, text_fields: str = "all", work_dir: Optional[str] = None,
                              after_chunk: Optional[Callable[[int], None]] = None,
                              show_progress: Optional[bool] = None) -> dict:
    """``<stem>`` token feature file of every row of ``text_file`` (keys: the item2index indices,
    rows in the order of ``text_file``). Returns a summary."""
    if max_tokens < 1:
        raise ValueError(f"--max_tokens must be >= 1, got {max_tokens}")
    encoder_path = encoder_path or default_text_encoder_path()
    item2index = read_item2index(item2index_file)
    rows = read_text_file(text_file)
    missing = [key for key, _ in rows if key not in item2index]
    if missing:
        raise ValueError(f"{text_file}: {len(missing)} item keys lack an entry in {item2index_file} "
                         f"(e.g. {missing[:3]})")
    texts = [select_text_fields(text, text_fields) for _, text in rows]
    chunk_size = max(1, -(-chunk_size // batch_size)) * batch_size  # whole batches: a resumed run pads alike
    fingerprint = settings_sha256({
        "text": file_sha256(text_file), "item2index": file_sha256(item2index_file),
        "encoder": folder_sha256(encoder_path), "max_tokens": max_tokens, "batch_size": batch_size,
        "text_fields": text_fields,
    })
    tokenizer, model = load_encoder(encoder_path, device)
    dim = int(model.config.hidden_size)
    start = time.perf_counter()
    write_tokens_in_chunks(
        stem, [item2index[key] for key, _ in rows],
        lambda a, b: embed_text_tokens(tokenizer, model, texts[a:b], max_tokens, batch_size, device),
        max_tokens, dim, fingerprint, chunk_size, work_dir, "text tokens", after_chunk, show_progress)
    seconds = time.perf_counter() - start
    getLogger().info(f"{stem}.npy: ({len(rows)}, {max_tokens}, {dim}) float16 in {seconds:.1f}s")
    return {"items": len(rows), "max_tokens": max_tokens, "dim": dim, "seconds": seconds,
            "bytes": sum(os.path.getsize(p) for p in token_file_paths(stem))}


def build_image_token_features(lmdb_dir: str, stem: str, encoder_path: str, max_tokens: int = 50,
                               batch_size: int = 32, device: str = "cpu", chunk_size: int = 256,
                               work_dir: Optional[str] = None, after_chunk: Optional[Callable[[int], None]] = None,
                               show_progress: Optional[bool] = None) -> dict:
    """``<stem>`` token feature file of the first image of every item in the lmdb store
    (:mod:`recbole_mm.data.lmdb_store`): the vision encoder's last-layer CLS + patch tokens."""
    processor, model = load_vision_encoder(encoder_path, device)
    config = getattr(model.config, "vision_config", model.config)
    dim = int(config.hidden_size)
    fingerprint = settings_sha256({"store": lmdb_content_sha256(lmdb_dir), "encoder": folder_sha256(encoder_path),
                                   "max_tokens": max_tokens, "batch_size": batch_size})

    def decode(data: bytes):
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")

    start_time = time.perf_counter()
    with ImageStore(lmdb_dir) as store:
        keys = [token for token, _ in store.counts()]

        def encode(start: int, end: int) -> TokenBlock:
            blocks = []
            for b in range(start, end, batch_size):
                images = [decode(store.get(token, 0)) for token in keys[b:min(end, b + batch_size)]]
                blocks.append(embed_image_tokens(processor, model, images, max_tokens, device))
            return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])

        write_tokens_in_chunks(stem, keys, encode, max_tokens, dim, fingerprint, chunk_size, work_dir,
                               "image tokens", after_chunk, show_progress)
    seconds = time.perf_counter() - start_time
    getLogger().info(f"{stem}.npy: ({len(keys)}, {max_tokens}, {dim}) float16 in {seconds:.1f}s")
    return {"items": len(keys), "max_tokens": max_tokens, "dim": dim, "seconds": seconds}


def pooled_npz_as_tokens(npz_path: str, item2index_file: str, stem: str) -> dict:
    """``<stem>`` from pooled image vectors (``asin``, ``feat`` arrays): each vector one token."""
    item2index = read_item2index(item2index_file)
    with np.load(npz_path, allow_pickle=False) as data:
        for key in ("asin", "feat"):
            if key not in data.files:
                raise ValueError(f"{npz_path}: expected arrays 'asin' and 'feat', found {data.files}")
        asins, feats = [str(a) for a in data["asin"]], np.asarray(data["feat"], dtype=np.float32)
    unknown = [a for a in asins if a not in item2index]
    if unknown:
        raise ValueError(f"{npz_path}: {len(unknown)} keys are not in {item2index_file} (e.g. {unknown[:3]})")
    if feats.ndim != 2 or feats.shape[0] != len(asins):
        raise ValueError(f"{npz_path}: expected 'feat' of shape ({len(asins)}, d), got {feats.shape}")
    write_token_feature_file(stem, [item2index[a] for a in asins], feats)
    return {"items": len(asins), "max_tokens": 1, "dim": int(feats.shape[1])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Token-level text / image feature files of a data set folder.")
    parser.add_argument("--src", required=True, help="folder with <D>.text, <D>.item2index and optionally "
                                                     "<D>.images.lmdb/ or <D>.clip_image.npz")
    parser.add_argument("--out", default=None, help="output folder (default: dataset/<D>)")
    parser.add_argument("--name", default=None, help="data set name (default: the --src folder name)")
    parser.add_argument("--max_tokens", type=int, default=32, help="text tokens kept per item (incl. [CLS], [SEP])")
    parser.add_argument("--text_encoder", default=None, help="local transformers model (default: offline MiniLM)")
    parser.add_argument("--image_encoder", default=None,
                        help="local CLIP vision model: patch tokens of <D>.images.lmdb "
                             "(else the pooled <D>.clip_image.npz, one token per item)")
    parser.add_argument("--max_image_tokens", type=int, default=50, help="image tokens kept per item (CLS + patches)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk_size", type=int, default=1024, help="items per resumable chunk")
    parser.add_argument("--text_fields", choices=TEXT_FIELDS, default="all")
    parser.add_argument("--skip_images", action="store_true", help="write the text tokens only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not os.path.isdir(args.src):
        raise SystemExit(f"--src {args.src} is not a folder")
    name = args.name or os.path.basename(os.path.normpath(args.src))
    out = args.out or os.path.join(PREPROCESS_OUTPUT_DIR, name)
    item2index = os.path.join(args.src, f"{name}.item2index")
    stem = token_stem(out, name, "text")
    summary = build_text_token_features(os.path.join(args.src, f"{name}.text"), item2index, stem, args.max_tokens,
                                        args.text_encoder, args.batch_size, args.device, args.chunk_size,
                                        args.text_fields)
    print(f"{stem}.npy: {summary['items']} x {summary['max_tokens']} x {summary['dim']} float16 "
          f"({summary['bytes'] / 2 ** 20:.1f} MiB) in {summary['seconds']:.1f}s")
    if args.skip_images:
        return
    lmdb_dir, npz = os.path.join(args.src, f"{name}.images.lmdb"), os.path.join(args.src, f"{name}.clip_image.npz")
    stem = token_stem(out, name, "image")
    if args.image_encoder and os.path.isdir(lmdb_dir):
        summary = build_image_token_features(lmdb_dir, stem, args.image_encoder, args.max_image_tokens,
                                             args.batch_size, args.device)
    elif os.path.isfile(npz):
        summary = pooled_npz_as_tokens(npz, item2index, stem)
    else:
        print(f"no images: neither {lmdb_dir} (with --image_encoder) nor {npz}")
        return
    print(f"{stem}.npy: {summary['items']} x {summary['max_tokens']} x {summary['dim']} float16")


if __name__ == "__main__":
    main()
