"""Token-level item feature files: round trip, alignment by item token (padding, missing items),
truncation, memory mapping, one-line errors for broken files, batch lookup, and the
preprocessing command with tiny random encoders against running the encoder directly."""

import os

import numpy as np
import pytest
import torch

from helpers.preprocess import WORDS, make_text_encoder, make_vision_encoder
from recbole_mm.data.features import FeatureFileError
from recbole_mm.data.token_features import (
    align_token_features,
    load_token_features,
    read_token_feature_file,
    token_feature_writer,
    token_file_paths,
    write_token_feature_file,
)

ID2TOKEN = ["[PAD]", "b", "a", "e", "d", "c"]  # "e" has no row in the files below


def _example(rng, n=4, t=5, d=3):
    tokens = rng.normal(size=(n, t, d)).astype(np.float32)
    counts = np.array([5, 2, 1, 3])[:n]
    return ["a", "b", "c", "d"][:n], tokens, counts


def test_round_trip_values_counts_and_alignment(tmp_path):
    keys, tokens, counts = _example(np.random.default_rng(0))
    stem = str(tmp_path / "x.text_tokens")
    write_token_feature_file(stem, keys, tokens, counts)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    read_keys, mapped, read_counts = read_token_feature_file(stem)
    assert read_keys == keys and read_counts.tolist() == counts.tolist()
    assert mapped.dtype == np.float16 and mapped.shape == (4, 5, 3)
    for row, c in enumerate(counts):
        np.testing.assert_array_equal(mapped[row, :c], tokens[row, :c].astype(np.float16))
        np.testing.assert_array_equal(mapped[row, c:], 0)

    feat = load_token_features(stem, "text", ID2TOKEN)
    assert feat.shape == (6, 5, 3) and feat.counts.tolist() == [0, 2, 5, 0, 3, 1]
    assert feat.present.tolist() == [False, True, True, False, True, True] and feat.coverage == 0.8
    aligned = feat.to_array()
    for item_id, token in enumerate(ID2TOKEN):
        if token in keys:
            np.testing.assert_array_equal(aligned[item_id], mapped[keys.index(token)])
        else:  # padding and the item without a row
            np.testing.assert_array_equal(aligned[item_id], 0)


