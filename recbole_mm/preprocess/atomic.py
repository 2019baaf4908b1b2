"""Raw interactions -> the plugin's benchmark atomic files (docs/data.md, docs/preprocess.md).

Steps: drop items without metadata (or title), drop repeated (user, item) pairs, k-core
filtering iterated to a fixed point, per-user chronological order (ties keep the order of
the reviews file, or ASIN order), deterministic ids, leave-one-out split with every training
prefix, histories cut to the last ``max_history_length`` items.

Other splits (``split``): ``ratio`` cuts each user's sequence by shares in time order (RecBole's
``RS`` split grouped by user), ``time`` cuts all interactions at two points in time (a global
temporal split); valid and test then hold every row whose target falls in their part.

Ids: users are numbered 0.. in ``reviewerID`` order (sorted as strings); items are numbered
0.. in order of first appearance when walking the users in id order and each user's items
chronologically (the layout of the UniSRec / ANT Scientific release).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from logging import getLogger
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from recbole_mm.fileio import atomic_output
from recbole_mm.preprocess.attributes import category_words

INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


class EmptyDataError(ValueError):
    """Filtering left nothing to write."""


@dataclass
class Sequences:
    """Chronological item sequences with their ids: ``users[u]`` is the reviewerID of user
    index ``u``, ``sequences[u]`` its item indices; ``items[i]`` is the ASIN of item index ``i``."""

    users: List[str]
    items: List[str]
    sequences: List[List[int]]
    times: Optional[List[List[float]]] = None  # the time of each sequence entry (for the time split)


def k_core(frame: pd.DataFrame, user_k: int, item_k: int) -> Tuple[pd.DataFrame, int]:
    """Drop users with < ``user_k`` and items with < ``item_k`` interactions until both hold
    (a fixed point); returns the frame and the number of rounds."""
    rounds = 0
    while True:
        rounds += 1
        user_count = frame.groupby("user")["item"].transform("size")
        item_count = frame.groupby("item")["user"].transform("size")
        keep = (user_count >= user_k) & (item_count >= item_k)
        if keep.all():
            return frame, rounds
        frame = frame[keep]
        if frame.empty:
            return frame, rounds


def filter_interactions(frame: pd.DataFrame, items_with_meta: set, user_k: int, item_k: int,
                        drop_duplicates: bool = True) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """Metadata filter, duplicate filter, k-core; returns the frame and per-step row counts."""
    log = {"raw": len(frame)}
    frame = frame[frame["item"].isin(items_with_meta)]
    log["with_metadata"] = len(frame)
    if drop_duplicates:
        frame = frame.sort_values(["time", "line"], kind="stable").drop_duplicates(["user", "item"], keep="first")
    log["without_duplicates"] = len(frame)
    frame, rounds = k_core(frame, user_k, item_k)
    log["k_core"] = len(frame)
    log["k_core_rounds"] = rounds
    if frame.empty:
        raise EmptyDataError(
            f"no interactions left after the {user_k}/{item_k}-core filter (users/items); counts per step: {log}. "
            f"Lower `k_core` (or `user_k_core` / `item_k_core`) or check the reviews and metadata files match"
        )
    return frame, log


def order_sequences(frame: pd.DataFrame, tie_break: str = "file_order") -> Sequences:
    """Per-user chronological sequences with the documented deterministic ids."""
    if tie_break not in ("file_order", "asin"):
        raise ValueError(f"config key `tie_break`: expected file_order or asin, got {tie_break!r}")
    second = "line" if tie_break == "file_order" else "item"
    frame = frame.sort_values(["user", "time", second, "line"], kind="stable")
    users: List[str] = []
    item_index: Dict[str, int] = {}
    sequences: List[List[int]] = []
    times: List[List[float]] = []
    for user, group in frame.groupby("user", sort=True):
        seq = []
        for asin in group["item"].tolist():
            if asin not in item_index:
                item_index[asin] = len(item_index)
            seq.append(item_index[asin])
        users.append(str(user))
        sequences.append(seq)
        times.append([float(t) for t in group["time"].tolist()])
    return Sequences(users=users, items=list(item_index), sequences=sequences, times=times)


Row = Tuple[int, List[int], int]


def split_rows(sequences: Sequence[Sequence[int]], max_history: int, split: str = "leave_one_out",
               ratios: Sequence[float] = (0.8, 0.1, 0.1), times: Optional[Sequence[Sequence[float]]] = None,
               ) -> Tuple[List[Row], List[Row], List[Row]]:
    """Rows ``(user index, history, target)`` of train, valid and test; histories keep their last
    ``max_history`` items and are never empty (a sequence's first item is no target).

    - ``leave_one_out``: train = every prefix ending before the second-to-last item, valid =
      target second-to-last, test = target last (one row per user each);
    - ``ratio``: each user's targets in time order, cut by ``ratios`` (as RecBole's ``RS`` split
      counts a group: at least one valid and test position when the shares round to zero);
    - ``time``: a target's part is decided by its time (``times``), cut where the ``ratios``
      shares of all interactions, in time order, end."""
    if split == "leave_one_out":
        return _leave_one_out(sequences, max_history)
    parts: Tuple[List[Row], List[Row], List[Row]] = ([], [], [])
    if split == "time":
        cut_valid, cut_test = _time_cuts([t for seq_times in times for t in seq_times], ratios)
    for u, seq in enumerate(sequences):
        if split == "ratio":
            n_train, n_valid, _ = ratio_counts(len(seq), ratios)
            part_of = [0 if t < n_train else 1 if t < n_train + n_valid else 2 for t in range(len(seq))]
        elif split == "time":
            part_of = [0 if t < cut_valid else 1 if t < cut_test else 2 for t in times[u]]
        else:
            raise ValueError(f"config key `split`: expected leave_one_out, ratio or time, got {split!r}")
        for t in range(1, len(seq)):
            parts[part_of[t]].append((u, list(seq[max(0, t - max_history):t]), seq[t]))
    for name, rows in zip(("valid", "test"), parts[1:]):
        if not rows:
            raise EmptyDataError(f"the {split} split {list(ratios)} leaves the {name} part empty; "
                                 f"give it a larger share (config key `split_ratios`)")
    return parts


def ratio_counts(total: int, ratios: Sequence[float]) -> List[int]:
    """Train / valid / test sizes of a group of ``total`` interactions, as RecBole's ``RS`` split
    computes them (``Dataset._calcu_split_ids``)."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def _time_cuts(all_times: List[float], ratios: Sequence[float]) -> Tuple[float, float]:
    ordered = sorted(all_times)
    last = len(ordered) - 1
    return (ordered[min(last, int(ratios[0] * len(ordered)))],
            ordered[min(last, int((ratios[0] + ratios[1]) * len(ordered)))])


