"""Multi-domain pre-training and the adaptation modes (docs/transfer.md), on tiny synthetic domains."""

import glob
import os
from functools import partialmethod

import numpy as np
import pytest
import torch
import yaml

from helpers import TINY_MODEL
from recbole_mm.config import MMConfig
from recbole_mm.data.multidomain import MultiDomainDataset, MultiDomainTrainLoader, domain_names
from recbole_mm.data.synthetic import SYNTHETIC_DATASETS, TRANSFER_DOMAINS, SyntheticSpec, _successor_map, write_dataset
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.runner import build_pipeline, run
from recbole_mm.checkpoint import check_checkpoint_fits, load_pretrained
from recbole_mm.model.transferable import apply_adaptation
from recbole_mm.utils import get_model, get_trainer

SOURCES = "src_x,src_y"


@pytest.fixture(scope="module")
def domains_path(tiny_data_path):
    """Two source domains beside the conftest's ``tiny`` target (same feature dimensions)."""
    write_dataset(SyntheticSpec(name="src_x", n_users=250, n_items=120, n_categories=8, seed=21, domain_shift=0.2,
                                item_prefix="x"), tiny_data_path)
    write_dataset(SyntheticSpec(name="src_y", n_users=250, n_items=90, n_categories=8, seed=22, successor_seed=5,
                                item_prefix="y"), tiny_data_path)
    write_dataset(SyntheticSpec(name="tiny_text96", n_users=200, n_items=80, n_categories=8, seed=23, text_dim=96),
                  tiny_data_path)
    return tiny_data_path


def base_config(data_path, tmp, **overrides):
    config = dict(TINY_MODEL, data_path=data_path, checkpoint_dir=str(tmp), seed=7, epochs=2,
                  modalities=["text", "image", "price"])
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def pretrained(domains_path, tmp_path_factory):
    """ANT pre-trained for 4 epochs on the two sources: the run's result dict."""
    tmp = tmp_path_factory.mktemp("pretrain")
    return run("ANT", SOURCES, config_dict=base_config(domains_path, tmp, stage="pretrain", epochs=4))


def target_model(model_name, data_path, tmp, **overrides):
    config = MMConfig(model_name, "tiny", config_dict=base_config(data_path, tmp, **overrides))
    dataset = create_dataset(config)
    train, valid, test = prepare_data(config, dataset)
    return config, get_model(model_name)(config, train._dataset), train


def test_pretrain_loss_falls_and_checkpoint_holds_only_transferable_parts(pretrained):
    losses = [epoch["total"] for epoch in pretrained["pretrain_loss"]]
    assert len(losses) == 4 and losses[-1] < 0.95 * losses[0], losses
    assert all(epoch["auxiliary"] > 0 for epoch in pretrained["pretrain_loss"])  # image-text term is on
    checkpoint = load_pretrained(pretrained["checkpoint"])
    meta = checkpoint["metadata"]
    assert meta["model"] == "ANT" and meta["domains"] == ["src_x", "src_y"]
    assert meta["modalities"] == ["text", "image", "price"]
    assert meta["feature_dims"] == {"text": 64, "image": 32, "price": 1}
    assert meta["n_items"] == {"src_x": 120, "src_y": 90} and meta["epochs"] == 4
    keys = list(checkpoint["state_dict"])
    assert keys and all(k.startswith(("sequence_encoder.", "item_encoder.adaptors.")) for k in keys)
    assert "sequence_encoder.position_embedding.weight" in keys
    assert any(".gate_weight" in k for k in keys) and any(".expert_weight" in k for k in keys)


def test_batches_mix_domains_with_global_item_ids(domains_path, tmp_path):
    config = MMConfig("ANT", SOURCES, config_dict=base_config(domains_path, tmp_path, stage="pretrain"))
    datasets = [create_dataset(MMConfig("ANT", n, config_dict=base_config(domains_path, tmp_path)))
                for n in domain_names(SOURCES)]
    multi = MultiDomainDataset(datasets, ["src_x", "src_y"])
    assert multi.n_items == 1 + 120 + 90
    # global item offsets[1] + i of src_y carries src_y's item i features
    text = multi.item_features["text"].matrix
    assert np.array_equal(text[multi.offsets[1] + 5], datasets[1].item_features["text"].matrix[5])
    assert np.array_equal(text[7], datasets[0].item_features["text"].matrix[7])
    loader = MultiDomainTrainLoader(config, multi)
    mixed = 0
    for batch in loader:
        ids = batch["target_item_list"]
        assert int(ids.max()) < multi.n_items
        rows_y = (batch["item_id_list"] > multi.offsets[1]).any(1)
        mixed += bool(rows_y.any() and (~rows_y).any())
    assert mixed >= len(loader) // 2, (mixed, len(loader))


