"""Learning-rate schedule and LARS against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.config import OptimConfig
from selfsup.train.optim import LARS, build_optimizer, lr_factor, set_lr


def test_warmup_is_linear_and_reaches_one():
    cfg = OptimConfig(warmup=0.1, schedule="cosine", min_lr_ratio=0.0)
    assert lr_factor(0.0, cfg) == 0.0
    for p in (0.01, 0.025, 0.05, 0.09):
        assert lr_factor(p, cfg) == pytest.approx(p / 0.1)
    assert lr_factor(0.1, cfg) == pytest.approx(1.0)


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_cosine_decays_to_min_ratio(min_ratio):
    cfg = OptimConfig(warmup=0.2, schedule="cosine", min_lr_ratio=min_ratio)
    assert lr_factor(1.0, cfg) == pytest.approx(min_ratio)
    mid = 0.2 + 0.8 / 2  # halfway through the cosine
    assert lr_factor(mid, cfg) == pytest.approx(min_ratio + (1 - min_ratio) * 0.5)
    q = 0.2 + 0.8 / 4
    assert lr_factor(q, cfg) == pytest.approx(min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi / 4)))
    after = [lr_factor(0.2 + 0.8 * i / 50, cfg) for i in range(51)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert lr_factor(1.5, cfg) == pytest.approx(min_ratio)  # clamped


def test_constant_schedule_and_no_warmup():
    cfg = OptimConfig(warmup=0.0, schedule="constant")
    assert [lr_factor(p, cfg) for p in (0.0, 0.3, 1.0)] == [1.0, 1.0, 1.0]
    cfg = OptimConfig(warmup=0.0, schedule="cosine")
    assert lr_factor(0.0, cfg) == pytest.approx(1.0)


def test_lars_step_matches_hand_computation():
    torch.manual_seed(0)
    w0 = torch.randn(4, 3)
    g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
    lr, mom, wd, eta = 0.5, 0.9, 0.01, 0.001
    p = torch.nn.Parameter(w0.clone())
    opt = LARS([p], lr=lr, momentum=mom, weight_decay=wd, eta=eta)

    def scaled(w, g):
        d = g + wd * w
        return d * (eta * w.norm() / d.norm())

    p.grad = g1.clone()
    opt.step()
    mu = scaled(w0, g1)
    w1 = w0 - lr * mu
    torch.testing.assert_close(p.detach(), w1, rtol=1e-6, atol=1e-7)
    p.grad = g2.clone()
    opt.step()
    mu = mom * mu + scaled(w1, g2)
    torch.testing.assert_close(p.detach(), w1 - lr * mu, rtol=1e-6, atol=1e-7)


def test_lars_trust_ratio_is_one_for_a_zero_weight():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = LARS([p], lr=0.1, momentum=0.0, weight_decay=0.0)
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1, -0.2, -0.3]))


def test_lars_excluded_group_is_plain_momentum_sgd():
    torch.manual_seed(1)
    w0 = torch.randn(5)
    grads = [torch.randn(5) for _ in range(3)]
    a = torch.nn.Parameter(w0.clone())
    b = torch.nn.Parameter(w0.clone())
    lars = LARS([{"params": [a], "lars_exclude": True, "weight_decay": 0.0}], lr=0.3, momentum=0.9, weight_decay=0.1)
    sgd = torch.optim.SGD([b], lr=0.3, momentum=0.9, weight_decay=0.0)
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_build_optimizer_scales_lr_and_keeps_no_decay_groups():
    w = torch.nn.Parameter(torch.randn(3, 3))
    bias = torch.nn.Parameter(torch.zeros(3))

    def groups():
        return [{"params": [w]}, {"params": [bias], "weight_decay": 0.0, "lars_exclude": True}]

    for name, cls in (("lars", LARS), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)):
        cfg = OptimConfig(name=name, lr=0.3, scale_lr=True, weight_decay=1e-4)
        opt = build_optimizer(groups(), cfg, batch_size=512)
        assert isinstance(opt, cls)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.6, 0.6])
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
        set_lr(opt, 0.5)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.3, 0.3])
    opt = build_optimizer(groups(), OptimConfig(lr=0.3, scale_lr=False), batch_size=512)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3)
    assert [g["lars_exclude"] for g in opt.param_groups] == [False, True]
