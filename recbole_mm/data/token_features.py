"""Token-level item feature files: every item as up to ``T`` frozen encoder tokens (the text
encoder's last-layer hidden states, an image encoder's patch tokens), memory-mapped, aligned to
RecBole item ids and gathered per batch of item ids.

Format (see docs/data.md, "Token-level item features")::

    <stem>.npy         float16 array (N, T, d): row n holds item n's tokens left-aligned,
                       positions >= counts[n] are zero
    <stem>.counts.npy  int32 array (N,): tokens of each row, 1 <= count <= T
    <stem>.keys        UTF-8 text, N lines: the item token of each row (as in <stem> of
                       :mod:`recbole_mm.data.features`)

``<stem>`` is ``<D>.text_tokens`` or ``<D>.image_tokens``. Items absent from the file (and the
padding id 0) get count 0 and zero tokens after alignment. A pooled vector (one per item) is
stored as a single token with count 1, so every consumer reads one (items, tokens, dim) layout.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from recbole_mm.data.features import FeatureFileError, match_item_keys
from recbole_mm.fileio import atomic_output

TOKEN_MODALITIES = ("text", "image")
TOKEN_COMMAND = "python -m recbole_mm.preprocess.token_features"  # writes the files (docs/data.md)
FLOAT16_MAX = float(np.finfo(np.float16).max)


def token_stem(folder: str, dataset_name: str, modality: str) -> str:
    """Path without suffix of a token feature file: ``<folder>/<dataset>.<modality>_tokens``."""
    return os.path.join(folder, f"{dataset_name}.{modality}_tokens")


def token_file_paths(stem: str) -> Tuple[str, str, str]:
    """(tokens, counts, keys) paths of a token feature file."""
    return stem + ".npy", stem + ".counts.npy", stem + ".keys"


def locate_token_stem(folders: Sequence[str], dataset_name: str, modality: str) -> Optional[str]:
    """The stem of the first folder that holds all three files of ``<dataset>.<modality>_tokens``,
    or None (the folders of :func:`recbole_mm.data.features.feature_folders`)."""
    for folder in folders:
        stem = token_stem(folder, dataset_name, modality)
        if all(os.path.isfile(path) for path in token_file_paths(stem)):
            return stem
    return None


def _check_keys(stem: str, keys: Sequence[str]) -> List[str]:
    keys = [str(k) for k in keys]
    seen = set()
    for key in keys:
        if not key or "\n" in key or "\t" in key:
            raise FeatureFileError(f"{stem}: item key {key!r} is empty or holds a tab/newline")
        if key in seen:
            raise FeatureFileError(f"{stem}: item key {key!r} appears twice")
        seen.add(key)
    return keys


class TokenFeatureWriter:
    """Fills a token feature file block by block (see :func:`token_feature_writer`)."""

    def __init__(self, stem: str, tokens: np.memmap, counts: np.ndarray):
        self.stem = stem
        self.tokens = tokens
        self.counts = counts

    def write(self, start: int, tokens: np.ndarray, counts: np.ndarray) -> None:
        """Rows ``start : start + len(tokens)``: ``tokens`` (n, t, d) with t <= T (cut to T and to
        each row's count; longer rows are truncated), ``counts`` (n,) valid tokens per row."""
        tokens = np.asarray(tokens)
        counts = np.asarray(counts, dtype=np.int64)
        n, max_tokens, dim = len(counts), self.tokens.shape[1], self.tokens.shape[2]
        if tokens.ndim != 3 or tokens.shape[0] != n or tokens.shape[2] != dim:
            raise FeatureFileError(f"{self.stem}: block at row {start} has shape {tokens.shape}, "
                                   f"expected ({n}, tokens, {dim})")
        if start < 0 or start + n > self.tokens.shape[0]:
            raise FeatureFileError(f"{self.stem}: rows {start}:{start + n} outside 0:{self.tokens.shape[0]}")
        counts = np.minimum(counts, min(max_tokens, tokens.shape[1]))
        bad = counts < 1
        if bad.any():
            raise FeatureFileError(f"{self.stem}: row {start + int(np.flatnonzero(bad)[0])} has no token "
                                   f"(an item without tokens must be left out of the file)")
        block = np.zeros((n, max_tokens, dim), dtype=np.float32)
        t = min(max_tokens, tokens.shape[1])
        block[:, :t] = tokens[:, :t]
        block[np.arange(max_tokens)[None, :] >= counts[:, None]] = 0.0
        finite = np.isfinite(block) & (np.abs(block) <= FLOAT16_MAX)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite.all(axis=(1, 2)))[0])
            raise FeatureFileError(f"{self.stem}: row {row} holds NaN, inf or a value beyond float16 "
                                   f"(|x| > {FLOAT16_MAX:g})")
        self.tokens[start:start + n] = block.astype(np.float16)
        self.counts[start:start + n] = counts


