"""Shared heads: weight-standardised linear layers and GroupNorm heads (BYOL without batch statistics)."""

from __future__ import annotations


def test_weight_standardised_linear_and_gn_ws_heads():
    import torch

    from selfsup.nn.heads import WSLinear, mlp

    lin = WSLinear(6, 4)
    x = torch.randn(3, 6)
    w = lin.weight
    ws = (w - w.mean(1, keepdim=True)) / (w.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
    assert torch.allclose(lin(x), x @ ws.T + lin.bias, atol=1e-6)
    head = mlp(6, 64, 8, bn=False, gn_ws=True)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in head) and isinstance(head[0], WSLinear)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head)
    # no batch statistics: each sample's output does not depend on the rest of the batch
    assert torch.allclose(head.train()(x)[:1], head(x[:1]), atol=1e-6)
