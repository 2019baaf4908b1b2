"""RecBole's torch.distributed path on CPU (gloo): 2 processes agree with 1 process."""

import multiprocessing

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


def _node(group_offset: int, config: dict, port: int, queue) -> None:
    """One "machine" of a two-node run: one process, its own group offset, machine 0's rendezvous."""
    result = run("ANT", "tiny", config_dict=config, nproc=1, world_size=2, ip="127.0.0.1", port=port,
                 group_offset=group_offset)
    queue.put((group_offset, result["test_result"], result.get("results_file")))


def test_two_nodes_of_one_process_agree_with_one_node_of_two(tiny_config, tmp_path):
    """RecBole's multi-node arguments (world_size, ip, port, group_offset) through the plugin's
    runner: two "nodes" on localhost (gloo) give the results of one node with two processes, and
    only global rank 0 writes the results file."""
    config = tiny_config(epochs=3, worker=0, checkpoint_dir=str(tmp_path / "saved"))
    one_node = run("ANT", "tiny", config_dict=config, nproc=2, port=29621)
    context = multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    nodes = [context.Process(target=_node, args=(offset, config, 29633, queue)) for offset in (0, 1)]
    for node in nodes:
        node.start()
    for node in nodes:
        node.join(timeout=600)
    assert all(node.exitcode == 0 for node in nodes)
    results = dict((offset, (test, file)) for offset, test, file in (queue.get(), queue.get()))
    for offset in (0, 1):
        for metric, value in one_node["test_result"].items():
            assert results[offset][0][metric] == pytest.approx(value, abs=1e-6), (offset, metric)
    assert results[0][1] and not results[1][1]  # the results file: global rank 0 only


def test_world_size_must_hold_every_process():
    with pytest.raises(ValueError, match="world_size"):
        run("ANT", "tiny", nproc=2, world_size=2, group_offset=1)
