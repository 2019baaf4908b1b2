"""Building blocks of the feature steps: image folder naming, the lmdb store with corrupt files,
vision encoders of several kinds (CLIP vision, full CLIP, ViT), resumable chunks."""

import os

import numpy as np
import pytest
from PIL import Image

from recbole_mm.data.lmdb_store import ImageStore, build_image_lmdb, lmdb_content_sha256, scan_image_folder
from recbole_mm.preprocess.chunked import extract_in_chunks
from recbole_mm.preprocess.image import embed_images, load_vision_encoder
from recbole_mm.preprocess.text_features import build_text_features

from helpers.preprocess import make_text_encoder


def _img(path, seed, size=(12, 10)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, size=size + (3,), dtype=np.uint8)).save(path)


def test_scan_names_subfolders_and_order(tmp_path):
    for name in ("A1_10.png", "A1_2.png", "A1.jpg", "B2.JPG", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "C3").mkdir()
    for name in ("b.png", "a.png"):
        (tmp_path / "C3" / name).write_bytes(b"x")
    found = scan_image_folder(str(tmp_path))
    assert sorted(found) == ["A1", "B2", "C3"]
    assert [os.path.basename(p) for p in found["A1"]] == ["A1.jpg", "A1_2.png", "A1_10.png"]
    assert [os.path.basename(p) for p in found["C3"]] == ["a.png", "b.png"]
    with pytest.raises(FileNotFoundError, match="config key `images_dir`"):
        scan_image_folder(str(tmp_path / "absent"))


def test_lmdb_skips_corrupt_files_and_is_reproducible(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    _img(src / "A1.png", 0)
    (src / "A1_1.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    _img(src / "A1_2.png", 1)
    _img(src / "B2.png", 2)
    _img(src / "ZZ.png", 3)  # not an item of the data set
    item2index = {"A1": "0", "B2": "1", "C3": "2"}
    report = build_image_lmdb(str(src), item2index, str(tmp_path / "s.lmdb"), show_progress=False)
    assert report["images_stored"] == 3 and report["items_with_images"] == 2
    assert [c["file"] for c in report["corrupt_files"]] == ["A1_1.jpg"]
    assert "0x" not in report["corrupt_files"][0]["error"]
    assert report["files_for_unknown_items"] == 1
    with ImageStore(str(tmp_path / "s.lmdb")) as store:
        assert store.counts() == [("0", 2), ("1", 1)]
        assert store.get("0", 1) == (src / "A1_2.png").read_bytes()  # k counts readable images only
        with pytest.raises(KeyError, match="2_0"):
            store.get("2", 0)
    build_image_lmdb(str(src), item2index, str(tmp_path / "t.lmdb"), show_progress=False)
    assert lmdb_content_sha256(str(tmp_path / "s.lmdb")) == lmdb_content_sha256(str(tmp_path / "t.lmdb"))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def _save_vit(path):
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                       image_size=16, patch_size=8)).save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(path)


def _save_clip(path):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 20, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 50, "max_position_embeddings": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 20, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 16, "patch_size": 8},
        projection_dim=12)
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(path)


@pytest.mark.parametrize("kind,pooling,dim", [("vit", "auto", 16), ("vit", "mean", 16), ("vit", "cls", 16),
                                              ("clip", "auto", 12), ("clip", "pooler", 16)])
def test_vision_encoders(tmp_path, kind, pooling, dim):
    path = str(tmp_path / kind)
    (_save_vit if kind == "vit" else _save_clip)(path)
    processor, model = load_vision_encoder(path)
    images = [Image.fromarray(np.full((20, 30, 3), v, dtype=np.uint8)) for v in (10, 200)]
    emb = embed_images(processor, model, images, pooling)
    assert emb.shape == (2, dim) and np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1])


def test_vision_encoder_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config key `image_encoder`"):
        load_vision_encoder(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cannot load a transformers vision encoder"):
        load_vision_encoder(str(tmp_path / "empty"))


def test_chunks_resume_and_changed_fingerprint_discards(tmp_path):
    calls = []

    def encode(a, b):
        calls.append(a)
        return np.arange(a, b, dtype=np.float32).reshape(-1, 1)

    def stop(i):
        raise KeyboardInterrupt

    work = str(tmp_path / "w")
    with pytest.raises(KeyboardInterrupt):
        extract_in_chunks(10, encode, work, 4, "fp1", after_chunk=stop, show_progress=False)
    out = extract_in_chunks(10, encode, work, 4, "fp1", show_progress=False)
    assert calls == [0, 4, 8] and out[:, 0].tolist() == list(range(10))
    calls.clear()
    extract_in_chunks(10, encode, work, 4, "fp2", show_progress=False)
    assert calls == [0, 4, 8]  # other inputs or settings: nothing reused


def test_title_only_text_features_embed_the_titles_alone(tmp_path):
    """--text_fields=title (make a full-text target like a titles-only source): the features equal
    those of a text file holding the titles alone, and differ from the full text's."""
    encoder = make_text_encoder(str(tmp_path / "encoder"))
    full = {"A1": "red glass tape roll. industrial scientific supply. acme.", "A2": "steel probe kit. lab. brand."}
    titles = {"A1": "red glass tape roll.", "A2": "steel probe kit."}
    (tmp_path / "D.item2index").write_text("A1\t1\nA2\t2\n")
    for name, rows in (("full", full), ("titles", titles)):
        (tmp_path / f"{name}.text").write_text("item_id:token\ttext:token_seq\n"
                                               + "".join(f"{k}\t{v}\n" for k, v in rows.items()))
    stems = {}
    for name, source, fields in (("title_only", "full", "title"), ("titles", "titles", "all"), ("full", "full", "all")):
        stems[name] = str(tmp_path / "out" / name)
        build_text_features(str(tmp_path / f"{source}.text"), str(tmp_path / "D.item2index"), stems[name],
                            encoder, batch_size=2, show_progress=False, text_fields=fields)
    title_only, titles_alone, whole = (np.load(stems[n] + ".npy") for n in ("title_only", "titles", "full"))
    np.testing.assert_allclose(title_only, titles_alone, rtol=1e-5, atol=1e-6)
    assert np.abs(title_only - whole).max() > 1e-3
    with pytest.raises(ValueError, match="text_fields"):
        build_text_features(str(tmp_path / "full.text"), str(tmp_path / "D.item2index"), stems["full"] + "x",
                            encoder, show_progress=False, text_fields="brand")
