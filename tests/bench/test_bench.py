"""The speed benchmark runs end to end on tiny data and writes its table."""

import os

import pytest

from recbole_mm.bench import speed


def test_speed_benchmark_writes_table(tiny_data_path, tmp_path):
    out = tmp_path / "speed"
    rows = speed.main([
        "--dataset=tiny", f"--data_path={tiny_data_path}", "--hidden_size=16", "--train_batch_size=256",
        "--settings=all", "--only=1,4", f"--out={out}", "--threads=1",
    ])
    assert [r["model"] for r in rows] == ["SASRec", "ANT", "ANT"]
    for row in rows:
        assert row["train_epoch_seconds"] > 0 and row["eval_seconds"] > 0 and row["peak_rss_mb"] > 50
    # whole sequences make fewer, fuller batches than prefix samples
    assert rows[2]["train_batches"] <= rows[1]["train_batches"]
    table = (out / "speed-tiny-all.md").read_text()
    assert "| SASRec (stock RecBole) |" in table and "1.0x" in table
    assert os.path.isfile(out / "speed-tiny-all.json")


def test_speed_benchmark_has_stock_whole_sequence_rows(tiny_data_path, tmp_path):
    rows = speed.main([
        "--dataset=tiny", f"--data_path={tiny_data_path}", "--hidden_size=16", "--train_batch_size=256",
        "--settings=stock", "--only=2", f"--out={tmp_path}", "--threads=1",
    ])
    assert [r["setting"] for r in rows] == ["SASRec (stock RecBole)", "SASRec + stock_whole_sequence"]
    # one row per user sequence: fewer, fuller batches for the same target positions
    assert rows[1]["train_batches"] <= rows[0]["train_batches"]


def test_compare_writes_table_and_resumes(tiny_data_path, tmp_path, capsys):
    from recbole_mm.bench import compare

    out = tmp_path / "cmp"
    args = ["--models=ANT,Pop,ANT:hidden_size=8:inner_size=8", "--dataset=tiny", f"--out={out}", f"--data_path={tiny_data_path}",
            "--epochs=2", "--hidden_size=16", "--inner_size=16", "--n_experts=2", "--train_batch_size=256",
            "--MAX_ITEM_LIST_LENGTH=20", "--state=WARNING", "--paper=ant"]
    rows = compare.main(args)
    assert [r["model"] for r in rows] == ["ANT", "Pop", "ANT:hidden_size=8:inner_size=8"]
    assert all("error" not in r for r in rows)
    assert rows[2]["parameters"] < rows[0]["parameters"]  # the row's own overrides were applied
    table = (out / "comparison.md").read_text()
    assert "| ANT |" in table and "| Pop |" in table and "| ANT:hidden_size=8:inner_size=8 |" in table
    csv_text = (out / "comparison.csv").read_text().splitlines()
    assert csv_text[0].startswith("model,recall@10") and len(csv_text) == 4
    import csv

    paper = {r["model"]: r["paper_recall@10"] for r in csv.DictReader(csv_text)}
    # a row with settings of its own carries its model's published figure
    assert paper["ANT"] == paper["ANT:hidden_size=8:inner_size=8"] == "0.1334" and paper["Pop"] == ""
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    again = compare.main(args)  # resumes: nothing is trained twice
    assert "ANT: done before, skipped" in capsys.readouterr().out
    assert again[0]["test_result"] == rows[0]["test_result"]


