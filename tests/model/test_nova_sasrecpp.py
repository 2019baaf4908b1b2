"""NOVA's value path ignores side features and positions; SASRec++ has no ID parameters and ANT's
price encoding; both score by cosine / temperature; both train."""

import pytest
import torch

from recbole_mm.config import MMConfig
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.runner import run
from recbole_mm.utils import get_model


def build(model_name, config_dict):
    config = MMConfig(model_name, "tiny", config_dict=config_dict)
    train, valid, _ = prepare_data(config, create_dataset(config))
    return config, train, valid, get_model(model_name)(config, train._dataset)


def first_sequences(valid, n=8, length=6):
    return next(iter(valid))[0]["item_id_list"][:n, :length]


def nova_attention(model, seq):
    """(attention weights, values) of every block, in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        _, weights, values = model.encode_with_attention(seq, model.item_table())
    return weights, values


def perturb_side_features(model):
    table = model.side_info.table
    for m in table.modalities:
        table.feature(m).add_(torch.randn_like(table.feature(m)))


def perturb_positions(model):
    with torch.no_grad():
        model.position_embedding.weight.add_(torch.randn_like(model.position_embedding.weight))


@pytest.mark.parametrize("fusion_type", ["concat", "gating"])
def test_nova_values_ignore_side_information_and_positions(fusion_type, tiny_config):
    _, _, valid, model = build("NOVA", tiny_config(fusion_type=fusion_type))
    seq = first_sequences(valid)
    probs, values = nova_attention(model, seq)
    for perturb in (perturb_side_features, perturb_positions):
        perturb(model)
        probs2, values2 = nova_attention(model, seq)
        torch.testing.assert_close(values[0], values2[0])  # the value stream is the pure item-ID stream
        assert not torch.allclose(probs[0], probs2[0])  # ... side information and positions steer attention
        probs = probs2
    # causal + padding mask: no weight on future positions
    future = torch.ones(seq.size(1), seq.size(1), dtype=torch.bool).triu(1)
    assert torch.all(probs[0][..., future] < 1e-6)
    # the values are a function of the item-ID embeddings alone
    layer = model.layers[0]
    expected = layer._heads(layer.value(model.layer_norm(model.item_embedding(seq))))
    torch.testing.assert_close(values[0], expected)


def check_cosine_scores(model, valid, temperature):
    """Scores are cos(sequence, item) / temperature: invariant to the norm of the item
    representations and equal to a hand computation; ``predict`` agrees with ``full_sort_predict``."""
    model.eval()
    interaction = next(iter(valid))[0]
    with torch.no_grad():
        table = model.item_table()
        seq_output = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], table)
        scores = model.full_sort_predict(interaction)
        hand = torch.stack([
            torch.stack([(u @ v) / (u.norm() * v.norm()).clamp(min=1e-12) for v in table[1:20]]) for u in seq_output[:4]
        ]) / temperature
        torch.testing.assert_close(scores[:4, 1:20], hand, rtol=1e-4, atol=1e-4)
        scale = torch.rand(table.size(0), 1) * 10 + 0.1
        torch.testing.assert_close(model.score(seq_output, table * scale), model.score(seq_output, table))
        torch.testing.assert_close(model.score(3.0 * seq_output, table), model.score(seq_output, table))
        items = interaction[model.ITEM_ID]
        torch.testing.assert_close(model.predict(interaction), scores[torch.arange(len(items)), items])


@pytest.mark.parametrize("model_name", ["NOVA", "SASRec++"])
def test_scores_are_cosine_over_temperature(model_name, tiny_config):
    config, _, valid, model = build(model_name, tiny_config(temperature=0.05))
    assert model.temperature == 0.05
    check_cosine_scores(model, valid, 0.05)


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


def test_sasrecpp_price_encoding_is_ants(tiny_config):
    """The price block of SASRec++'s item input is ANT's 64-d sinusoidal encoding of the same
    price (zero where an item has no price)."""
    _, _, _, model = build("SASRec++", tiny_config())
    _, _, _, ant = build("ANT", tiny_config())
    encoder = ant.item_encoder
    price, has_price = encoder.feature("price"), encoder.mask("price")
    assert model.modalities == ["text", "image", "price"]
    text_image = encoder.feature("text").shape[1] + encoder.feature("image").shape[1]
    assert model.fused_features.shape[1] == text_image + 64
    block = model.fused_features[:, text_image:]
    torch.testing.assert_close(block[has_price], encoder.price_encoder(price)[has_price])
    assert torch.all(block[~has_price] == 0)
    assert has_price.any() and (price[has_price] > 1).any()  # prices on ANT's [0, 100] scale


@pytest.mark.parametrize("model_name", ["NOVA", "SASRec++"])
def test_models_train_through_runner(model_name, tiny_config, tiny_data_path):
    from test_runner import most_popular_recall_at_10

    result = run(model_name, "tiny", config_dict=tiny_config(epochs=8))
    assert result["test_result"]["recall@10"] > 1.2 * most_popular_recall_at_10(tiny_data_path), result["test_result"]
