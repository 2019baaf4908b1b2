"""Reading a user's own tables: interactions and items as ``.csv`` or ``.tsv`` files with a header
line (docs/own_data.md). They give the atomic step of the preprocessing pipeline the same frame
and item records as the Amazon readers (:mod:`recbole_mm.preprocess.amazon`). Errors name the
file, the line and the column."""

from __future__ import annotations

import csv
import os
from datetime import datetime
from logging import getLogger
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd

from recbole_mm.preprocess.amazon import RawDataError, clean_text
from recbole_mm.preprocess.price import parse_price

# accepted header names (lower case; a RecBole type suffix such as ``:token`` is ignored)
INTERACTION_COLUMNS = {
    "user": ("user", "user_id", "userid", "reviewerid", "customer_id"),
    "item": ("item", "item_id", "itemid", "asin", "product_id"),
    "time": ("timestamp", "time", "ts", "unixreviewtime", "date", "datetime"),
}
ITEM_COLUMNS = {
    "item": INTERACTION_COLUMNS["item"],
    "text": ("text", "description"),
    "title": ("title", "name"),
    "price": ("price",),
    "brand": ("brand",),
    "categories": ("categories", "category"),
}
TABLE_EXTENSIONS = (".csv", ".tsv")


def _delimiter(path: str) -> str:
    return "\t" if path.lower().endswith(".tsv") else ","


def read_header(path: str) -> List[str]:
    """The column names of a ``.csv`` / ``.tsv`` file: lower case, a RecBole type suffix
    (``user_id:token``) and a byte-order mark removed."""
    if not os.path.isfile(path):
        raise RawDataError(f"{path} not found")
    with open(path, "r", encoding="utf-8", newline="") as f:
        header = next(csv.reader(f, delimiter=_delimiter(path)), None)
    if not header:
        raise RawDataError(f"{path}: the file is empty (expected a header line)")
    return [h.strip().lstrip("\ufeff").split(":")[0].strip().lower() for h in header]


def read_rows(path: str, n_fields: int) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, fields)`` of every non-empty row after the header; quoted fields may hold
    the separator; a row with another number of fields is an error naming its line."""
    delimiter = _delimiter(path)
    with open(path, "r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        next(reader, None)
        for fields in reader:
            if not fields or all(not field.strip() for field in fields):
                continue
            if len(fields) != n_fields:
                kind = "tab" if delimiter == "\t" else "comma"
                raise RawDataError(f"{path}, line {reader.line_num}: expected {n_fields} {kind}-separated fields "
                                   f"as in the header, got {len(fields)}")
            yield reader.line_num, fields


def _columns(path: str, names: List[str], wanted: Dict[str, Sequence[str]], required: Sequence[str]) -> Dict[str, int]:
    """Column index of each wanted field found in the header; an error names a missing one."""
    found = {}
    for field, aliases in wanted.items():
        for alias in aliases:
            if alias in names:
                found[field] = names.index(alias)
                break
    for field in required:
        if field not in found:
            raise RawDataError(f"{path}, line 1: no {field} column; the header must name one of "
                               f"{list(wanted[field])} (found {names})")
    return found


def _token(value: str, path: str, line_no: int, column: str) -> str:
    token = value.strip()
    if not token or any(c.isspace() for c in token):
        raise RawDataError(f"{path}, line {line_no}, column {column!r}: {value!r} is empty or holds whitespace "
                           f"(ids are written without spaces)")
    return token


def parse_time(value: str, path: str, line_no: int, column: str) -> float:
    """A number (e.g. Unix seconds) or an ISO date / date-time (``2021-03-04``, ``2021-03-04T10:00:00``)."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RawDataError(f"{path}, line {line_no}, column {column!r}: {value!r} is neither a number nor an ISO "
                           f"date (2021-03-04 or 2021-03-04T10:00:00)") from None
    return moment.timestamp() if moment.tzinfo else (moment - datetime(1970, 1, 1)).total_seconds()


def read_interactions(path: str) -> pd.DataFrame:
    """Interactions as the frame ``user, item, time, line`` the atomic step reads (the same frame as
    :func:`recbole_mm.preprocess.amazon.read_reviews`). Without a time column the file order is
    the time order."""
    names = read_header(path)
    cols = _columns(path, names, INTERACTION_COLUMNS, ("user", "item"))
    users, items, times, lines = [], [], [], []
    for line_no, fields in read_rows(path, len(names)):
        users.append(_token(fields[cols["user"]], path, line_no, names[cols["user"]]))
        items.append(_token(fields[cols["item"]], path, line_no, names[cols["item"]]))
        times.append(parse_time(fields[cols["time"]], path, line_no, names[cols["time"]]) if "time" in cols
                     else float(line_no))
        lines.append(line_no)
    if not users:
        raise RawDataError(f"{path}: no interaction rows after the header")
    return pd.DataFrame({"user": users, "item": items, "time": times, "line": lines})


def read_items(path: str, wanted: Optional[set] = None) -> Dict[str, dict]:
    """``item -> {title, text, brand, categories, price, image_urls}`` (the record the atomic step
    reads, as :func:`recbole_mm.preprocess.amazon.read_meta` gives it) for the items in ``wanted``
    (all when None). The item text is the ``text`` column, else the ``title``; the first row of an
    item listed twice wins."""
    names = read_header(path)
    cols = _columns(path, names, ITEM_COLUMNS, ("item",))
    if "text" not in cols and "title" not in cols:
        raise RawDataError(f"{path}, line 1: no text column; the header must name one of "
                           f"{list(ITEM_COLUMNS['text'] + ITEM_COLUMNS['title'])} (found {names})")
    meta: Dict[str, dict] = {}
    repeated = []
    for line_no, fields in read_rows(path, len(names)):
        item = _token(fields[cols["item"]], path, line_no, names[cols["item"]])
        if wanted is not None and item not in wanted:
            continue
        if item in meta:
            repeated.append(line_no)
            continue
        value = {field: clean_text(fields[i]) for field, i in cols.items() if field != "item"}
        price = None
        if value.get("price"):
            price = parse_price(value["price"])
            if price is None:
                raise RawDataError(f"{path}, line {line_no}, column {names[cols['price']]!r}: {value['price']!r} is "
                                   f"not a price (a positive number such as 12.99 or $12.99; empty = no price)")
        text = value.get("text") or value.get("title", "")
        meta[item] = {"title": value.get("title") or text, "text": text, "brand": value.get("brand", ""),
                      "categories": value.get("categories", ""), "price": price, "image_urls": 0}
    if repeated:
        getLogger().warning(f"{path}: {len(repeated)} repeated item rows ignored, the first is kept "
                            f"(lines {repeated[:5]}{' ...' if len(repeated) > 5 else ''})")
    if not meta:
        raise RawDataError(f"{path}: no item row matches the items of the interactions")
    return meta


def has_price_column(path: str) -> bool:
    return any(alias in read_header(path) for alias in ITEM_COLUMNS["price"])
