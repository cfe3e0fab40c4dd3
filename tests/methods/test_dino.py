"""DINO: centre update arithmetic, no gradient to the teacher, EMA teacher, temperature schedule,
the loss against an explicit computation, the ablation switches, and learning on digits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import selfsup
from selfsup.data.batch import Batch
from selfsup.nn import cosine_momentum
from selfsup.transforms import Views, view_preset

HEADS = dict(out_dim=40, hidden_dim=32, bottleneck_dim=8)


def make(**cfg):
    torch.manual_seed(0)
    return selfsup.create_method("dino", backbone="convnet", in_channels=1, width=0.25, **{**HEADS, **cfg})


def batch(seed=0, b=16, num_local=3):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 1, 8, 8), dtype=torch.uint8, generator=g)
    out = Batch(images, torch.arange(b))
    cfg = dataclasses.replace(view_preset("dino"), num_local=num_local, local_size=5)
    out.views = Views(cfg, [0.3], [0.35], image_size=8)(images, g)
    return out


@torch.no_grad()
def teacher_logits(m, views):
    return m.teacher_head(m.teacher_encoder(torch.cat(views[:2])))  # [2B, K]


def test_loss_equals_explicit_pairs():
    """Eval mode, so that BatchNorm does not depend on how the crops are batched."""
    m = make().eval()
    b = batch()
    with torch.no_grad():
        s = [m.head(m.encoder(v)) for v in b.views]  # [B, K] per crop
        t = teacher_logits(m, b.views).chunk(2)
    tau_s, tau_t = 0.1, m.teacher_temp()
    assert tau_t == pytest.approx(0.04)  # progress 0: the start of the warm-up
    terms = []
    for i in range(2):
        p_t = torch.softmax((t[i] - m.center) / tau_t, dim=-1)
        for j in range(len(s)):
            if j != i:
                terms.append(-(p_t * torch.log_softmax(s[j] / tau_s, dim=-1)).sum(-1).mean())
    assert len(terms) == 2 * (len(s) - 1)
    torch.testing.assert_close(m.training_step(b).loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_teacher_gets_no_gradient():
    m = make().train()
    m.training_step(batch()).loss.backward()
    for name, p in list(m.teacher_encoder.named_parameters()) + list(m.teacher_head.named_parameters()):
        assert not p.requires_grad and p.grad is None, name
    assert m.encoder.features[0].weight.grad is not None
    assert m.center.grad is None and not m.center.requires_grad


def test_centre_update_arithmetic():
    """c <- m c + (1 - m) mean of the teacher logits over the step's crops and images; with two
    micro-batches before one optimiser step (accumulation), the mean of both."""
    m = make().eval()
    b0, b1, b2 = batch(0), batch(1), batch(2)
    assert torch.equal(m.center, torch.zeros(40))
    t0 = teacher_logits(m, b0.views)
    m.training_step(b0)
    m.on_step_end(0.1)
    c1 = 0.9 * torch.zeros(40) + 0.1 * t0.mean(0)
    # the EMA moved nothing (no optimiser step), so the teacher is unchanged for the next checks
    torch.testing.assert_close(m.center, c1)
    t1, t2 = teacher_logits(m, b1.views), teacher_logits(m, b2.views)
    m.training_step(b1)
    m.training_step(b2)
    m.on_step_end(0.2)
    torch.testing.assert_close(m.center, 0.9 * c1 + 0.1 * (t1.mean(0) + t2.mean(0)) / 2)
    assert "center" in dict(m.named_buffers())


def test_no_centering_ablation_keeps_the_centre_at_zero():
    m = make(center=False).train()
    m.training_step(batch())
    m.on_step_end(0.5)
    assert torch.equal(m.center, torch.zeros(40))


def test_teacher_is_the_ema_of_the_student():
    m = make().train()
    t_old = m.teacher_encoder.features[0].weight.detach().clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    m.training_step(batch()).loss.backward()
    opt.step()
    student = m.encoder.features[0].weight.detach().clone()
    m.on_step_end(0.5)
    mom = cosine_momentum(0.996, 0.5)
    torch.testing.assert_close(
        m.teacher_encoder.features[0].weight, mom * t_old + (1 - mom) * student, rtol=1e-6, atol=1e-8
    )
    g = m.teacher_head.last_layer.parametrizations.weight.original0
    assert torch.equal(g, torch.ones_like(g))  # the teacher's weight norm stays 1 as well


def test_teacher_temperature_schedule_and_sharpening_ablation():
    m = make()
    for progress, expected in [(0.0, 0.04), (0.15, 0.055), (0.3, 0.07), (0.9, 0.07)]:
        m.on_step_end(progress)
        assert m.teacher_temp() == pytest.approx(expected)
        assert float(m.progress) == pytest.approx(progress)  # a buffer: a resumed run has it
    off = make(teacher_temp=0.1, warmup_teacher_temp=0.1)  # no sharpening: the teacher at the student's temperature
    for progress in (0.0, 0.2, 0.8):
        off.on_step_end(progress)
        assert off.teacher_temp() == pytest.approx(off.cfg.student_temp)


def test_last_layer_frozen_at_the_start_only():
    m = make(freeze_last_layer=0.1).train()
    v = m.head.last_layer.parametrizations.weight.original1
    m.training_step(batch()).loss.backward()
    assert v.grad is None
    m.zero_grad(set_to_none=True)
    m.on_step_end(0.2)
    m.training_step(batch()).loss.backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_teacher_sees_only_the_global_crops():
    m = make()
    seen = []
    m.teacher_encoder.register_forward_hook(lambda mod, i, o: seen.append(tuple(i[0].shape)))
    m.training_step(batch(num_local=4))
    assert seen == [(32, 1, 8, 8)]
