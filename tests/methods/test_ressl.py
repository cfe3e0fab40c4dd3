"""ReSSL: the loss is the cross-entropy between the teacher's sharpened relation to the queue and the
student's (checked against eq. 3-5 written out, inside a full step), the student sees the strong view 2
and the teacher the weak view 1, the queue and the EMA change only in on_step_end; it learns on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe, trained_vs_random

import selfsup
from selfsup.data.batch import Batch
from selfsup.losses.distillation import relational_loss
from selfsup.methods.ressl import ReSSL, ReSSLConfig

SMALL = {"proj_hidden": 32, "proj_dim": 16, "queue_size": 40}


def make(**cfg) -> ReSSL:
    torch.manual_seed(0)
    return selfsup.create_method("ressl", backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(seed: int = 0, b: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b), torch.zeros(b, dtype=torch.long))
    out.views = [torch.randn(b, 1, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)]
    return out


def eq5(z_s: torch.Tensor, z_t: torch.Tensor, queue: torch.Tensor, tau_s: float = 0.1, tau_t: float = 0.04) -> float:
    """-1/N sum_i sum_j p_t^ij log p_s^ij with p^ij = exp(cos(z_i, q_j)/tau) / sum_l exp(cos(z_i, q_l)/tau)."""
    total = 0.0
    for i in range(z_s.shape[0]):
        cs = [float(F.cosine_similarity(z_s[i], qj, dim=0)) for qj in queue]
        ct = [float(F.cosine_similarity(z_t[i], qj, dim=0)) for qj in queue]
        ns = sum(math.exp(c / tau_s) for c in cs)
        nt = sum(math.exp(c / tau_t) for c in ct)
        total -= sum(math.exp(b / tau_t) / nt * math.log(math.exp(a / tau_s) / ns) for a, b in zip(cs, ct))
    return total / z_s.shape[0]


def test_defaults_are_the_papers():
    c = ReSSLConfig()
    assert (c.student_temp, c.teacher_temp, c.momentum, c.queue_size, c.proj_dim) == (0.1, 0.04, 0.999, 131072, 512)
    assert selfsup.registry.get_method_spec("ressl").views == "weak_strong"


def test_relational_loss_against_eq5():
    g = torch.Generator().manual_seed(0)
    z_s, z_t, queue = (torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), torch.randn(20, 8, generator=g))
    assert relational_loss(z_s, z_t, queue).item() == pytest.approx(eq5(z_s, z_t, queue), rel=1e-5)
    assert relational_loss(z_s, z_t, queue, 0.2, 0.05).item() == pytest.approx(
        eq5(z_s, z_t, queue, 0.2, 0.05), rel=1e-5
    )
    # the teacher is a target: no gradient reaches it
    z_t.requires_grad_(True)
    z_s.requires_grad_(True)
    relational_loss(z_s, z_t, queue).backward()
    assert z_t.grad is None and z_s.grad.abs().sum() > 0


def test_step_relates_the_strong_student_and_the_weak_teacher_to_the_queue():
    m = make()
    torch.manual_seed(1)
    queue = torch.randn(25, 16)
    m.queue.push(queue)
    b = batch()
    out = m.training_step(b)
    with torch.no_grad():
        z_s = m.projector(m.encoder(b.views[1]))  # student: the strong view 2
        z_t = m.teacher_projector(m.teacher_encoder(b.views[0]))  # teacher: the weak view 1
    assert out.loss.item() == pytest.approx(eq5(z_s, z_t, queue), rel=1e-5)


def test_state_changes_only_in_on_step_end():
    m = make()
    teacher = {k: v.detach().clone() for k, v in m.teacher_encoder.named_parameters()}
    out = m.training_step(batch())  # first step: empty queue, relations to the batch's own teacher embeddings
    assert torch.isfinite(out.loss) and len(m.queue) == 0
    assert all(torch.equal(v, teacher[k]) for k, v in m.teacher_encoder.named_parameters())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    assert all(p.grad is None for p in m.teacher_encoder.parameters())
    opt.step()
    online = {k: v.detach().clone() for k, v in m.encoder.named_parameters()}
    m.on_step_end(0.5)
    assert len(m.queue) == 10
    torch.testing.assert_close(m.queue.items().norm(dim=1), torch.ones(10))
    for k, v in m.teacher_encoder.named_parameters():  # theta_t <- 0.999 theta_t + 0.001 theta
        torch.testing.assert_close(v, 0.999 * teacher[k] + 0.001 * online[k])


def test_learns_digits(tmp_path):
    trained, random = trained_vs_random(
        tmp_path, digits_recipe("ressl", 30, {"proj_hidden": 256, "proj_dim": 64, "queue_size": 1024, "momentum": 0.99})
    )
    print(
        f"ressl kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.045  # seen 0.947 vs 0.880, kNN-20 0.969 vs 0.942
    assert trained["top1_k20"] >= random["top1_k20"] + 0.01
    assert trained["top1"] >= 0.91
