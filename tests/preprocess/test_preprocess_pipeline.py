"""The whole chain on a small raw Amazon-format data set written by the tests (reviews and
metadata json.gz, generated images, a corrupt and a truncated image) with tiny random encoders:
k-core, chronological splits, every prefix once, feature rows aligned to item ids, missing
masks, the manifest, identical reruns, skipping, and resumed feature extraction."""

import gzip
import json
import os
from collections import defaultdict

import numpy as np
import pytest

from helpers.preprocess import make_raw_dataset, make_text_encoder, make_vision_encoder
from recbole_mm.data.features import read_feature_file
from recbole_mm.data.lmdb_store import ImageStore
from recbole_mm.preprocess.hashing import path_sha256
from recbole_mm.preprocess.pipeline import run_pipeline
from recbole_mm.preprocess.text import encode_texts
from recbole_mm.resources import plugin_yaml

NAME = "Toy"


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("raw"))
    facts = make_raw_dataset(root)
    facts["text_encoder"] = make_text_encoder(os.path.join(root, "text_encoder"))
    facts["image_encoder"] = make_vision_encoder(os.path.join(root, "image_encoder"))
    return facts


def settings(raw, out_dir, **extra):
    base = {"dataset_name": NAME, "reviews": raw["reviews"], "meta": raw["meta"], "images_dir": raw["images_dir"],
            "output_dir": out_dir, "text_encoder": raw["text_encoder"], "image_encoder": raw["image_encoder"],
            "text_batch_size": 4, "image_batch_size": 3, "chunk_size": 8, "show_progress": False}
    base.update(extra)
    return base


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    manifest = run_pipeline(overrides=settings(raw, out))
    return os.path.join(out, NAME), manifest


def read_inter(folder, part):
    with open(os.path.join(folder, f"{NAME}.{part}.inter")) as f:
        assert f.readline() == "user_id:token\titem_id_list:token_seq\titem_id:token\n"
        return [(u, h.split(), t) for u, h, t in (line.rstrip("\n").split("\t") for line in f)]


def read_map(folder, suffix):
    with open(os.path.join(folder, f"{NAME}.{suffix}")) as f:
        return dict(line.rstrip("\n").split("\t") for line in f)


def expected_sequences(raw, kept_users, kept_items):
    """Independent rebuild from the raw reviews: per user by time, ties in file order."""
    with gzip.open(raw["reviews"], "rt") as f:
        rows = [json.loads(line) for line in f]
    per_user = defaultdict(list)
    for line_no, r in enumerate(rows):
        if r["reviewerID"] in kept_users and r["asin"] in kept_items:
            per_user[r["reviewerID"]].append((r["unixReviewTime"], line_no, r["asin"]))
    return {u: [a for _, _, a in sorted(v)] for u, v in per_user.items()}


def test_k_core_chronology_and_prefixes(built, raw):
    folder, manifest = built
    user2index, item2index = read_map(folder, "user2index"), read_map(folder, "item2index")
    index2item = {v: k for k, v in item2index.items()}
    assert list(user2index) == sorted(user2index)  # users numbered in reviewerID order
    assert list(item2index.values()) == [str(i) for i in range(len(item2index))]
    train, valid, test = (read_inter(folder, p) for p in ("train", "valid", "test"))
    full = {u: h + [t] for u, h, t in test}
    assert len(full) == len(user2index) == len(valid)
    # k-core holds on the kept interactions
    item_counts = defaultdict(int)
    for seq in full.values():
        assert len(seq) >= 5
        for item in seq:
            item_counts[item] += 1
    assert min(item_counts.values()) >= 5 and len(item_counts) == len(item2index)
    assert raw["asins"][5] not in item2index and "B_NOMETA01" not in item2index  # no title / no metadata
    # chronological, equal to an independent rebuild from the raw file
    index2user = {v: k for k, v in user2index.items()}
    expected = expected_sequences(raw, set(user2index), set(item2index))
    for u, seq in full.items():
        assert [index2item[i] for i in seq] == expected[index2user[u]]
    # valid = all but the last item; train = every earlier prefix exactly once
    for u, h, t in valid:
        assert h + [t] == full[u][:-1]
    prefixes = defaultdict(list)
    for u, h, t in train:
        prefixes[u].append(tuple(h + [t]))
    for u, seq in full.items():
        assert sorted(prefixes[u], key=len) == [tuple(seq[:k]) for k in range(2, len(seq) - 1)]
    stats = manifest["statistics"]
    assert stats["users"] == len(full) and stats["items"] == len(item2index)
    assert stats["interactions"] == sum(len(s) for s in full.values())
    assert stats["avg_per_user"] == round(stats["interactions"] / stats["users"], 2)