def test_n_item_checkpoint_loads_into_m_item_target(pretrained, domains_path, tmp_path):
    checkpoint = load_pretrained(pretrained["checkpoint"])
    config, model, _ = target_model("ANT_e", domains_path, tmp_path, adaptation="fine_tune",
                                    pretrained_checkpoint=pretrained["checkpoint"], fine_tune_freeze_encoder=False)
    n_source = sum(checkpoint["metadata"]["n_items"].values())
    assert model.n_items - 1 == 150 != n_source
    summary = apply_adaptation(model, config)
    assert summary["loaded"] == len(checkpoint["state_dict"]) and summary["frozen"] == []
    state = model.state_dict()
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(state[key], value), key
    assert all(p.requires_grad for p in model.parameters())


def test_relearning_freezes_encoder_and_reinitialises_the_rest(pretrained, domains_path, tmp_path):
    checkpoint = load_pretrained(pretrained["checkpoint"])["state_dict"]
    config, model, train = target_model("ANT", domains_path, tmp_path, adaptation="re_learning",
                                        pretrained_checkpoint=pretrained["checkpoint"])
    apply_adaptation(model, config)
    params = dict(model.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert frozen and all(n.startswith("sequence_encoder.encoder.") for n in frozen)
    assert {n for n in params if n.startswith("sequence_encoder.encoder.")} == set(frozen)
    for name in frozen:  # the encoder is the pre-trained one
        assert torch.equal(params[name], checkpoint[name])
    reinit = ["sequence_encoder.position_embedding.weight"]
    reinit += [n for n in params if n.startswith("item_encoder.adaptors.") and
               n.endswith(("expert_weight", "gate_weight", "noise_weight"))]
    for name in reinit:
        assert not torch.allclose(params[name], checkpoint[name]), name
    assert params["sequence_encoder.layer_norm.weight"].requires_grad  # loaded, trained
    assert torch.equal(params["sequence_encoder.layer_norm.weight"], checkpoint["sequence_encoder.layer_norm.weight"])

    trainer = get_trainer(config["MODEL_TYPE"], "ANT")(config, model)
    before = {n: p.detach().clone() for n, p in params.items()}
    model.train()
    batch = next(iter(train))
    trainer.optimizer.zero_grad()
    model.calculate_loss(batch).backward()
    trainer.optimizer.step()
    for name in frozen:
        assert torch.equal(params[name], before[name]), f"frozen {name} moved"
    trainable_moved = [n for n in params if n not in frozen and not torch.equal(params[n], before[n])]
    assert "sequence_encoder.position_embedding.weight" in trainable_moved
    assert any(n.startswith("item_encoder.adaptors.") for n in trainable_moved)


def test_fine_tune_freeze_encoder_option(pretrained, domains_path, tmp_path):
    config, model, _ = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune",
                                    pretrained_checkpoint=pretrained["checkpoint"], fine_tune_freeze_encoder=True)
    summary = apply_adaptation(model, config)
    assert "sequence_encoder.position_embedding.weight" in summary["frozen"]
    assert all(n.startswith("sequence_encoder.") for n in summary["frozen"])


@pytest.mark.parametrize("mode", ["ground_built", "fine_tune", "re_learning"])
def test_each_mode_runs_end_to_end(mode, pretrained, domains_path, tmp_path):
    result = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path, adaptation=mode, epochs=2,
                                                        pretrained_checkpoint=pretrained["checkpoint"]))
    assert result["adaptation"]["mode"] == mode
    assert 0 < result["test_result"]["recall@10"] <= result["test_result"]["recall@50"] <= 1
    n_all = sum(p.numel() for p in get_model("ANT")(
        MMConfig("ANT", "tiny", config_dict=base_config(domains_path, tmp_path)),
        create_dataset(MMConfig("ANT", "tiny", config_dict=base_config(domains_path, tmp_path)))).parameters())
    if mode == "ground_built":
        assert result["parameters"] == n_all
    else:  # re-learning and (by default) fine-tuning keep the transformer encoder fixed
        assert result["parameters"] < n_all


