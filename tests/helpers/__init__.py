"""Helpers shared by the tests (a package: ``from helpers import TINY_MODEL``; setup.cfg puts
``tests/`` on pytest's path). ``helpers.model``: model-test helpers; ``helpers.preprocess``:
small raw data sets and tiny encoders for the preprocessing tests."""

import os

# the team's real data, beside the checkout; tests that need it skip with the reason when absent
SHARED_DATASETS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "datasets"))

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