@contextmanager
def token_feature_writer(stem: str, keys: Sequence[str], max_tokens: int, dim: int) -> Iterator[TokenFeatureWriter]:
    """Write ``<stem>.npy`` / ``.counts.npy`` / ``.keys`` atomically: the tokens go straight into a
    memory-mapped temporary file (a block in memory at a time), the three files are renamed into
    place only when the ``with`` block ends without error; every row must have been written."""
    keys = _check_keys(stem, keys)
    if max_tokens < 1 or dim < 1:
        raise FeatureFileError(f"{stem}: max_tokens and dim must be >= 1, got {max_tokens} and {dim}")
    tokens_path, counts_path, keys_path = token_file_paths(stem)
    with ExitStack() as stack:  # nested: a full disk names the file being written
        tmp_tokens = stack.enter_context(atomic_output(tokens_path))
        tokens = np.lib.format.open_memmap(tmp_tokens, mode="w+", dtype=np.float16,
                                           shape=(len(keys), max_tokens, dim))
        counts = np.zeros(len(keys), dtype=np.int32)
        writer = TokenFeatureWriter(stem, tokens, counts)
        yield writer
        if len(keys) and (counts == 0).any():
            row = int(np.flatnonzero(counts == 0)[0])
            raise FeatureFileError(f"{stem}: row {row} (item {keys[row]!r}) was never written")
        tokens.flush()
        del writer.tokens, tokens
        tmp_counts = stack.enter_context(atomic_output(counts_path))
        with open(tmp_counts, "wb") as f:
            np.save(f, counts)
        tmp_keys = stack.enter_context(atomic_output(keys_path))
        with open(tmp_keys, "w", encoding="utf-8") as f:
            f.write("\n".join(keys) + ("\n" if keys else ""))