def test_features_aligned_and_missing_masks(built, raw):
    folder, _ = built
    item2index = read_map(folder, "item2index")
    keys, text = read_feature_file(os.path.join(folder, f"{NAME}.text"))
    assert sorted(keys, key=int) == sorted(item2index.values(), key=int) and text.shape[1] == 32
    with open(os.path.join(folder, f"{NAME}.text")) as f:
        next(f)
        rows = dict(line.rstrip("\n").split("\t") for line in f)
    asin = raw["asins"][3]
    direct = encode_texts([rows[asin]], raw["text_encoder"], batch_size=1, show_progress=False)
    np.testing.assert_allclose(text[keys.index(item2index[asin])], direct[0], atol=1e-5)
    # images: items with a readable image only; corrupt and truncated files skipped
    img_keys, image = read_feature_file(os.path.join(folder, f"{NAME}.image"))
    have_files = {a for i, a in enumerate(raw["asins"]) if i % 2 == 0 and a in item2index}
    assert set(img_keys) == {item2index[a] for a in have_files}
    assert item2index.get(raw["asins"][1]) not in img_keys  # its only file is truncated
    with ImageStore(os.path.join(folder, f"{NAME}.images.lmdb")) as store:
        counts = dict(store.counts())
        assert counts[item2index[raw["asins"][0]]] == 6  # several per item; 4 used for the feature
        assert counts[item2index[raw["asins"][4]]] == 1  # the corrupt second file was skipped
        assert store.get(item2index[raw["asins"][0]], 0)[:2] == b"\xff\xd8"  # the encoded JPEG bytes
    # prices: only parsable ones, normalised to [0, 100]
    price_keys, price = read_feature_file(os.path.join(folder, f"{NAME}.price"))
    assert price.shape[1] == 1 and price.min() == 0.0 and price.max() == pytest.approx(100.0)
    priced = {item2index[a] for i, a in enumerate(raw["asins"]) if i % 3 != 2 and a in item2index}
    assert set(price_keys) == priced


def test_dataset_class_reads_the_output(built):
    from recbole_mm.config import MMConfig
    from recbole_mm.data.utils import create_dataset

    folder, _ = built
    config = MMConfig("ANT", NAME, config_dict={"data_path": os.path.dirname(folder), "state": "WARNING",
                                                "modalities": ["text", "image", "price"]})
    dataset = create_dataset(config)
    item2index = read_map(folder, "item2index")
    assert dataset.item_num - 1 == len(item2index)
    feats = dataset.item_features
    assert feats["text"].mask[1:].all()
    img_keys, _ = read_feature_file(os.path.join(folder, f"{NAME}.image"))
    token2id = {t: i for i, t in enumerate(dataset.field2id_token["item_id"])}
    assert sorted(np.flatnonzero(feats["image"].mask).tolist()) == sorted(token2id[k] for k in img_keys)
    assert 0 < feats["price"].coverage < 1


def test_manifest_hashes_settings_and_report(built, raw):
    folder, manifest = built
    with open(os.path.join(folder, f"{NAME}.manifest.json")) as f:
        assert json.load(f) == json.loads(json.dumps(manifest))
    for name, digest in manifest["outputs"].items():
        assert path_sha256(os.path.join(folder, name)) == digest
    assert {f"{NAME}.{s}" for s in ("train.inter", "text.npy", "image.npy", "price.npy", "images.lmdb")} <= set(
        manifest["outputs"])
    assert manifest["inputs"]["reviews"]["sha256"] == path_sha256(raw["reviews"])
    assert manifest["settings"]["user_k_core"] == 5 and manifest["settings"]["max_history_length"] == 50
    corrupt = {c["file"] for c in manifest["steps"]["images"]["summary"]["corrupt_files"]}
    assert corrupt == raw["corrupt"]
    assert not os.path.exists(os.path.join(folder, ".preprocess", "work"))  # partial chunks cleaned up


def _hashes(folder):
    return {name: path_sha256(os.path.join(folder, name)) for name in sorted(os.listdir(folder))
            if not name.startswith(".")}


def test_rerun_is_identical_and_skips(built, raw, tmp_path, monkeypatch):
    folder, manifest = built
    fresh = run_pipeline(overrides=settings(raw, str(tmp_path)))
    manifest_name = f"{NAME}.manifest.json"  # differs only by the output path it records
    first, second = _hashes(folder), _hashes(str(tmp_path / NAME))
    assert first.pop(manifest_name) and second.pop(manifest_name)
    assert first == second and len(first) == 14
    assert fresh["outputs"] == manifest["outputs"] and fresh["statistics"] == manifest["statistics"]
    with open(tmp_path / NAME / f"{NAME}.manifest.json", "rb") as f:
        first_bytes = f.read()
    # up to date: nothing is recomputed, the manifest is byte-identical
    import recbole_mm.preprocess.text_features as text_features

    monkeypatch.setattr(text_features, "build_text_features", lambda *a, **k: pytest.fail("text step reran"))
    run_pipeline(overrides=settings(raw, str(tmp_path)))
    with open(tmp_path / NAME / f"{NAME}.manifest.json", "rb") as f:
        assert f.read() == first_bytes
    # a changed setting reruns the steps that depend on it (and only those)
    monkeypatch.undo()
    again = run_pipeline(overrides=settings(raw, str(tmp_path), text_pooling="cls"))
    assert again["outputs"][f"{NAME}.text.npy"] != manifest["outputs"][f"{NAME}.text.npy"]
    assert again["outputs"][f"{NAME}.train.inter"] == manifest["outputs"][f"{NAME}.train.inter"]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("step", ["text", "image_features"])
