"""Trust in the files a run reads and writes (issue 15): checkpoints are read with
``torch.load(weights_only=True)`` and refused in one line naming them when they hold a pickle
payload or are truncated, empty or random; every format the plugin writes loads that way; a
truncated lmdb image store is refused naming ``--force``; a full disk names the path and the free
space and leaves no partial file."""

import errno
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_MODEL
from recbole_mm import cli
from recbole_mm.checkpoint import load_checkpoint, rng_states, set_rng_states
from recbole_mm.data.aliexpress import convert_csv
from recbole_mm.data.features import write_feature_file
from recbole_mm.data.lmdb_store import ImageStore, build_image_lmdb
from recbole_mm.fileio import atomic_folder, write_json_atomic
from recbole_mm.data.synthetic_countries import CountrySpec, write_country_csvs
from recbole_mm.runner import run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FREE_SPACE = r"\(\d+(\.\d)? (bytes|KiB|MiB|GiB|TiB) free in "


class _Payload:
    """Unpickling it runs ``open(marker, "w")``: the marker file shows that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _write_payload_checkpoint(path, marker) -> str:
    torch.save({"format": "recbole_mm.transferable/1", "config": {"model": "ANT"}, "state_dict": {},
                "payload": _Payload(str(marker))}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def data_path(tiny_data_path):
    """The conftest's ``tiny`` data set, and two small countries (SRC, TGT) for the multi-task models."""
    for spec in (CountrySpec("SRC", seed=5, n_train=400, n_test=100),
                 CountrySpec("TGT", seed=6, n_train=400, n_test=100)):
        folder = os.path.join(tiny_data_path, spec.name)
        if not os.path.isdir(folder):
            csvs = write_country_csvs(spec, folder)
            convert_csv(csvs["train"], csvs["test"], folder, spec.name)
    return tiny_data_path


def _cli_args(key: str, path: str, data_path: str, tmp_path) -> list:
    """Command lines that pass ``path`` as ``--<key>`` to the run that reads it (``--debug``: the
    error itself is raised, not printed as one line)."""
    common = ["--debug", f"--data_path={data_path}", f"--checkpoint_dir={tmp_path / 'saved'}", "--show_progress=False",
              "--state=WARNING", "--epochs=1", f"--{key.split('(')[0]}={path}"]
    if key == "pretrained_checkpoint":
        return ["--model=ANT", "--dataset=tiny", "--adaptation=fine_tune"] + common
    if key == "resume_from":
        return ["--model=ANT", "--dataset=tiny"] + common
    if key == "resume_from(pretrain)":
        return ["--model=ANT", "--dataset=tiny", "--stage=pretrain"] + common
    if key == "init_checkpoint":
        return ["--model=MMoE", "--dataset=TGT"] + common
    if key == "source_checkpoint":
        return ["--model=TAA", "--dataset=TGT", "--source_dataset=SRC", "--backbone=MMoE"] + common
    if key == "pre_model_path":  # stock S3Rec's fine-tuning stage reads it with a bare torch.load
        settings = tmp_path / "s3rec.yaml"
        settings.write_text(json.dumps({"load_col": {"inter": ["user_id", "item_id_list", "item_id"],
                                                     "item": ["item_id", "category"]}, "item_attribute": "category"}))
        return ["--model=S3Rec", "--dataset=tiny", "--train_stage=finetune", f"--config_files={settings}"] + common
    raise KeyError(key)


KEYS = ["pretrained_checkpoint", "resume_from", "resume_from(pretrain)", "init_checkpoint", "source_checkpoint",
        "pre_model_path"]


def _one_line_naming(message: str, key: str, path: str) -> None:
    assert "\n" not in message and path in message, message
    assert f"config key `{key.split('(')[0]}`" in message, message


def _refused(key, path, data_path, tmp_path) -> str:
    with pytest.raises(ValueError) as info:
        cli.main(_cli_args(key, path, data_path, tmp_path))
    _one_line_naming(str(info.value), key, path)
    return str(info.value)