def _leave_one_out(sequences: Sequence[Sequence[int]], max_history: int) -> Tuple[List[Row], List[Row], List[Row]]:
    train: List[Row] = []
    valid: List[Row] = []
    test: List[Row] = []
    for u, seq in enumerate(sequences):
        n = len(seq)
        if n < 3:
            raise EmptyDataError(f"user index {u} has {n} interactions; a leave-one-out split needs at least 3")
        for t in range(1, n - 2):
            train.append((u, seq[max(0, t - max_history):t], seq[t]))
        valid.append((u, seq[max(0, n - 2 - max_history):n - 2], seq[n - 2]))
        test.append((u, seq[max(0, n - 1 - max_history):n - 1], seq[n - 1]))
    return train, valid, test


def _write_lines(path: str, header: str, lines) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            if header:
                f.write(header)
            for line in lines:
                f.write(line)


def write_atomic_files(out_dir: str, name: str, seqs: Sequences, meta: Dict[str, dict], max_history: int,
                       split: str = "leave_one_out", ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> List[str]:
    """Write ``<D>.train/valid/test.inter`` (split as :func:`split_rows` says), ``<D>.item``,
    ``<D>.text``, ``<D>.item2index`` and ``<D>.user2index`` into ``out_dir``; returns the paths."""
    train, valid, test = split_rows(seqs.sequences, max_history, split, ratios, seqs.times)
    paths = []
    for part, rows in (("train", train), ("valid", valid), ("test", test)):
        path = os.path.join(out_dir, f"{name}.{part}.inter")
        _write_lines(path, INTER_HEADER,
                     (f"{u}\t{' '.join(map(str, hist))}\t{target}\n" for u, hist, target in rows))
        paths.append(path)
    path = os.path.join(out_dir, f"{name}.item")
    attributes = item_attributes([meta[asin] for asin in seqs.items])
    _write_lines(path, "item_id:token\tasin:token\tbrand:token\tcategories:token_seq\tprice:float\n",
                 (f"{i}\t{asin}\t{brand}\t{' '.join(words)}\t{_price(meta[asin]['price'])}\n"
                  for i, (asin, (brand, words)) in enumerate(zip(seqs.items, attributes))))
    paths.append(path)
    path = os.path.join(out_dir, f"{name}.text")
    _write_lines(path, "item_id:token\ttext:token_seq\n",
                 (f"{asin}\t{_field(meta[asin]['text'])}\n" for asin in seqs.items))
    paths.append(path)
    for suffix, keys in (("item2index", seqs.items), ("user2index", seqs.users)):
        path = os.path.join(out_dir, f"{name}.{suffix}")
        _write_lines(path, "", (f"{key}\t{i}\n" for i, key in enumerate(keys)))
        paths.append(path)
    getLogger().info(f"{name}: {len(train)} train prefixes, {len(valid)} valid and {len(test)} test rows in {out_dir}")
    return paths


def item_attributes(records: Sequence[dict], max_share: float = 0.5) -> List[Tuple[str, List[str]]]:
    """(brand token, category words) per item, as ``recbole_mm.preprocess.attributes`` writes them
    for FDSA / S3Rec: brand with ``_`` for spaces (``[unknown]`` if none); the category path's
    lower-cased words, without words of more than ``max_share`` of the items (the root category)."""
    parsed = [(_field(r["brand"]).replace(" ", "_") or "[unknown]",
               list(dict.fromkeys(category_words(r["categories"])))) for r in records]
    share = Counter(w for _, words in parsed for w in words)
    common = {w for w, n in share.items() if n > max_share * len(parsed)}
    return [(brand, [w for w in words if w not in common]) for brand, words in parsed]


def _field(text: str) -> str:
    return " ".join(str(text).split())  # no tabs or newlines inside a field


def _price(price) -> str:
    return "" if price is None else repr(float(price))


def table1_statistics(seqs: Sequences) -> Dict[str, float]:
    """The ANT paper's Table I columns: #users, #items, #interactions, per-user and per-item averages."""
    n_users, n_items = len(seqs.users), len(seqs.items)
    n_inter = sum(len(s) for s in seqs.sequences)
    return {
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "avg_per_user": round(n_inter / n_users, 2) if n_users else 0.0,
        "avg_per_item": round(n_inter / n_items, 2) if n_items else 0.0,
        "density": round(n_inter / (n_users * n_items), 6) if n_users and n_items else 0.0,
    }


def format_table1(name: str, stats: Dict[str, float]) -> str:
    """Markdown table in the form of the ANT paper's Table I."""
    return (
        "| Dataset | #Users | #Items | #Inters. | Avg. n per user | Avg. n per item |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: |\n"
        f"| {name} | {stats['users']:,} | {stats['items']:,} | {stats['interactions']:,} | "
        f"{stats['avg_per_user']:.2f} | {stats['avg_per_item']:.2f} |"
    )
