"""Prices: parsed from Amazon metadata strings, normalised to [0, 100] (as in ANT), written as
the ``price`` feature file. Items without a parsable price are left out (missing mask)."""

from __future__ import annotations

import math
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from recbole_mm.data.features import write_feature_file

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")


def parse_price(value) -> Optional[float]:
    """``"$12.99"`` -> 12.99, ``"$1,299.00"`` -> 1299.0, a range ``"$10.00 - $15.00"`` -> its
    midpoint 12.5; a number is taken as is; empty, non-price text (Amazon's metadata holds
    HTML/CSS fragments in some ``price`` fields) or a non-positive value -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) and number > 0 else None
    text = str(value).strip()
    if not text or len(text) > 40 or not re.fullmatch(r"[\s$€£¥.,\d\-–—to]+", text):
        return None
    numbers = [float(n.replace(",", "")) for n in _NUMBER.findall(text)]
    if not numbers or len(numbers) > 2:
        return None
    price = (numbers[0] + numbers[-1]) / 2.0
    return price if math.isfinite(price) and price > 0 else None


def normalise_prices(prices: Sequence[float], log_scale: bool = False) -> np.ndarray:
    """Min-max to [0, 100] over the given prices (ANT's range); with ``log_scale`` on
    ``log(1 + price)``. All prices equal -> all 0."""
    values = np.asarray(prices, dtype=np.float64)
    if values.size == 0:
        return values.astype(np.float32)
    if log_scale:
        values = np.log1p(values)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low) * 100.0).astype(np.float32)


def read_item_prices(item_file: str) -> List[Tuple[str, Optional[float]]]:
    """``(item token, price or None)`` from an atomic ``<D>.item`` file with a ``price:float`` column."""
    rows = []
    with open(item_file, "r", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        if "item_id" not in names or "price" not in names:
            raise ValueError(f"{item_file}: expected columns item_id:token and price:float in the header, got {header}")
        id_col, price_col = names.index("item_id"), names.index("price")
        for line_no, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(header):
                raise ValueError(f"{item_file}, line {line_no}: expected {len(header)} tab-separated fields, got {len(parts)}")
            rows.append((parts[id_col], float(parts[price_col]) if parts[price_col] else None))
    return rows


def build_price_features(item_file: str, stem: str, log_scale: bool = False) -> dict:
    """Write ``<stem>.npy/.keys`` for the items that have a price; returns counts and the raw range."""
    rows = read_item_prices(item_file)
    present = [(token, price) for token, price in rows if price is not None]
    keys = [token for token, _ in present]
    raw = [price for _, price in present]
    write_feature_file(stem, keys, normalise_prices(raw, log_scale).reshape(-1, 1))
    return {
        "items": len(rows),
        "with_price": len(present),
        "raw_min": float(min(raw)) if raw else None,
        "raw_max": float(max(raw)) if raw else None,
    }
