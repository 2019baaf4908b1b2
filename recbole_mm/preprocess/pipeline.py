"""One command from raw Amazon 2018 files to the files the models read (docs/preprocess.md)::

    python -m recbole_mm.preprocess.pipeline --config properties/preprocess/amazon_scientific.yaml

The same chain reads a user's own tables (``interactions`` + ``items``, docs/own_data.md;
``python -m recbole_mm.preprocess.own_data --src <folder>`` sets it up for a folder).

Steps, in order: ``atomic`` (reviews + metadata, or interactions + items -> .inter/.item/.text/id maps), ``text`` (text
features), ``images`` (image folder -> lmdb store), ``image_features``, ``price``; then the
manifest ``<D>.manifest.json``. A step whose stamp (``.preprocess/<step>.json``) matches its
inputs' hashes and settings, and whose outputs still have the recorded hashes, is skipped;
feature extraction resumes from its saved chunks after an interruption.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from logging import getLogger
from typing import Any, Callable, Dict, List, Optional

import numpy
import torch

from recbole_mm.data.lmdb_store import build_image_lmdb, lmdb_content_sha256
from recbole_mm.data.raw_items import read_item2index
from recbole_mm.fileio import write_json_atomic
from recbole_mm.preprocess import amazon, atomic, tables
from recbole_mm.preprocess.hashing import file_sha256, folder_sha256, path_sha256, settings_sha256
from recbole_mm.preprocess.image import build_image_features
from recbole_mm.preprocess.price import build_price_features
from recbole_mm.preprocess.settings import STEPS, load_settings, step_settings
from recbole_mm.preprocess.text import default_text_encoder_path
from recbole_mm.preprocess.text_features import build_text_features

MANIFEST_VERSION = 1


class Pipeline:
    """Runs the steps for one settings dict; ``after_chunk`` maps ``text`` / ``image_features``
    to a hook called after each saved chunk (tests interrupt through it)."""

    def __init__(self, settings: Dict[str, Any], force: bool = False,
                 after_chunk: Optional[Dict[str, Callable[[int], None]]] = None):
        self.s = settings
        self.name = settings["dataset_name"]
        self.out_dir = os.path.join(settings["output_dir"], self.name)
        self.state_dir = os.path.join(self.out_dir, ".preprocess")
        self.force = force
        self.after_chunk = after_chunk or {}
        self.records: Dict[str, dict] = {}
        self.timings: Dict[str, float] = {}

    def path(self, suffix: str) -> str:
        return os.path.join(self.out_dir, f"{self.name}.{suffix}")

    # ---- step bookkeeping --------------------------------------------------------------
    def _stamp_path(self, step: str) -> str:
        return os.path.join(self.state_dir, f"{step}.json")

    def _up_to_date(self, step: str, fingerprint: str) -> Optional[dict]:
        try:
            with open(self._stamp_path(step), "r", encoding="utf-8") as f:
                stamp = json.load(f)
        except (OSError, ValueError):
            return None
        if stamp.get("fingerprint") != fingerprint:
            return None
        for rel, digest in stamp.get("outputs", {}).items():
            path = os.path.join(self.out_dir, rel)
            if not os.path.exists(path) or path_sha256(path) != digest:
                return None
        return stamp

    def run_step(self, step: str, inputs: Dict[str, str], outputs: List[str], fn: Callable[[], dict]) -> dict:
        """Run ``fn`` unless the step's stamp is up to date; record and return the stamp."""
        fingerprint = settings_sha256({"step": step, "inputs": inputs, "settings": step_settings(self.s, step)})
        stamp = None if self.force else self._up_to_date(step, fingerprint)
        if stamp is not None:
            getLogger().info(f"[{step}] up to date, skipped")
        else:
            getLogger().info(f"[{step}] running")
            start = time.perf_counter()
            summary = fn()
            self.timings[step] = round(time.perf_counter() - start, 2)
            stamp = {
                "fingerprint": fingerprint,
                "inputs": inputs,
                "settings": step_settings(self.s, step),
                "outputs": {os.path.basename(p): path_sha256(p) for p in outputs},
                "summary": summary,
            }
            write_json_atomic(self._stamp_path(step), stamp)
        self.records[step] = stamp
        return stamp

    # ---- the steps ---------------------------------------------------------------------
    def input_keys(self) -> tuple:
        """The atomic step's input files: the raw Amazon files or the user's own tables."""
        return ("interactions", "items") if self.s["interactions"] else ("reviews", "meta")

    def step_atomic(self) -> dict:
        inputs = {key: file_sha256(self.s[key]) for key in self.input_keys()}
        outputs = [self.path(p) for p in ("train.inter", "valid.inter", "test.inter", "item", "text",
                                          "item2index", "user2index")]
        return self.run_step("atomic", inputs, outputs, self._build_atomic)

    def _build_atomic(self) -> dict:
        s = self.s
        if s["interactions"]:
            reviews = tables.read_interactions(s["interactions"])
            meta = tables.read_items(s["items"], set(reviews["item"].unique()))
        else:
            reviews = amazon.read_reviews(s["reviews"], s["min_rating"])
            meta = amazon.read_meta(s["meta"], set(reviews["item"].unique()), s["text_fields"])
        usable = {asin for asin, m in meta.items() if m["title"] or not s["require_title"]}
        frame, counts = atomic.filter_interactions(reviews, usable, s["user_k_core"], s["item_k_core"],
                                                   s["drop_duplicates"])
        seqs = atomic.order_sequences(frame, s["tie_break"])
        atomic.write_atomic_files(self.out_dir, self.name, seqs, meta, s["max_history_length"], s["split"],
                                  s["split_ratios"])
        stats = atomic.table1_statistics(seqs)
        print(atomic.format_table1(self.name, stats))
        return {
            "table1": stats,
            "rows_per_filter": counts,
            "raw": {"reviews": len(reviews), "users": int(reviews["user"].nunique()),
                    "items": int(reviews["item"].nunique()), "items_with_metadata": len(meta),
                    "items_with_title": len(usable)},
            "items_with_price": sum(meta[a]["price"] is not None for a in seqs.items),
            "items_with_image_urls": sum(meta[a]["image_urls"] > 0 for a in seqs.items),
        }

    def step_text(self) -> dict:
        s = self.s
        encoder = s["text_encoder"] or default_text_encoder_path()
        inputs = {"text": file_sha256(self.path("text")), "item2index": file_sha256(self.path("item2index")),
                  "encoder": folder_sha256(encoder)}
        stem = self.path("text")  # writes <D>.text.npy / .keys beside the <D>.text input
        return self.run_step("text", inputs, [stem + ".npy", stem + ".keys"], lambda: build_text_features(
            self.path("text"), self.path("item2index"), stem, encoder, s["text_pooling"], s["text_batch_size"],
            s["text_max_length"], s["device"], s["text_normalize"], s["chunk_size"],
            work_dir=os.path.join(self.state_dir, "work", "text"), after_chunk=self.after_chunk.get("text"),
            show_progress=s["show_progress"]))

    def step_images(self) -> Optional[dict]:
        if not self.s["images_dir"]:
            getLogger().info("[images] no `images_dir` set: no image store, no image features")
            return None
        inputs = {"images_dir": folder_sha256(self.s["images_dir"]), "item2index": file_sha256(self.path("item2index"))}
        return self.run_step("images", inputs, [self.path("images.lmdb")], lambda: build_image_lmdb(
            self.s["images_dir"], read_item2index(self.path("item2index")), self.path("images.lmdb"),
            show_progress=self.s["show_progress"]))

    def step_image_features(self) -> Optional[dict]:
        s = self.s
        if not s["image_encoder"] or not os.path.isdir(self.path("images.lmdb")):
            getLogger().info("[image_features] skipped: needs `image_encoder` and the image store (step images)")
            return None
        inputs = {"images": lmdb_content_sha256(self.path("images.lmdb")), "encoder": folder_sha256(s["image_encoder"])}
        stem = self.path("image")
        return self.run_step("image_features", inputs, [stem + ".npy", stem + ".keys"], lambda: build_image_features(
            self.path("images.lmdb"), stem, s["image_encoder"], s["image_pooling"], s["image_batch_size"],
            s["max_images_per_item"], s["device"], s["chunk_size"],
            work_dir=os.path.join(self.state_dir, "work", "image"), after_chunk=self.after_chunk.get("image_features"),
            show_progress=s["show_progress"]))

    def step_price(self) -> dict:
        stem = self.path("price")
        return self.run_step("price", {"item": file_sha256(self.path("item"))}, [stem + ".npy", stem + ".keys"],
                             lambda: build_price_features(self.path("item"), stem, self.s["price_log_scale"]))

    # ---- the chain ---------------------------------------------------------------------
    def check_inputs(self) -> None:
        """Fail before any work, naming the config key, when an input is missing."""
        s, steps = self.s, self.s["steps"]
        needed = []
        if "atomic" in steps and s["interactions"]:
            needed += [("interactions", "interactions table (.csv or .tsv: user, item[, timestamp])", os.path.isfile),
                       ("items", "items table (.csv or .tsv: item, text or title[, price])", os.path.isfile)]
        elif "atomic" in steps:
            needed += [("reviews", "reviews file (<Category>.json.gz or <Category>_5.json.gz)", os.path.isfile),
                       ("meta", "metadata file (meta_<Category>.json.gz)", os.path.isfile)]
        if "images" in steps and s["images_dir"]:
            needed.append(("images_dir", "image folder", os.path.isdir))
        if "text" in steps and s["text_encoder"]:
            needed.append(("text_encoder", "local transformers model folder", os.path.isdir))
        if "image_features" in steps and s["image_encoder"]:
            needed.append(("image_encoder", "local transformers vision model folder", os.path.isdir))
        for key, what, exists in needed:
            if not exists(s[key]):
                raise FileNotFoundError(f"config key `{key}`: {s[key]} not found (expected the {what})")
        if "atomic" not in steps:
            for suffix in ("text", "item", "item2index"):
                if not os.path.isfile(self.path(suffix)):
                    raise FileNotFoundError(f"{self.path(suffix)} not found: run the `atomic` step first")

    def run(self) -> dict:
        self.check_inputs()
        os.makedirs(self.out_dir, exist_ok=True)
        for step in STEPS:
            if step in self.s["steps"]:
                getattr(self, f"step_{step}")()
            elif os.path.isfile(self._stamp_path(step)):
                with open(self._stamp_path(step), "r", encoding="utf-8") as f:
                    self.records[step] = json.load(f)  # earlier run's record, for the manifest
        manifest = self.manifest()
        write_json_atomic(self.path("manifest.json"), manifest)
        write_json_atomic(os.path.join(self.state_dir, "last_run.json"), {"seconds_per_step": self.timings})
        if "atomic" in self.records:
            print(atomic.format_table1(self.name, self.records["atomic"]["summary"]["table1"]))
        getLogger().info(f"manifest: {self.path('manifest.json')}")
        return manifest

    def manifest(self) -> dict:
        """Everything needed to rebuild the data set identically; no times (so equal builds give
        equal manifests; step times are in .preprocess/last_run.json)."""
        s = self.s
        inputs = {}
        for key, step, field in ((self.input_keys()[0], "atomic", self.input_keys()[0]),
                                 (self.input_keys()[1], "atomic", self.input_keys()[1]),
                                 ("images_dir", "images", "images_dir"), ("text_encoder", "text", "encoder"),
                                 ("image_encoder", "image_features", "encoder")):
            record = self.records.get(step)
            inputs[key] = {"path": s[key], "sha256": record["inputs"].get(field) if record else None}
        if "text" in self.records:  # the resolved path when text_encoder is ~ (the default MiniLM)
            inputs["text_encoder"]["path"] = self.records["text"]["summary"]["encoder"]
        outputs = {}
        for step in self.records.values():
            outputs.update(step["outputs"])
        return {
            "manifest_version": MANIFEST_VERSION,
            "dataset": self.name,
            "command": f"python -m recbole_mm.preprocess.pipeline --rebuild {self.name}.manifest.json",
            "settings": {key: s[key] for key in sorted(s) if key != "show_progress"},
            "inputs": inputs,
            "outputs": dict(sorted(outputs.items())),
            "statistics": self.records.get("atomic", {}).get("summary", {}).get("table1"),
            "steps": {step: {k: v for k, v in rec.items() if k != "fingerprint"} for step, rec in self.records.items()},
            "versions": _versions(),
        }


