"""The multi-task backbones are built as MTReclib (easezyc/Multitask-Recommendation-Library)
builds them: parameter counts equal MTReclib's formulas, MLP blocks Linear -> BatchNorm -> ReLU
-> Dropout, one Xavier embedding table, the loss the mean over tasks, the CTCVR output by its
own tower (ESMM's CTR * sigmoid as an option), deterministic scores in eval mode."""

from typing import Sequence

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_mm.config import ConfigError, MMConfig
from recbole_mm.data.aliexpress import N_CATEGORICAL, N_NUMERICAL
from recbole_mm.model.multitask_layers import CategoricalNumericalInput
from recbole_mm.utils import get_model

BACKBONES = ["SharedBottom", "OMoE", "MMoE", "PLE", "AITM"]

# The small setting of the parameter counts (MTReclib's argument names in the comments).
EMBED = 16              # embed_dim
VOCAB = [10, 10, 10]    # categorical_field_dims: 3 fields of vocabulary 10
BOTTOM = [32, 16]       # bottom_mlp_dims
TOWER = [8]             # tower_mlp_dims
EXPERTS = 4             # expert_num (OMoE, MMoE)
SPECIFIC, SHARED = 1, 1  # PLE specific_expert_num, shared_expert_num
TASKS = 2               # task_num
SETTING = {"embedding_size": EMBED, "categorical_vocab_sizes": VOCAB, "bottom_dims": BOTTOM, "tower_dims": TOWER,
           "n_experts": EXPERTS, "n_specific_experts": SPECIFIC, "n_shared_experts": SHARED,
           "state": "WARNING", "device": "cpu"}


def build(name: str, **overrides) -> nn.Module:
    config = MMConfig(name, "AE_TINY", config_dict={**SETTING, **overrides})
    return get_model(name)(config, None)


# ----- MTReclib's parameter formulas ---------------------------------------------------------
def linear(n_in: int, n_out: int) -> int:
    """torch.nn.Linear: a weight n_in x n_out and a bias n_out."""
    return n_in * n_out + n_out


def mlp(n_in: int, dims: Sequence[int]) -> int:
    """MultiLayerPerceptron(output_layer=False): per width d, Linear(n_in -> d) and BatchNorm1d(d)
    (weight and bias: 2d parameters; the running statistics are buffers, not parameters)."""
    total = 0
    for d in dims:
        total += linear(n_in, d) + 2 * d
        n_in = d
    return total


def tower(n_in: int) -> int:
    """MultiLayerPerceptron(bottom_mlp_dims[-1], tower_mlp_dims) with its output layer Linear(-> 1)."""
    return mlp(n_in, TOWER) + linear(TOWER[-1], 1)


def input_layer() -> int:
    """EmbeddingLayer: one table of sum(field_dims) rows; numerical_layer: Linear(numerical_num -> embed_dim)."""
    return sum(VOCAB) * EMBED + linear(N_NUMERICAL, EMBED)


EMBED_OUT = (len(VOCAB) + 1) * EMBED  # embed_output_dim: the fields' embeddings and the numerical vector
TOWERS = TASKS * tower(BOTTOM[-1])


def ple_levels() -> int:
    """PLEModel: one level per bottom_mlp_dims entry; level i (input in_i: embed_output_dim, then
    bottom_mlp_dims[i - 1]) has specific_expert_num * task_num + shared_expert_num experts, each
    MultiLayerPerceptron(in_i, [bottom_mlp_dims[i]]), a gate Linear(in_i -> specific + shared)
    per task and a shared gate Linear(in_i -> task_num * specific + shared) at every level."""
    total, n_in = 0, EMBED_OUT
    for d in BOTTOM:
        total += (TASKS * SPECIFIC + SHARED) * mlp(n_in, [d])
        total += TASKS * linear(n_in, SPECIFIC + SHARED) + linear(n_in, TASKS * SPECIFIC + SHARED)
        n_in = d
    return total


MTRECLIB_COUNTS = {
    # SharedBottomModel: one bottom MLP, one tower per task
    "SharedBottom": input_layer() + mlp(EMBED_OUT, BOTTOM) + TOWERS,
    # OMoEModel: expert_num bottom MLPs, one gate Linear(embed_output_dim -> expert_num)
    "OMoE": input_layer() + EXPERTS * mlp(EMBED_OUT, BOTTOM) + linear(EMBED_OUT, EXPERTS) + TOWERS,
    # MMoEModel: the same with one gate per task
    "MMoE": input_layer() + EXPERTS * mlp(EMBED_OUT, BOTTOM) + TASKS * linear(EMBED_OUT, EXPERTS) + TOWERS,
    "PLE": input_layer() + ple_levels() + TOWERS,
    # AITMModel: a bottom per task, g: task_num - 1 Linear(d -> d), h1, h2, h3: Linear(d -> d)
    "AITM": input_layer() + TASKS * mlp(EMBED_OUT, BOTTOM) + (TASKS - 1 + 3) * linear(BOTTOM[-1], BOTTOM[-1])
    + TOWERS,
}
# The same numbers written out once (a check on the formulas above).
HAND_COUNTS = {"SharedBottom": 4530, "OMoE": 12902, "MMoE": 13162, "PLE": 10624, "AITM": 8322}


