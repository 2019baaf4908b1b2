"""PMMRec: no ID parameters, NID labels, NICL relations, in-batch CE corrections (logQ of the
distinct candidates, by hand), the AdamW parameter groups, end-to-end gradients, partial loading
for transfer, training through the runner; token-level item inputs in feature mode."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_mm.config import MMConfig
from recbole_mm.data.raw_items import ItemTexts
from recbole_mm.data.synthetic import SyntheticSpec, write_dataset
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.model.encoders import FeatureTokens, FileTokens, build_token_source, transformer_blocks
from recbole_mm.model.losses import (
    corrupt_sequence, in_batch_layout, in_batch_logits, log_inclusion_probability, nicl_masks, symmetric_info_nce,
)
from recbole_mm.runner import run
from recbole_mm.utils import get_model, get_trainer
from helpers.model import (check_chunked_item_table, check_missing_token_files_error, losses_on_one_batch,
                           perturbed_tokens)

SMALL = {"fusion_n_heads": 2, "fusion_inner_size": 32, "learning_rate": 0.001}


def build(config_dict, dataset="tiny"):
    config = MMConfig("PMMRec", dataset, config_dict=config_dict)
    train, valid, _ = prepare_data(config, create_dataset(config))
    return config, train, valid, get_model("PMMRec")(config, train._dataset)


def test_pmmrec_has_no_id_parameters(tiny_config):
    _, _, _, model = build(tiny_config(**SMALL))
    n_items = model.n_items
    for name, param in model.named_parameters():
        assert n_items not in param.shape, f"{name} {tuple(param.shape)} is sized by the item count"
    assert not any(isinstance(m, torch.nn.Embedding) and m.num_embeddings == n_items for m in model.modules())
    # the state dict (what a transfer checkpoint carries) is independent of the item set too
    assert all(n_items not in v.shape for v in model.state_dict().values())


def test_nid_labels_are_exactly_the_replaced_positions():
    torch.manual_seed(0)
    seq = torch.randint(1, 50, (64, 20))
    seq[:, 15:] = 0  # padding
    seq[:8, 3:] = 0
    noised, labels = corrupt_sequence(seq, 0.3, n_items=50)
    assert torch.equal(labels.bool(), noised != seq)  # replaced <=> label 1, and a replacement always differs
    assert not labels[seq == 0].any() and torch.equal(noised[seq == 0], seq[seq == 0])  # padding untouched
    assert noised.min() >= 0 and noised.max() < 50 and (noised[seq > 0] > 0).all()
    assert abs(labels[seq > 0].mean().item() - 0.3) < 0.05
    none, labels0 = corrupt_sequence(seq, 0.0, n_items=50)
    assert torch.equal(none, seq) and labels0.sum() == 0
    _, labels1 = corrupt_sequence(seq, 1.0, n_items=50)
    assert torch.equal(labels1.bool(), seq > 0)


def test_nicl_positives_and_negatives_on_a_hand_built_batch():
    # user 0: 1 -> 2 -> 6;  user 1: 3 -> 4 -> 5 -> 7;  item 4 has no image
    inputs = torch.tensor([[1, 2, 0], [3, 4, 5]])
    targets = torch.tensor([[2, 6, 0], [4, 5, 7]])
    has_image = torch.ones(8, dtype=torch.bool)
    has_image[4] = False
    masks = nicl_masks(inputs, targets, has_image)
    assert masks.items.tolist() == [1, 2, 3, 4, 5, 6, 7]
    cand = [(int(i), "t") for i in masks.items] + [(int(i), "v") for i in masks.items]
    anchors = [(x, "t") for x in (1, 2, 3, 4, 5)] + [(x, "v") for x in (1, 2, 3, 4, 5)]
    assert masks.anchor_items.tolist() == [a[0] for a in anchors]
    both = lambda *items: {(i, m) for i in items for m in "tv" if (i, m) != (4, "v")}  # noqa: E731
    expected_pos = {
        (1, "t"): {(1, "v"), (2, "t"), (2, "v")},
        (2, "t"): {(2, "v"), (6, "t"), (6, "v")},
        (3, "t"): {(3, "v"), (4, "t")},  # next item 4: text only (no image)
        (4, "t"): {(5, "t"), (5, "v")},  # 4 has no image: no cross-modal positive of its own
        (5, "t"): {(5, "v"), (7, "t"), (7, "v")},
        (1, "v"): {(1, "t"), (2, "t"), (2, "v")},
        (2, "v"): {(2, "t"), (6, "t"), (6, "v")},
        (3, "v"): {(3, "t"), (4, "t")},
        (4, "v"): set(),  # an image anchor that does not exist takes part in nothing
        (5, "v"): {(5, "t"), (7, "t"), (7, "v")},
    }
    other_user = {0: both(3, 4, 5, 7), 1: both(1, 2, 6)}  # items of the batch outside the user's row
    for a, anchor in enumerate(anchors):
        positives = {cand[k] for k in masks.positive[a].nonzero().flatten().tolist()}
        negatives = {cand[k] for k in masks.negative[a].nonzero().flatten().tolist()}
        assert positives == expected_pos[anchor], anchor
        user = 0 if anchor[0] in (1, 2) else 1
        assert negatives == (set() if anchor == (4, "v") else other_user[user]), anchor


def test_popularity_correction_and_history_masking():
    inputs = torch.tensor([[1, 2, 0], [3, 1, 0]])
    targets = torch.tensor([[2, 3, 0], [1, 4, 0]])
    layout = in_batch_layout(inputs, targets)
    assert layout.candidates.tolist() == [1, 2, 3, 4]
    assert layout.labels.tolist() == [1, 2, 0, 3]
    # row 0 holds {1, 2, 3}, row 1 holds {1, 3, 4}: every other item of the row is masked, never the target
    assert layout.history_mask.tolist() == [[True, False, True, False], [True, True, False, False],
                                            [False, False, True, True], [True, False, True, False]]
    torch.manual_seed(0)
    users, cands = torch.randn(4, 5), torch.randn(4, 5)
    log_prior = torch.log(torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4]).clamp(min=1e-9))
    corrected = in_batch_logits(users, cands, layout, log_prior)
    plain = in_batch_logits(users, cands, layout)
    raw = users @ cands.t()
    keep = ~layout.history_mask
    assert torch.isinf(corrected[layout.history_mask]).all() and (corrected[layout.history_mask] < 0).all()
    torch.testing.assert_close(plain[keep], raw[keep])
    torch.testing.assert_close(corrected[keep], (raw - log_prior[1:].view(1, -1))[keep])
    assert torch.isfinite(corrected[torch.arange(4), layout.labels]).all()


def test_popularity_correction_is_the_inclusion_probability_of_a_distinct_candidate(tiny_config):
    """4 prefix rows whose targets are 2, 2, 3, 2: N = 4 draws, candidates {2, 3}; each column is
    lowered by log(1 - (1 - p)^4), computed here by hand, not by log p."""
    from recbole.data.interaction import Interaction

    _, _, _, model = build(tiny_config(**SMALL, nicl_weight=0.0, nid_weight=0.0, rcl_weight=0.0))
    model.eval()  # no dropout: the model's logits are reproducible by hand
    p = torch.full((model.n_items,), 0.01)
    p[0], p[2], p[3] = 1.0, 0.5, 0.05
    model.log_prior = torch.log(p)
    batch = Interaction({"item_id_list": torch.tensor([[1, 3, 0], [4, 0, 0], [5, 1, 0], [6, 4, 3]]),
                         "item_length": torch.tensor([2, 1, 2, 3]), "item_id": torch.tensor([2, 2, 3, 2])})
    inputs, targets = model.training_targets(batch)
    with torch.no_grad():
        table = model.item_table()  # fused vectors of every item
        vectors = lambda items: table[items]  # noqa: E731
        output = model.user_encoder(inputs, vectors(inputs))
        logits, layout = model.next_item_logits(output, inputs, targets, vectors)
        users = output[torch.arange(4), batch["item_length"] - 1]  # the last real position of each row
        raw = users @ vectors(torch.tensor([2, 3])).t()
        loss = model.calculate_loss(batch)
    assert layout.candidates.tolist() == [2, 3] and layout.labels.tolist() == [0, 0, 1, 0]
    log_q = torch.tensor([math.log(1 - (1 - 0.5) ** 4), math.log(1 - (1 - 0.05) ** 4)])  # -0.0645, -1.6847
    expected = raw - log_q.view(1, -1)
    hidden = torch.tensor([[False, True], [False, False], [False, False], [False, True]])  # 3 is in rows 0 and 3
    expected[hidden] = float("-inf")
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(loss, F.cross_entropy(expected, torch.tensor([0, 0, 1, 0])))
    # up to the constant log N, the former log p correction lowered item 2 by log(4 * 0.5 / 0.9375)
    # = 0.76 more than the inclusion probability does, item 3 by only log(4 * 0.05 / 0.185) = 0.08:
    # it over-corrected the popular item
    log_p_logits = in_batch_logits(users, vectors(torch.tensor([2, 3])), layout, model.log_prior)
    gap = (logits - log_p_logits)[1] + math.log(4)  # row 1 masks nothing
    assert gap[0] > 0.6 and abs(gap[1]) < 0.1
    # rare items: log q = log N + log p to first order; p near 1: log q -> 0 (float64 inside, no underflow)
    q = log_inclusion_probability(torch.log(torch.tensor([1e-7, 0.5, 0.999999])), 2048)
    torch.testing.assert_close(q, torch.tensor([math.log(-math.expm1(2048 * math.log1p(-1e-7))),
                                                math.log(1 - 0.5 ** 2048), 0.0]), atol=1e-6, rtol=1e-5)
    assert abs(q[0].item() - math.log(2048e-7)) < 1e-3


def test_optimizer_is_adamw_with_the_reference_groups(tiny_config):
    config, _, _, model = build(tiny_config(**SMALL))
    optimizer = get_trainer(config["MODEL_TYPE"], "PMMRec")(config, model).optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    (group,) = optimizer.param_groups  # feature mode: the recommender alone, every parameter decayed
    assert group["name"] == "recommender" and group["lr"] == 0.001 and group["weight_decay"] == 0.1
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}

    config, _, _, model = build(tiny_config(**SMALL, decay_bias_and_norm=False))
    groups = {g["name"]: g for g in get_trainer(config["MODEL_TYPE"], "PMMRec")(config, model).optimizer.param_groups}
    assert sorted(groups) == ["recommender", "recommender_no_decay"]
    assert groups["recommender_no_decay"]["weight_decay"] == 0.0 and groups["recommender"]["weight_decay"] == 0.1
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["recommender_no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["recommender"]["params"]}
    assert {"nid_head.bias", "item_tower.projections.text.bias", "user_encoder.layer_norm.weight"} <= no_decay
    assert {"nid_head.weight", "item_tower.projections.text.weight"} <= decay
    assert all(n.endswith(".bias") or "LayerNorm" in n or "layer_norm" in n for n in no_decay)
    assert not (no_decay & decay) and len(no_decay) + len(decay) == len(names)

    for key in ("weight_decay", "encoder_learning_rate", "encoder_weight_decay"):  # wrong types: the config's check
        config, _, _, model = build(tiny_config(**SMALL, **{key: -0.1}))
        with pytest.raises(ValueError, match=f"config key `{key}` must be a number >= 0, got -0.1"):
            model.optimizer_param_groups(config)


def test_prefix_samples_put_the_target_at_the_last_position(tiny_config):
    from recbole.data.interaction import Interaction

    _, _, _, model = build(tiny_config(**SMALL))
    batch = Interaction({"item_id_list": torch.tensor([[5, 6, 0], [7, 0, 0]]), "item_length": torch.tensor([2, 1]),
                         "item_id": torch.tensor([9, 8])})
    inputs, targets = model.training_targets(batch)
    assert inputs.tolist() == [[5, 6], [7, 0]] and targets.tolist() == [[0, 9], [8, 0]]


def test_loss_falls_with_all_objectives(tiny_config):
    _, train, _, model = build(tiny_config(**SMALL))
    batch = next(iter(train))
    losses = losses_on_one_batch(model, batch)
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert model.nid_head.weight.grad is not None and model.nid_head.weight.grad.abs().sum() > 0


# ----- end-to-end mode --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e2e_paths(tmp_path_factory):
    """A tiny data set with raw titles and images, a tiny BERT and a tiny CLIP vision encoder."""
    from PIL import Image
    from transformers import BertConfig, BertModel, BertTokenizerFast, CLIPVisionConfig, CLIPVisionModel

    root = tmp_path_factory.mktemp("e2e")
    folder = write_dataset(SyntheticSpec(name="tinye2e", n_users=120, n_items=40, n_categories=4, seed=3), str(root))
    words = ["red", "blue", "green", "drill", "glove", "tape", "lens", "kit"]
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(folder, "images"))
    with open(os.path.join(folder, "tinye2e.text"), "w") as f:
        f.write("item_id:token\ttext:token_seq\n")
        for i in range(40):
            f.write(f"it{i:05d}\t{' '.join(rng.choice(words, 4))}\n")
            if i % 3:  # a third of the items have no image
                pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, "images", f"it{i:05d}.png"))
    vocab = os.path.join(root, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    text_dir, image_dir = str(root / "bert"), str(root / "clip")
    BertTokenizerFast(vocab_file=vocab).save_pretrained(text_dir)
    BertModel(BertConfig(vocab_size=13, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(text_dir)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                     num_attention_heads=2, image_size=32, patch_size=16)).save_pretrained(image_dir)
    return str(root), text_dir, image_dir


def e2e_config_dict(e2e_paths, tiny_config):
    data_path, text_dir, image_dir = e2e_paths
    return tiny_config(**SMALL, data_path=data_path, encoder_mode="end_to_end", text_encoder_path=text_dir,
                       image_encoder_path=image_dir, n_trainable_blocks=2, text_max_length=8, item_chunk_size=16)


def test_end_to_end_raw_items_come_from_the_data_set(e2e_paths, tiny_config):
    from PIL import Image
    from transformers import BertTokenizerFast

    data_path, text_dir, _ = e2e_paths
    config = MMConfig("PMMRec", "tinye2e", config_dict=e2e_config_dict(e2e_paths, tiny_config))
    dataset = create_dataset(config)
    folder = os.path.join(data_path, "tinye2e")
    with open(os.path.join(folder, "tinye2e.text")) as f:
        written = dict(line.rstrip("\n").split("\t") for line in list(f)[1:])
    id2token = list(dataset.field2id_token["item_id"])
    assert len(id2token) == 41  # padding + the 40 items
    texts, text_present = dataset.item_texts
    assert texts[0] == "" and not text_present[0] and text_present[1:].all()
    assert texts[1:] == [written[token] for token in id2token[1:]]
    images, image_present = dataset.item_images
    assert images.shape == (41, 3, 32, 32) and images.dtype == torch.uint8  # the tiny CLIP's image size
    assert image_present.tolist() == [False] + [int(token[2:]) % 3 != 0 for token in id2token[1:]]
    i = id2token.index("it00004")
    with Image.open(os.path.join(folder, "images", "it00004.png")) as img:
        expected = np.array(img.convert("RGB").resize((32, 32), Image.BICUBIC))
    assert torch.equal(images[i].permute(1, 2, 0), torch.from_numpy(expected))
    assert images[~torch.from_numpy(image_present)].sum() == 0

    # the model encodes exactly what the data set holds: change a title there and its tokens follow
    changed = list(texts)
    changed[i] = "kit kit lens"
    dataset.item_texts = ItemTexts(changed, text_present)
    train_part = dataset.build()[0]  # the split copies carry the raw items
    assert train_part.item_texts is dataset.item_texts and train_part.item_images is dataset.item_images
    source = get_model("PMMRec")(config, train_part).item_tower.source
    tokenizer = BertTokenizerFast.from_pretrained(text_dir)
    ids = tokenizer(changed, padding="max_length", truncation=True, max_length=8, return_tensors="pt")["input_ids"]
    assert torch.equal(source.text_ids, ids) and not torch.equal(ids[i], ids[i + 1])
    assert torch.equal(source.images, images) and torch.equal(source.image_present, torch.from_numpy(image_present))
    train_part.item_texts = None
    with pytest.raises(ValueError, match="text_encoder_path.*item_texts"):
        build_token_source(config, train_part, {}, {})


def test_end_to_end_step_trains_only_the_top_blocks(e2e_paths, tiny_config):
    _, train, valid, model = build(e2e_config_dict(e2e_paths, tiny_config), dataset="tinye2e")
    source = model.item_tower.source
    assert source.text_present[1:].all() and source.image_present.sum() == 26  # items 1..39 with i % 3 != 0
    batch = next(iter(train))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    for encoder, n_blocks in ((source.text_encoder, 4), (source.image_encoder, 3)):
        blocks = transformer_blocks(encoder)
        assert len(blocks) == n_blocks
        top = {id(p) for block in list(blocks)[-2:] for p in block.parameters()}
        n_trainable = 0
        for name, param in encoder.named_parameters():
            if id(param) in top:
                assert param.requires_grad and param.grad is not None, name
                n_trainable += 1
            else:  # embeddings, lower blocks, final norms: frozen, no gradient
                assert not param.requires_grad and param.grad is None, name
        assert n_trainable == len(top) > 0
        assert sum(p.grad.abs().sum() for p in encoder.parameters() if id(p) in top) > 0
    assert model.item_tower.fusion.encoder.layer[0].feed_forward.dense_1.weight.grad is not None
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(next(iter(valid))[0])
    assert scores.shape[1] == model.n_items and torch.isfinite(scores[:, 1:]).all()


def test_end_to_end_optimizer_gives_the_encoder_blocks_their_own_learning_rate(e2e_paths, tiny_config):
    config_dict = e2e_config_dict(e2e_paths, tiny_config)
    config_dict.update(encoder_learning_rate=0.01, encoder_weight_decay=0.0)
    config, _, _, model = build(config_dict, dataset="tinye2e")
    optimizer = get_trainer(config["MODEL_TYPE"], "PMMRec")(config, model).optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert sorted(groups) == ["image_encoder", "recommender", "text_encoder"]
    source = model.item_tower.source
    for name, encoder in (("text_encoder", source.text_encoder), ("image_encoder", source.image_encoder)):
        top = {id(p) for block in list(transformer_blocks(encoder))[-2:] for p in block.parameters()}
        assert {id(p) for p in groups[name]["params"]} == top  # the trainable blocks only, frozen ones left out
        assert groups[name]["lr"] == 0.01 and groups[name]["weight_decay"] == 0.0
    recommender = {id(p) for p in groups["recommender"]["params"]}
    assert groups["recommender"]["lr"] == 0.001 and groups["recommender"]["weight_decay"] == 0.1
    assert id(model.item_tower.projections["text"].weight) in recommender  # projections train with the recommender
    assert id(model.user_encoder.layer_norm.weight) in recommender
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)


# ----- transfer -----------------------------------------------------------------------------
def test_load_pretrained_loads_exactly_the_named_part(tiny_config):
    torch.manual_seed(1)
    _, _, _, source = build(tiny_config(**SMALL))
    torch.manual_seed(2)
    pretrained = {k: v + 0.5 for k, v in source.state_dict().items()}  # clearly different from any fresh model

    def parts(model):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        item = {k: v for k, v in state.items() if k.startswith("item_tower.")}
        user = {k: v for k, v in state.items() if k.startswith(("user_encoder.", "nid_head."))}
        assert len(item) + len(user) == len(state) and item and user
        return item, user

    for part in ("full", "item_encoder", "user_encoder", "none"):
        torch.manual_seed(3)
        _, _, _, target = build(tiny_config(**SMALL))
        item_before, user_before = parts(target)
        loaded = target.load_pretrained({"state_dict": pretrained} if part == "full" else pretrained, part)
        item_after, user_after = parts(target)
        for group_before, group_after, wanted in ((item_before, item_after, part in ("full", "item_encoder")),
                                                  (user_before, user_after, part in ("full", "user_encoder"))):
            for key in group_before:
                expected = pretrained[key] if wanted else group_before[key]
                torch.testing.assert_close(group_after[key], expected, msg=f"{part}: {key}")
                assert (key in loaded) == wanted
        if part == "none":
            assert loaded == []

    torch.manual_seed(3)
    _, _, _, target = build(tiny_config(**SMALL))
    missing = {k: v for k, v in pretrained.items() if not k.startswith("user_encoder.encoder.layer.0.")}
    with pytest.raises(KeyError, match="lacks"):
        target.load_pretrained(missing, "user_encoder")
    target.load_pretrained(missing, "item_encoder")  # the item encoder part is complete
    with pytest.raises(KeyError, match="unknown"):
        target.load_pretrained({**pretrained, "item_tower.extra.weight": torch.zeros(1)}, "item_encoder")
    bad = dict(pretrained)
    bad["user_encoder.position_embedding.weight"] = torch.zeros(5, 32)
    with pytest.raises(ValueError, match="shape mismatch"):
        target.load_pretrained(bad, "user_encoder")
    with pytest.raises(ValueError, match="pretrain_part"):
        target.load_pretrained(pretrained, "everything")


# ----- through the runner -------------------------------------------------------------------------
@pytest.mark.parametrize("item_tower", ["merged", "text"])
def test_pmmrec_trains_through_runner(item_tower, tiny_config, tiny_data_path):
    from test_runner import most_popular_recall_at_10

    result = run("PMMRec", "tiny", config_dict=tiny_config(**SMALL, item_tower=item_tower, epochs=8))
    assert result["test_result"]["recall@10"] > 1.2 * most_popular_recall_at_10(tiny_data_path), result["test_result"]


def test_images_load_from_a_folder_and_from_the_lmdb_store(e2e_paths, tmp_path):
    from recbole_mm.data.raw_items import load_item_images
    from recbole_mm.data.lmdb_store import build_image_lmdb

    folder = os.path.join(e2e_paths[0], "tinye2e", "images")
    tokens = ["[PAD]"] + [f"it{i:05d}" for i in range(40)]
    report = build_image_lmdb(folder, {t: t for t in tokens[1:]}, str(tmp_path / "store"), show_progress=False)
    assert report["images_stored"] == 26
    from_folder, present = load_item_images(folder, tokens, 16)
    from_lmdb, present_lmdb = load_item_images(str(tmp_path / "store"), tokens, 16)
    assert present.sum() == 26 and np.array_equal(present, present_lmdb)
    assert present.tolist() == [False] + [i % 3 != 0 for i in range(40)]
    assert torch.equal(from_folder, from_lmdb) and from_folder[present].float().std() > 10
    assert from_folder[~present].sum() == 0


def test_pretrain_then_adapt_through_the_transfer_stage(tiny_config, tiny_data_path, tmp_path):
    """--stage=pretrain on two source domains, then adaptation fine_tune with pretrain_part."""
    from recbole_mm.checkpoint import load_pretrained as read_checkpoint
    from recbole_mm.model.transferable import apply_adaptation

    for name, seed, prefix in (("pm_src_x", 31, "px"), ("pm_src_y", 32, "py")):
        write_dataset(SyntheticSpec(name=name, n_users=200, n_items=80, n_categories=8, seed=seed,
                                    domain_shift=0.2, item_prefix=prefix), tiny_data_path)
    result = run("PMMRec", "pm_src_x,pm_src_y", config_dict=tiny_config(**SMALL, stage="pretrain", epochs=3))
    losses = [epoch["total"] for epoch in result["pretrain_loss"]]
    assert losses[-1] < losses[0] and all(epoch["auxiliary"] > 0 for epoch in result["pretrain_loss"])
    checkpoint = read_checkpoint(result["checkpoint"])
    assert checkpoint["metadata"]["family"] == "PMMRec" and checkpoint["metadata"]["n_items"] == {
        "pm_src_x": 80, "pm_src_y": 80}
    for part in ("user_encoder", "item_encoder"):
        config_dict = tiny_config(**SMALL, adaptation="fine_tune", pretrained_checkpoint=result["checkpoint"],
                                  pretrain_part=part)
        config, _, _, model = build(config_dict)
        summary = apply_adaptation(model, config)
        assert summary["pretrain_part"] == part
        state = model.state_dict()
        loaded_prefix = "user_encoder." if part == "user_encoder" else "item_tower."
        other_prefix = "item_tower." if part == "user_encoder" else "user_encoder."
        assert all(torch.equal(state[k], v) for k, v in checkpoint["state_dict"].items() if k.startswith(loaded_prefix))
        assert not any(torch.equal(state[k], v) for k, v in checkpoint["state_dict"].items()
                       if k.startswith(other_prefix) and v.dim() == 2)
    # fine-tuning: the recommendation loss alone (the reference), unless auxiliary_when_adapting
    for keep in (False, True):
        config, train, _, model = build(tiny_config(**SMALL, adaptation="fine_tune", auxiliary_when_adapting=keep,
                                                    pretrained_checkpoint=result["checkpoint"]))
        assert apply_adaptation(model, config)["auxiliary_objectives"] is keep
        loss, next_item = model.calculate_loss(next(iter(train)), return_parts=True)
        assert (float(loss) > float(next_item)) if keep else torch.equal(loss, next_item)
    config, _, _, model = build(tiny_config(**SMALL, adaptation="re_learning",
                                            pretrained_checkpoint=result["checkpoint"]))
    with pytest.raises(ValueError, match="fine_tune"):
        apply_adaptation(model, config)


def test_rcl_rows_of_one_user_are_no_negatives():
    """RCL with the rows' user ids: another row of the same user is masked out of the negatives
    (a hand computation); without the ids it counts as a negative."""
    torch.manual_seed(0)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    users = torch.tensor([7, 7, 9])
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / 0.5
    masked = logits.clone()
    masked[0, 1] = masked[1, 0] = float("-inf")
    labels = torch.arange(3)
    expected = 0.5 * (F.cross_entropy(masked, labels) + F.cross_entropy(masked.t(), labels))
    torch.testing.assert_close(symmetric_info_nce(a, b, 0.5, groups=users), expected)
    assert abs(float(symmetric_info_nce(a, b, 0.5)) - float(expected)) > 1e-4


# ----- token-level item inputs (feature mode) ------------------------------------------------------
def test_token_inputs_reach_every_text_token_and_ignore_padding(tiny_config, token_dir):
    folder, written = token_dir
    _, train, _, model = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="tokens"))
    source = model.item_tower.source
    assert model.item_inputs == "tokens" and isinstance(source, FileTokens)
    assert model.transfer_metadata()["item_inputs"] == "tokens"
    text = source.items["text"]
    id2token = list(train._dataset.field2id_token["item_id"])
    keys, counts = written["text"]
    row = next(i for i, c in enumerate(counts) if 3 <= c < text.max_tokens)
    item = id2token.index(keys[row])
    model.eval()
    ids = torch.tensor([0, item, 1, 2])
    with torch.no_grad():
        before = model.encode_items(ids)[0]
        original = text.tokens
        text.tokens = perturbed_tokens(text, row, 2)  # a valid, non-first text token
        moved = model.encode_items(ids)[0]
        text.tokens = original
        text.tokens = perturbed_tokens(text, row, int(counts[row]), delta=1000.0)  # a padding position
        padded = model.encode_items(ids)[0]
        text.tokens = original
    assert not torch.allclose(before[1], moved[1])
    torch.testing.assert_close(before, padded, rtol=0, atol=1e-6)
    torch.testing.assert_close(before[2:], moved[2:])
    assert before[0].abs().sum() == 0


def test_items_without_image_or_without_any_token_are_finite(tiny_config, token_dir):
    folder, written = token_dir
    _, train, _, model = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="tokens"))
    source = model.item_tower.source
    id2token = list(train._dataset.field2id_token["item_id"])
    lonely = id2token.index(written["none"][0])
    text_only = next(i for i in range(1, model.n_items) if source.items["text"].counts[i] > 0
                     and source.items["image"].counts[i] == 0)
    assert not model.has_image[text_only] and not model.has_image[lonely]
    model.eval()
    with torch.no_grad():
        fused, per_modality = model.encode_items(torch.tensor([lonely, text_only]))
    assert torch.isfinite(fused).all() and fused[0].abs().sum() == 0 and fused[1].abs().sum() > 0
    assert all(torch.isfinite(v).all() for v in per_modality.values())


def test_item_inputs_pooled_and_auto(tiny_config, token_dir):
    folder, _ = token_dir
    _, _, _, pooled = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="pooled"))
    assert pooled.item_inputs == "pooled" and isinstance(pooled.item_tower.source, FeatureTokens)
    _, _, _, auto = build(tiny_config(**SMALL, feature_dir=folder))
    assert auto.item_inputs == "tokens"
    _, _, _, fallback = build(tiny_config(**SMALL))
    assert fallback.item_inputs == "pooled"


def test_tokens_without_files_is_one_line_naming_the_file_and_command(tiny_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_missing_token_files_error(build, tiny_config(**SMALL, feature_dir=str(empty), item_inputs="tokens"))


def test_token_inputs_train_and_evaluate_in_chunks(tiny_config, token_dir):
    folder, _ = token_dir
    _, train, valid, model = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="tokens", item_chunk_size=16))
    losses = losses_on_one_batch(model, next(iter(train)))
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses
    check_chunked_item_table(model, valid)


def test_multi_domain_data_sets_read_pooled_inputs():
    """Multi-domain pre-training has no token files: auto reads the pooled vectors, tokens is an error."""
    from types import SimpleNamespace

    from recbole_mm.model.encoders import feature_token_source

    dataset = SimpleNamespace(dataset_name="a,b")  # no dataset_path, as MultiDomainDataset
    features, masks = {"text": torch.randn(5, 4)}, {"text": torch.ones(5, dtype=torch.bool)}
    source, inputs = feature_token_source({"item_inputs": None, "model": "PMMRec"}, dataset, features, masks, ["text"])
    assert inputs == "pooled" and isinstance(source, FeatureTokens)
    with pytest.raises(ValueError, match="item_inputs: pooled"):
        feature_token_source({"item_inputs": "tokens", "model": "PMMRec"}, dataset, features, masks, ["text"])