def test_mismatched_checkpoints_fail_clearly(pretrained, domains_path, tmp_path):
    ckpt = pretrained["checkpoint"]
    with pytest.raises(ValueError, match=r"no modality in common: \['text', 'image', 'price'\] in the checkpoint"):
        check_checkpoint_fits(load_pretrained(ckpt), {**load_pretrained(ckpt)["metadata"], "modalities": ["audio"]},
                              ckpt)
    config = MMConfig("ANT", "tiny_text96", config_dict=base_config(domains_path, tmp_path, adaptation="re_learning",
                                                                     pretrained_checkpoint=ckpt))
    model = get_model("ANT")(config, create_dataset(config))
    with pytest.raises(ValueError, match="text features have dimension 64 in the checkpoint, 96 on the target"):
        apply_adaptation(model, config)
    config, model, _ = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune", pretrained_checkpoint=ckpt,
                                    hidden_size=48)
    with pytest.raises(ValueError, match="`hidden_size` is 32 in the checkpoint, 48 on the target"):
        apply_adaptation(model, config)
    config, model, _ = target_model("UniSRec", domains_path, tmp_path, adaptation="fine_tune",
                                    pretrained_checkpoint=ckpt)
    with pytest.raises(ValueError, match="pre-trained by ANT"):
        apply_adaptation(model, config)
    config, model, _ = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune",
                                    pretrained_checkpoint=str(tmp_path / "none.pth"))
    with pytest.raises(FileNotFoundError, match="none.pth not found"):
        apply_adaptation(model, config)
    config, model, _ = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune")
    with pytest.raises(ValueError, match="`pretrained_checkpoint` is empty"):
        apply_adaptation(model, config)
    torch.save({"state_dict": {}}, str(tmp_path / "plain.pth"))
    config, model, _ = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune",
                                    pretrained_checkpoint=str(tmp_path / "plain.pth"))
    with pytest.raises(ValueError, match="not a transferable checkpoint"):
        apply_adaptation(model, config)
    with pytest.raises(ValueError, match="`adaptation` must be one of"):  # refused as the config is built
        target_model("ANT", domains_path, tmp_path, adaptation="finetune")


def test_pretrain_domains_from_a_yaml_list(domains_path, tmp_path):
    path = tmp_path / "domains.yaml"
    path.write_text(yaml.safe_dump({"dataset": ["src_x", "src_y"], "stage": "pretrain"}))
    result = run("ANT", None, config_file_list=[str(path)], config_dict=base_config(domains_path, tmp_path, epochs=1))
    assert result["domains"] == ["src_x", "src_y"] and os.path.isfile(result["checkpoint"])


def test_pretrain_refuses_domains_with_other_feature_dims(domains_path, tmp_path):
    with pytest.raises(ValueError, match="text features have dimension 96 in domain 'tiny_text96'"):
        run("ANT", "src_x,tiny_text96", config_dict=base_config(domains_path, tmp_path, stage="pretrain", epochs=1))


def test_pretrain_domains_with_other_modalities_fail_whichever_comes_first(domains_path, tmp_path):
    datasets = [create_dataset(MMConfig("ANT", n, config_dict=base_config(domains_path, tmp_path)))
                for n in domain_names(SOURCES)]
    del datasets[0].item_features["image"]  # src_x as a domain without images (like Games beside Scientific)
    with pytest.raises(ValueError, match="domain 'src_y' has image features but 'src_x' has none"):
        MultiDomainDataset(datasets, ["src_x", "src_y"])
    with pytest.raises(ValueError, match="domain 'src_x' has no image features but 'src_y' has"):
        MultiDomainDataset(datasets[::-1], ["src_y", "src_x"])


def test_synthetic_transfer_domains_are_registered_with_a_conflicting_source():
    assert {"mm_src_a", "mm_src_b", "mm_src_conflict", "mm_target"} <= set(SYNTHETIC_DATASETS)
    target, conflict = TRANSFER_DOMAINS["mm_target"], TRANSFER_DOMAINS["mm_src_conflict"]

    def successors(spec):
        return _successor_map(spec.n_categories, spec.world_seed if spec.successor_seed < 0 else spec.successor_seed)

    assert np.array_equal(successors(target), successors(TRANSFER_DOMAINS["mm_src_a"]))
    assert (successors(target) != successors(conflict)).mean() > 0.8
    prefixes = {spec.item_prefix for spec in TRANSFER_DOMAINS.values()}
    assert len(prefixes) == len(TRANSFER_DOMAINS)  # item sets never overlap


