"""NOVA's value path ignores side features; SASRec++ has no ID parameters; both train."""

import pytest
import torch

from recbole_mm.config import MMConfig
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.model.layers import CausalTransformer
from recbole_mm.runner import run
from recbole_mm.utils import get_model


def build(model_name, config_dict):
    config = MMConfig(model_name, "tiny", config_dict=config_dict)
    train, valid, _ = prepare_data(config, create_dataset(config))
    return config, train, valid, get_model(model_name)(config, train._dataset)


def test_nova_values_ignore_side_information(tiny_config):
    _, _, valid, model = build("NOVA", tiny_config(fusion_type="gating"))
    model.eval()
    seq = next(iter(valid))[0]["item_id_list"][:8, :6]
    layer, fusion = model.layers[0], model.fusions[0]
    with torch.no_grad():
        positions = torch.arange(seq.size(1))
        hidden = model.layer_norm(model.item_embedding(seq) + model.position_embedding(positions))
        mask = CausalTransformer.attention_mask(seq, hidden.dtype)
        side = model.side_vectors(seq)
        _, probs, values = layer.attend(hidden, fusion([hidden] + side), mask)
        perturbed = [s + torch.randn_like(s) for s in side]
        _, probs2, values2 = layer.attend(hidden, fusion([hidden] + perturbed), mask)
    torch.testing.assert_close(values, values2)  # the value path never sees side features
    assert not torch.allclose(probs, probs2)  # ... but the attention weights do
    # causal + padding mask: no weight on future positions
    future = torch.ones(seq.size(1), seq.size(1), dtype=torch.bool).triu(1)
    assert torch.all(probs[..., future] < 1e-6)


@pytest.mark.parametrize("fusion_type", ["sum", "concat", "gating"])
def test_nova_fusions_run(fusion_type, tiny_config):
    _, train, _, model = build("NOVA", tiny_config(fusion_type=fusion_type))
    loss = model.calculate_loss(next(iter(train)))
    loss.backward()
    assert torch.isfinite(loss) and model.item_embedding.weight.grad is not None


def test_sasrecpp_has_no_id_parameters(tiny_config):
    config, _, _, model = build("SASRec++", tiny_config())
    n_items = model.n_items
    for name, param in model.named_parameters():
        assert n_items not in param.shape, f"{name} {tuple(param.shape)} is sized by the item count"
    assert not any(isinstance(m, torch.nn.Embedding) and m.num_embeddings == n_items for m in model.modules())


@pytest.mark.parametrize("model_name", ["NOVA", "SASRec++"])
def test_models_train_through_runner(model_name, tiny_config, tiny_data_path):
    from test_runner import most_popular_recall_at_10

    result = run(model_name, "tiny", config_dict=tiny_config(epochs=8))
    assert result["test_result"]["recall@10"] > 1.2 * most_popular_recall_at_10(tiny_data_path), result["test_result"]