def test_adaptation_benchmark_writes_tables_and_resumes(tmp_path, capsys):
    """Two synthetic countries, one backbone, two seeds: the tables hold mean +- std per setting and
    the paired gain over fine-tuning; a second call runs nothing again."""
    from recbole_mm.bench import adaptation
    from recbole_mm.data.aliexpress import convert_csv
    from recbole_mm.data.synthetic_countries import CountrySpec, write_country_csvs

    for spec in (CountrySpec("SRC", seed=5, n_train=1500, n_test=400),
                 CountrySpec("TGT", seed=6, n_train=2000, n_test=600, shift=1.0, ctr_bias=-1.0)):
        csvs = write_country_csvs(spec, str(tmp_path / spec.name))
        convert_csv(csvs["train"], csvs["test"], str(tmp_path / spec.name), spec.name)
    out = tmp_path / "adapt"
    args = ["--data=own", "--shifts=SRC:TGT", "--backbones=SharedBottom", "--shares=0.1", "--seeds=2",
            "--settings=as_is,fine_tune,TAA", "--no_full_target", "--adapt_epochs=2", f"--data_path={tmp_path}",
            f"--out={out}", "--epochs=1", "--embedding_size=4", "--bottom_dims=[16]", "--tower_dims=[8]"]
    table = adaptation.main(args)
    runs = adaptation.run_rows(adaptation.load_results(str(out)))
    summary = {r["setting"]: r for r in adaptation.summary_rows(runs)}
    assert set(summary) == {"fine_tune", "TAA"} and summary["TAA"]["n"] == 2
    for setting, row in summary.items():
        values = [r["ctr_auc"] for r in runs if r["setting"] == setting]
        assert len(values) == 2 and all(0 < v <= 1 for v in values)
        assert abs(row["ctr_auc"] - sum(values) / 2) < 1e-9 and abs(row["ctr_auc_std"] - abs(values[0] - values[1]) / 2 ** 0.5) < 1e-9
    taa, fine_tune = summary["TAA"], summary["fine_tune"]
    assert abs(taa["gain_vs_fine_tune"] - (taa["mean_auc"] - fine_tune["mean_auc"])) < 1e-9
    assert taa["z_vs_fine_tune"] != taa["z_vs_fine_tune"]  # NaN: two seeds give no usable std
    assert "| SharedBottom | – | source model as is | 1 |" in table and "| SharedBottom | 10% | TAA | 2 |" in table
    goals = adaptation.goal_rows(runs, adaptation.summary_rows(runs))
    assert len(goals) == 1 and goals[0]["TAA"] == taa["mean_auc"] and goals[0]["fine_tune"] == fine_tune["mean_auc"]
    assert goals[0]["met"] is False  # NaN z (two seeds) never counts as met
    assert "### Goal check" in table and f"| {taa['mean_auc']:.4f} (– / " in table
    for name in ("adaptation.md", "adaptation_runs.csv", "adaptation_summary.csv", "adaptation_auc.png"):
        assert (out / name).stat().st_size > 0
    capsys.readouterr()
    adaptation.main(args)
    assert "running" not in capsys.readouterr().out  # every run kept: nothing trained again


def test_profile_splits_an_epoch_into_parts_with_their_flops(tiny_data_path, tmp_path):
    """Every part that multiplies matrices has FLOPs and a time; the parts' FLOPs add up to those of
    one fused training step; a model with a loss of its own is refused."""
    import pytest
    from torch.utils.flop_counter import FlopCounterMode

    from recbole_mm.bench import profile
    from recbole_mm.bench.speed import seeded_pipeline

    result = profile.main(["--model=ANT", "--dataset=tiny", f"--data_path={tiny_data_path}", "--threads=1",
                           "--max_batches=2", f"--out={tmp_path}", "--hidden_size=16", "--inner_size=16",
                           "--train_batch_size=256"])
    assert result["batches"] == 2 and result["positions"] > 0 and result["matmul_flops_per_second"] > 0
    assert all(result["flops"][p] > 0 and result["seconds"][p] > 0
               for p in ("item table", "sequence encoder", "scores + loss"))
    assert (tmp_path / "profile-ANT-tiny.md").stat().st_size > 0

    pipe = seeded_pipeline("ANT", "tiny", {"data_path": tiny_data_path, "hidden_size": 16, "inner_size": 16,
                                           "train_batch_size": 256, "state": "WARNING"})
    batch = next(iter(pipe.train_data))
    parts = 0
    for step in profile.part_steps(pipe.model, batch).values():
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        parts += counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        pipe.model.calculate_loss(batch).backward()
    assert parts == counter.get_total_flops()

    pmmrec = seeded_pipeline("PMMRec", "tiny", {"data_path": tiny_data_path, "hidden_size": 16, "inner_size": 16,
                                                "state": "WARNING"})
    with pytest.raises(ValueError, match="loss of its own"):
        profile.profile_epoch(pmmrec)


