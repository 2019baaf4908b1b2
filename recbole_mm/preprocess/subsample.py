"""A user sample of an already-split benchmark folder (UniSRec / ANT layout, e.g. Games): the same
files under a new data set name, holding every row of ``--users`` users drawn at random.

Use it to make a large real target affordable on a CPU (Games has 50,546 users; a run of ANT on
all of them costs ~6-10 minutes per epoch on one thread). The sampled users keep their whole
histories, so the split (every prefix for training, leave-one-out validation and test) is the
source folder's. Item-side files (``<D>.item2index``, ``<D>.text``) are copied under the new
name; the feature files of ``--features`` (every ``<D>.<kind>.keys`` with its arrays: pooled
``<D>.text`` / ``<D>.image``, token files ``<D>.text_tokens`` …) keep the rows of the items
that occur in the sampled users' rows, the run's item set (a run rejects feature keys outside
it)::

    python -m recbole_mm.preprocess.subsample --src ../shared/datasets/Games --users 10000 \\
        --features dataset/Games --out dataset
    python run_recbole_mm.py --model=ANT --dataset=Games_u10000 --data_path=dataset

The output folder is written whole or not at all; the same arguments give the same files.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from recbole_mm.data.atomic_files import DataFileError, read_atomic_header
from recbole_mm.data.features import read_feature_file, write_feature_file
from recbole_mm.data.token_features import read_token_feature_file, token_file_paths, write_token_feature_file
from recbole_mm.fileio import atomic_folder

PARTS = ("train", "valid", "test")
ITEM_FILES = ("item2index", "text")


class SubsampleError(ValueError):
    """Bad input of the subsample step (one line naming the file or argument)."""


def inter_path(folder: str, name: str, part: str) -> str:
    return os.path.join(folder, f"{name}.{part}.inter")


def read_users(path: str) -> List[str]:
    """The distinct values of the first column (the user) of an atomic .inter file, in file order."""
    first = read_atomic_header(path)[0][0]
    if first != "user_id":
        raise SubsampleError(f"{path}: the first column must be the user (user_id:token), got {first!r}")
    seen: Dict[str, None] = {}
    with open(path, encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            seen.setdefault(line.split("\t", 1)[0], None)
    return list(seen)


def draw_users(users: Sequence[str], n_users: int, seed: int) -> set:
    """``n_users`` of ``users`` drawn without replacement by ``numpy``'s generator of ``seed``."""
    if not 0 < n_users <= len(users):
        raise SubsampleError(f"--users must be between 1 and the data set's {len(users)} users, got {n_users}")
    picked = np.random.default_rng(seed).choice(len(users), size=n_users, replace=False)
    return {users[i] for i in picked}


def filter_rows(src: str, dst: str, users: set) -> Tuple[int, set]:
    """Copy the header and the rows of ``users`` of the .inter file ``src`` (columns user, item
    list, item) to ``dst``; the number of rows written and the items they hold."""
    rows, items = 0, set()
    with open(src, encoding="utf-8") as reader, open(dst, "w", encoding="utf-8") as writer:
        writer.write(reader.readline())
        for line in reader:
            fields = line.rstrip("\n").split("\t")
            if fields[0] in users:
                writer.write(line)
                rows += 1
                for field in fields[1:]:
                    items.update(field.split())
    return rows, items


def feature_stems(folder: str, name: str) -> List[str]:
    """Stems of the feature files of data set ``name`` in ``folder``: every ``<name>.<kind>.keys``."""
    return sorted(p[: -len(".keys")] for p in glob.glob(os.path.join(folder, f"{name}.*.keys")))


def filter_features(stem: str, out_stem: str, items: set) -> None:
    """Write the feature file ``out_stem`` with the rows of ``items`` of the feature file ``stem``:
    a token file (``.npy`` + ``.counts.npy`` + ``.keys``) or a pooled one (``.npy`` + ``.keys``),
    read and written by the project's validated readers and writers."""
    if os.path.isfile(token_file_paths(stem)[1]):
        keys, tokens, counts = read_token_feature_file(stem)
        kept = [row for row, key in enumerate(keys) if key in items]
        write_token_feature_file(out_stem, [keys[row] for row in kept], tokens[kept], counts[kept],
                                 max_tokens=tokens.shape[1])
    else:
        keys, matrix = read_feature_file(stem)
        kept = [row for row, key in enumerate(keys) if key in items]
        write_feature_file(out_stem, [keys[row] for row in kept], matrix[kept])


def subsample(src: str, out: str, n_users: int, seed: int = 2020, name: Optional[str] = None,
              new_name: Optional[str] = None, features: Optional[str] = None) -> str:
    """Write ``<out>/<new_name>/`` (default ``<name>_u<n_users>``, plus ``_s<seed>`` for a seed
    other than 2020) and return its path; see the module docstring."""
    name = name or os.path.basename(os.path.normpath(src))
    new_name = new_name or f"{name}_u{n_users}" + ("" if seed == 2020 else f"_s{seed}")
    for part in PARTS:
        if not os.path.isfile(inter_path(src, name, part)):
            raise SubsampleError(f"{inter_path(src, name, part)} not found: --src must hold "
                                 f"{name}.train.inter, {name}.valid.inter and {name}.test.inter")
    copies = [os.path.join(src, f"{name}.{kind}") for kind in ITEM_FILES]
    copies = [p for p in copies if os.path.isfile(p)]
    stems = feature_stems(features, name) if features is not None else []
    if features is not None and not stems:
        raise SubsampleError(f"--features {features}: no feature files {name}.<kind>.keys there")
    chosen = draw_users(read_users(inter_path(src, name, "test")), n_users, seed)
    target = os.path.join(out, new_name)
    with atomic_folder(target) as tmp:
        items: set = set()
        for part in PARTS:
            rows, part_items = filter_rows(inter_path(src, name, part), inter_path(tmp, new_name, part), chosen)
            items |= part_items
            logging.getLogger(__name__).info(f"{new_name}.{part}.inter: {rows} rows")
        for path in copies:
            shutil.copyfile(path, os.path.join(tmp, new_name + os.path.basename(path)[len(name):]))
        for stem in stems:
            filter_features(stem, os.path.join(tmp, new_name + os.path.basename(stem)[len(name):]), items)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="benchmark folder with <D>.train/.valid/.test.inter")
    parser.add_argument("--users", type=int, required=True, help="number of users to keep")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default="dataset", help="parent folder of the new data set folder")
    parser.add_argument("--name", default=None, help="data set name in --src (default: its folder name)")
    parser.add_argument("--new_name", default=None, help="name of the sample (default: <D>_u<users>)")
    parser.add_argument("--features", default=None,
                        help="folder with the data set's feature files (<D>.text.npy/.keys, ...) to copy")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = subsample(args.src, args.out, args.users, args.seed, args.name, args.new_name, args.features)
    except (SubsampleError, DataFileError) as err:  # DataFileError: a malformed .inter header or feature file
        parser.error(str(err))
    print(path)
    print(f"next: python run_recbole_mm.py --model=ANT --dataset={os.path.basename(path)} "
          f"--data_path={os.path.dirname(os.path.abspath(path))}")


if __name__ == "__main__":
    main()