def test_transfer_table_command_writes_table_and_resumes(domains_path, tmp_path, capsys):
    from recbole_mm.bench import transfer

    out = tmp_path / "table"
    args = ["--target=tiny", f"--sources={SOURCES}", "--models=UniSRec", f"--out={out}", "--pretrain_epochs=1",
            f"--data_path={domains_path}", "--epochs=1", "--hidden_size=16", "--inner_size=16", "--n_experts=2",
            "--n_layers=1", "--train_batch_size=256", "--MAX_ITEM_LIST_LENGTH=20", "--state=WARNING",
            "--modalities=['text']"]
    rows = transfer.main(args)
    assert [(r["model"], r["mode"]) for r in rows] == [("UniSRec", m) for m in ("ground_built", "fine_tune",
                                                                                 "re_learning")]
    assert all(not r["error"] and 0 < r["recall@10"] <= 1 for r in rows), rows
    table = (out / "table.md").read_text()
    assert "| model | ground-built | fine-tune | re-learning |" in table and "| UniSRec |" in table
    assert len((out / "table.csv").read_text().splitlines()) == 4
    settings = yaml.safe_load((out / "config.yaml").read_text())
    assert settings["sources"] == ["src_x", "src_y"] and settings["overrides"]["hidden_size"] == 16
    assert (out / "table.png").stat().st_size > 0 and "(SE 0." in table  # one seed: Recall@10's standard error
    capsys.readouterr()
    transfer.main(args)  # nothing runs twice
    assert capsys.readouterr().out.count("done before, skipped") == 4

    # an existing checkpoint (no pre-training run), a mode with its own settings, two seeds
    checkpoint = yaml.safe_load((out / "UniSRec-pretrain.json").read_text())["checkpoint"]
    out2 = tmp_path / "seeds"
    rows = transfer.main([a for a in args if not a.startswith("--out=")] + [
        f"--out={out2}", f"--checkpoints=UniSRec:{checkpoint}", "--seeds=1,2",
        "--modes=ground_built,fine_tune:fine_tune_freeze_encoder=False"])
    assert [(r["mode"], r["seed"]) for r in rows] == [("ground_built", 1), ("ground_built", 2),
                                                      ("fine_tune:fine_tune_freeze_encoder=False", 1),
                                                      ("fine_tune:fine_tune_freeze_encoder=False", 2)]
    assert not (out2 / "UniSRec-pretrain.json").exists()
    assert rows[0]["recall@10"] != rows[1]["recall@10"] or rows[0]["ndcg@10"] != rows[1]["ndcg@10"]  # seeds differ
    table = (out2 / "table.md").read_text()
    assert "fine-tune (fine_tune_freeze_encoder=False)" in table and "2 seeds" in table and "±" in table
    assert "Difference to ground-built, paired by seed" in table


def test_command_line_pretrain_then_re_learning(domains_path, tmp_path, monkeypatch, capsys):
    from recbole_mm import cli

    monkeypatch.chdir(tmp_path)
    common = [f"--data_path={domains_path}", f"--checkpoint_dir={tmp_path}", "--epochs=1", "--hidden_size=16",
              "--inner_size=16", "--n_experts=2", "--n_layers=1", "--MAX_ITEM_LIST_LENGTH=20", "--state=WARNING"]
    pretrain = cli.main(["--model=ANT", "--stage=pretrain", f"--dataset={SOURCES}"] + common)
    assert pretrain["domains"] == ["src_x", "src_y"]
    assert "transferable checkpoint:" in capsys.readouterr().out
    result = cli.main(["--model=ANT", "--dataset=tiny", "--adaptation=re_learning",
                       f"--pretrained_checkpoint={pretrain['checkpoint']}"] + common)
    assert result["adaptation"]["mode"] == "re_learning" and result["adaptation"]["frozen"]


def test_pretraining_resumes_to_the_weights_of_an_uninterrupted_run(pretrained, domains_path, tmp_path):
    """2 epochs, then --epochs=4 --resume_from: epochs 3-4 only, and the 4-epoch run's weights."""
    from recbole_mm.checkpoint import load_checkpoint

    first = run("ANT", SOURCES, config_dict=base_config(domains_path, tmp_path, stage="pretrain", epochs=2))
    state_file = first["resume_state"]
    assert state_file == first["checkpoint"][: -len(".pth")] + "-last.pth" and os.path.isfile(state_file)
    state = load_checkpoint(state_file)
    assert state["epoch"] == 1 and state["pretrain_loss"] == first["pretrain_loss"] and state["optimizer"]["state"]
    resumed = run("ANT", SOURCES, config_dict=base_config(domains_path, tmp_path, stage="pretrain", epochs=4,
                                                          resume_from=state_file))
    assert resumed["epochs_trained"] == 2 and len(resumed["train_epoch_seconds"]) == 2  # epochs 3 and 4 only
    assert resumed["checkpoint"] == first["checkpoint"] and resumed["resumed_from"] == state_file
    assert resumed["pretrain_loss"][:2] == first["pretrain_loss"]  # appended to the history
    assert resumed["pretrain_loss"] == pretrained["pretrain_loss"]
    got, want = load_pretrained(resumed["checkpoint"]), load_pretrained(pretrained["checkpoint"])
    assert got["metadata"]["epochs"] == 4 and got["metadata"]["pretrain_loss"] == want["metadata"]["pretrain_loss"]
    assert set(got["state_dict"]) == set(want["state_dict"])
    for key, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    assert load_checkpoint(state_file)["epoch"] == 3