def write_token_feature_file(stem: str, keys: Sequence[str], tokens: np.ndarray,
                             counts: Optional[np.ndarray] = None, max_tokens: Optional[int] = None) -> None:
    """Write a whole token feature file from memory: ``tokens`` (N, t, d), or (N, d) pooled
    vectors stored as one token each; ``counts`` (N,) defaults to t; rows are cut to
    ``max_tokens`` (default t)."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 2:
        tokens = tokens[:, None, :]
    if tokens.ndim != 3 or tokens.shape[0] != len(keys):
        raise FeatureFileError(f"{stem}: expected (N, tokens, d) with N = {len(keys)} keys, got {tokens.shape}")
    counts = np.full(len(keys), tokens.shape[1]) if counts is None else np.asarray(counts)
    with token_feature_writer(stem, keys, max_tokens or tokens.shape[1], tokens.shape[2]) as writer:
        for start in range(0, len(keys), 4096):
            writer.write(start, tokens[start:start + 4096], counts[start:start + 4096])


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def read_token_feature_file(stem: str) -> Tuple[List[str], np.memmap, np.ndarray]:
    """(keys, tokens memory-mapped float16 (N, T, d), counts int32 (N,)) of a token feature file,
    validated; errors name the file and what was expected."""
    tokens_path, counts_path, keys_path = token_file_paths(stem)
    for path in (tokens_path, counts_path, keys_path):
        if not os.path.isfile(path):
            raise FeatureFileError(
                f"token feature file {path} not found (a token feature file is <stem>.npy + <stem>.counts.npy + "
                f"<stem>.keys; build it with `python -m recbole_mm.preprocess.token_features`, see docs/data.md)")
    try:
        tokens = np.load(tokens_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise FeatureFileError(f"{tokens_path}: not a readable float16 (items, tokens, dim) .npy array, "
                               f"truncated or corrupt ({_one_line(err)})") from None
    if tokens.ndim != 3 or tokens.dtype != np.float16:
        raise FeatureFileError(f"{tokens_path}: expected a float16 (items, tokens, dim) array, "
                               f"got {tokens.dtype} of shape {tokens.shape}")
    try:
        counts = np.load(counts_path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise FeatureFileError(f"{counts_path}: not a readable .npy array of token counts, truncated or corrupt "
                               f"({_one_line(err)})") from None
    if counts.shape != (tokens.shape[0],) or not np.issubdtype(counts.dtype, np.integer):
        raise FeatureFileError(f"{counts_path}: expected {tokens.shape[0]} integer token counts (one per row of "
                               f"{tokens_path}), got {counts.dtype} of shape {counts.shape}")
    bad = (counts < 1) | (counts > tokens.shape[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FeatureFileError(f"{counts_path}: row {row} has {int(counts[row])} tokens, expected 1 to "
                               f"{tokens.shape[1]} (the token axis of {tokens_path})")
    with open(keys_path, "r", encoding="utf-8") as f:
        keys = [line.rstrip("\n") for line in f]
    if keys and keys[-1] == "":
        keys.pop()
    if len(keys) != tokens.shape[0]:
        raise FeatureFileError(f"{stem}: {keys_path} lists {len(keys)} item ids but {tokens_path} has "
                               f"{tokens.shape[0]} rows; they must match one to one")
    seen = set()
    for line_no, key in enumerate(keys, start=1):
        if key in seen:
            raise FeatureFileError(f"{keys_path}, line {line_no}: item id {key!r} appears twice")
        seen.add(key)
    return keys, tokens, counts.astype(np.int32)


class ItemTokenFeature:
    """One modality's token features aligned to internal item ids, without copying the file.

    ``rows[i]`` is the file row of internal item id ``i`` (-1: padding or no feature),
    ``counts[i]`` its token count (0 there). ``item_feature[item_ids]`` with a LongTensor of any
    shape gives ``(float32 tokens (*shape, T, d), bool mask (*shape, T))`` on the ids' device,
    reading only the rows it needs from the memory map.
    """

    def __init__(self, modality: str, tokens: np.memmap, rows: np.ndarray, counts: np.ndarray, source: str):
        self.modality = modality
        self.tokens = tokens
        self.rows = rows
        self.counts = counts
        self.source = source

    @property
    def max_tokens(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[2])

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (len(self.rows), self.max_tokens, self.dim)

    @property
    def present(self) -> np.ndarray:
        """(n_items,) True where the item has this modality."""
        return self.counts > 0

    @property
    def coverage(self) -> float:
        """Share of real items (padding excluded) that have this modality."""
        return float(self.present[1:].mean()) if len(self.rows) > 1 else 0.0

    def take(self, item_ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """float16 tokens (*shape, T, d) and counts (*shape,) of internal item ids (numpy)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        flat = item_ids.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self.rows)):
            raise IndexError(f"{self.source}: item ids must lie in [0, {len(self.rows)}), "
                             f"got {int(flat.min())}..{int(flat.max())}")
        rows = self.rows[flat]
        out = np.zeros((flat.size, self.max_tokens, self.dim), dtype=np.float16)
        have = rows >= 0
        if have.any():
            unique, inverse = np.unique(rows[have], return_inverse=True)  # sorted: the map is read front to back
            out[have] = np.asarray(self.tokens[unique])[inverse]
        return out.reshape(item_ids.shape + out.shape[1:]), self.counts[flat].reshape(item_ids.shape)

    def __getitem__(self, item_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(item_ids)
        tokens, counts = self.take(ids.detach().cpu().numpy())
        tokens = torch.from_numpy(tokens).to(device=ids.device, dtype=torch.float32)
        counts = torch.from_numpy(counts).to(ids.device)
        mask = torch.arange(self.max_tokens, device=ids.device) < counts.unsqueeze(-1)
        return tokens, mask

    def to_array(self) -> np.ndarray:
        """The whole aligned (n_items, T, d) float16 array in memory (a copy; mind its size)."""
        return self.take(np.arange(len(self.rows)))[0]


def align_token_features(
    modality: str,
    keys: List[str],
    tokens: np.ndarray,
    counts: np.ndarray,
    id2token: Sequence[str],
    source: str,
    unknown_items: str = "error",
    expected_dim: Optional[int] = None,
) -> ItemTokenFeature:
    """Place the rows of a token feature file at the internal ids of their items (the rules of
    :func:`recbole_mm.data.features.align_features`: by item token, id 0 is padding, items
    absent from the file have count 0; ``unknown_items``: ``error`` or ``ignore``)."""
    if expected_dim is not None and tokens.shape[2] != expected_dim:
        raise FeatureFileError(f"{source}: {modality} token features have dimension {tokens.shape[2]}, "
                               f"expected {expected_dim}")
    file_rows, ids = match_item_keys(keys, id2token, source, unknown_items)
    rows = np.full(len(id2token), -1, dtype=np.int64)
    aligned_counts = np.zeros(len(id2token), dtype=np.int32)
    rows[ids] = file_rows
    aligned_counts[ids] = np.asarray(counts)[file_rows]
    return ItemTokenFeature(modality, tokens, rows, aligned_counts, source)


def load_token_features(stem: str, modality: str, id2token: Sequence[str], unknown_items: str = "error",
                        expected_dim: Optional[int] = None) -> ItemTokenFeature:
    """Read ``<stem>`` (memory-mapped) and align it to ``id2token`` (``dataset.field2id_token[item]``)."""
    keys, tokens, counts = read_token_feature_file(stem)
    return align_token_features(modality, keys, tokens, counts, id2token, stem, unknown_items, expected_dim)
