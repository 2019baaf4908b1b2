"""Helpers shared by the model tests."""

import os
from typing import List

import numpy as np
import pytest
import torch

from recbole_mm.data.features import FeatureFileError, read_feature_file
from recbole_mm.data.token_features import token_stem, write_token_feature_file


def losses_on_one_batch(model, batch, steps: int = 15, lr: float = 1e-3) -> List[float]:
    """Adam steps on one batch; the loss after each step's forward pass."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def write_token_files(data_path: str, name: str, folder: str, seed: int = 0, text_tokens: int = 6,
                      image_tokens: int = 4, without_any: int = 1) -> dict:
    """Tiny ``<name>.text_tokens`` / ``<name>.image_tokens`` files in ``folder`` built from the data
    set's pooled features: text tokens = pooled vector + noise with 2..``text_tokens`` valid
    tokens per item, image tokens (all valid) for the items with a pooled image; the first
    ``without_any`` items without an image are left out of the text file too (no modality at all).
    Returns {"text": (keys, counts), "image": (keys, counts), "none": [keys without any]}."""

    rng = np.random.default_rng(seed)
    source = os.path.join(data_path, name)
    image_keys, image = read_feature_file(os.path.join(source, f"{name}.image"), mmap=False)
    text_keys, text = read_feature_file(os.path.join(source, f"{name}.text"), mmap=False)
    none = [k for k in text_keys if k not in set(image_keys)][:without_any]
    keep = [i for i, k in enumerate(text_keys) if k not in none]
    text_keys = [text_keys[i] for i in keep]
    text = np.asarray(text)[keep]
    tokens = text[:, None, :] + 0.5 * rng.normal(size=(len(text_keys), text_tokens, text.shape[1]))
    counts = rng.integers(2, text_tokens + 1, size=len(text_keys))
    write_token_feature_file(token_stem(folder, name, "text"), text_keys, tokens.astype(np.float32), counts)
    image = np.asarray(image)
    patches = image[:, None, :] + 0.5 * rng.normal(size=(len(image_keys), image_tokens, image.shape[1]))
    write_token_feature_file(token_stem(folder, name, "image"), image_keys, patches.astype(np.float32))
    return {"text": (text_keys, counts), "image": (image_keys, np.full(len(image_keys), image_tokens)),
            "none": none}


def perturbed_tokens(feature, row: int, position: int, delta: float = 3.0) -> np.ndarray:
    """A copy of a token file's array with one token of one row moved (the memory map is read-only)."""
    tokens = np.array(feature.tokens)
    tokens[row, position] += np.float16(delta)
    return tokens


def check_chunked_item_table(model, valid) -> None:
    """The item table built ``item_chunk_size`` items at a time equals the one built at once, and
    full-ranking scores of a validation batch are finite."""
    model.eval()
    with torch.no_grad():
        chunked = model.item_table()
        model.item_chunk_size = model.n_items
        whole = model.item_table()
        scores = model.full_sort_predict(next(iter(valid))[0])
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(scores).all()


def check_missing_token_files_error(build, config) -> None:
    """``build(config)`` with ``item_inputs: tokens`` and a ``feature_dir`` without token files fails
    with one line naming the missing file, the command that makes it and the way out."""
    with pytest.raises(FeatureFileError) as err:
        build(config)
    message = str(err.value)
    assert "\n" not in message and os.path.join(config["feature_dir"], "tiny.text_tokens.npy") in message
    assert "python -m recbole_mm.preprocess.token_features" in message and "item_inputs: pooled" in message
