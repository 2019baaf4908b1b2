"""Prices: parsed from Amazon metadata strings, normalised to [0, 100] (as in ANT), written as
the ``price`` feature file. Items without a valid price (none, not a price, NaN, infinite, not
positive) are left out (missing mask) and never set the scaling bounds."""

from __future__ import annotations

import math
import re
from logging import getLogger
from typing import List, Optional, Sequence, Tuple

import numpy as np

from recbole_mm.data.features import write_feature_file

_AMOUNT = r"[$€£¥]?\s*((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_PRICE = re.compile(rf"\s*{_AMOUNT}\s*(?:(?:-|–|—|to)\s*{_AMOUNT}\s*)?")


def parse_price(value) -> Optional[float]:
    """``"$12.99"`` -> 12.99, ``"$1,299.00"`` -> 1299.0, a range ``"$10.00 - $15.00"`` -> its
    midpoint 12.5; a number is taken as is. None for anything else: empty, non-price text (Amazon's
    metadata holds HTML/CSS fragments in some ``price`` fields), a sign (``"$-5.00"``), a malformed
    number (``"$1.2.3"``), NaN, infinite or non-positive values."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) and number > 0 else None
    text = str(value).strip()
    match = _PRICE.fullmatch(text) if len(text) <= 40 else None
    if match is None:
        return None
    numbers = [float(n.replace(",", "")) for n in match.groups() if n is not None]
    price = (numbers[0] + numbers[-1]) / 2.0
    return price if math.isfinite(price) and price > 0 else None


def valid_prices(prices: Sequence[float]) -> np.ndarray:
    """The prices as float64, ``ValueError`` unless every one is finite and positive (NaN, inf or
    a negative value must never become a scaling bound: callers drop them first)."""
    values = np.asarray(prices, dtype=np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} price(s) are NaN, infinite or not positive (e.g. {values[bad][0]}); "
                         f"treat them as missing before scaling")
    return values


def normalise_prices(prices: Sequence[float], log_scale: bool = False) -> np.ndarray:
    """Min-max to [0, 100] over the given prices (ANT's range); with ``log_scale`` on
    ``log(1 + price)``. All prices equal -> all 0. Every price must be finite and positive."""
    values = valid_prices(prices)
    if values.size == 0:
        return values.astype(np.float32)
    if log_scale:
        values = np.log1p(values)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low) * 100.0).astype(np.float32)


def _item_price(cell: str, where: str) -> Optional[float]:
    """One ``price:float`` cell: empty -> None; a number -> it, or None when NaN, infinite or not
    positive (missing); anything else is an error naming ``where``."""
    if not cell.strip():
        return None
    try:
        number = float(cell)
    except ValueError:
        raise ValueError(f"{where}: expected a number (type float) or an empty cell, got {cell!r}") from None
    return number if math.isfinite(number) and number > 0 else None


def read_item_prices(item_file: str) -> List[Tuple[str, Optional[float]]]:
    """``(item token, price or None)`` from an atomic ``<D>.item`` file with a ``price:float``
    column. A price that is NaN, infinite, zero or negative is missing (None; the count is logged);
    a cell that is no number is an error naming the file, line and column."""
    rows, dropped = [], []
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
            price = _item_price(parts[price_col], f"{item_file}, line {line_no}, column 'price'")
            if price is None and parts[price_col].strip():
                dropped.append(line_no)
            rows.append((parts[id_col], price))
    if dropped:
        getLogger().warning(f"{item_file}: {len(dropped)} prices are NaN, infinite, zero or negative (lines "
                            f"{dropped[:5]}{' ...' if len(dropped) > 5 else ''}): those items have no price")
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
