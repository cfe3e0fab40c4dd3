"""EMA targets and BYOL's momentum schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfsup.nn import cosine_momentum, ema_update, frozen_copy, mlp


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))


def test_frozen_copy_is_equal_and_gradient_free():
    online = net(0)
    target = frozen_copy(online)
    for (n, p), q in zip(online.named_parameters(), target.parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), n
        assert p.requires_grad and not q.requires_grad


@pytest.mark.parametrize("m", [0.0, 0.5, 0.996, 1.0])
def test_ema_update_arithmetic(m):
    target, online = frozen_copy(net(0)), net(1)
    online.train(), target.train()
    online(torch.randn(8, 5))  # moves the online BN statistics
    target(torch.randn(8, 5) + 3)  # and the target's own, from other data
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, m)
    o = online.state_dict()
    for name, _ in online.named_parameters():
        torch.testing.assert_close(
            target.state_dict()[name], m * before[name] + (1 - m) * o[name], rtol=1e-6, atol=1e-7
        )
    for name, _ in online.named_buffers():  # the target keeps its own statistics, as the official code
        assert torch.equal(target.state_dict()[name], before[name]), f"buffer {name} must stay the target's"
        if "running_mean" in name:
            assert not torch.equal(before[name], o[name])
    assert all(not p.requires_grad for p in target.parameters())


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    assert cosine_momentum(0.9, 0.25) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_momentum(0.99, 1.0, final=0.999) == pytest.approx(0.999)
    values = [cosine_momentum(0.996, i / 100) for i in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[0] < values[-1]
    # progress outside [0, 1] is clamped
    assert cosine_momentum(0.996, -1.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 2.0) == pytest.approx(1.0)


def test_mlp_layout():
    head = mlp(16, 32, 8, num_layers=3, bn=True, last_bn=True)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 8)]
    assert all(m.bias is None for m in linears)  # BN follows every linear
    assert isinstance(head[-1], nn.BatchNorm1d) and not head[-1].affine
    plain = mlp(4, 6, 2, bn=False)
    assert plain(torch.randn(3, 4)).shape == (3, 2)
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Linear))