def test_pretraining_resume_refuses_other_models_domains_and_settings(domains_path, tmp_path):
    import re

    first = run("ANT", SOURCES, config_dict=base_config(domains_path, tmp_path, stage="pretrain", epochs=1))
    state_file = first["resume_state"]
    cases = [
        ("UniSRec", SOURCES, {}, "key `model` is 'ANT' in the resume file, 'UniSRec' in this run"),
        ("ANT", "src_y,src_x", {}, "key `dataset` is ['src_x', 'src_y'] in the resume file, ['src_y', 'src_x']"),
        ("ANT", SOURCES, {"hidden_size": 48}, "key `hidden_size` is 32 in the resume file, 48 in this run"),
        ("ANT", SOURCES, {"learning_rate": 0.01}, "key `learning_rate` is 0.001 in the resume file, 0.01"),
    ]
    for model, dataset, overrides, message in cases:
        config = base_config(domains_path, tmp_path, stage="pretrain", epochs=2, resume_from=state_file, **overrides)
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            run(model, dataset, config_dict=config)
        assert f"cannot resume pre-training from {state_file}" in str(info.value)
    torch.save({"epoch": 1, "state_dict": {}}, str(tmp_path / "other.pth"))
    with pytest.raises(ValueError, match="other.pth is not a pre-training resume state"):
        run("ANT", SOURCES, config_dict=base_config(domains_path, tmp_path, stage="pretrain",
                                                    resume_from=str(tmp_path / "other.pth")))
    with pytest.raises(ValueError, match="it is a pre-training state: resume it with --stage=pretrain"):
        run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path, resume_from=state_file))


@pytest.mark.parametrize("key,value,stage,allowed", [
    ("adaptation", "finetune", "train", "['ground_built', 'fine_tune', 're_learning', 'auto']"),
    ("adaptation", "relearning", "pretrain", "['ground_built', 'fine_tune', 're_learning', 'auto']"),
    ("stage", "pre_train", None, "['train', 'pretrain']"),
])
def test_unknown_stage_or_adaptation_fails_before_any_data_loads(key, value, stage, allowed, domains_path,
                                                                 tmp_path, monkeypatch):
    import re

    def no_data(*args, **kwargs):
        raise AssertionError("a data set was loaded before the key check")

    monkeypatch.setattr("recbole_mm.runner.create_dataset", no_data)
    monkeypatch.setattr("recbole_mm.data.utils.create_dataset", no_data)
    overrides = {key: value} if stage is None else {key: value, "stage": stage}
    dataset = SOURCES if stage == "pretrain" else "tiny"
    message = f"config key `{key}` must be one of {allowed}, got '{value}'"
    with pytest.raises(ValueError, match=re.escape(message)):
        run("ANT", dataset, config_dict=base_config(domains_path, tmp_path, **overrides))


def test_modalities_the_checkpoint_lacks_start_fresh_and_extra_ones_are_ignored(pretrained, domains_path, tmp_path):
    """A text-only source (Games) adapts to a text + image target (Scientific): the image adaptor
    is learnt on the target; a checkpoint modality the target lacks is ignored."""
    checkpoint = load_pretrained(pretrained["checkpoint"])["state_dict"]  # text, image, price
    config, model, _ = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune",
                                    pretrained_checkpoint=pretrained["checkpoint"], modalities=["text", "image"])
    fresh_image = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("item_encoder.adaptors.image.")}
    summary = apply_adaptation(model, config)
    assert summary["ignored_modalities"] == ["price"] and summary["fresh_modalities"] == []
    state = model.state_dict()
    for key in state:
        if key.startswith(("sequence_encoder.", "item_encoder.adaptors.text.", "item_encoder.adaptors.image.")):
            assert torch.equal(state[key], checkpoint[key]), key
    assert not any(k.startswith("item_encoder.adaptors.price.") for k in state)

    text_only = run("ANT", SOURCES, config_dict=base_config(domains_path, tmp_path / "text", stage="pretrain", epochs=1,
                                                            modalities=["text"]))
    config, model, _ = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune",
                                    pretrained_checkpoint=text_only["checkpoint"], modalities=["text", "image"])
    fresh_image = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("item_encoder.adaptors.image.")}
    summary = apply_adaptation(model, config)
    assert summary["fresh_modalities"] == ["image"] and summary["ignored_modalities"] == []
    saved = load_pretrained(text_only["checkpoint"])["state_dict"]
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert all(torch.equal(state[k], v) for k, v in fresh_image.items())  # untouched: learnt on the target


def test_missing_modality_modes_differ_only_for_items_without_the_modality(tiny_config):
    config_zero = MMConfig("ANT", "tiny", config_dict=tiny_config(missing_modality="zero"))
    dataset = create_dataset(config_zero)
    zero = get_model("ANT")(config_zero, dataset)
    learned = get_model("ANT")(MMConfig("ANT", "tiny", config_dict=tiny_config(missing_modality="adaptor")), dataset)
    learned.load_state_dict(zero.state_dict())
    with torch.no_grad():  # a non-zero expert bias: the zero feature's adaptation is a non-zero constant
        for adaptor in zero.item_encoder.adaptors.values():
            adaptor.expert_bias.normal_()
        learned.load_state_dict(zero.state_dict())
    zero.eval(), learned.eval()
    with torch.no_grad():
        a, b = zero.item_table(), learned.item_table()
    complete = torch.ones(len(a), dtype=torch.bool)
    for m in zero.item_encoder.modalities:
        complete &= zero.item_encoder.mask(m)
    complete[0] = False
    lacking = ~complete
    lacking[0] = False
    assert complete.any() and lacking.any()
    torch.testing.assert_close(a[complete], b[complete])
    assert (a[lacking] - b[lacking]).abs().sum(-1).min() > 0