def test_speed_estimates_an_epoch_from_its_first_batches(tiny_data_path):
    """``max_batches``: exactly that many optimiser steps are timed (after one warm-up step), and the
    estimate scales their seconds to the whole epoch's batches."""
    from recbole_mm.bench.speed import FirstBatches, seeded_pipeline, time_epoch

    pipe = seeded_pipeline("ANT", "tiny", {"data_path": tiny_data_path, "hidden_size": 16, "inner_size": 16,
                                           "train_batch_size": 64, "state": "WARNING"})
    total = len(pipe.train_data)
    assert total >= 4
    assert len(FirstBatches(pipe.train_data, 2)) == 2 and len(list(FirstBatches(pipe.train_data, 2))) == 2
    assert len(FirstBatches(pipe.train_data, total + 5)) == total
    steps = []
    pipe.trainer.optimizer.register_step_post_hook(lambda *args: steps.append(1))
    seconds = time_epoch(pipe, 0, max_batches=2)
    assert len(steps) == 1 + 2 and seconds > 0  # warm-up + the timed sample, not the epoch
    steps.clear()
    time_epoch(pipe, 1)
    assert len(steps) == len(pipe.train_data)  # this epoch's batches (packing varies by one with the order)


def test_growth_benchmark_scales_users_and_resumes(tmp_path, capsys):
    """Two scales of the Scientific-shaped synthetic data: twice the users give more training
    batches; stock SASRec's evaluation is timed once (whole-sequence row); every cell is kept, so a
    second call measures nothing again; table, CSV and plot."""
    import pytest

    from recbole_mm.bench import growth

    out = tmp_path / "growth"
    args = ["--scales=1,2", "--base_users=60", "--n_items=80", "--only=0,1", f"--data_path={tmp_path}",
            "--hidden_size=16", "--train_batch_size=64", "--max_batches=2", "--threads=1", f"--out={out}"]
    rows = growth.main(args)
    assert [(r["users"], r["setting"]) for r in rows] == [
        (60, "SASRec (stock RecBole)"), (60, "SASRec + stock_whole_sequence"),
        (120, "SASRec (stock RecBole)"), (120, "SASRec + stock_whole_sequence")]
    assert rows[2]["train_batches"] > rows[0]["train_batches"] and rows[3]["train_batches"] > rows[1]["train_batches"]
    assert all(r["timed_batches"] == min(2, r["train_batches"]) and r["build_seconds"] > 0 for r in rows)
    assert rows[0]["eval_seconds"] is None and rows[1]["eval_seconds"] > 0
    assert (out / "growth.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "growth.md").read_text()
    assert "| 120 | SASRec + stock_whole_sequence |" in table and "| as below |" in table
    assert len((out / "growth.csv").read_text().splitlines()) == 5
    capsys.readouterr()
    again = growth.main(args)
    assert "done before, skipped" in capsys.readouterr().out
    assert [r["train_epoch_seconds"] for r in again] == [r["train_epoch_seconds"] for r in rows]
    with pytest.raises(SystemExit):  # a setting number that does not exist: a one-line usage error
        growth.main(args[:3] + ["--only=7"] + args[4:])


def _mode_result(scores, recall, seconds=1.0, **extra):
    return {"valid_history": [{"epoch": i, "score": s, "result": {}} for i, s in enumerate(scores)],
            "valid_metric_bigger": True, "train_epoch_seconds": [seconds] * len(scores),
            "eval_seconds": [0.0] * len(scores), "test_result": {"recall@10": recall, "ndcg@10": recall / 2},
            "test_rows": 1000, **extra}


def test_auto_replay_reads_a_transfer_folder_and_reports_each_strategy(tmp_path, capsys):
    """A hand-built race: ground-built peaks at epoch 3 of 5; fine-tune starts low and passes it late
    (best at epoch 7 of 8, tied at 8: the later model is kept, as RecBole does); re-learning is flat.
    The guarded race with budget 2.0 lets fine-tune train to its end and win; with budget 0.5 it is
    cut at 2 epochs and ground-built wins; commit after one probe epoch follows the best start."""
    import json

    from recbole_mm.bench import auto_replay

    runs = {"ground_built": _mode_result([0.10, 0.20, 0.30, 0.29, 0.28], 0.20),
            "fine_tune": _mode_result([0.05, 0.10, 0.20, 0.25, 0.30, 0.32, 0.35, 0.35], 0.25),
            "re_learning": _mode_result([0.01, 0.01, 0.01, 0.01], 0.05)}
    for mode, result in runs.items():
        (tmp_path / f"ANT-{mode}-seed7.json").write_text(json.dumps(result))
    (tmp_path / "ANT-fine_tune__fine_tune_freeze_encoder-False-seed7.json").write_text("{}")  # not a candidate
    real = {"adaptation": {"auto": {"strategy": "guarded", "probe_epochs": 2, "budget": 2.0, "winner": "fine_tune",
                                    "candidates": ["ground_built", "fine_tune", "re_learning"]}}}
    (tmp_path / "ANT-auto-seed7.json").write_text(json.dumps(real))
    rows = auto_replay.main([str(tmp_path), "--strategies=guarded:2.0,guarded:0.5,commit:1", "--probe_epochs=2"])
    by = {r["strategy"]: r for r in rows}
    assert len(rows) == 3
    assert by["guarded:2.0"]["choice"] == "fine_tune" and by["guarded:2.0"]["recall@10"] == 0.25
    assert by["guarded:2.0"]["epochs"] == {"ground_built": 5, "fine_tune": 8, "re_learning": 2}
    assert by["guarded:2.0"]["cost"] == (5 + 8 + 2) / 5 and by["guarded:2.0"]["difference_in_se"] == 0.0
    assert by["guarded:2.0"]["real_auto_choice"] == "fine_tune"  # the real run raced the same way
    assert by["guarded:0.5"]["real_auto_choice"] is None  # another budget: not shown beside it
    assert by["guarded:0.5"]["choice"] == "ground_built" and by["guarded:0.5"]["epochs"]["fine_tune"] == 2
    assert by["guarded:0.5"]["difference_in_se"] < -1  # 0.05 below fine-tune's 0.25, SE 0.0137
    assert by["commit:1"]["choice"] == "ground_built" and by["commit:1"]["epochs"] == {
        "ground_built": 5, "fine_tune": 1, "re_learning": 1}
    report = (tmp_path / "auto_replay.md").read_text()
    assert "Within one standard error of the best mode: 1 of 1 known" in report
    assert "(real run: fine-tune)" in report and (tmp_path / "auto_replay.csv").is_file()

    def candidates(**changed):
        return {m: auto_replay.CandidateRun.from_result({**r, **changed.get(m, {})}, m) for m, r in runs.items()}

    # cut at 7 epochs: the tie at epoch 8 is the model the run tested, so the figures are unknown
    cut = auto_replay.replay(candidates(), "guarded", 2, 1.8)
    assert cut["winner"] == "fine_tune" and cut["candidates_run"]["fine_tune"]["epochs"] == 7 and cut["test"] is None
    # a smaller-is-better metric: the same race on negated scores, best scores reported as recorded
    flipped = {m: {"valid_metric_bigger": False, "valid_history": [
        {"epoch": e["epoch"], "score": -e["score"]} for e in r["valid_history"]]} for m, r in runs.items()}
    low = auto_replay.replay(candidates(**flipped), "guarded", 2, 2.0)
    assert low["winner"] == "fine_tune" and low["candidates_run"]["fine_tune"]["best_valid_score"] == -0.35
    # NaN never becomes the best (RecBole's rule): fine-tune's NaN start does not hide its later lead
    nan = {"fine_tune": {"valid_history": [{"epoch": 0, "score": float("nan")}, {"epoch": 1, "score": 0.9}]}}
    assert auto_replay.replay(candidates(**nan), "commit", 2)["winner"] == "fine_tune"
    # a run cut short (neither early-stopped nor at its epoch limit) cannot stand in for a candidate
    for mode, result in runs.items():
        (tmp_path / f"ANT-{mode}-seed8.json").write_text(json.dumps(
            {**result, "stopped_early": mode != "fine_tune", "epochs_limit": 300}))
    rows = auto_replay.main([str(tmp_path), "--strategies=guarded:2.0", "--probe_epochs=2"])
    assert {r["seed"] for r in rows} == {7} and "seed 8: skipped" in capsys.readouterr().out
    # bad input: one line naming the file, key or option and what was expected
    (tmp_path / "ANT-re_learning-seed9.json").write_text(json.dumps({**runs["re_learning"], "test_result": {}}))
    for args, message in (([str(tmp_path), "--strategies=greedy:3"], "guarded:<auto_budget> or commit"),
                          ([str(tmp_path), "--strategies=commit:0"], "auto_probe_epochs"),
                          ([str(tmp_path), "--candidates=ground_built,finetune"], "--candidates"),
                          ([str(tmp_path / "none")], "no such folder")):
        with pytest.raises(SystemExit):
            auto_replay.main(args)
        assert message in capsys.readouterr().err
    # a model and seed with a malformed run are skipped, the file and key named; the others are reported
    for mode in ("ground_built", "fine_tune"):
        (tmp_path / f"ANT-{mode}-seed9.json").write_text(json.dumps(runs[mode]))
    assert {r["seed"] for r in auto_replay.main([str(tmp_path), "--probe_epochs=2"])} == {7}
    out = capsys.readouterr().out
    assert "seed 9: skipped: " in out and "ANT-re_learning-seed9.json: `test_result` needs recall@10" in out
    (tmp_path / "ANT-re_learning-seed9.json").write_text("{not json")
    auto_replay.main([str(tmp_path), "--probe_epochs=2"])
    assert "ANT-re_learning-seed9.json: not a readable JSON" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "ANT-ground_built-seed7.json").write_text(json.dumps(runs["ground_built"]))
    with pytest.raises(SystemExit):  # nothing to report: one line saying what was expected
        auto_replay.main([str(tmp_path / "other")])
    assert "no model and seed with a complete run of every candidate mode" in capsys.readouterr().err


