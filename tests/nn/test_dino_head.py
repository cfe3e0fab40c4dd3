"""The DINO head: weight-normalised last layer with g fixed to 1, normalised bottleneck."""

from __future__ import annotations

import copy

import torch

from selfsup.nn.dino_head import DINOHead


def test_head_shapes_and_unit_prototypes():
    torch.manual_seed(0)
    head = DINOHead(24, out_dim=50, hidden_dim=32, bottleneck_dim=8)
    x = torch.randn(6, 24)
    y = head(x)
    assert y.shape == (6, 50) and y.dtype == torch.float32
    assert y.abs().max() <= 1 + 1e-5  # cosines: bounded logits
    torch.testing.assert_close(head.bottleneck(x).norm(dim=1), torch.ones(6))
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(50))
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.equal(g, torch.ones(50, 1))
    assert len(head.mlp) == 5 and isinstance(head.mlp[1], torch.nn.GELU)  # 3 linear layers, GELU, no BN
    # after an update of v, the rows stay unit: the norm g = 1 is fixed, only directions learn
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.mul_(torch.rand(50, 1) * 3)
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(50))
    assert DINOHead(24, 50, 32, 8, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_freeze_last_layer_stops_its_gradient_only():
    torch.manual_seed(0)
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=8)
    head(torch.randn(4, 12), freeze_last_layer=True).logsumexp(1).sum().backward()
    assert head.last_layer.parametrizations.weight.original1.grad is None
    assert head.mlp[0].weight.grad is not None
    head.zero_grad()
    head(torch.randn(4, 12)).logsumexp(1).sum().backward()
    assert head.last_layer.parametrizations.weight.original1.grad.abs().sum() > 0


def test_head_deep_copies_for_the_teacher():
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=8)
    teacher = copy.deepcopy(head)
    x = torch.randn(3, 12)
    torch.testing.assert_close(teacher(x), head(x))
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.add_(1.0)
    assert not torch.allclose(teacher(x), head(x))  # separate parameters