@pytest.mark.parametrize("name", BACKBONES)
def test_parameter_count_equals_mtreclib(name):
    model = build(name)
    assert MTRECLIB_COUNTS[name] == HAND_COUNTS[name]
    assert sum(p.numel() for p in model.parameters()) == MTRECLIB_COUNTS[name]


def test_ple_options_change_the_layout():
    last_gate = linear(BOTTOM[0], TASKS * SPECIFIC + SHARED)
    assert sum(p.numel() for p in build("PLE", ple_last_shared_gate=False).parameters()) == HAND_COUNTS["PLE"] - last_gate
    stacked = build("PLE", ple_levels=1)  # one level of whole bottom_dims MLP experts
    level = (TASKS * SPECIFIC + SHARED) * mlp(EMBED_OUT, BOTTOM)
    gates = TASKS * linear(EMBED_OUT, SPECIFIC + SHARED) + linear(EMBED_OUT, TASKS * SPECIFIC + SHARED)
    assert sum(p.numel() for p in stacked.parameters()) == input_layer() + level + gates + TOWERS


def test_mlp_blocks_and_embedding_as_mtreclib():
    model = build("SharedBottom")
    kinds = [type(m).__name__ for m in model.bottom]
    assert kinds == ["Linear", "RowSafeBatchNorm1d", "ReLU", "Dropout"] * len(BOTTOM)
    assert all(isinstance(m, nn.BatchNorm1d) for m in model.bottom if "BatchNorm" in type(m).__name__)
    assert [type(m).__name__ for m in build("SharedBottom", batch_norm=False).bottom] == ["Linear", "ReLU", "Dropout"] * 2
    table = model.input_layer.embedding.weight
    bound = (6 / (table.shape[0] + table.shape[1])) ** 0.5  # xavier_uniform_ over (sum(vocab), embed)
    assert table.shape == (sum(VOCAB), EMBED) and table.abs().max() <= bound and table.abs().max() > 0.8 * bound


def test_embedding_offsets_and_unknown_codes():
    layer = CategoricalNumericalInput([3, 5], 2, 4)
    out = layer(torch.tensor([[2, 4], [3, -1]]), torch.zeros(2, 2))
    weight = layer.embedding.weight
    assert torch.equal(out[0, :4], weight[2]) and torch.equal(out[0, 4:8], weight[3 + 4])  # row offset 3 for field 2
    assert torch.equal(out[1, :8], torch.zeros(8))  # codes outside the vocabulary: zero vectors


def batch(n: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"categorical": torch.randint(0, 12, (n, N_CATEGORICAL), generator=g)[:, : len(VOCAB)],
            "numerical": torch.randn(n, N_NUMERICAL, generator=g),
            "labels": (torch.rand(n, 2, generator=g) < 0.3).float()}


@pytest.mark.parametrize("name", BACKBONES)
def test_eval_scores_are_deterministic(name):
    torch.manual_seed(0)
    model = build(name)
    rows = batch()
    model.train()
    for _ in range(3):  # moves the BatchNorm running statistics away from their start
        model.calculate_loss(rows)
    model.eval()
    stats = [b.clone() for b in model.buffers()]
    first, second = model.predict(rows), model.predict(rows)
    assert torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))  # eval leaves the statistics alone
    # running statistics, not the batch's: a row scores the same alone as within its batch
    assert torch.allclose(model.predict({k: v[:1] for k, v in rows.items()}), first[:1], atol=1e-6)


def test_one_row_training_batch_is_accepted():
    model = build("MMoE")
    model.train()
    assert torch.isfinite(model.calculate_loss({k: v[:1] for k, v in batch().items()}))


def test_loss_is_the_mean_over_tasks():
    model = build("MMoE").eval()
    rows = batch()
    ctr, ctcvr = model(rows)
    expected = (F.binary_cross_entropy(ctr, rows["labels"][:, 0]) + F.binary_cross_entropy(ctcvr, rows["labels"][:, 1])) / 2
    assert torch.allclose(model.calculate_loss(rows), expected, atol=1e-6)


def test_ctcvr_by_its_own_tower_or_esmm():
    rows = batch()
    torch.manual_seed(1)
    tower = build("SharedBottom").eval()
    torch.manual_seed(1)
    esmm = build("SharedBottom", ctcvr_mode="esmm").eval()
    logits = tower.task_logits(tower.features(rows))
    ctr, ctcvr = tower(rows)
    assert torch.allclose(ctcvr, torch.sigmoid(logits[:, 1]))
    esmm_ctr, esmm_ctcvr = esmm(rows)
    assert torch.allclose(esmm_ctr, ctr) and torch.allclose(esmm_ctcvr, ctr * torch.sigmoid(logits[:, 1]))
    with pytest.raises(ConfigError, match="ctcvr_mode"):
        build("SharedBottom", ctcvr_mode="product")