def _versions() -> Dict[str, str]:
    # transformers is a heavy dependency that only this record and the encoders need: imported here, lazily
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": numpy.__version__}


def run_pipeline(config: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None, force: bool = False,
                 after_chunk: Optional[Dict[str, Callable[[int], None]]] = None) -> dict:
    """Load the settings (YAML + overrides), run the chain, return the manifest."""
    return Pipeline(load_settings(config, overrides), force=force, after_chunk=after_chunk).run()


def rebuild(manifest_path: str, output_dir: Optional[str] = None, force: bool = True) -> Dict[str, List[str]]:
    """Run the chain with the settings recorded in a manifest (optionally into another folder);
    returns ``{"same": [...], "different": [...], "missing": [...]}`` output names."""
    with open(manifest_path, "r", encoding="utf-8") as f:
        recorded = json.load(f)
    overrides = dict(recorded["settings"])
    if output_dir:
        overrides["output_dir"] = output_dir
    new = run_pipeline(overrides=overrides, force=force)
    result: Dict[str, List[str]] = {"same": [], "different": [], "missing": []}
    for name, digest in recorded["outputs"].items():
        other = new["outputs"].get(name)
        result["missing" if other is None else "same" if other == digest else "different"].append(name)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Raw Amazon 2018 files -> atomic and feature files (docs/preprocess.md)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML, e.g. properties/preprocess/amazon_scientific.yaml")
    source.add_argument("--rebuild", metavar="MANIFEST", help="rebuild with a manifest's settings and compare hashes")
    parser.add_argument("--steps", default=None, help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--force", action="store_true", help="rerun the steps even when up to date")
    parser.add_argument("--output_dir", default=None, help="overrides the YAML's output_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.rebuild:
        result = rebuild(args.rebuild, args.output_dir)
        print(f"{len(result['same'])} outputs identical to the manifest; different: {result['different']}; "
              f"missing: {result['missing']}")
        raise SystemExit(1 if result["different"] or result["missing"] else 0)
    overrides: Dict[str, Any] = {}
    if args.steps:
        overrides["steps"] = [s.strip() for s in args.steps.split(",") if s.strip()]
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    run_pipeline(args.config, overrides, force=args.force)


if __name__ == "__main__":
    main()