@pytest.mark.parametrize("key", KEYS)
def test_pickle_payload_is_refused_by_name_and_never_runs(key, data_path, tmp_path):
    marker = tmp_path / "payload-ran"
    path = _write_payload_checkpoint(tmp_path / "payload.pth", marker)
    with pytest.raises(Exception) as info:
        cli.main(_cli_args(key, path, data_path, tmp_path))
    assert not marker.exists(), f"the pickle payload ran ({type(info.value).__name__}: {info.value})"
    assert isinstance(info.value, ValueError), info.value
    _one_line_naming(str(info.value), key, path)
    assert "Python object" in str(info.value) and "nothing in it was run" in str(info.value), info.value


def _damaged_file(kind: str, tmp_path) -> str:
    path = tmp_path / f"{kind}.pth"
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, str(good))
    data = good.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the tensor's bytes: torch.load alone would not notice
    payload = {"truncated": data[: len(data) // 2], "empty": b"", "flipped byte": bytes(flipped),
               "random": np.random.default_rng(0).bytes(len(data))}[kind]
    path.write_bytes(payload)
    return str(path)


@pytest.mark.parametrize("key", ["pretrained_checkpoint", "resume_from", "init_checkpoint"])
@pytest.mark.parametrize("kind", ["truncated", "empty", "random", "flipped byte"])
def test_damaged_checkpoint_is_refused_by_name_before_any_data_loads(kind, key, tiny_data_path, tmp_path,
                                                                      monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the checkpoint was checked")

    monkeypatch.setattr("recbole_mm.runner.create_dataset", no_data)
    message = _refused(key, _damaged_file(kind, tmp_path), tiny_data_path, tmp_path)
    assert ("empty (0 bytes)" if kind == "empty" else "truncated, corrupt") in message, message


@pytest.fixture(scope="module")
def written_files(tiny_data_path, tmp_path_factory):
    """Every checkpoint format the plugin writes: best model and resume state of a training run,
    transferable checkpoint and resume state of a pre-training run."""
    base = dict(TINY_MODEL, data_path=tiny_data_path, checkpoint_dir=str(tmp_path_factory.mktemp("saved")),
                modalities=["text", "image", "price"], seed=7, epochs=1)
    trained = run("ANT", "tiny", config_dict=base)
    pretrained = run("ANT", "tiny", config_dict=dict(base, stage="pretrain"))
    return {"best model": trained["checkpoint"],
            "training state": os.path.splitext(trained["checkpoint"])[0] + "-last.pth",
            "transferable": pretrained["checkpoint"], "pre-training state": pretrained["resume_state"]}


@pytest.mark.parametrize("name", ["best model", "training state", "transferable", "pre-training state"])
def test_every_written_format_loads_with_weights_only(name, written_files):
    loaded = torch.load(written_files[name], weights_only=True)
    assert isinstance(loaded["state_dict"], dict) and loaded["state_dict"]
    if name in ("best model", "training state"):
        assert loaded["config"]["model"] == "ANT" and isinstance(loaded["best_valid_score"], float)
    if name == "training state":
        assert all(type(v) is float for v in loaded["best_valid_result"].values())
    if name == "transferable":
        assert loaded["metadata"]["model"] == "ANT" and loaded["metadata"]["epochs"] == 1


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    path = str(tmp_path / "rng.pth")
    torch.save(rng_states(), path)
    expected = (np.random.rand(3), torch.rand(3))
    set_rng_states(torch.load(path, weights_only=True))
    np.testing.assert_array_equal(np.random.rand(3), expected[0])
    assert torch.equal(torch.rand(3), expected[1])


# ----- lmdb image store -------------------------------------------------------------------------------
@pytest.fixture
def image_store(tmp_path) -> str:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"A{i}.png")
    store = str(tmp_path / "tiny.images.lmdb")
    build_image_lmdb(str(images), {f"A{i}": str(i + 1) for i in range(12)}, store, show_progress=False)
    return store


def test_truncated_image_store_is_refused_naming_it_and_force_not_a_bus_error(image_store):
    data_file = os.path.join(image_store, "data.mdb")
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    code = f"from recbole_mm.data.lmdb_store import ImageStore\nImageStore({image_store!r}).counts()"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])  # -7: killed by SIGBUS
    last = done.stderr.strip().splitlines()[-1]
    assert f"image store {image_store} is truncated" in last and "--force" in last, last