def test_transfer_table_pairs_each_mode_with_ground_built_by_seed(tmp_path):
    from recbole_mm.bench import transfer

    def row(mode, seed, recall, ndcg, error=""):
        return {"model": "ANT", "mode": mode, "seed": seed, "recall@10": recall, "ndcg@10": ndcg,
                "recall@10_se": None, "epochs": 10, "seconds": 1.0, "chosen_mode": None, "error": error}

    rows = [row("ground_built", 1, 0.10, 0.05), row("ground_built", 2, 0.12, 0.06), row("ground_built", 3, 0.11, 0.05),
            row("fine_tune", 1, 0.13, 0.07), row("fine_tune", 2, 0.13, 0.06),
            row("fine_tune", 3, None, None, error="failed"),  # no pair
            row("re_learning", 4, 0.20, 0.10)]  # its seed has no ground-built run
    differences = transfer.paired_differences(rows)
    assert set(differences) == {("ANT", "fine_tune")}
    fine_tune = differences[("ANT", "fine_tune")]
    assert fine_tune["n"] == 2 and fine_tune["recall@10"] == pytest.approx(0.02)  # (+0.03, +0.01)
    assert fine_tune["recall@10_sem"] == pytest.approx(0.01)  # std 0.01414 / sqrt 2
    assert fine_tune["ndcg@10"] == pytest.approx(0.01) and fine_tune["ndcg@10_sem"] == pytest.approx(0.01)
    table = transfer.write_table(rows, str(tmp_path), "T", ["S"])
    assert "| ANT | +0.0200 ± 0.0100 / +0.0100 ± 0.0100 (2 seeds) |" in table
    assert "paired by seed" in (tmp_path / "table.md").read_text()
    # one seed: no spread, and no difference table without any pair
    assert transfer.paired_differences(rows[:1] + rows[3:4])[("ANT", "fine_tune")]["recall@10_sem"] is None
    assert "paired by seed" not in transfer.write_table(rows[:3], str(tmp_path), "T", ["S"])
