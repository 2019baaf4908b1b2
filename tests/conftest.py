"""Shared fixtures: a tiny synthetic data set and small model settings."""

import os

import pytest

from recbole_mm.data.synthetic import SyntheticSpec, write_dataset

SHARED_DATASETS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))

TINY_MODEL = {
    "hidden_size": 32,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "hidden_dropout_prob": 0.1,
    "attn_dropout_prob": 0.1,
    "n_experts": 2,
    "MAX_ITEM_LIST_LENGTH": 20,
    "train_batch_size": 256,
    "eval_batch_size": 512,
    "show_progress": False,
    "state": "WARNING",
}


@pytest.fixture(scope="session")
def tiny_data_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    spec = SyntheticSpec(name="tiny", n_users=600, n_items=150, n_categories=8, seed=11)
    write_dataset(spec, str(root))
    return str(root)


@pytest.fixture
def tiny_config(tiny_data_path, tmp_path):
    """Config dict for a run on the tiny data set, writing checkpoints under tmp_path."""

    def make(**overrides):
        config = dict(TINY_MODEL)
        config.update(
            {
                "data_path": tiny_data_path,
                "checkpoint_dir": str(tmp_path / "saved"),
                "modalities": ["text", "image", "price"],
                "epochs": 2,
                "seed": 7,
            }
        )
        config.update(overrides)
        return config

    return make