def test_batch_lookup_gives_float32_tokens_and_mask(tmp_path):
    keys, tokens, counts = _example(np.random.default_rng(1))
    stem = str(tmp_path / "x.text_tokens")
    write_token_feature_file(stem, keys, tokens, counts)
    feat = load_token_features(stem, "text", ID2TOKEN)
    ids = torch.tensor([[2, 0, 3], [5, 2, 4]])
    out, mask = feat[ids]
    assert out.dtype == torch.float32 and out.shape == (2, 3, 5, 3) and mask.shape == (2, 3, 5)
    assert mask.sum(-1).tolist() == [[5, 0, 0], [1, 5, 3]]
    np.testing.assert_array_equal(out[0, 0].numpy(), tokens[0].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(out[1, 1].numpy(), out[0, 0].numpy())
    assert not out[0, 1].any() and not out[0, 2].any()
    assert (out[~mask] == 0).all()
    with pytest.raises(IndexError, match="item ids must lie in"):
        feat[torch.tensor([6])]


def test_alignment_ignores_row_order_and_unknown_keys(tmp_path):
    keys, tokens, counts = _example(np.random.default_rng(2))
    perm = [2, 0, 3, 1]
    a = align_token_features("text", keys, tokens.astype(np.float16), counts, ID2TOKEN, "x")
    b = align_token_features("text", [keys[i] for i in perm], tokens[perm].astype(np.float16), counts[perm],
                             ID2TOKEN, "x")
    np.testing.assert_array_equal(a.to_array(), b.to_array())
    assert a.counts.tolist() == b.counts.tolist()
    with pytest.raises(FeatureFileError, match=r"^x: 1 item id\(s\) are not in the data set \(e.g. 'z'\)"):
        align_token_features("text", keys[:3] + ["z"], tokens, counts, ID2TOKEN, "x")
    ignored = align_token_features("text", keys[:3] + ["z"], tokens, counts, ID2TOKEN, "x", unknown_items="ignore")
    assert ignored.counts.tolist() == [0, 2, 5, 0, 0, 1]
    with pytest.raises(FeatureFileError, match="dimension 3, expected 8"):
        align_token_features("text", keys, tokens, counts, ID2TOKEN, "x", expected_dim=8)


def test_truncation_to_max_tokens_and_pooled_as_one_token(tmp_path):
    keys, tokens, counts = _example(np.random.default_rng(3))
    stem = str(tmp_path / "cut")
    write_token_feature_file(stem, keys, tokens, counts, max_tokens=2)
    _, mapped, read_counts = read_token_feature_file(stem)
    assert mapped.shape == (4, 2, 3) and read_counts.tolist() == [2, 2, 1, 2]
    np.testing.assert_array_equal(mapped[:, :2][read_counts == 2], tokens[:, :2][read_counts == 2].astype(np.float16))
    pooled = str(tmp_path / "pooled")
    write_token_feature_file(pooled, keys, tokens[:, 0])
    _, mapped, read_counts = read_token_feature_file(pooled)
    assert mapped.shape == (4, 1, 3) and read_counts.tolist() == [1, 1, 1, 1]
    np.testing.assert_array_equal(mapped[:, 0], tokens[:, 0].astype(np.float16))


def test_tokens_are_memory_mapped_not_loaded(tmp_path):
    keys, tokens, counts = _example(np.random.default_rng(4))
    stem = str(tmp_path / "x")
    write_token_feature_file(stem, keys, tokens, counts)
    _, mapped, _ = read_token_feature_file(stem)
    assert isinstance(mapped, np.memmap) and mapped.mode == "r"
    feat = load_token_features(stem, "text", ID2TOKEN)
    assert isinstance(feat.tokens, np.memmap) and feat.tokens.filename == os.path.abspath(stem + ".npy")


def test_writer_leaves_nothing_on_error_and_refuses_float16_overflow(tmp_path):
    stem = str(tmp_path / "x")
    with pytest.raises(FeatureFileError, match="row 1 .*was never written"):
        with token_feature_writer(stem, ["a", "b"], 3, 2) as writer:
            writer.write(0, np.ones((1, 3, 2)), np.array([3]))
    with pytest.raises(FeatureFileError, match="row 1 holds NaN, inf or a value beyond float16"):
        write_token_feature_file(stem, ["a", "b"], np.array([[[1.0]], [[1e6]]]))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage, message", [
    ("truncate", r"x\.npy: not a readable float16 \(items, tokens, dim\) \.npy array, truncated or corrupt"),
    ("float32", r"x\.npy: expected a float16 \(items, tokens, dim\) array, got float32 of shape \(4, 5, 3\)"),
    ("counts", r"x\.counts\.npy: expected 4 integer token counts .*got int64 of shape \(3,\)"),
    ("count_range", r"x\.counts\.npy: row 0 has 9 tokens, expected 1 to 5"),
    ("keys", r"x: .*x\.keys lists 3 item ids but .*x\.npy has 4 rows"),
    ("missing", r"token feature file .*x\.counts\.npy not found"),
])
def test_broken_files_give_one_line_errors(tmp_path, damage, message):
    keys, tokens, counts = _example(np.random.default_rng(5))
    stem = str(tmp_path / "x")
    write_token_feature_file(stem, keys, tokens, counts)
    tokens_path, counts_path, keys_path = token_file_paths(stem)
    if damage == "truncate":
        with open(tokens_path, "r+b") as f:
            f.truncate(os.path.getsize(tokens_path) - 10)
    elif damage == "float32":
        np.save(tokens_path, tokens)
    elif damage == "counts":
        np.save(counts_path, np.array([1, 2, 3]))
    elif damage == "count_range":
        np.save(counts_path, np.array([9, 2, 1, 3], dtype=np.int32))
    elif damage == "keys":
        with open(keys_path, "w") as f:
            f.write("a\nb\nc\n")
    else:
        os.remove(counts_path)
    with pytest.raises(FeatureFileError, match=message) as info:
        read_token_feature_file(stem)
    assert "\n" not in str(info.value)


def _tiny_folder(root, n_items=9):
    os.makedirs(root)
    asins = [f"B{i:04d}" for i in range(n_items)]
    with open(os.path.join(root, "tiny.text"), "w") as f:
        f.write("item_id:token\ttext:token_seq\n")
        for i, asin in enumerate(asins):  # texts of 3 to 30 words: some are cut at max_tokens
            words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + 3 * i))
            f.write(f"{asin}\t{words}. lab tool {i}.\n")
    with open(os.path.join(root, "tiny.item2index"), "w") as f:
        f.write("".join(f"{asin}\t{i + 1}\n" for i, asin in enumerate(asins)))
    return asins


