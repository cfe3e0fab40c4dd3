"""DINO's loss against the official loop (DINOLoss.forward in facebookresearch/dino, transcribed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.distillation import dino_loss


def official_dino_loss(student_output, teacher_output, center, ncrops, student_temp, temp):
    student_out = (student_output / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / temp, dim=-1).detach().chunk(2)
    total_loss, n_loss_terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    return total_loss / n_loss_terms


def test_dino_loss_equals_the_official_loop():
    v, b, k = 6, 5, 11
    g = torch.Generator().manual_seed(0)
    s, t, c = torch.randn(v, b, k, generator=g), torch.randn(2, b, k, generator=g), torch.randn(k, generator=g)
    ours = dino_loss(s, t, c, 0.1, 0.04)
    ref = official_dino_loss(s.reshape(v * b, k), t.reshape(2 * b, k), c, v, 0.1, 0.04)
    torch.testing.assert_close(ours, ref)


def test_dino_loss_two_crops_is_the_symmetrised_cross_entropy():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    pt = torch.softmax(t / 0.07, -1)
    h = lambda a, b: -(a * torch.log_softmax(b / 0.1, -1)).sum(-1).mean()  # noqa: E731
    torch.testing.assert_close(dino_loss(s, t, torch.zeros(4), 0.1, 0.07), (h(pt[0], s[1]) + h(pt[1], s[0])) / 2)


def test_no_gradient_reaches_the_teacher_or_the_centre():
    s = torch.randn(4, 3, 7, requires_grad=True)
    t = torch.randn(2, 3, 7, requires_grad=True)
    c = torch.randn(7, requires_grad=True)
    dino_loss(s, t, c).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None and c.grad is None


def test_dino_loss_is_float32_under_autocast():
    g = torch.Generator().manual_seed(2)
    s, t, c = torch.randn(4, 3, 9, generator=g), torch.randn(2, 3, 9, generator=g), torch.randn(9, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dino_loss(s, t, c)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, dino_loss(s, t, c))
