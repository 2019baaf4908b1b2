"""Test inputs for the preprocessing: a small raw Amazon 2018 data set (reviews + metadata
json.gz, generated images, a corrupt and a truncated image) and tiny random encoders saved to
local folders."""

import gzip
import io
import json
import os

import numpy as np

WORDS = ["tool", "glass", "lab", "tape", "sand", "roll", "grit", "steel", "acme", "brand", "safety",
         "glove", "meter", "probe", "industrial", "scientific", "supply", "kit", "red", "blue"]


def write_json_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for rec in records:
            f.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")


def make_raw_dataset(root, n_users=60, n_items=30, seed=3):
    """Writes reviews.json.gz, meta.json.gz, images/ under ``root``; returns a dict of paths and
    facts the tests check against."""
    rng = np.random.default_rng(seed)
    asins = [f"B{i:09d}" for i in range(n_items)]
    reviews = []
    for u in range(n_users):
        n = int(rng.integers(3, 11))
        items = rng.choice(n_items - 2, size=n, replace=False)  # the last two items: only 1 review each
        base = 1_500_000_000 + int(rng.integers(0, 10_000))
        for j, i in enumerate(items):
            t = base + 86400 * (j // 2)  # pairs of equal timestamps: ties broken by file order
            reviews.append({"reviewerID": f"A{u:05d}X", "asin": asins[i], "overall": float(rng.integers(1, 6)),
                            "unixReviewTime": t, "reviewText": "ok"})
    for k, i in enumerate((n_items - 2, n_items - 1)):
        reviews.append({"reviewerID": f"A{k:05d}X", "asin": asins[i], "overall": 5.0, "unixReviewTime": 1_400_000_000})
    order = rng.permutation(len(reviews))
    reviews = [reviews[i] for i in order]
    reviews.append({"reviewerID": "A00001X", "asin": "B_NOMETA01", "overall": 4.0, "unixReviewTime": 1_500_000_000})
    meta = []
    for i, asin in enumerate(asins):
        rec = {"asin": asin, "title": f"{WORDS[i % 20]} {WORDS[(3 * i) % 20]} &amp; item {i}",
               "category": ["Industrial &amp; Scientific", WORDS[i % 7], WORDS[i % 7]],
               "brand": f"Brand{i % 4}", "imageURLHighRes": ["http://x"]}
        if i % 3 == 0:
            rec["price"] = f"${10 + i}.99"
        elif i % 3 == 1:
            rec["price"] = f"${i}.00 - ${i + 2}.00"
        else:
            rec["price"] = ".a-box-inner{background-color:#fff}"
        if i == 5:
            rec["title"] = "   "  # no title: the item is dropped
        meta.append(rec)
    meta.append(dict(meta[0], title="a later duplicate record"))
    reviews_path, meta_path = os.path.join(root, "Toy_5.json.gz"), os.path.join(root, "meta_Toy.json.gz")
    write_json_gz(reviews_path, reviews)
    write_json_gz(meta_path, meta)
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    from PIL import Image

    for i in range(0, n_items, 2):  # every other item has images; some several
        for k in range(1 + (i % 6 == 0) * 5):  # items 0, 6, 12, ... have 6 images (4 are used)
            arr = rng.integers(0, 255, size=(20 + k, 24, 3), dtype=np.uint8)
            name = f"{asins[i]}.jpg" if k == 0 else f"{asins[i]}_{k}.png"
            Image.fromarray(arr).save(os.path.join(images_dir, name))
    with open(os.path.join(images_dir, f"{asins[4]}_7.jpg"), "wb") as f:
        f.write(b"this is not an image")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(30, 30, 3), dtype=np.uint8)).save(buf, format="PNG")
    with open(os.path.join(images_dir, f"{asins[1]}.png"), "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated: item 1 ends with no image
    return {"reviews": reviews_path, "meta": meta_path, "images_dir": images_dir, "asins": asins,
            "corrupt": {f"{asins[4]}_7.jpg", f"{asins[1]}.png"}}


def make_text_encoder(path):
    """Tiny random BERT (hidden 32, 2 layers) + WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    os.makedirs(path, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "&", "$"] + WORDS + [str(d) for d in range(10)] + \
        [f"##{d}" for d in range(10)] + ["item", "brand", "##1", "##2", "##3"]
    vocab_file = os.path.join(path, "vocab.txt")
    with open(vocab_file, "w") as f:
        f.write("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(path)
    return path


def make_vision_encoder(path):
    """Tiny random CLIP vision tower (hidden 32, 2 layers, 32x32 input) + image processor."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    os.makedirs(path, exist_ok=True)
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    CLIPVisionModel(config).eval().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def make_own_dataset(folder, name="myshop", n_users=160, n_items=60, seed=5, images=True, prices=True):
    """A user's own data folder (docs/own_data.md): ``<name>.interactions.csv`` (user, item, ISO
    timestamp), ``<name>.items.tsv`` (item, title[, price]) and, optionally, ``images/<item>.png``
    for every third item. Users walk through item groups, so that the next item is learnable.
    Returns the folder."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    items = [f"sku{i:03d}" for i in range(n_items)]
    with open(os.path.join(folder, f"{name}.interactions.csv"), "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(n_users):
            start = int(rng.integers(0, n_items))
            for j in range(int(rng.integers(6, 11))):
                item = items[(start + 2 * j + int(rng.integers(0, 2))) % n_items]  # distinct, in a walk
                f.write(f"u{u},{item},2024-01-{1 + j:02d}T{u % 24:02d}:00:00\n")
    with open(os.path.join(folder, f"{name}.items.tsv"), "w") as f:
        f.write("item\ttitle" + ("\tprice" if prices else "") + "\n")
        for i, item in enumerate(items):
            title = f"{WORDS[i % 20]} {WORDS[(i // 3) % 20]} kit"
            price = ("" if i % 5 == 0 else f"${3 + i}.50") if prices else None
            f.write(f"{item}\t{title}" + (f"\t{price}" if prices else "") + "\n")
    if images:
        from PIL import Image

        os.makedirs(os.path.join(folder, "images"))
        for i in range(0, n_items, 3):
            arr = rng.integers(0, 255, size=(24, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(os.path.join(folder, "images", f"{items[i]}.png"))
    return folder
