"""The command lines as a new user meets them (docs/own_data.md): a data set of their own, or one in
the Scientific layout, runs with two commands and no extra key; ``--help`` lists the plugin's keys;
list keys take ``a,b``; the log names the device really used; RecBole's known FutureWarnings are
hidden; progress bars only on a terminal."""

import io
import json
import os
import re
import shutil
import sys

import pytest

from helpers.preprocess import make_own_dataset, make_text_encoder, make_vision_encoder
from recbole_mm import cli
from recbole_mm.config import MMConfig
from recbole_mm.preprocess import benchmark, own_data
from recbole_mm.preprocess.pipeline import run_pipeline


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return make_text_encoder(str(root / "text")), make_vision_encoder(str(root / "image"))


def _train(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["run_recbole_mm.py"])
    return cli.main(list(args))


def _recbole_future_warnings(recwarn):
    return [w for w in recwarn if issubclass(w.category, FutureWarning) and "recbole" + os.sep in w.filename]


def test_own_data_in_two_commands(encoders, tmp_path, monkeypatch, capsys, recwarn):
    text_encoder, image_encoder = encoders
    make_own_dataset(str(tmp_path / "my_data" / "myshop"))
    monkeypatch.chdir(tmp_path)
    own_data.main(["--src", "my_data/myshop", f"--text_encoder={text_encoder}", f"--image_encoder={image_encoder}"])
    printed = capsys.readouterr().out
    assert "next:    python run_recbole_mm.py --model=ANT --dataset=myshop\n" in printed
    folder = tmp_path / "dataset" / "myshop"
    for suffix in ("train.inter", "valid.inter", "test.inter", "text.npy", "image.npy", "price.npy", "manifest.json"):
        assert (folder / f"myshop.{suffix}").is_file(), suffix

    result = _train(monkeypatch, "--model=ANT", "--dataset=myshop", "--epochs=2")  # --epochs only to be quick
    assert 0 < result["test_result"]["recall@10"] <= result["test_result"]["recall@50"] <= 1
    assert result["device"] == "cpu" and os.path.isfile(result["results_file"])
    with open(result["log_file"]) as f:
        log = re.sub(r"\x1b\[[0-9;]*m", "", f.read())  # without colours
    assert "modalities ['text', 'image', 'price']: the feature files present" in log
    assert "device: cpu" in log and "use_gpu = False" in log
    assert _recbole_future_warnings(recwarn) == []  # the command line hides RecBole's known warnings


def test_scientific_layout_in_two_commands(encoders, tmp_path, monkeypatch, capsys):
    """A pre-split release (<D>.train/valid/test.inter, <D>.text, <D>.item2index) in a folder of
    its own: the features go to dataset/<D>, where the run finds them; no price, no image: the run
    uses the text it finds."""
    raw = make_own_dataset(str(tmp_path / "raw"), name="sci", images=False, prices=False)
    run_pipeline(overrides={**own_data.folder_settings(raw, "sci"), "steps": ["atomic"],
                            "output_dir": str(tmp_path / "release")})
    release = tmp_path / "release" / "sci"
    for name in os.listdir(release):  # keep exactly the Scientific layout
        if name.split(".", 1)[1] not in ("train.inter", "valid.inter", "test.inter", "text", "item2index"):
            path = release / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    monkeypatch.chdir(tmp_path)
    benchmark.main(["--src", "release/sci", "--text_encoder", encoders[0]])
    assert "next: python run_recbole_mm.py --model=ANT --dataset=sci --data_path=release\n" in capsys.readouterr().out
    assert (tmp_path / "dataset" / "sci" / "sci.text.npy").is_file()
    result = _train(monkeypatch, "--model=ANT", "--dataset=sci", "--data_path=release", "--epochs=1")
    with open(result["results_file"]) as f:
        assert json.load(f)["test_result"] == result["test_result"]
    with open(result["log_file"]) as f:
        assert "modalities ['text']: the feature files present" in f.read()


def test_help_lists_the_plugin_keys_with_defaults_and_comments():
    text = cli.build_parser(["--model=ANT_e", "--dataset=Scientific"]).format_help()
    assert "plugin keys, every run (properties/overall.yaml):" in text
    assert "--modalities=[text, image, price]  (list) modalities a multi-modal model uses" in text
    assert "--show_progress=~  (bool) tqdm bars" in text
    assert "model keys of ANT (properties/model/ANT.yaml):" in text and "--fusion_beta=" in text
    assert "data set keys of Scientific (properties/dataset/Scientific.yaml):" in text
    stock = cli.build_parser(["--model=SASRec"]).format_help()
    assert "RecBole's model keys of SASRec (recbole/properties/model/SASRec.yaml):" in stock
    assert "--hidden_size=64  (int) The number of features in the hidden state." in stock


@pytest.mark.parametrize("value,expected", [
    ("text,image", ["text", "image"]), ("[text]", ["text"]), ("['text', 'image']", ["text", "image"]),
    ("text", "text"), ("[text, image]", ["text", "image"]),
])
def test_list_keys_on_the_command_line(tiny_config, monkeypatch, value, expected):
    monkeypatch.setattr(sys, "argv", ["run_recbole_mm.py", f"--modalities={value}", "--topk=10,20"])
    config = MMConfig("ANT", "tiny", config_dict=tiny_config(modalities=None), read_command_line=True)
    assert config["modalities"] == expected and config["topk"] == [10, 20]


def test_device_and_progress_defaults(tiny_config, monkeypatch):
    config = MMConfig("ANT", "tiny", config_dict={k: v for k, v in tiny_config().items() if k != "show_progress"})
    assert config["use_gpu"] is False and config["device"].type == "cpu"  # no GPU: RecBole's True corrected
    assert config["show_progress"] is False  # output is not a terminal under pytest

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    config = MMConfig("ANT", "tiny", config_dict={k: v for k, v in tiny_config().items() if k != "show_progress"})
    assert config["show_progress"] is True
    assert MMConfig("ANT", "tiny", config_dict=tiny_config(show_progress=False))["show_progress"] is False
    assert MMConfig("ANT", "Scientific").given("modalities")  # set by properties/dataset/Scientific.yaml
