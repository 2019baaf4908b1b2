"""python -m recbole_mm.bench.hyper: RecBole's HyperTuning through the plugin's runner, for a plugin
model and a stock baseline alike; every trial is a run with its results JSON, gathered by the
report table."""

import json
import os

import pytest

pytest.importorskip("hyperopt")

from recbole_mm.bench import hyper  # noqa: E402


def test_exhaustive_search_of_a_plugin_model_and_random_search_of_a_stock_one(tiny_config, tmp_path):
    params = tmp_path / "ant.hyper"
    params.write_text("learning_rate choice [0.001,0.003]\nhidden_size choice [32]\n")
    fixed = [f"--{key}={value}" for key, value in tiny_config(epochs=1).items() if key != "modalities"]
    out = tmp_path / "ant"
    best = hyper.main(["--model=ANT", "--dataset=tiny", f"--params_file={params}", f"--out={out}"] + fixed)
    assert best["trials"] == 2 and best["best_params"]["hidden_size"] == 32
    assert best["best_params"]["learning_rate"] in (0.001, 0.003)
    trials = [json.load(open(out / "trials" / name)) for name in sorted(os.listdir(out / "trials"))]
    assert sorted(t["settings"]["learning_rate"] for t in trials) == [0.001, 0.003]
    assert best["best_valid_score"] == max(t["best_valid_score"] for t in trials)
    assert "Valid result:" in (out / "hyper.result").read_text()  # RecBole's export
    table = (out / "report.md").read_text()
    assert table.startswith("2 runs under") and "| learning_rate |" in table and "hidden_size |" not in table

    stock = hyper.tune("SASRec", "tiny", params_dict={"choice": {"learning_rate": [0.001, 0.002]}},
                       overrides=tiny_config(epochs=1), algo="random", max_evals=1, out=str(tmp_path / "sasrec"))
    assert stock["trials"] == 1 and 0 <= stock["test_result"]["recall@10"] <= 1
    assert hyper._plain_params({"hidden_size": 128.0, "learning_rate": 0.5}) == {"hidden_size": 128,
                                                                                 "learning_rate": 0.5}  # quniform
    with pytest.raises(FileNotFoundError, match="--params_file nowhere.hyper not found"):
        hyper.tune("ANT", "tiny", params_file="nowhere.hyper")


def test_search_grid_every_combination_in_file_order(tmp_path):
    params = tmp_path / "p.hyper"
    params.write_text("learning_rate choice [0.001, 0.0005]\nhidden_size quniform 64,128,64\n\nfusion_beta choice ['a']\n")
    assert hyper.search_grid(str(params)) == [
        {"learning_rate": 0.001, "hidden_size": 64.0, "fusion_beta": "a"},
        {"learning_rate": 0.001, "hidden_size": 128.0, "fusion_beta": "a"},
        {"learning_rate": 0.0005, "hidden_size": 64.0, "fusion_beta": "a"},
        {"learning_rate": 0.0005, "hidden_size": 128.0, "fusion_beta": "a"}]
    with pytest.raises(ValueError, match="learning_rate is loguniform: use choice / quniform, or --algo=random"):
        hyper.search_grid(params_dict={"loguniform": {"learning_rate": [-8, 0]}})
    params.write_text("learning_rate choice [0.001,\n")
    with pytest.raises(ValueError, match=r"p.hyper, line 1: cannot read the values"):
        hyper.search_grid(str(params))
