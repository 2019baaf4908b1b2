"""Runs that can be trusted (issue 15): runs never share or overwrite each other's files, a resume
continues only the run it belongs to, first-use data generation is safe when runs start at once,
and a run killed and resumed ends exactly as an uninterrupted one."""

import glob
import multiprocessing
import os
import time

import pytest
import recbole.trainer.trainer as recbole_trainer
import recbole.utils.logger as recbole_logger
import torch

import recbole_mm.runner as runner
from helpers import TINY_MODEL
from recbole_mm.checkpoint import load_checkpoint
from recbole_mm.config import MMConfig
from recbole_mm.data.synthetic import SyntheticSpec, write_dataset
from recbole_mm.data.synthetic_countries import SYNTHETIC_COUNTRIES
from recbole_mm.data.utils import create_dataset, ensure_embedded_datasets
from recbole_mm.fileio import release_lock, try_lock
from recbole_mm.runner import build_pipeline, run
from recbole_mm.trainer.trainer import EpochTimerMixin, RunRecordMixin

SAME_SECOND = "Jan-01-2030_00-00-00"


@pytest.fixture(scope="module")
def make_config(tiny_data_path, tmp_path_factory):
    """Config dicts of tiny runs (dropout on: TINY_MODEL) writing into one checkpoint folder."""
    write_dataset(SyntheticSpec(name="tiny_b", n_users=300, n_items=150, n_categories=8, seed=12), tiny_data_path)
    saved = str(tmp_path_factory.mktemp("saved"))

    def make(**overrides):
        return {**TINY_MODEL, "data_path": tiny_data_path, "checkpoint_dir": saved, "modalities": ["text", "image", "price"],
                "epochs": 2, "seed": 7, "log_tensorboard": False, **overrides}

    return make


def _stamps(folder):
    return {path: os.stat(path).st_mtime_ns for path in glob.glob(os.path.join(folder, "*"))}


# ----- runs never share files ------------------------------------------------------------------
def test_runs_started_in_the_same_second_keep_their_own_files_and_scores(make_config, monkeypatch):
    for module in (recbole_trainer, recbole_logger, runner):  # every clock that names a file says one second
        monkeypatch.setattr(module, "get_local_time", lambda: SAME_SECOND)
    configs = [make_config(epochs=1, seed=seed) for seed in (1, 2)]
    first, second = [run("ANT", "tiny", config_dict=config) for config in configs]
    for key in ("checkpoint", "results_file", "log_file"):
        assert first[key] != second[key] and os.path.isfile(first[key]) and os.path.isfile(second[key]), key
    states = [result["checkpoint"].replace(".pth", "-last.pth") for result in (first, second)]
    assert states[0] != states[1] and all(os.path.isfile(state) for state in states)
    pipe = build_pipeline(MMConfig("ANT", "tiny", config_dict=configs[0]))
    for result in (first, second):  # each reports the test score of the model it trained
        score = pipe.trainer.evaluate(pipe.test_data, model_file=result["checkpoint"])
        assert {k: float(v) for k, v in score.items()} == result["test_result"]
    assert first["run_id"] != second["run_id"]
    assert all(result["run_id"] in result["checkpoint"] and result["run_id"] in result["results_file"]
               for result in (first, second))


