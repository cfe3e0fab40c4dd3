"""The shared optimisation step (selfsup.nn.stepper): accumulation equals one large batch, the finite check
(at once, or deferred without a host sync), the schedule with fixed-rate groups, and clipping."""

from __future__ import annotations

import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.nn.runtime import Runtime
from selfsup.nn.stepper import Stepper


def _model(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x), y)


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_two_accumulated_halves_take_the_step_of_the_whole_batch():
    x, y = _data()
    one, two = _model(), _model()
    s1 = Stepper(torch.optim.SGD(one.parameters(), lr=0.5), 1, None, Runtime("cpu"), "t", "")
    s1.update(_loss(one, x, y))
    s2 = Stepper(torch.optim.SGD(two.parameters(), lr=0.5), 1, None, Runtime("cpu"), "t", "", accumulate=2)
    assert s2.backward(_loss(two, x[:4], y[:4])) is False and s2.step == 0  # half a step: nothing taken
    assert s2.backward(_loss(two, x[4:], y[4:])) is True and s2.step == 1
    for a, b in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in two.parameters())  # zeroed after the step


def test_a_non_finite_loss_is_refused_before_the_step_with_the_fix():
    m = _model()
    before = [p.detach().clone() for p in m.parameters()]
    s = Stepper(torch.optim.SGD(m.parameters(), lr=0.5), 3, None, Runtime("cpu"), "fine-tuning", "lower the lr")
    with pytest.raises(SelfsupError, match=r"fine-tuning diverged .* at step 0: lower the lr"):
        s.update(_loss(m, *_data()) * float("nan"))
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_deferred_finite_check_records_the_first_bad_step():
    m = _model()
    x, y = _data()
    s = Stepper(torch.optim.SGD(m.parameters(), lr=0.1), None, None, Runtime("cpu"), "t", "", deferred=True, start=5)
    s.update(_loss(m, x, y))
    assert s.first_bad() == -1
    s.update(_loss(m, x, y) * float("inf"))  # step 6: stepped (no sync), remembered
    s.update(_loss(m, x, y) * float("nan"))  # step 7: the first one stays
    assert s.first_bad() == 6 and s.step == 8


def test_schedule_scales_base_rates_except_fixed_groups():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(
        [{"params": a.parameters(), "lr": 1.0}, {"params": b.parameters(), "lr": 0.2, "fixed_lr": True}]
    )
    seen = []

    def schedule(step: int, total: int | None) -> float:
        seen.append((step, total))
        return 0.25

    s = Stepper(opt, 4, schedule, Runtime("cpu"), "t", "")
    s.update((a(torch.ones(1, 2)) + b(torch.ones(1, 2))).sum())
    s.update((a(torch.ones(1, 2)) + b(torch.ones(1, 2))).sum())
    assert seen == [(0, 4), (1, 4)]
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.2]


def test_clipping_bounds_the_update_of_plain_sgd():
    m = _model()
    before = torch.cat([p.detach().flatten().clone() for p in m.parameters()])
    s = Stepper(torch.optim.SGD(m.parameters(), lr=1.0), 1, None, Runtime("cpu"), "t", "", clip_grad=0.01)
    x, y = _data()
    s.update(_loss(m, 100 * x, y))  # a gradient norm far above 0.01
    moved = torch.cat([p.detach().flatten() for p in m.parameters()]) - before
    assert moved.norm().item() == pytest.approx(0.01, rel=1e-4)