def test_interrupted_extraction_resumes(built, raw, tmp_path, step):
    folder, _ = built
    out = str(tmp_path)
    stem = "text" if step == "text" else "image"

    def stop(index):
        raise Interrupt(index)

    with pytest.raises(Interrupt):
        run_pipeline(overrides=settings(raw, out), after_chunk={step: stop})
    work = os.path.join(out, NAME, ".preprocess", "work", stem)
    assert sorted(os.listdir(work)) == ["chunk_000000.npy", "state.json"]
    assert not os.path.exists(os.path.join(out, NAME, f"{NAME}.{stem}.npy"))
    encoded = []
    run_pipeline(overrides=settings(raw, out), after_chunk={step: encoded.append})
    assert encoded and 0 not in encoded  # the saved chunk was reused, not recomputed
    for suffix in (".npy", ".keys"):
        assert path_sha256(os.path.join(out, NAME, f"{NAME}.{stem}{suffix}")) == path_sha256(
            os.path.join(folder, f"{NAME}.{stem}{suffix}"))


def test_example_yaml_loads_and_lists_every_key():
    from recbole_mm.preprocess.settings import DEFAULTS

    path = plugin_yaml("preprocess", "amazon_scientific.yaml")
    import yaml

    with open(path) as f:
        example = yaml.safe_load(f)
    assert set(example) == set(DEFAULTS)
    with open(path) as f:
        for line in f:
            if line and not line.startswith((" ", "#", "\n", "-")):
                assert "#" in line, f"undocumented key line: {line!r}"


def test_rebuild_from_manifest_gives_the_same_hashes(built, tmp_path, capsys):
    from recbole_mm.preprocess.pipeline import main

    folder, _ = built
    with pytest.raises(SystemExit) as done:
        main(["--rebuild", os.path.join(folder, f"{NAME}.manifest.json"), "--output_dir", str(tmp_path)])
    assert done.value.code == 0
    assert "14 outputs identical to the manifest; different: []; missing: []" in capsys.readouterr().out


def test_one_epoch_of_ant_on_the_output(built, tmp_path):
    from helpers import TINY_MODEL
    from recbole_mm.runner import run_single

    folder, _ = built
    config = dict(TINY_MODEL, data_path=os.path.dirname(folder), checkpoint_dir=str(tmp_path / "saved"),
                  modalities=["text", "image", "price"], epochs=1, seed=7, topk=[5, 10])
    result = run_single("ANT", NAME, config_dict=config, saved=False)
    assert 0.0 <= result["test_result"]["recall@10"] <= 1.0


def test_command_line_with_a_yaml(raw, tmp_path, capsys):
    import yaml

    from recbole_mm.preprocess.pipeline import main

    config = settings(raw, str(tmp_path / "out"))
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["--config", str(path), "--steps", "atomic,price"])
    out = capsys.readouterr().out
    assert "| Dataset | #Users | #Items | #Inters. | Avg. n per user | Avg. n per item |" in out
    folder = tmp_path / "out" / NAME
    assert (folder / f"{NAME}.price.npy").is_file() and not (folder / f"{NAME}.text.npy").exists()
    with pytest.raises(FileNotFoundError, match=r"config key `reviews`: .*absent.json.gz not found"):
        run_pipeline(overrides=dict(config, reviews=str(tmp_path / "absent.json.gz")))
    with pytest.raises(FileNotFoundError, match=r"Other.text not found: run the `atomic` step first"):
        run_pipeline(overrides=dict(config, dataset_name="Other", steps=["text"]))


def test_item_file_serves_fdsa(built, tmp_path):
    """<D>.item holds brand and category words in the layout of preprocess.attributes (FDSA/S3Rec)."""
    from helpers import TINY_MODEL
    from recbole_mm.runner import run_single

    folder, _ = built
    with open(os.path.join(folder, f"{NAME}.item")) as f:
        assert f.readline() == "item_id:token\tasin:token\tbrand:token\tcategories:token_seq\tprice:float\n"
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert all(r[2].startswith("Brand") for r in rows)
    assert {r[3] for r in rows} <= {"tool", "glass", "lab", "tape", "sand", "roll", "grit"}  # root category dropped
    config = dict(TINY_MODEL, data_path=os.path.dirname(folder), checkpoint_dir=str(tmp_path / "saved"), epochs=1,
                  topk=[5, 10], load_col={"inter": ["user_id", "item_id_list", "item_id"],
                                          "item": ["item_id", "brand", "categories"]},
                  selected_features=["brand", "categories"])
    result = run_single("FDSA", NAME, config_dict=config, saved=False)
    assert 0.0 <= result["test_result"]["recall@10"] <= 1.0
