"""Item attribute file (``<D>.item``) for the stock feature-aware baselines (FDSA, S3Rec).

The UniSRec/ANT benchmark folders carry item text as ``"<title>. <categories>. <brand>."``
(``<D>.text``) but no ``.item`` file. This step splits that text from the right into
``brand:token`` and ``categories:token_seq`` (the category path's words, lower-cased,
without punctuation-only words and without words found in more than ``max_share`` of the
items, such as the root category's, and at most ``max_words`` words) and writes them keyed
by the item tokens of the .inter files (through ``<D>.item2index``). The cap matters: RecBole's
feature embedding pads every item's ``token_seq`` to the longest one, so a single item whose text
split went wrong (Scientific has one with 83 "category" words, its description) multiplies
FDSA's memory by ~7 (a batch of 2048 histories grew past 14 GB):

    python -m recbole_mm.preprocess.attributes --src ../shared/datasets/Scientific --out dataset/Scientific

The models find the file through ``feature_dir`` (see BenchmarkSequentialDataset).
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from typing import Dict, List, Tuple

from recbole_mm.fileio import atomic_output
from recbole_mm.data.raw_items import read_item2index, read_text_file

WORD = re.compile(r"[a-z0-9]")


def split_item_text(text: str) -> Tuple[str, str, str]:
    """``"title. categories. brand."`` -> (title, categories, brand); a text without the two
    trailing parts gives empty categories/brand."""
    parts = text.strip().rstrip(".").rsplit(". ", 2)
    if len(parts) < 3:
        return parts[0], "", ""
    return parts[0], parts[1], parts[2]


TEXT_FIELDS = ("all", "title")


def select_text_fields(text: str, fields: str) -> str:
    """The part of an Amazon item text to embed: ``all`` (title. categories. brand.) or ``title``
    (the title alone, as in a source domain that has titles only, e.g. Games)."""
    if fields not in TEXT_FIELDS:
        raise ValueError(f"text_fields must be one of {list(TEXT_FIELDS)}, got {fields!r}")
    return text if fields == "all" else split_item_text(text)[0].strip() + "."


def category_words(categories: str) -> List[str]:
    words = [w.strip(",;:()").lower() for w in categories.split()]
    return [w for w in words if WORD.search(w)]


def build_item_attributes(rows: List[Tuple[str, str]], max_share: float = 0.5,
                          max_words: int = 12) -> Dict[str, Tuple[str, List[str]]]:
    """{item key: (brand, category words)}: words of more than ``max_share`` of the items removed,
    then the first ``max_words`` kept (the category path runs from general to specific)."""
    parsed = {}
    for key, text in rows:
        _, categories, brand = split_item_text(text)
        parsed[key] = (brand.strip().replace("\t", " ").replace(" ", "_") or "[unknown]",
                       list(dict.fromkeys(category_words(categories))))
    share = Counter(w for _, words in parsed.values() for w in words)
    common = {w for w, n in share.items() if n > max_share * len(parsed)}
    return {key: (brand, [w for w in words if w not in common][:max_words])
            for key, (brand, words) in parsed.items()}


def write_item_file(src: str, out: str, name: str, max_share: float = 0.5, max_words: int = 12) -> str:
    item2index = read_item2index(os.path.join(src, f"{name}.item2index"))
    rows = read_text_file(os.path.join(src, f"{name}.text"))
    unknown = [key for key, _ in rows if key not in item2index]
    if unknown:
        raise ValueError(f"{name}.text: {len(unknown)} item keys lack an entry in {name}.item2index (e.g. {unknown[:3]})")
    attributes = build_item_attributes(rows, max_share, max_words)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.item")
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("item_id:token\tbrand:token\tcategories:token_seq\n")
            for key, (brand, words) in sorted(attributes.items(), key=lambda kv: int(item2index[kv[0]])):
                f.write(f"{item2index[key]}\t{brand}\t{' '.join(words)}\n")
    return path


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description="write <D>.item (brand, category words) from <D>.text")
    parser.add_argument("--src", required=True, help="benchmark folder with <D>.text and <D>.item2index")
    parser.add_argument("--out", default=None, help="output folder (default: dataset/<D>)")
    parser.add_argument("--name", default=None, help="data set name (default: the --src folder's name)")
    parser.add_argument("--max_share", type=float, default=0.5, help="drop category words of more items than this share")
    parser.add_argument("--max_words", type=int, default=12,
                        help="keep at most this many category words per item (RecBole pads to the longest)")
    args = parser.parse_args(argv)
    name = args.name or os.path.basename(os.path.normpath(args.src))
    path = write_item_file(args.src, args.out or os.path.join("dataset", name), name, args.max_share, args.max_words)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
