"""Raw item inputs: the ``<D>.text`` and ``<D>.item2index`` files of a benchmark folder and item
images, read per internal item id (what the end-to-end encoders of PMMRec train on).

- :func:`read_item2index` / :func:`read_text_file`: the two atomic files as written by the
  preprocessing (``<D>.item2index``: original key TAB .inter token; ``<D>.text``: header
  ``item_id:token<TAB>text:token_seq``).
- :func:`load_item_texts`: each item's title, aligned to internal item ids.
- :func:`load_item_images`: each item's first image, resized, from a folder of
  ``<item>.<ext>`` files or from the lmdb image store (:mod:`recbole_mm.data.lmdb_store`).
"""

from __future__ import annotations

import glob
import io
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from recbole_mm.data.lmdb_store import ImageStore

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # image files of a plain folder


class ItemTexts(NamedTuple):
    """Titles per internal item id ("" where absent and for the padding id 0) and their mask."""

    texts: List[str]
    present: np.ndarray


class ItemImages(NamedTuple):
    """uint8 images (n_items, 3, S, S) per internal item id (zero where absent) and their mask."""

    images: torch.Tensor
    present: np.ndarray


def read_item2index(path: str) -> Dict[str, str]:
    mapping = {}
    with open(path, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}, line {line_no}: expected '<key>\\t<index>', got {line!r}")
            mapping[parts[0]] = parts[1]
    return mapping


def read_text_file(path: str) -> List[Tuple[str, str]]:
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if len(header) < 2 or not header[0].startswith("item_id") or not header[1].startswith("text"):
            raise ValueError(f"{path}: expected header 'item_id:token<TAB>text:token_seq', got {header}")
        for line_no, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t", 1)
            if len(parts) != 2:
                raise ValueError(f"{path}, line {line_no}: expected '<item>\\t<text>'")
            rows.append((parts[0], parts[1].strip()))
    return rows


def load_item_texts(text_file: str, id2token: Sequence[str], key_map_file: Optional[str] = None) -> ItemTexts:
    """Titles per internal item id from a ``<D>.text`` file (``item_id:token``, ``text:token_seq``).

    With ``key_map_file`` (``<D>.item2index``: original key TAB .inter token) the file's keys are
    mapped to the .inter item tokens first. Returns (texts, present mask); id 0 is padding.
    """
    if not os.path.isfile(text_file):
        raise FileNotFoundError(f"end-to-end text: {text_file} not found (config key `raw_text_file`)")
    key_map = read_item2index(key_map_file) if key_map_file else None
    by_token = {}
    for key, text in read_text_file(text_file):
        by_token[key_map.get(key, key) if key_map else key] = text
    texts, present = [], np.zeros(len(id2token), dtype=bool)
    for i, token in enumerate(id2token):
        text = by_token.get(str(token)) if i > 0 else None
        present[i] = text is not None
        texts.append(text or "")
    return ItemTexts(texts, present)


def _decode_image(data, image_size: int) -> torch.Tensor:
    """An image file (path or bytes) -> uint8 (3, S, S), RGB, bicubic resize."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        img = img.convert("RGB").resize((image_size, image_size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_item_images(image_dir: str, id2token: Sequence[str], image_size: int,
                     key_map_file: Optional[str] = None) -> ItemImages:
    """Each item's (first) image resized to ``image_size``; returns (uint8 tensor
    (n_items, 3, S, S), present mask).

    ``image_dir`` is either a folder of ``<item token or original key>.<ext>`` files or an lmdb
    store of :mod:`recbole_mm.data.lmdb_store` (a folder holding ``data.mdb``; key
    ``<item token>_0``).
    """
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"end-to-end images: folder {image_dir} not found (config key `image_dir`)")
    images = torch.zeros(len(id2token), 3, image_size, image_size, dtype=torch.uint8)
    present = np.zeros(len(id2token), dtype=bool)
    if os.path.isfile(os.path.join(image_dir, "data.mdb")):
        with ImageStore(image_dir) as store:
            for i, token in enumerate(id2token):
                if i == 0:
                    continue
                try:
                    images[i] = _decode_image(store.get(str(token), 0), image_size)
                except KeyError:
                    continue
                present[i] = True
        return ItemImages(images, present)
    token_to_key = {v: k for k, v in read_item2index(key_map_file).items()} if key_map_file else {}
    files = {}
    for path in glob.glob(os.path.join(image_dir, "*")):
        stem, ext = os.path.splitext(os.path.basename(path))
        if ext.lower() in IMAGE_EXTENSIONS:
            files[stem] = path
    for i, token in enumerate(id2token):
        path = files.get(str(token)) or files.get(token_to_key.get(str(token), "")) if i > 0 else None
        if path is not None:
            images[i] = _decode_image(path, image_size)
            present[i] = True
    return ItemImages(images, present)


def clip_image_size(image_encoder_path: str) -> int:
    """The input image size of the CLIP vision encoder saved in ``image_encoder_path``."""
    # transformers is a heavy dependency that only end-to-end mode needs: imported here, lazily
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig.from_pretrained(image_encoder_path).image_size
