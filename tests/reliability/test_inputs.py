"""Malformed inputs are refused by name before any training (issue 15, part 5): atomic files with a
missing, renamed or untyped column, empty or header-only files, bytes that are not UTF-8, config
values of the wrong type, YAML files that are no mapping, ``--nproc`` below 1, a validation label
with one class. The command line prints one ``error: ...`` line and exits with status 2 (a
traceback only with ``--debug`` or ``--state=DEBUG``); settings a stage ignores are warned about."""

import logging
import os
import shutil
import sys

import pandas as pd
import pytest

from recbole_mm import cli
from recbole_mm.config import MMConfig
from recbole_mm.data.synthetic import SyntheticSpec, write_dataset
from recbole_mm.data.synthetic_countries import CountrySpec, write_synthetic_countries

SMALL_SASREC = ["--model=SASRec", "--epochs=1", "--hidden_size=8", "--inner_size=8", "--n_layers=1", "--n_heads=1",
                "--train_batch_size=256", "--eval_batch_size=256", "--topk=5,10", "--state=WARNING",
                "--show_progress=False", "--log_tensorboard=False"]
SMALL_MMOE = ["--model=MMoE", "--epochs=1", "--embedding_size=4", "--bottom_dims=[8]", "--tower_dims=[4]",
              "--n_experts=2", "--state=WARNING", "--show_progress=False", "--log_tensorboard=False"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A small sequential data set ``seq`` and a small AliExpress-format country ``ae``."""
    root = tmp_path_factory.mktemp("sources")
    write_dataset(SyntheticSpec(name="seq", n_users=80, n_items=30, n_categories=3, seed=2), str(root))
    write_synthetic_countries(str(root), [CountrySpec("ae", seed=4, n_train=400, n_test=100)])
    return root


def _copy(sources, tmp_path, source: str, name: str) -> str:
    """The data set ``source`` copied as ``<tmp_path>/<name>/<name>.*``; returns the folder."""
    folder = tmp_path / name
    folder.mkdir()
    for file_name in os.listdir(sources / source):
        if file_name.endswith(".csv"):
            continue
        shutil.copy(sources / source / file_name, folder / file_name.replace(source, name, 1))
    return str(folder)


def _cli_error(monkeypatch, capsys, tmp_path, *args) -> str:
    """Run the command line; it must exit with status 2 after printing exactly one `error:` line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_recbole_mm.py"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _edit_lines(path: str, edit) -> None:
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    with open(path, "wb") as f:
        f.write(b"\n".join(edit(lines)))


def _drop_column(lines, index):
    return [b"\t".join(c for i, c in enumerate(line.split(b"\t")) if i != index) if line else line for line in lines]


SEQ_CASES = {
    # name: (file part, edit of its lines, what the message must name)
    "no_target": ("train", lambda lines: _drop_column(lines, 2), ["no_target.train.inter", "'item_id'"]),
    "renamed_key": ("train", lambda lines: [lines[0].replace(b"\titem_id:token", b"\tproduct:token")] + lines[1:],
                    ["renamed_key.train.inter", "'item_id'", "product:token"]),
    "untyped": ("valid", lambda lines: [b"user_id\titem_id_list\titem_id"] + lines[1:],
                ["untyped.valid.inter", "line 1, column 1 'user_id'", "name:type"]),
    "unknown_type": ("valid", lambda lines: [lines[0].replace(b":token_seq", b":list")] + lines[1:],
                     ["unknown_type.valid.inter", "unknown type 'list'"]),
    "empty": ("valid", lambda lines: [], ["empty.valid.inter", "the file is empty"]),
    "header_only": ("test", lambda lines: lines[:1] + [b""], ["header_only.test.inter", "no rows after the header"]),
    "latin1": ("train", lambda lines: lines[:40] + [b"u9\tit00001 caf\xe9\tit00002"] + lines[40:],
               ["latin1.train.inter", "line 41", "not utf-8"]),
}


@pytest.mark.parametrize("case", sorted(SEQ_CASES))
def test_malformed_atomic_file_is_refused_by_name(case, sources, tmp_path, monkeypatch, capsys):
    part, edit, named = SEQ_CASES[case]
    folder = _copy(sources, tmp_path, "seq", case)
    _edit_lines(os.path.join(folder, f"{case}.{part}.inter"), edit)
    line = _cli_error(monkeypatch, capsys, tmp_path, *SMALL_SASREC, f"--dataset={case}", f"--data_path={tmp_path}")
    for text in named:
        assert text in line, line
    assert not os.path.isdir(tmp_path / "saved")  # refused before any training


def _edit_frame(path: str, edit) -> None:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(path, sep="\t", index=False)


def _set(column, row, value):
    def edit(frame):
        frame.loc[row, column] = value
    return edit


AE_CASES = {
    "missing_column": ("train", lambda f: f.drop(columns=["numerical_5:float"], inplace=True),
                       ["missing_column.train.inter", "'numerical_5'", "AliExpress layout"]),
    "token_code": ("train", lambda f: f.rename(columns={"categorical_1:float": "categorical_1:token"}, inplace=True),
                   ["token_code.train.inter", "'categorical_1' is declared 'token'", "expected 'float'"]),
    "not_a_number": ("train", _set("numerical_9:float", 7, "abc"),
                     ["not_a_number.train.inter", "line 9, column 'numerical_9'", "'abc'"]),
    "infinite_code": ("train", _set("categorical_2:float", 3, "inf"),
                      ["infinite_code.train.inter", "(line 5), column 'categorical_2'", "non-negative integer"]),
    "nan_label": ("test", _set("click:float", 5, "nan"), ["nan_label.test.inter", "(line 7), column 'click'", "0 or 1"]),
    "one_class": ("valid", lambda f: f.__setitem__("conversion:float", "0"),
                  ["one_class.valid.inter", "every row has conversion = 0", "ctcvr_auc", "undefined"]),
}


@pytest.mark.parametrize("case", sorted(AE_CASES))
def test_malformed_multitask_file_is_refused_by_name(case, sources, tmp_path, monkeypatch, capsys):
    part, edit, named = AE_CASES[case]
    folder = _copy(sources, tmp_path, "ae", case)
    _edit_frame(os.path.join(folder, f"{case}.{part}.inter"), edit)
    line = _cli_error(monkeypatch, capsys, tmp_path, *SMALL_MMOE, f"--dataset={case}", f"--data_path={tmp_path}",
                      f"--checkpoint_dir={tmp_path / 'saved'}")
    for text in named:
        assert text in line, line
    assert not os.path.isdir(tmp_path / "saved")


def _write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


CONFIG_CASES = {
    "epochs_on_command_line": (["--epochs=abc"], ["config key `epochs`", "--epochs on the command line",
                                                  "expected an integer", "'abc'"]),
    "float_on_command_line": (["--train_batch_size=1.5"], ["`train_batch_size`", "expected an integer", "1.5"]),
    "bool_on_command_line": (["--show_progress=maybe"], ["`show_progress`", "True or False", "'maybe'"]),
    "epochs_in_yaml": (["--config_files={dir}/epochs.yaml"], ["config key `epochs`", "epochs.yaml", "'abc'"]),
    "rate_in_yaml": (["--config_files={dir}/rate.yaml"], ["`learning_rate`", "rate.yaml", "expected a number"]),
    "yaml_list": (["--config_files={dir}/list.yaml"], ["list.yaml", "must be a mapping", "got a list"]),
    "yaml_text": (["--config_files={dir}/text.yaml"], ["text.yaml", "must be a mapping", "got a str"]),
    "yaml_syntax": (["--config_files={dir}/broken.yaml"], ["broken.yaml, line 2", "not valid YAML"]),
    "yaml_latin1": (["--config_files={dir}/latin1.yaml"], ["latin1.yaml, line 2", "not UTF-8"]),
    "nproc_zero": (["--nproc=0"], ["--nproc must be at least 1", "got 0"]),
    "nproc_negative": (["--nproc=-2"], ["--nproc must be at least 1", "got -2"]),
}


@pytest.fixture
def config_files(tmp_path):
    _write(tmp_path / "epochs.yaml", "epochs: abc\n")
    _write(tmp_path / "rate.yaml", "learning_rate: fast\n")
    _write(tmp_path / "list.yaml", "- epochs: 1\n- seed: 2\n")
    _write(tmp_path / "text.yaml", "epochs 3\n")
    _write(tmp_path / "broken.yaml", "seed: 1\nepochs: [1\n")
    (tmp_path / "latin1.yaml").write_bytes(b"seed: 1\n# caf\xe9\n")
    return tmp_path


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_is_refused_by_name(case, sources, config_files, tmp_path, monkeypatch, capsys):
    args, named = CONFIG_CASES[case]
    args = [a.format(dir=config_files) for a in args]
    given = {a.split("=")[0] for a in args} | ({"--epochs"} if case == "epochs_in_yaml" else set())
    base = [a for a in SMALL_SASREC if a.split("=")[0] not in given]
    line = _cli_error(monkeypatch, capsys, tmp_path, *base, *args, "--dataset=seq", f"--data_path={sources}")
    for text in named:
        assert text in line, line


@pytest.mark.parametrize("debug", [["--debug"], ["--state=DEBUG"]])
def test_debug_shows_the_traceback(debug, sources, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_recbole_mm.py"])
    args = [a for a in SMALL_SASREC if a not in ("--epochs=1", "--state=WARNING")] + debug
    with pytest.raises(ValueError, match="config key `epochs`.*expected an integer"):
        cli.main(args + ["--epochs=abc", "--dataset=seq", f"--data_path={sources}"])


IGNORED_CASES = {
    "pretrain_key_in_train_run": ("tiny", {"pretrain_image_text_weight": 0.01},
                                  "`pretrain_image_text_weight` is ignored with stage train"),
    "adaptation_in_pretrain_run": ("A,B", {"stage": "pretrain", "adaptation": "fine_tune"},
                                   "`adaptation` is ignored with stage pretrain"),
    "checkpoint_in_pretrain_run": ("A,B", {"stage": "pretrain", "pretrained_checkpoint": "x.pth"},
                                   "`pretrained_checkpoint` is ignored with stage pretrain"),
    "fine_tune_key_ground_built": ("tiny", {"fine_tune_freeze_encoder": False},
                                   "`fine_tune_freeze_encoder` is ignored with adaptation ground_built"),
    "auto_key_fine_tune": ("tiny", {"adaptation": "fine_tune", "auto_budget": 3.0},
                           "`auto_budget` is ignored with adaptation fine_tune: it applies to adaptation auto"),
}


@pytest.mark.parametrize("case", sorted(IGNORED_CASES))
def test_settings_a_stage_ignores_are_warned(case):
    dataset, settings, warning = IGNORED_CASES[case]
    assert any(warning in line for line in MMConfig("ANT", dataset, config_dict=settings).ignored_settings)


def test_settings_a_stage_reads_are_not_warned():
    settings = {"adaptation": "auto", "auto_candidates": ["ground_built", "fine_tune"], "auto_budget": 3.0,
                "fine_tune_freeze_encoder": False, "pretrained_checkpoint": "x.pth"}
    assert MMConfig("ANT", "tiny", config_dict=settings).ignored_settings == []
    assert MMConfig("ANT", "A,B", config_dict={"stage": "pretrain", "item_drop_ratio": 0.1,
                                               "pretrain_image_text_weight": 0.1}).ignored_settings == []


def test_ignored_settings_are_logged_by_a_run(sources, tmp_path, monkeypatch, caplog):
    """The warning reaches the run's log (the run itself is refused later, by its bad data)."""
    folder = _copy(sources, tmp_path, "seq", "noitem")
    _edit_lines(os.path.join(folder, "noitem.train.inter"), lambda lines: _drop_column(lines, 2))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_recbole_mm.py"])
    caplog.set_level(logging.WARNING)
    with pytest.raises(SystemExit):
        cli.main(SMALL_SASREC + ["--dataset=noitem", f"--data_path={tmp_path}", "--fine_tune_freeze_encoder=False"])
    assert "config key `fine_tune_freeze_encoder` is ignored with adaptation ground_built" in caplog.text


def test_empty_yaml_file_is_an_empty_mapping(tmp_path):
    """RecBole's own reading fails on an empty YAML file (``dict.update(None)``)."""
    config = MMConfig("SASRec", "seq", config_file_list=[_write(tmp_path / "empty.yaml", "# nothing yet\n")])
    assert config.file_contents == {str(tmp_path / "empty.yaml"): {}}
