"""Shared fixtures: a tiny synthetic data set and small model settings."""

import pytest

from helpers import TINY_MODEL
from helpers.model import write_token_files
from recbole_mm.data.synthetic import SyntheticSpec, write_dataset


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


@pytest.fixture
def token_dir(tiny_data_path, tmp_path):
    """(folder, written) of tiny token-level feature files of the tiny data set (helpers.model.write_token_files)."""
    folder = tmp_path / "tokens"
    folder.mkdir()
    return str(folder), write_token_files(tiny_data_path, "tiny", str(folder))
