"""RecBole's torch.distributed path on CPU (gloo): 2 processes agree with 1 process."""

import pytest

from recbole_mm.runner import run

TOLERANCE = 0.05  # absolute, on Recall@10 / NDCG@10 of the tiny data set (see docs/speed.md)


@pytest.mark.parametrize("model_name", ["ANT"])
def test_two_cpu_processes_match_one(model_name, tiny_config):
    config = tiny_config(epochs=6, worker=0)
    single = run(model_name, "tiny", config_dict=config)
    double = run(model_name, "tiny", config_dict=config, nproc=2, port=29611)
    assert double["device"] == "cpu"
    for metric in ("recall@10", "ndcg@10"):
        assert abs(single["test_result"][metric] - double["test_result"][metric]) < TOLERANCE, (single, double)
    assert double["test_result"]["recall@10"] > 0.1