def test_learning_rate_decays_every_epoch(tiny_config):
    config = MMConfig("ANT", "tiny", config_dict=tiny_config(learning_rate_decay=0.5, learning_rate=0.004))
    pipe = build_pipeline(config)
    for epoch in range(2):
        pipe.trainer._train_epoch(pipe.train_data, epoch)
    assert [g["lr"] for g in pipe.trainer.optimizer.param_groups] == [pytest.approx(0.001)]


def test_default_fine_tune_moves_only_item_side_parameters(pretrained, domains_path, tmp_path):
    """The default fine-tuning, as UniSRec and the ANT paper do it: no gradient reaches the
    transformer encoder or the position embedding, and Adam leaves them unchanged; the item side
    is tuned."""
    config, model, train = target_model("ANT", domains_path, tmp_path, adaptation="fine_tune",
                                        pretrained_checkpoint=pretrained["checkpoint"])
    assert config["fine_tune_freeze_encoder"] is True
    summary = apply_adaptation(model, config)
    params = dict(model.named_parameters())
    encoder = {n for n in params if n.startswith(("sequence_encoder.encoder.", "sequence_encoder.position_embedding."))}
    assert set(summary["frozen"]) == encoder and encoder
    trainer = get_trainer(config["MODEL_TYPE"], "ANT")(config, model)
    before = {n: p.detach().clone() for n, p in params.items()}
    model.train()
    for batch in list(iter(train))[:3]:
        trainer.optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        assert all(params[n].grad is None for n in encoder)
        trainer.optimizer.step()
    assert all(torch.equal(params[n], before[n]) for n in encoder)
    moved = {n for n in params if not torch.equal(params[n], before[n])}
    assert any(n.startswith("item_encoder.adaptors.") for n in moved)
    assert moved <= set(params) - encoder


def test_auto_adaptation_picks_the_best_validation_mode_and_equals_its_own_run(pretrained, domains_path, tmp_path):
    """adaptation auto: ground-built trains to its end, the transfer modes are probed, the best of
    them trains on within the budget; the best validation score wins, and the winner's figures
    are those of its own run (same seed)."""
    common = dict(pretrained_checkpoint=pretrained["checkpoint"], epochs=4, stopping_step=10)
    auto = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "auto", adaptation="auto",
                                                      auto_probe_epochs=1, auto_budget=1.25, **common))
    info = auto["adaptation"]["auto"]
    ran = info["candidates_run"]
    assert set(ran) == {"ground_built", "fine_tune", "re_learning"} and ran["ground_built"]["epochs"] == 4
    assert sorted(r["epochs"] for m, r in ran.items() if m != "ground_built") == [1, 4]  # 5 = 1.25 x 4 epochs
    winner = info["winner"]
    assert winner == max(ran, key=lambda m: ran[m]["best_valid_score"]) == auto["adaptation"]["mode"]
    assert auto["best_valid_score"] == pytest.approx(ran[winner]["best_valid_score"])
    alone = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "alone", adaptation=winner, **common))
    assert auto["test_result"] == alone["test_result"] and auto["epochs_trained"] == alone["epochs_trained"] == 4

    budgeted = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "budget", adaptation="auto",
                                                          auto_probe_epochs=1, auto_budget=0.5, **common))
    ran = budgeted["adaptation"]["auto"]["candidates_run"]
    assert sum(r["epochs"] for m, r in ran.items() if m != "ground_built") == 2  # 0.5 x ground-built's 4 epochs
    committed = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "commit", adaptation="auto",
                                                           auto_strategy="commit", auto_probe_epochs=1, **common))
    info = committed["adaptation"]["auto"]
    ran, winner = info["candidates_run"], info["winner"]
    assert info["strategy"] == "commit" and winner == committed["adaptation"]["mode"]
    assert ran[winner]["epochs"] == 4 and all(r["epochs"] == 1 for m, r in ran.items() if m != winner)
    alone = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "alone_c", adaptation=winner, **common))
    assert committed["test_result"] == alone["test_result"]
    with pytest.raises(ValueError, match="auto_strategy"):
        run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "bad_s", adaptation="auto",
                                                    auto_strategy="greedy", **common))
    with pytest.raises(ValueError, match="auto_candidates"):
        run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "bad", adaptation="auto",
                                                    auto_candidates=["ground_built", "finetune"], **common))


