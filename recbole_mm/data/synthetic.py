"""Seeded synthetic multi-modal sequential data, written in the real data's file formats.

The generative story (every part of it leaves a trace that a model can use):

- items belong to ``n_categories`` categories; each category has a *successor* category;
- a user walks between categories: stay (``p_stay``), move to the successor (``p_next``),
  or jump anywhere; inside a category items are drawn by a Zipf popularity;
- every item has a latent vector = its category's vector + item noise + its popularity;
  text and image features are two different noisy projections of it, the price is set by
  the category's price level; ``domain_shift`` rotates the projections and moves the means,
  so that two domains' features differ in distribution;
- some items lack an image or a price (``missing_image``, ``missing_price``).

Files (the benchmark layout of ``../shared/datasets/Scientific``, see docs/data.md):
``<name>.train.inter`` (every prefix), ``<name>.valid.inter`` / ``<name>.test.inter``
(leave-one-out), ``<name>.text|image|price.npy`` + ``.keys`` (rows in shuffled order),
``<name>.item`` (item token, category, popularity rank).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List

import numpy as np

from recbole_mm.data.features import write_feature_file
from recbole_mm.fileio import atomic_folder

DEFAULT_SYNTHETIC = "mm_synthetic"


@dataclass
class SyntheticSpec:
    """Parameters of one synthetic domain (all defaults give the embedded default data set)."""

    name: str = DEFAULT_SYNTHETIC
    seed: int = 2024
    n_users: int = 3000
    n_items: int = 800
    n_categories: int = 16
    min_length: int = 5
    max_length: int = 20
    p_stay: float = 0.3
    p_next: float = 0.6
    zipf_exponent: float = 1.1
    latent_dim: int = 16
    text_dim: int = 64
    image_dim: int = 32
    feature_noise: float = 0.3
    missing_image: float = 0.3
    missing_price: float = 0.2
    domain_shift: float = 0.0
    world_seed: int = 7  # shared by domains: the category vectors and the base projections
    successor_seed: int = -1  # -1: the world's successor map; another value: a conflicting one
    feature_category_seed: int = -1  # -1: features show an item's own category; another value: the
    #   features of category c are drawn from another category's vector (a fixed derangement):
    #   the same feature vectors mean other categories than in the other domains (misleading)
    item_prefix: str = "it"


def _successor_map(n_categories: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_categories)
    succ = np.empty(n_categories, dtype=np.int64)
    succ[perm] = np.roll(perm, -1)  # one cycle through all categories: no fixed points
    return succ


def _random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def generate(spec: SyntheticSpec) -> Dict[str, object]:
    """Generate sequences and features in memory (no files)."""
    rng = np.random.default_rng(spec.seed)
    world = np.random.default_rng(spec.world_seed)
    cat_vectors = world.normal(size=(spec.n_categories, spec.latent_dim))
    text_proj = world.normal(size=(spec.latent_dim + 1, spec.text_dim)) / np.sqrt(spec.latent_dim)
    image_proj = world.normal(size=(spec.latent_dim + 1, spec.image_dim)) / np.sqrt(spec.latent_dim)
    price_level = world.uniform(5, 95, size=spec.n_categories)
    succ = _successor_map(
        spec.n_categories, spec.world_seed if spec.successor_seed < 0 else spec.successor_seed
    )

    category = rng.integers(0, spec.n_categories, size=spec.n_items)
    members = [np.flatnonzero(category == c) for c in range(spec.n_categories)]
    popularity = np.zeros(spec.n_items)
    for items in members:
        ranks = rng.permutation(len(items)) + 1
        popularity[items] = 1.0 / ranks**spec.zipf_exponent
    log_pop = np.log(popularity + 1e-12)
    log_pop = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-12)

    shown = category
    if spec.feature_category_seed >= 0:  # misleading features: category c looks like category mislead[c]
        mislead = _successor_map(spec.n_categories, spec.feature_category_seed)
        shown = mislead[category]
    latent = cat_vectors[shown] + spec.feature_noise * rng.normal(size=(spec.n_items, spec.latent_dim))
    latent = np.concatenate([latent, log_pop[:, None]], axis=1)
    if spec.domain_shift:
        shift_rng = np.random.default_rng(spec.seed + 1)
        mix = spec.domain_shift
        text_proj = (1 - mix) * text_proj + mix * _random_rotation(spec.latent_dim + 1, shift_rng) @ text_proj
        image_proj = (1 - mix) * image_proj + mix * _random_rotation(spec.latent_dim + 1, shift_rng) @ image_proj
    text = np.tanh(latent @ text_proj) + 0.1 * rng.normal(size=(spec.n_items, spec.text_dim))
    image = latent @ image_proj + 0.1 * rng.normal(size=(spec.n_items, spec.image_dim))
    if spec.domain_shift:
        text += spec.domain_shift * 0.5
        image -= spec.domain_shift * 0.5
    price = np.clip(price_level[category] * np.exp(0.15 * rng.normal(size=spec.n_items)), 0, 100)
    has_image = rng.random(spec.n_items) >= spec.missing_image
    has_price = rng.random(spec.n_items) >= spec.missing_price

    sequences: List[np.ndarray] = []
    for _ in range(spec.n_users):
        length = int(rng.integers(spec.min_length, spec.max_length + 1))
        cat = int(rng.integers(spec.n_categories))
        seq, seen = [], set()
        while len(seq) < length:
            items = members[cat]
            if len(items):
                weights = popularity[items] / popularity[items].sum()
                item = int(rng.choice(items, p=weights))
                if item not in seen:
                    seq.append(item)
                    seen.add(item)
            u = rng.random()
            if u < spec.p_stay:
                pass
            elif u < spec.p_stay + spec.p_next:
                cat = int(succ[cat])
            else:
                cat = int(rng.integers(spec.n_categories))
        sequences.append(np.asarray(seq))

    return {
        "sequences": sequences,
        "category": category,
        "popularity": popularity,
        "text": text.astype(np.float32),
        "image": image.astype(np.float32),
        "price": price.astype(np.float32),
        "has_image": has_image,
        "has_price": has_price,
    }


def _item_token(spec: SyntheticSpec, item: int) -> str:
    return f"{spec.item_prefix}{item:05d}"


def _write_inter(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
        for user, history, target in rows:
            f.write(f"{user}\t{' '.join(history)}\t{target}\n")


def write_dataset(spec: SyntheticSpec, data_path: str, overwrite: bool = False) -> str:
    """Write the domain's files to ``<data_path>/<spec.name>/`` (atomically, as a whole folder).

    Without ``overwrite`` a folder that another process wrote meanwhile is kept (the same data):
    two runs that generate the data set at once both read one complete folder."""
    final_dir = os.path.join(data_path, spec.name)
    if os.path.isdir(final_dir) and not overwrite:
        return final_dir
    data = generate(spec)
    with atomic_folder(final_dir, replace=overwrite) as tmp_dir:
        name = spec.name
        train, valid, test = [], [], []
        for u, seq in enumerate(data["sequences"]):
            user = f"u{u:06d}"
            tokens = [_item_token(spec, i) for i in seq]
            for t in range(1, len(tokens) - 2):
                train.append((user, tokens[:t], tokens[t]))
            valid.append((user, tokens[:-2], tokens[-2]))
            test.append((user, tokens[:-1], tokens[-1]))
        for part, rows in (("train", train), ("valid", valid), ("test", test)):
            _write_inter(os.path.join(tmp_dir, f"{name}.{part}.inter"), rows)

        rng = np.random.default_rng(spec.seed + 99)
        tokens = np.asarray([_item_token(spec, i) for i in range(spec.n_items)])
        used = np.zeros(spec.n_items, dtype=bool)  # features only for items some user interacted with
        used[np.concatenate(data["sequences"])] = True
        for modality, present in (("text", used), ("image", data["has_image"] & used),
                                  ("price", data["has_price"] & used)):
            rows = rng.permutation(np.flatnonzero(present))  # shuffled row order on purpose
            write_feature_file(os.path.join(tmp_dir, f"{name}.{modality}"), tokens[rows], data[modality][rows])
        with open(os.path.join(tmp_dir, f"{name}.item"), "w", encoding="utf-8") as f:
            f.write("item_id:token\tcategory:token\tpopularity:float\n")
            for i in range(spec.n_items):
                f.write(f"{tokens[i]}\tc{data['category'][i]}\t{data['popularity'][i]:.6f}\n")
        with open(os.path.join(tmp_dir, f"{name}.spec.json"), "w", encoding="utf-8") as f:
            json.dump(asdict(spec), f, indent=2)
    return final_dir


# Transfer domains (docs/transfer.md): one shared world (category vectors, projections, price
# levels), 48 categories, each domain with its own items (seed, item prefix), feature shift and
# users. Two sources share the target's transition pattern; mm_src_conflict walks another
# successor map (its transitions contradict the target's: a negative-transfer source);
# mm_src_mislead follows the target's transitions but its item features mislead (category c's
# items look like another category's in every other domain). The
# target is data-poor: many users with short histories (1-3 training targets each).
TRANSFER_DOMAINS = {
    "mm_src_a": SyntheticSpec(name="mm_src_a", seed=101, n_users=2000, n_items=700, n_categories=48,
                              domain_shift=0.2, item_prefix="sa"),
    "mm_src_b": SyntheticSpec(name="mm_src_b", seed=202, n_users=2000, n_items=700, n_categories=48,
                              domain_shift=0.4, item_prefix="sb"),
    "mm_src_conflict": SyntheticSpec(name="mm_src_conflict", seed=303, n_users=4000, n_items=700, n_categories=48,
                                     domain_shift=0.3, successor_seed=99, p_stay=0.1, p_next=0.85,
                                     item_prefix="sc"),
    "mm_src_mislead": SyntheticSpec(name="mm_src_mislead", seed=505, n_users=4000, n_items=700, n_categories=48,
                                    domain_shift=0.3, feature_category_seed=77, item_prefix="sm"),
    "mm_target": SyntheticSpec(name="mm_target", seed=404, n_users=600, n_items=500, n_categories=48,
                               min_length=4, max_length=6, domain_shift=0.5, item_prefix="tg"),
}

SYNTHETIC_DATASETS = {DEFAULT_SYNTHETIC: SyntheticSpec(), **TRANSFER_DOMAINS}


def ensure_synthetic(name: str, data_path: str) -> bool:
    """Write a known synthetic data set if its folder is missing; True if ``name`` is synthetic."""
    spec = SYNTHETIC_DATASETS.get(name)
    if spec is None:
        return False
    write_dataset(spec, data_path)
    return True


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a synthetic multi-modal sequential data set.")
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--name", default=DEFAULT_SYNTHETIC)
    parser.add_argument("--n_users", type=int, default=SyntheticSpec.n_users)
    parser.add_argument("--n_items", type=int, default=SyntheticSpec.n_items)
    parser.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    parser.add_argument("--domain_shift", type=float, default=0.0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    spec = SyntheticSpec(name=args.name, n_users=args.n_users, n_items=args.n_items, seed=args.seed,
                         domain_shift=args.domain_shift)
    print(write_dataset(spec, args.data_path, overwrite=args.overwrite))


if __name__ == "__main__":
    main()
