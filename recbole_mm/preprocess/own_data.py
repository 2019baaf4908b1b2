"""Your own data set in one command: a folder of interactions and item texts (optionally images
and prices) -> the benchmark atomic files and feature files in ``dataset/<D>/`` (docs/own_data.md)::

    python -m recbole_mm.preprocess.own_data --src my_shop            # writes dataset/my_shop/
    python run_recbole_mm.py --model=ANT --dataset=my_shop            # no other key needed

The folder (``<D>`` = the folder name unless ``--name`` is given)::

    <D>.interactions.csv | .tsv   (or interactions.csv | .tsv)  header: user, item[, timestamp]
    <D>.items.csv | .tsv          (or items.csv | .tsv)         header: item, text or title[, price, brand, categories]
    images/                       optional: <item>.<ext>, <item>_<n>.<ext> or <item>/<any>.<ext>

It runs the preprocessing pipeline (:mod:`recbole_mm.preprocess.pipeline`: the same steps, stamps,
resumable feature extraction and manifest as for the Amazon files) with this folder's files as
the input of its ``atomic`` step. Every pipeline key may be given as ``--key=value`` (``--k_core=3``,
``--split=ratio``, ``--text_encoder=<folder>``, ``--image_encoder=<folder>``, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Dict, List, Optional

import yaml

from recbole_mm.data.features import PREPROCESS_OUTPUT_DIR
from recbole_mm.preprocess.pipeline import run_pipeline
from recbole_mm.preprocess.settings import train_command
from recbole_mm.preprocess.tables import TABLE_EXTENSIONS, has_price_column


def find_input(folder: str, name: str, kind: str) -> str:
    """``<D>.<kind>.csv|tsv`` or ``<kind>.csv|tsv`` in ``folder``; the error lists what was looked for."""
    candidates = [f"{stem}{ext}" for stem in (f"{name}.{kind}", kind) for ext in TABLE_EXTENSIONS]
    for candidate in candidates:
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{folder}: no {kind} file; expected one of {candidates} (docs/own_data.md)")


def folder_settings(src: str, name: Optional[str] = None, overrides: Optional[Dict] = None) -> Dict:
    """Pipeline settings for a data folder (:mod:`recbole_mm.preprocess.settings` keys): its
    interactions, items and images; steps without an input (no images folder, no price column)
    are left out. ``overrides`` wins."""
    if not os.path.isdir(src):
        raise FileNotFoundError(f"--src {src} is not a folder")
    name = name or os.path.basename(os.path.normpath(src))
    items = find_input(src, name, "items")
    images = os.path.join(src, "images")
    settings = {"dataset_name": name, "interactions": find_input(src, name, "interactions"), "items": items,
                "images_dir": images if os.path.isdir(images) else None,
                "steps": ["atomic", "text"] + (["images", "image_features"] if os.path.isdir(images) else [])
                + (["price"] if has_price_column(items) else [])}
    settings.update(overrides or {})
    return settings


def parse_key_values(extra: List[str]) -> Dict:
    """``--key=value`` pairs -> settings overrides, values read as YAML (``3``, ``[0.8, 0.1, 0.1]``, ``~``)."""
    values = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"unrecognised argument {arg!r}: settings are written --key=value (docs/own_data.md)")
        key, value = arg[2:].split("=", 1)
        values[key] = yaml.safe_load(value) if value else None
    return values


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description="A folder of interactions + item texts (+ images, prices) -> atomic and feature files "
                    "(docs/own_data.md). Any preprocessing key may follow as --key=value.")
    parser.add_argument("--src", required=True, help="the data folder")
    parser.add_argument("--name", default=None, help="data set name <D> (default: the folder name)")
    parser.add_argument("--force", action="store_true", help="rerun every step even when up to date")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = folder_settings(args.src, args.name, parse_key_values(extra))
    manifest = run_pipeline(overrides=settings, force=args.force)
    output_dir = settings.get("output_dir", PREPROCESS_OUTPUT_DIR)
    print(f"written: {os.path.join(output_dir, manifest['dataset'])}/")
    print(f"next:    {train_command(manifest['dataset'], output_dir)}")
    return manifest


if __name__ == "__main__":
    main()