@pytest.mark.parametrize("strategy, eval_step, cut_after", [("guarded", 1, 7), ("commit", 2, 3)])
def test_interrupted_auto_run_resumes_to_the_uninterrupted_result(strategy, eval_step, cut_after, pretrained,
                                                                  domains_path, tmp_path, monkeypatch):
    """An auto run cut after some candidate evaluations, resumed from the race state its log names
    (the state bench.transfer picks too), replays the epochs the states hold (without training them
    again), trains the rest and ends as the uninterrupted run: same race, winner, validation scores
    and test figures."""
    from recbole_mm.bench.runs import run_resume_state
    from recbole_mm.trainer.trainer import SafeCheckpointMixin

    common = dict(pretrained_checkpoint=pretrained["checkpoint"], epochs=8, stopping_step=0, learning_rate=0.03,
                  adaptation="auto", auto_strategy=strategy, auto_probe_epochs=2, auto_budget=1.0, eval_step=eval_step)
    save_state, evaluations = SafeCheckpointMixin.save_resume_state, []

    def counted(self, epoch_idx, valid_score=None, cut_after=None):
        save_state(self, epoch_idx, valid_score)
        evaluations.append(epoch_idx)
        if len(evaluations) == cut_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(SafeCheckpointMixin, "save_resume_state", counted)
    whole = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "whole", **common))
    info, whole_evaluations = whole["adaptation"]["auto"], len(evaluations)
    evaluations.clear()
    monkeypatch.setattr(SafeCheckpointMixin, "save_resume_state", partialmethod(counted, cut_after=cut_after))
    with pytest.raises(KeyboardInterrupt):
        run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "cut", **common))
    race_file = run_resume_state(str(tmp_path / "cut"))
    assert not race_file.endswith(tuple(f"-{mode}-last.pth" for mode in info["candidates"]))
    evaluations.clear()
    monkeypatch.setattr(SafeCheckpointMixin, "save_resume_state", counted)
    resumed = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "cut", resume_from=race_file,
                                                         **common))
    assert len(evaluations) == whole_evaluations - cut_after  # the recorded evaluations were not repeated
    race = resumed["adaptation"]["auto"]
    assert race["candidates_run"] == info["candidates_run"] and race["winner"] == info["winner"]
    assert sum(race["resumed_at_epoch"].values()) >= cut_after * eval_step > 0
    assert resumed["resumed_at_epoch"] == race["resumed_at_epoch"][info["winner"]]
    assert resumed["test_result"] == whole["test_result"] and resumed["best_valid_score"] == whole["best_valid_score"]
    assert len({r["epochs"] for r in info["candidates_run"].values()}) > 1  # the race cut them at different epochs
    with pytest.raises(ValueError, match="config key `auto_budget` is 1.0 in the resume file, 2.0 in this run"):
        run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "cut", resume_from=race_file,
                                                   **{**common, "auto_budget": 2.0}))
    candidate_state = glob.glob(str(tmp_path / "cut" / "*-ground_built-last.pth"))[0]
    with pytest.raises(ValueError, match="is not the state of an adaptation auto run"):
        run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "cut", **{**common,
                                                                                      "resume_from": candidate_state}))
    with pytest.raises(ValueError, match="resume it with --adaptation=auto"):
        run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / "cut", **{
            **common, "adaptation": "fine_tune", "resume_from": race_file}))


def test_auto_replayed_from_the_mode_runs_equals_a_real_auto_run(pretrained, domains_path, tmp_path):
    """bench.auto_replay: given the three modes' own runs (same seed), the replay names the same
    winner, the same epochs and best validation score of every candidate, and the same test figures
    as a real auto run, for both strategies; early stopping makes the candidates stop at different
    epochs."""
    from recbole_mm.bench.auto_replay import CandidateRun, replay

    common = dict(pretrained_checkpoint=pretrained["checkpoint"], epochs=8, stopping_step=0, learning_rate=0.03)
    runs = {mode: CandidateRun.from_result(run("ANT", "tiny", config_dict=base_config(
        domains_path, tmp_path / mode, adaptation=mode, **common)), mode) for mode in ("ground_built", "fine_tune",
                                                                                        "re_learning")}
    for strategy, settings in (("guarded", dict(auto_probe_epochs=2, auto_budget=1.0)),
                               ("commit", dict(auto_probe_epochs=2))):
        real = run("ANT", "tiny", config_dict=base_config(domains_path, tmp_path / f"auto_{strategy}", adaptation="auto",
                                                          auto_strategy=strategy, **settings, **common))
        info = real["adaptation"]["auto"]
        replayed = replay(runs, strategy, settings["auto_probe_epochs"], settings.get("auto_budget", 0.0))
        assert replayed["winner"] == info["winner"]
        assert {m: r["epochs"] for m, r in replayed["candidates_run"].items()} == \
            {m: r["epochs"] for m, r in info["candidates_run"].items()}
        assert all(replayed["candidates_run"][m]["best_valid_score"] == pytest.approx(r["best_valid_score"])
                   for m, r in info["candidates_run"].items() if r["epochs"])
        assert replayed["test"] == real["test_result"]
    assert len({len(r.scores) for r in runs.values()}) > 1  # the candidates stopped at different epochs