def test_a_test_score_comes_only_from_the_model_the_run_trained(make_config, monkeypatch):
    """Another process rewrites the run's best-model file before the test: no score is reported."""
    original = EpochTimerMixin.evaluate

    def overwritten_before_the_test(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:  # the test evaluation (validation does not load the best model)
            torch.save(load_checkpoint(self.saved_model_file), self.saved_model_file + ".other")
            os.replace(self.saved_model_file + ".other", self.saved_model_file)
        return original(self, eval_data, load_best_model, model_file, show_progress)

    monkeypatch.setattr(EpochTimerMixin, "evaluate", overwritten_before_the_test)
    with pytest.raises(ValueError, match=r"was rewritten by another process after run \w{6} saved its best model"):
        run("ANT", "tiny", config_dict=make_config(epochs=1))


# ----- a resume continues only its own run -----------------------------------------------------
@pytest.fixture(scope="module")
def interrupted(make_config):
    """A finished 2-epoch run and its resume state."""
    result = run("ANT", "tiny", config_dict=make_config(epochs=2))
    return result, result["checkpoint"].replace(".pth", "-last.pth")


@pytest.mark.parametrize("model,dataset,overrides,message", [
    ("ANT", "tiny_b", {}, "config key `dataset` is 'tiny' in the resume file, 'tiny_b' in this run"),
    ("ANT_e", "tiny", {}, "config key `model` is 'ANT' in the resume file, 'ANT_e' in this run"),
    ("ANT", "tiny", {"hidden_size": 48, "inner_size": 48},
     "config key `hidden_size` is 32 in the resume file, 48 in this run (it shapes the model's parameters)"),
    ("ANT", "tiny", {"learning_rate": 0.01},
     "config key `learning_rate` is 0.001 in the resume file, 0.01 in this run (the state's optimiser would"),
    ("ANT", "tiny", {"seed": 8}, "config key `seed` is 7 in the resume file, 8 in this run"),
], ids=["data_set", "model", "architecture", "overridden_learning_rate", "overridden_seed"])
def test_resume_refuses_another_runs_state(interrupted, make_config, model, dataset, overrides, message):
    result, state = interrupted
    before = _stamps(os.path.dirname(state))
    with pytest.raises(ValueError) as info:
        run(model, dataset, config_dict=make_config(epochs=3, resume_from=state, **overrides))
    text = str(info.value)
    assert message in text and f"cannot resume training from {state}" in text and "\n" not in text, text
    assert _stamps(os.path.dirname(state)) == before  # nothing of that run (or any other) rewritten


def test_resume_refuses_a_run_still_going_in_another_process(interrupted, make_config):
    result, state = interrupted
    lock_file = result["checkpoint"][:-len(".pth")] + ".lock"
    held = try_lock(lock_file)  # as the run's own process would while it trains
    try:
        before = _stamps(os.path.dirname(state))
        with pytest.raises(ValueError, match=f"{lock_file} is held: run ") as info:
            run("ANT", "tiny", config_dict=make_config(epochs=3, resume_from=state))
        assert _stamps(os.path.dirname(state)) == before
        assert f"run {result['run_id']} is going on in another process" in str(info.value)
    finally:
        release_lock(lock_file, held)


# ----- first use of an embedded data set by two processes at once ------------------------------
SCENARIOS = {"together": ("SASRec", "mm_target"), "staggered": ("MMoE", "AE_SRC")}


def _first_use(role: int, root: str, barrier, scenario: str) -> dict:
    """Ensure and read an embedded data set as a run's first steps do, in ``<root>/<scenario>``.

    ``together``: both children start at once (both generate mm_target). ``staggered``: child 1
    starts when child 0 has begun writing AE_SRC (anything appears in the data folder)."""
    model, dataset = SCENARIOS[scenario]
    root = os.path.join(root, scenario)
    config = MMConfig(model, dataset, config_dict={"data_path": root, "state": "WARNING", "show_progress": False})
    barrier.wait()
    if scenario == "staggered" and role == 1:
        deadline = time.time() + 60
        while not (os.path.isdir(root) and os.listdir(root)) and time.time() < deadline:
            time.sleep(0.002)
    written = ensure_embedded_datasets(config)
    inode = os.stat(os.path.join(root, dataset)).st_ino
    return {"written": written, "inode": inode, "dataset": str(create_dataset(config))}


def _child(role, root, barrier, queue):
    for spec in SYNTHETIC_COUNTRIES:  # smaller countries, in this child only: a short test
        spec.n_train, spec.n_test = 2000, 400
    results = {}
    for scenario in SCENARIOS:
        try:
            results[scenario] = _first_use(role, root, barrier, scenario)
        except Exception as err:  # reported to the test
            results[scenario] = {"error": f"{type(err).__name__}: {err}"}
    queue.put((role, results))


def test_two_first_use_runs_generating_one_data_set_both_work(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(2), context.SimpleQueue()
    children = [context.Process(target=_child, args=(role, str(tmp_path), barrier, queue)) for role in (0, 1)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    by_role = dict(queue.get() for _ in children if not queue.empty())
    assert set(by_role) == {0, 1}, by_role
    assert {scenario: [by_role[role][scenario].get("error") for role in (0, 1)] for scenario in SCENARIOS} == {
        scenario: [None, None] for scenario in SCENARIOS}
    for scenario, (_, dataset) in SCENARIOS.items():
        first, second = by_role[0][scenario], by_role[1][scenario]
        # both read the one folder that stayed (none was replaced under a reader), none half-written is left
        folder = tmp_path / scenario / dataset
        assert first["inode"] == second["inode"] == folder.stat().st_ino, scenario
        assert first["dataset"] == second["dataset"]
        assert os.listdir(str(tmp_path / scenario)) == [dataset]
    assert by_role[0]["together"]["written"] == by_role[1]["together"]["written"] == ["mm_target"]  # both generated


# ----- a resumed run equals an uninterrupted one -----------------------------------------------
class Killed(Exception):
    """Stands in for the process being killed."""


def _kill_during_epoch(monkeypatch, epoch: int) -> None:
    """The run dies after the first batch of training epoch ``epoch``."""
    original = RunRecordMixin._train_epoch

    def one_batch_then_killed(batches):
        for index, batch in enumerate(batches):
            if index == 1:
                raise Killed(f"killed during epoch {epoch}")
            yield batch

    def train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if epoch_idx == epoch:
            train_data = one_batch_then_killed(train_data)
        return original(self, train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    monkeypatch.setattr(RunRecordMixin, "_train_epoch", train_epoch)


@pytest.mark.parametrize("model,batch_size", [("ANT", 256), ("SASRec", 1024)])  # the plugin's training loader, RecBole's
def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(model, batch_size, make_config, monkeypatch, tmp_path):
    """Killed during epoch 1 of 3 (dropout on), resumed from epoch 0's state: epochs 1 and 2, the
    validation and the test are those of the uninterrupted run, bit for bit."""
    config = make_config(epochs=3, checkpoint_dir=str(tmp_path), train_batch_size=batch_size)
    with monkeypatch.context() as patch:
        _kill_during_epoch(patch, epoch=1)
        with pytest.raises(Killed):
            run(model, "tiny", config_dict=config)
    (state,) = glob.glob(os.path.join(str(tmp_path), "*-last.pth"))  # as bench's cached_run finds it
    saved = load_checkpoint(state)
    assert saved["epoch"] == 0
    added = {key: saved[key] for key in ("run_id", "settings", "rng", "train_order")}  # plain data only:
    torch.save(added, str(tmp_path / "added.pth"))
    assert torch.load(str(tmp_path / "added.pth"), weights_only=True).keys() == added.keys()  # safe loading reads it
    resumed = run(model, "tiny", config_dict={**config, "resume_from": state})
    uninterrupted = run(model, "tiny", config_dict=config)
    assert resumed["resumed_at_epoch"] == 1
    assert resumed["train_loss_history"] == uninterrupted["train_loss_history"]
    assert resumed["valid_history"] == uninterrupted["valid_history"]
    assert resumed["best_valid_score"] == uninterrupted["best_valid_score"]
    assert resumed["test_result"] == uninterrupted["test_result"]
    assert resumed["checkpoint"] != uninterrupted["checkpoint"] and resumed["run_id"] in state  # its own files
