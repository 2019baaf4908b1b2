"""Shared layers: MoE gate behaviour, price encoding, missing-modality fusion, attention mask."""

import pytest
import torch

from recbole_mm.model.layers import CausalTransformer, MoEAdaptor, MultiModalItemEncoder, SinusoidalScalarEncoder


def test_gate_is_noisy_in_training_and_the_mean_at_eval():
    torch.manual_seed(0)
    adaptor = MoEAdaptor(8, 4, n_experts=3, dropout=0.0)
    with torch.no_grad():
        adaptor.gate_weight.normal_()
        adaptor.noise_weight.normal_()
    x = torch.randn(5, 8)
    adaptor.eval()
    expected = torch.softmax(x @ adaptor.gate_weight, dim=-1)
    torch.testing.assert_close(adaptor.gate(x), expected)
    torch.testing.assert_close(adaptor(x), adaptor(x))
    adaptor.train()
    g1, g2 = adaptor.gate(x), adaptor.gate(x)
    assert not torch.allclose(g1, g2)
    torch.testing.assert_close(g1.sum(-1), torch.ones(5))


def test_gate_starts_uniform():
    adaptor = MoEAdaptor(8, 4, n_experts=4).eval()
    torch.testing.assert_close(adaptor.gate(torch.randn(3, 8)), torch.full((3, 4), 0.25))


def test_whitening_expert_is_shifted_projection_without_bias():
    torch.manual_seed(1)
    adaptor = MoEAdaptor(6, 3, n_experts=2, dropout=0.0).eval()
    with torch.no_grad():
        adaptor.expert_bias.normal_()
    x = torch.randn(4, 6)
    out = adaptor.experts(x)
    for k in range(2):
        torch.testing.assert_close(out[:, k], (x - adaptor.expert_bias[k]) @ adaptor.expert_weight[k])
    # zero input with zero bias maps to zero: no output bias term
    with torch.no_grad():
        adaptor.expert_bias.zero_()
    torch.testing.assert_close(adaptor.experts(torch.zeros(1, 6)), torch.zeros(1, 2, 3))


def test_sinusoidal_price_encoding():
    enc = SinusoidalScalarEncoder(64, 50000.0)
    out = enc(torch.tensor([[0.0], [50.0], [100.0]]))
    assert out.shape == (3, 64)
    torch.testing.assert_close(out[0, 0::2], torch.zeros(32))  # sin(0)
    torch.testing.assert_close(out[0, 1::2], torch.ones(32))  # cos(0)
    torch.testing.assert_close(out[1, 0], torch.sin(torch.tensor(50.0)))
    assert not torch.allclose(out[1], out[2])


def test_missing_modality_contributes_nothing():
    torch.manual_seed(2)
    n = 4
    feats = {"text": torch.randn(n, 6), "image": torch.randn(n, 5), "price": torch.rand(n, 1) * 100}
    masks = {"text": torch.ones(n, dtype=torch.bool), "image": torch.tensor([False, True, False, True]),
             "price": torch.tensor([False, True, True, False])}
    enc = MultiModalItemEncoder(feats, masks, hidden_size=8, n_experts=2, dropout=0.0, fusion_beta=0.1).eval()
    emb = enc.modality_embeddings()
    assert torch.all(emb["image"][~masks["image"]] == 0)
    assert torch.all(emb["price"][~masks["price"]] == 0)
    fused = enc()
    torch.testing.assert_close(fused[0], emb["text"][0])  # text only
    expected = emb["text"][1] + emb["image"][1] + emb["price"][1] + 0.1 * emb["image"][1] * emb["text"][1]
    torch.testing.assert_close(fused[1], expected)


def test_causal_mask_hides_future_and_padding():
    seq = torch.tensor([[3, 5, 0]])
    mask = CausalTransformer.attention_mask(seq, torch.float32)[0, 0]
    allowed = mask == 0
    assert allowed.tolist() == [[True, False, False], [True, True, False], [True, True, False]]


def test_adaptor_output_is_gate_weighted_sum_of_experts():
    torch.manual_seed(3)
    for expert_type in ("whitening", "linear"):
        adaptor = MoEAdaptor(6, 4, n_experts=3, dropout=0.0, expert_type=expert_type).eval()
        with torch.no_grad():
            adaptor.gate_weight.normal_()
            adaptor.expert_bias.normal_()
        x = torch.randn(7, 6)
        expected = (adaptor.gate(x).unsqueeze(-1) * adaptor.experts(x)).sum(-2)
        torch.testing.assert_close(adaptor(x), expected)


@pytest.mark.parametrize("missing_modality", ["zero", "adaptor"])
def test_missing_modality_rows_skip_the_projection_with_the_same_result_and_gradients(missing_modality):
    """The adaptor projects the present rows only; in eval mode the table and every adaptor
    gradient equal those of running every row (and, with missing_modality zero, masking)."""
    torch.manual_seed(0)
    n = 12
    features = {"text": torch.randn(n, 6), "image": torch.randn(n, 5)}
    masks = {"text": torch.ones(n, dtype=torch.bool), "image": torch.rand(n) < 0.4}
    masks["image"][0] = False  # the padding row
    features["image"][~masks["image"]] = 0.0  # a missing row holds the zero feature (ItemFeatureTable)
    encoder = MultiModalItemEncoder(features, masks, hidden_size=4, n_experts=3,
                                    missing_modality=missing_modality).eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_()

    def every_row_masked(ids=None):
        out = {}
        for m in encoder.modalities:
            feat, mask = encoder.table.lookup(m, ids)
            out[m] = encoder.adaptors[m](feat)
            if missing_modality == "zero":
                out[m] = out[m] * mask.unsqueeze(-1).float()
        return out["text"] + out["image"] + encoder.fusion_beta * out["image"] * out["text"]

    for ids in (None, torch.tensor([[3, 0, 5], [7, 7, 1]])):
        fast = encoder(ids)
        fast.pow(2).sum().backward()
        grad = lambda p: torch.zeros_like(p) if p.grad is None else p.grad.clone()  # noqa: E731 (noise: unused in eval)
        fast_grads = {k: grad(p) for k, p in encoder.named_parameters()}
        encoder.zero_grad()
        slow = every_row_masked(ids)
        slow.pow(2).sum().backward()
        assert torch.allclose(fast, slow, atol=1e-6)
        assert all(torch.allclose(fast_grads[k], grad(p), atol=1e-5) for k, p in encoder.named_parameters())
        assert fast_grads["adaptors.image.expert_weight"].abs().sum() > 0
        encoder.zero_grad()