def test_misleading_source_shows_other_categories_with_the_same_transitions():
    """mm_src_mislead's kind of domain: items of category c carry the features that category
    mislead[c] has everywhere else; the transitions are the target's."""
    from recbole_mm.data.synthetic import generate

    honest = SyntheticSpec(name="h", seed=9, n_users=50, n_items=600, n_categories=8)
    misleading = SyntheticSpec(name="m", seed=9, n_users=50, n_items=600, n_categories=8, feature_category_seed=77)
    a, b = generate(honest), generate(misleading)
    assert np.array_equal(a["category"], b["category"])
    mislead = _successor_map(8, 77)

    def means(data):
        return np.stack([data["text"][data["category"] == c].mean(0) for c in range(8)])

    honest_means, misleading_means = means(a), means(b)
    for c in range(8):
        distances = np.linalg.norm(honest_means - misleading_means[c], axis=1)
        assert distances.argmin() == mislead[c] != c
    spec = TRANSFER_DOMAINS["mm_src_mislead"]
    assert spec.feature_category_seed >= 0 and spec.successor_seed == TRANSFER_DOMAINS["mm_target"].successor_seed


def test_pretrain_curve_draws_the_checkpoint_losses(pretrained, tmp_path):
    from recbole_mm.bench import pretrain_curve

    text = pretrain_curve.main([pretrained["checkpoint"], "--labels=ANT", f"--out={tmp_path / 'curve'}"])
    assert (tmp_path / "curve.png").stat().st_size > 1000
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4
    first, last = float(rows[0].split("|")[2]), float(rows[-1].split("|")[2])
    assert first == pytest.approx(pretrained["pretrain_loss"][0]["total"], abs=1e-4) and last < first
    with pytest.raises(ValueError, match="names 2 curves, 1 checkpoints"):
        pretrain_curve.main([pretrained["checkpoint"], "--labels=a,b", f"--out={tmp_path / 'x'}"])


def test_recipe_table_puts_each_variant_beside_the_reference(pretrained, tmp_path):
    import csv
    import json
    import math
    import shutil

    from recbole_mm.bench import recipe

    def cell(variant, mode, recall, ndcg, epochs, seed=2020):
        folder = tmp_path / f"cells_{variant}"
        folder.mkdir(exist_ok=True)
        result = {"test_result": {"recall@10": recall, "ndcg@10": ndcg}, "test_rows": 8000, "epochs_trained": epochs}
        (folder / f"ANT-{mode}-seed{seed}.json").write_text(json.dumps(result))

    (tmp_path / "pretrain_default" / "snapshots").mkdir(parents=True)
    shutil.copy(pretrained["checkpoint"], tmp_path / "pretrain_default" / "snapshots" / "e4.pth")
    cell("default", "fine_tune", 0.13, 0.08, 60)
    cell("default", "re_learning", 0.12, 0.07, 50)
    cell("t0.1", "fine_tune", 0.14, 0.09, 70)
    cell("t0.1", "fine_tune", 0.12, 0.07, 50, seed=2021)   # two seeds: their mean
    cell("titles", "ground_built", 0.11, 0.06, 40)
    (tmp_path / "cells_titles" / "UniSRec-fine_tune-seed2020.json").write_text("{}")   # another model: not read
    text = recipe.main([str(tmp_path)])

    rows = {row["variant"]: row for row in csv.DictReader(open(tmp_path / "recipe.csv", encoding="utf-8"))}
    assert list(rows) == ["default", "t0.1", "titles"]
    losses = [r["total"] for r in pretrained["pretrain_loss"]]
    assert float(rows["default"]["loss_first"]) == pytest.approx(losses[0])
    assert float(rows["default"]["loss_last"]) == pytest.approx(losses[-1]) and rows["t0.1"]["loss_first"] == ""
    assert float(rows["t0.1"]["fine_tune_recall@10"]) == pytest.approx(0.13)
    assert float(rows["t0.1"]["fine_tune_seeds"]) == 2 and float(rows["t0.1"]["fine_tune_epochs"]) == 60
    assert float(rows["t0.1"]["fine_tune_diff_se"]) == 0.0   # same mean as the reference
    assert rows["t0.1"]["re_learning_recall@10"] == "" and rows["default"]["fine_tune_diff_se"] == ""
    se = math.sqrt(0.12 * 0.88 / 8000)
    cell("t0.1", "re_learning", 0.13, 0.075, 55)
    row = {r["variant"]: r for r in recipe.recipe_rows(str(tmp_path))}["t0.1"]
    assert row["re_learning_diff_se"] == pytest.approx(0.01 / math.hypot(se, math.sqrt(0.13 * 0.87 / 8000)))
    assert "| titles | – | 0.1100 / 0.0600 (40) | – | – |" in text
    with pytest.raises(SystemExit, match="holds no pretrain_<variant> or cells_<variant> folder"):
        recipe.main([str(tmp_path / "pretrain_default" / "snapshots")])