@pytest.mark.parametrize("damage", ["empty", "random header", "random pages"])
def test_corrupt_image_store_is_refused_naming_it_and_force(damage, image_store):
    data_file = os.path.join(image_store, "data.mdb")
    data = open(data_file, "rb").read()
    noise = np.random.default_rng(1).bytes(len(data))
    damaged = {"empty": b"", "random header": noise, "random pages": data[:8192] + noise[8192:]}[damage]
    with open(data_file, "wb") as f:
        f.write(damaged)
    with pytest.raises(ValueError, match="--force") as info:
        with ImageStore(image_store) as store:
            store.counts()
    assert f"image store {image_store} is" in str(info.value) and "\n" not in str(info.value)


# ----- full disk --------------------------------------------------------------------------------------
def _disk_full(*args, **kwargs):
    """Writes a little, then fails as a full disk does."""
    target = next((a for a in list(args) + list(kwargs.values()) if hasattr(a, "write")), None)
    if target is not None:  # torch.save(obj, f), json.dump(obj, f), np.save(f, array)
        target.write(b"partial" if "b" in getattr(target, "mode", "b") else "partial")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _assert_disk_full_message(err, path):
    message = str(err)
    assert "\n" not in message and str(path) in message, message
    assert re.search(FREE_SPACE, message), message


def _no_partial_files(folder) -> list:
    return [name for name in os.listdir(folder) if name.startswith(".tmp-")]


def test_full_disk_while_saving_a_checkpoint_names_it_and_leaves_nothing(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _disk_full)
    with pytest.raises(OSError) as info:
        run("ANT", "tiny", config_dict=tiny_config(epochs=1))
    saved = tmp_path / "saved"
    _assert_disk_full_message(info.value, saved)
    assert info.value.errno == errno.ENOSPC and os.listdir(saved) == []  # no partial or temporary file


@pytest.mark.parametrize("what", ["results JSON", "feature file", "folder (lmdb store)"])
def test_full_disk_while_writing_names_the_path_and_keeps_the_old_file(what, tmp_path, monkeypatch):
    if what == "results JSON":
        path = tmp_path / "run.json"
        path.write_text("old")
        monkeypatch.setattr(json, "dump", _disk_full)
        write = lambda: write_json_atomic(str(path), {"a": 1})  # noqa: E731
    elif what == "feature file":
        path = tmp_path / "D.text.npy"
        path.write_text("old")
        monkeypatch.setattr(np, "save", _disk_full)
        write = lambda: write_feature_file(str(tmp_path / "D.text"), ["a", "b"], np.ones((2, 3)))  # noqa: E731
    else:
        path = tmp_path / "D.images.lmdb"
        path.mkdir()
        (path / "data.mdb").write_text("old")

        def write():
            with atomic_folder(str(path)) as tmp:
                open(os.path.join(tmp, "data.mdb"), "w").write("partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError) as info:
        write()
    _assert_disk_full_message(info.value, path)
    assert _no_partial_files(tmp_path) == []
    assert (path / "data.mdb" if path.is_dir() else path).read_text() == "old"


class _OldConfig:
    """Stands for the RecBole Config that earlier recbole-mm versions pickled into checkpoints."""

    def __init__(self):
        self.final_config_dict = {"model": "ANT", "hidden_size": 8, "eval_args": {"order": "TO"}}


def test_checkpoint_of_an_earlier_version_is_refused_with_the_remedy(tmp_path):
    """A file of an earlier version (pickled Config, protocol 4, numpy values) is refused in one line
    that names the remedy; nothing in it is unpickled."""
    old = str(tmp_path / "old.pth")
    weights = torch.randn(3, 2)
    torch.save({"config": _OldConfig(), "state_dict": {"w": weights}, "metadata": {"loss": np.float64(6.5),
                "ids": np.arange(3)}}, old, pickle_protocol=4)
    with pytest.raises(ValueError, match=r"refused: .*rerun the run that wrote it") as refused:
        load_checkpoint(old)
    assert "\n" not in str(refused.value)


def test_without_debug_a_refused_checkpoint_is_one_error_line_and_exit_status_2(data_path, tmp_path, capsys):
    path = _write_payload_checkpoint(tmp_path / "payload.pth", tmp_path / "payload-ran")
    argv = [a for a in _cli_args("pretrained_checkpoint", path, data_path, tmp_path) if a != "--debug"]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exited.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: config key `pretrained_checkpoint`")
    assert path in lines[0] and not (tmp_path / "payload-ran").exists()
