"""Reading raw Amazon 2018 files: reviews (``<Category>[_5].json.gz``) and metadata
(``meta_<Category>.json.gz``), one JSON object per line, gzip-compressed or plain.

Errors name the file, the line number and the field that was expected.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import re
from logging import getLogger
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd

from recbole_mm.preprocess.price import parse_price

REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")
TEXT_FIELDS = ("title", "category", "brand", "description", "main_cat", "feature")

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


class RawDataError(ValueError):
    """A raw input file is missing or malformed."""


def _open_text(path: str):
    if not os.path.isfile(path):
        raise RawDataError(f"raw file {path} not found")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def iter_json_lines(path: str) -> Iterator[Tuple[int, dict]]:
    """``(line number, object)`` for each non-empty line; a malformed line is an error naming it."""
    with _open_text(path) as f:
        try:
            for line_no, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise RawDataError(f"{path}, line {line_no}: malformed JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(obj, dict):
                    raise RawDataError(f"{path}, line {line_no}: expected a JSON object, got {type(obj).__name__}")
                yield line_no, obj
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise RawDataError(f"{path}: cannot read ({err})") from err


def read_reviews(path: str, min_rating: Optional[float] = None) -> pd.DataFrame:
    """Reviews as a frame ``user, item, time, line`` (``line`` = position in the file, kept for
    stable tie-breaking). With ``min_rating`` the field ``overall`` is required and rows below
    it are dropped."""
    users: List[str] = []
    items: List[str] = []
    times: List[int] = []
    lines: List[int] = []
    needed = REVIEW_FIELDS + (("overall",) if min_rating is not None else ())
    for line_no, obj in iter_json_lines(path):
        for key in needed:
            if key not in obj or obj[key] in (None, ""):
                raise RawDataError(f"{path}, line {line_no}: missing field {key!r} (a review needs {list(needed)})")
        try:
            time = int(obj["unixReviewTime"])
        except (TypeError, ValueError):
            raise RawDataError(
                f"{path}, line {line_no}: field 'unixReviewTime' must be an integer, got {obj['unixReviewTime']!r}"
            ) from None
        if min_rating is not None:
            try:
                rating = float(obj["overall"])
            except (TypeError, ValueError):
                raise RawDataError(f"{path}, line {line_no}: field 'overall' must be a number, got {obj['overall']!r}") from None
            if rating < min_rating:
                continue
        users.append(_clean_token(obj["reviewerID"], path, line_no, "reviewerID"))
        items.append(_clean_token(obj["asin"], path, line_no, "asin"))
        times.append(time)
        lines.append(line_no)
    if not users:
        raise RawDataError(f"{path}: no reviews read (expected JSON lines with {list(needed)})")
    return pd.DataFrame({"user": users, "item": items, "time": times, "line": lines})


def _clean_token(value, path: str, line_no: int, field: str) -> str:
    token = str(value).strip()
    if not token or any(c.isspace() for c in token):
        raise RawDataError(f"{path}, line {line_no}: field {field!r} = {value!r} is empty or holds whitespace")
    return token


def clean_text(value) -> str:
    """HTML entities decoded, tags removed, whitespace collapsed; lists joined by spaces."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts = [clean_text(v) for v in value]
        return " ".join(p for p in parts if p)
    text = html.unescape(str(value))
    text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def item_text(meta: dict, fields: Sequence[str]) -> str:
    """``"<field 1>. <field 2>. ..."`` over the non-empty fields, in the given order (the UniSRec
    / ANT item text: title, categories, brand). Repeated category entries are kept once."""
    parts = []
    for field in fields:
        value = meta.get(field)
        if field == "category" and isinstance(value, list):
            value = list(dict.fromkeys(clean_text(v) for v in value))
        text = clean_text(value).rstrip(".").strip()
        if text:
            parts.append(text + ".")
    return " ".join(parts)


def read_meta(path: str, wanted: Optional[set] = None, text_fields: Sequence[str] = ("title", "category", "brand"),
              ) -> Dict[str, dict]:
    """``asin -> {title, text, brand, categories, price, price_raw, image_urls}`` for the items in ``wanted`` (all
    when None). The first record of an ASIN listed twice wins."""
    for field in text_fields:
        if field not in TEXT_FIELDS:
            raise RawDataError(f"text field {field!r} is not a metadata field; expected some of {list(TEXT_FIELDS)}")
    meta: Dict[str, dict] = {}
    duplicates = 0
    not_prices: List[object] = []  # non-empty price fields that are no price
    for line_no, obj in iter_json_lines(path):
        if "asin" not in obj:
            raise RawDataError(f"{path}, line {line_no}: missing field 'asin' (every metadata record needs one)")
        asin = str(obj["asin"]).strip()
        if wanted is not None and asin not in wanted:
            continue
        if asin in meta:
            duplicates += 1
            continue
        images = obj.get("imageURLHighRes") or obj.get("imageURL") or []
        meta[asin] = {
            "title": clean_text(obj.get("title")),
            "text": item_text(obj, text_fields),
            "brand": clean_text(obj.get("brand")),
            "categories": clean_text(list(dict.fromkeys(obj["category"])) if isinstance(obj.get("category"), list)
                                     else obj.get("category")),
            "price_raw": obj.get("price") if isinstance(obj.get("price"), str) else "",
            "price": parse_price(obj.get("price")),
            "image_urls": len(images) if isinstance(images, list) else 0,
        }
        if meta[asin]["price"] is None and obj.get("price") not in (None, ""):
            not_prices.append(obj["price"])
    if duplicates:
        getLogger().warning(f"{path}: {duplicates} repeated ASIN records ignored (the first one is kept)")
    if not_prices:
        getLogger().warning(f"{path}: {len(not_prices)} price fields are not a price (e.g. {str(not_prices[0])[:40]!r}; "
                            f"a positive amount such as $12.99 was expected): those items have no price")
    if not meta:
        raise RawDataError(f"{path}: no metadata record matches the reviewed items")
    return meta