def test_command_writes_the_encoder_hidden_states(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from recbole_mm.preprocess.token_features import main

    src = str(tmp_path / "tiny")
    asins = _tiny_folder(src)
    rng = np.random.default_rng(6)
    np.savez(os.path.join(src, "tiny.clip_image.npz"), asin=np.array(asins[::3]),
             feat=rng.normal(size=(3, 6)).astype(np.float32))
    encoder = make_text_encoder(str(tmp_path / "bert"))
    out = str(tmp_path / "out")
    main(["--src", src, "--out", out, "--max_tokens", "12", "--text_encoder", encoder, "--batch_size", "4",
          "--chunk_size", "4"])
    assert sorted(os.listdir(out)) == sorted(["tiny.text_tokens.npy", "tiny.text_tokens.counts.npy",
                                              "tiny.text_tokens.keys", "tiny.image_tokens.npy",
                                              "tiny.image_tokens.counts.npy", "tiny.image_tokens.keys"])
    keys, mapped, counts = read_token_feature_file(os.path.join(out, "tiny.text_tokens"))
    assert keys == [str(i + 1) for i in range(len(asins))] and mapped.shape == (9, 12, 32)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModel.from_pretrained(encoder).eval()
    texts = [line.split("\t", 1)[1].strip() for line in open(os.path.join(src, "tiny.text")).read().splitlines()[1:]]
    for row, text in enumerate(texts):  # one text at a time: no padding
        enc = tokenizer(text, truncation=True, max_length=12, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0].numpy()
        assert counts[row] == hidden.shape[0] <= 12
        np.testing.assert_allclose(mapped[row, :counts[row]].astype(np.float32),
                                   hidden.astype(np.float16).astype(np.float32), rtol=2e-3, atol=2e-3)
        assert not mapped[row, counts[row]:].any()
    assert counts.max() == 12 and counts.min() < 12  # some texts cut, some shorter
    image = load_token_features(os.path.join(out, "tiny.image_tokens"), "image", ["[PAD]"] + keys)
    assert image.shape == (10, 1, 6) and image.counts.tolist() == [0] + [1, 0, 0] * 3
    assert not os.path.exists(os.path.join(out, ".preprocess"))


def test_interrupted_text_tokens_resume_to_the_same_file(tmp_path):
    from recbole_mm.preprocess.token_features import build_text_token_features

    src = str(tmp_path / "tiny")
    _tiny_folder(src)
    encoder = make_text_encoder(str(tmp_path / "bert"))
    args = (os.path.join(src, "tiny.text"), os.path.join(src, "tiny.item2index"))

    def stop(index):
        if index == 1:
            raise KeyboardInterrupt

    stem = str(tmp_path / "out" / "tiny.text_tokens")
    with pytest.raises(KeyboardInterrupt):
        build_text_token_features(*args, stem, 8, encoder, batch_size=2, chunk_size=2, after_chunk=stop)
    assert not os.path.exists(stem + ".npy")
    seen = []
    build_text_token_features(*args, stem, 8, encoder, batch_size=2, chunk_size=2, after_chunk=seen.append)
    assert seen == [2, 3, 4]  # chunks 0 and 1 were reused
    resumed = read_token_feature_file(stem)
    fresh = str(tmp_path / "fresh" / "tiny.text_tokens")
    build_text_token_features(*args, fresh, 8, encoder, batch_size=2, chunk_size=2)
    for a, b in zip(resumed, read_token_feature_file(fresh)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_image_patch_tokens_of_a_clip_vision_encoder(tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionModel

    from recbole_mm.data.lmdb_store import build_image_lmdb
    from recbole_mm.preprocess.token_features import build_image_token_features

    rng = np.random.default_rng(7)
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    pictures = {}
    for asin in ["B0001", "B0003", "B0004"]:
        pictures[asin] = Image.fromarray(rng.integers(0, 255, size=(30, 28, 3), dtype=np.uint8))
        pictures[asin].save(images_dir / f"{asin}.png")
    item2index = {f"B{i:04d}": str(i + 1) for i in range(5)}
    build_image_lmdb(str(images_dir), item2index, str(tmp_path / "store"), show_progress=False)
    encoder = make_vision_encoder(str(tmp_path / "clip"))  # 32x32 input, patch 8: CLS + 16 patches
    stem = str(tmp_path / "out" / "tiny.image_tokens")
    summary = build_image_token_features(str(tmp_path / "store"), stem, encoder, max_tokens=50, batch_size=2)
    assert summary["max_tokens"] == 50
    keys, mapped, counts = read_token_feature_file(stem)
    assert keys == ["2", "4", "5"] and counts.tolist() == [17, 17, 17] and mapped.shape == (3, 50, 32)
    processor = CLIPImageProcessor.from_pretrained(encoder)
    model = CLIPVisionModel.from_pretrained(encoder).eval()
    with torch.no_grad():
        pixels = processor(images=[pictures[a].convert("RGB") for a in ["B0001", "B0003", "B0004"]],
                           return_tensors="pt")["pixel_values"]
        hidden = model(pixel_values=pixels).last_hidden_state.numpy()
    np.testing.assert_allclose(mapped[:, :17].astype(np.float32), hidden.astype(np.float16).astype(np.float32),
                               rtol=2e-3, atol=2e-3)
    assert not mapped[:, 17:].any()


def test_left_align_moves_valid_tokens_to_the_front_for_either_padding_side():
    from recbole_mm.preprocess.token_features import left_align

    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])  # left-padded row, right-padded row
    tokens, counts = left_align(hidden, mask, 2)
    assert counts.tolist() == [2, 2] and tokens.dtype == np.float16
    np.testing.assert_array_equal(tokens[0], hidden[0, 2:].numpy())
    np.testing.assert_array_equal(tokens[1], hidden[1, :2].numpy())
    tokens, counts = left_align(hidden, mask, 5)
    assert counts.tolist() == [2, 3] and tokens.shape == (2, 5, 2)
    np.testing.assert_array_equal(tokens[0, :2], hidden[0, 2:].numpy())
    assert not tokens[0, 2:].any() and not tokens[1, 3:].any()
