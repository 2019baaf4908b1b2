"""The text step: ``<D>.text`` (item key, text) + ``<D>.item2index`` -> ``<D>.text.npy/.keys``
keyed by the .inter item tokens, with any local ``transformers`` encoder, resumable.

Rebuild the Scientific text features (docs/preprocess.md)::

    python -m recbole_mm.preprocess.text_features --text ../shared/datasets/Scientific/Scientific.text \\
        --item2index ../shared/datasets/Scientific/Scientific.item2index --out /tmp/sci/Scientific.text
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from logging import getLogger
from typing import Callable, Optional

from recbole_mm.data.features import write_feature_file
from recbole_mm.data.raw_items import read_item2index, read_text_file
from recbole_mm.fileio import progress_on_terminal
from recbole_mm.preprocess.attributes import TEXT_FIELDS, select_text_fields
from recbole_mm.preprocess.chunked import clear_work_dir, extract_in_chunks
from recbole_mm.preprocess.hashing import file_sha256, folder_sha256, settings_sha256
from recbole_mm.preprocess.text import add_text_encoder_arguments, default_text_encoder_path, embed_texts, load_encoder


def round_chunk_size(chunk_size: int, batch_size: int) -> int:
    """Chunks hold whole batches, so a resumed run forms exactly the batches of an
    uninterrupted one (padding, hence the numbers, depend on the batch)."""
    return max(1, -(-chunk_size // batch_size)) * batch_size


def build_text_features(
    text_file: str,
    item2index_file: str,
    stem: str,
    encoder_path: Optional[str] = None,
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "cpu",
    normalize: bool = False,
    chunk_size: int = 1024,
    work_dir: Optional[str] = None,
    after_chunk: Optional[Callable[[int], None]] = None,
    show_progress: Optional[bool] = None,
    text_fields: str = "all",
) -> dict:
    """Embed every row of ``text_file`` and write the feature file ``<stem>.npy/.keys``; rows keep
    the order of ``text_file``, keys are the item2index indices (progress bars: ``None`` = when
    stderr is a terminal; ``text_fields``: ``all`` or ``title``, see
    :func:`~recbole_mm.preprocess.attributes.select_text_fields`). Returns a summary."""
    show_progress = progress_on_terminal() if show_progress is None else show_progress
    encoder_path = encoder_path or default_text_encoder_path()
    item2index = read_item2index(item2index_file)
    rows = read_text_file(text_file)
    missing = [key for key, _ in rows if key not in item2index]
    if missing:
        raise ValueError(f"{text_file}: {len(missing)} item keys lack an entry in {item2index_file} (e.g. {missing[:3]})")
    texts = [select_text_fields(text, text_fields) for _, text in rows]
    chunk_size = round_chunk_size(chunk_size, batch_size)
    fingerprint = settings_sha256({
        "text": file_sha256(text_file), "item2index": file_sha256(item2index_file),
        "encoder": folder_sha256(encoder_path), "pooling": pooling, "batch_size": batch_size,
        "max_length": max_length, "normalize": normalize,
        **({"text_fields": text_fields} if text_fields != "all" else {}),  # earlier runs' fingerprints stay valid
    })
    work_dir = work_dir or os.path.join(os.path.dirname(os.path.abspath(stem)), ".preprocess", "work",
                                        os.path.basename(stem))
    tokenizer, model = load_encoder(encoder_path, device)
    start = time.perf_counter()
    matrix = extract_in_chunks(
        len(texts),
        lambda a, b: embed_texts(tokenizer, model, texts[a:b], pooling, batch_size, max_length, device, normalize),
        work_dir, chunk_size, fingerprint, desc="text features", after_chunk=after_chunk,
        show_progress=show_progress,
    )
    write_feature_file(stem, [item2index[key] for key, _ in rows], matrix)
    clear_work_dir(work_dir)
    seconds = time.perf_counter() - start
    getLogger().info(f"{stem}.npy: {matrix.shape} in {seconds:.1f}s")
    return {"items": int(matrix.shape[0]), "dim": int(matrix.shape[1]), "encoder": encoder_path}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Text feature file from <D>.text + <D>.item2index (resumable).")
    parser.add_argument("--text", required=True, help="<D>.text: header item_id:token<TAB>text:token_seq")
    parser.add_argument("--item2index", required=True, help="<D>.item2index: key<TAB>index")
    parser.add_argument("--out", required=True, help="output stem: writes <out>.npy and <out>.keys")
    add_text_encoder_arguments(parser)
    parser.add_argument("--chunk_size", type=int, default=1024, help="items per resumable chunk")
    parser.add_argument("--text_fields", choices=TEXT_FIELDS, default="all",
                        help="all: the whole text (title. categories. brand.); title: the title alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    summary = build_text_features(args.text, args.item2index, args.out, args.text_encoder, args.pooling,
                                  args.batch_size, args.max_length, args.device, chunk_size=args.chunk_size,
                                  text_fields=args.text_fields)
    print(f"{args.out}.npy: {summary['items']} x {summary['dim']} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
