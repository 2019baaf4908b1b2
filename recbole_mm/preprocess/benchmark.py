"""Feature files for an already-split benchmark folder (UniSRec / ANT layout, e.g. Scientific).

Input folder ``--src`` holds ``<D>.text`` (``item_id:token`` = original item key such as the
ASIN, ``text:token_seq``), ``<D>.item2index`` (original key -> index used in the .inter files)
and optionally ``<D>.clip_image.npz`` (``asin``, ``feat``). Output (``--out``):
``<D>.text.npy/.keys`` and ``<D>.image.npy/.keys`` keyed by the .inter item tokens.

    python -m recbole_mm.preprocess.benchmark --src ../shared/datasets/Scientific --out dataset/Scientific

The default output, ``dataset/<D>``, is one of the places a run looks for feature files, so the
run then needs no ``feature_dir`` (and, without ``properties/dataset/<D>.yaml``, uses the
modalities whose files it finds)::

    python run_recbole_mm.py --model=ANT --dataset=Scientific --data_path=../shared/datasets
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from recbole_mm.data.features import PREPROCESS_OUTPUT_DIR, write_feature_file
from recbole_mm.data.raw_items import read_item2index
from recbole_mm.preprocess.text_features import build_text_features as text_step
from recbole_mm.preprocess.attributes import TEXT_FIELDS
from recbole_mm.preprocess.settings import train_command
from recbole_mm.preprocess.text import add_text_encoder_arguments


def build_text_features(src: str, out: str, name: str, encoder_path=None, batch_size=64, max_length=128,
                        pooling="mean", device="cpu", text_fields: str = "all") -> str:
    """``<out>/<name>.text.npy/.keys`` from ``<src>/<name>.text``: the preprocessing pipeline's
    (resumable) text step, :func:`recbole_mm.preprocess.text_features.build_text_features`."""
    stem = os.path.join(out, f"{name}.text")
    text_step(os.path.join(src, f"{name}.text"), os.path.join(src, f"{name}.item2index"), stem, encoder_path,
              pooling, batch_size, max_length, device, text_fields=text_fields)
    return stem


def import_image_npz(src: str, out: str, name: str, npz_name: str) -> str:
    item2index = read_item2index(os.path.join(src, f"{name}.item2index"))
    path = os.path.join(src, npz_name)
    data = np.load(path, allow_pickle=False)
    for key in ("asin", "feat"):
        if key not in data.files:
            raise ValueError(f"{path}: expected arrays 'asin' and 'feat', found {data.files}")
    asins, feats = [str(a) for a in data["asin"]], data["feat"]
    unknown = [a for a in asins if a not in item2index]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} ASINs are not in {name}.item2index (e.g. {unknown[:3]})")
    stem = os.path.join(out, f"{name}.image")
    write_feature_file(stem, [item2index[a] for a in asins], feats)
    return stem


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="folder with <D>.text, <D>.item2index[, <D>.clip_image.npz]")
    parser.add_argument("--out", default=None, help="output folder (default: dataset/<D>)")
    parser.add_argument("--name", default=None, help="data set name (default: the --src folder name)")
    add_text_encoder_arguments(parser)
    parser.add_argument("--image_npz", default=None, help="image feature npz in --src (default: <D>.clip_image.npz)")
    parser.add_argument("--text_fields", choices=TEXT_FIELDS, default="all",
                        help="all: the whole item text (title. categories. brand.); title: the title alone "
                             "(to match a source domain with titles only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    name = args.name or os.path.basename(os.path.normpath(args.src))
    out = args.out or os.path.join(PREPROCESS_OUTPUT_DIR, name)
    if not os.path.isdir(args.src):
        raise FileNotFoundError(f"--src {args.src} is not a folder")
    print(build_text_features(args.src, out, name, args.text_encoder, args.batch_size, args.max_length,
                              args.pooling, args.device, args.text_fields))
    npz = args.image_npz or f"{name}.clip_image.npz"
    if os.path.isfile(os.path.join(args.src, npz)):
        print(import_image_npz(args.src, out, name, npz))
    data_path = os.path.dirname(os.path.normpath(args.src)) or "."
    found = os.path.abspath(out) == os.path.abspath(os.path.join(PREPROCESS_OUTPUT_DIR, name)) or \
        os.path.abspath(out) == os.path.abspath(args.src)
    print(f"next: {train_command(name, data_path)}" + ("" if found else f" --feature_dir={out}"))


if __name__ == "__main__":
    main()
