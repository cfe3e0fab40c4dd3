"""SwAV: prototypes on the sphere and frozen at first, codes from globals only, the queue, the loss
against an explicit computation, and learning on digits."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import selfsup
from selfsup.data.batch import Batch
from selfsup.transforms import Views, view_preset

HEADS = dict(proj_hidden=32, proj_dim=16, num_prototypes=20)


def make(**cfg):
    torch.manual_seed(0)
    return selfsup.create_method("swav", backbone="convnet", in_channels=1, width=0.25, **{**HEADS, **cfg})


def batch(seed=0, b=16, num_local=3):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 1, 8, 8), dtype=torch.uint8, generator=g)
    out = Batch(images, torch.arange(b))
    cfg = dataclasses.replace(view_preset("swav"), num_local=num_local, local_size=5)
    out.views = Views(cfg, [0.3], [0.35], image_size=8)(images, g)
    return out


def official_sinkhorn(out, eps, iters):
    Q = torch.exp(out / eps).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iters):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    return (Q * B).t()


def explicit_loss(m, views, queues=None):
    """main_swav.py's loop: codes for the 2 global crops (with the queue in front when given),
    each predicted by every other crop."""
    bs = views[0].shape[0]
    with torch.no_grad():
        z = (
            torch.cat(
                [
                    F.normalize(m.projector(m.encoder(torch.cat(views[:2]))), dim=1),
                    F.normalize(m.projector(m.encoder(torch.cat(views[2:]))), dim=1),
                ]
            )
            if len(views) > 2
            else F.normalize(m.projector(m.encoder(torch.cat(views))), dim=1)
        )
    output = z @ m.prototypes.weight.T
    loss = 0
    for crop_id in range(2):
        out = output[bs * crop_id : bs * (crop_id + 1)].detach()
        if queues is not None:
            out = torch.cat((queues[crop_id] @ m.prototypes.weight.t(), out))
        q = official_sinkhorn(out, m.cfg.epsilon, m.cfg.sinkhorn_iters)[-bs:]
        subloss = 0
        for v in [v for v in range(len(views)) if v != crop_id]:
            x = output[bs * v : bs * (v + 1)] / m.cfg.temperature
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (len(views) - 1)
    return loss / 2


def sgd_step(m, b, lr=0.5):
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr)
    out = m.training_step(b)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out


def test_loss_equals_the_official_computation():
    """Forward passes in eval mode, so that BatchNorm is the same however the crops are batched."""
    m = make().eval()
    b = batch()
    assert len(b.views) == 5 and b.views[2].shape[-1] == 5
    torch.testing.assert_close(m.training_step(b).loss, explicit_loss(m, b.views), rtol=1e-5, atol=1e-6)


def test_prototypes_are_unit_vectors_at_init_and_after_every_step():
    m = make(freeze_prototypes_iters=0).train()
    torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(20))
    before = m.prototypes.weight.detach().clone()
    sgd_step(m, batch(), lr=5.0)
    assert not torch.allclose(
        m.prototypes.weight.norm(dim=1), torch.ones(20), atol=1e-3
    )  # the step moved off the sphere
    m.on_step_end(0.1)
    torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(20))
    assert not torch.allclose(m.prototypes.weight, before)


def test_prototypes_are_frozen_for_the_first_iterations():
    m = make(freeze_prototypes_iters=2).train()
    before = m.prototypes.weight.detach().clone()
    for step in range(2):
        m.training_step(batch(step)).loss.backward()
        assert m.prototypes.weight.grad is None, "frozen prototypes must get no gradient (the optimiser skips them)"
        assert m.encoder.features[0].weight.grad is not None
        m.zero_grad(set_to_none=True)
        sgd_step(m, batch(step))
        m.on_step_end(0.1)
        torch.testing.assert_close(m.prototypes.weight.detach(), before, rtol=0, atol=1e-6)  # re-normalised only
    assert int(m.iteration) == 2  # the counter is a buffer: checkpoints carry it
    assert "iteration" in dict(m.named_buffers())
    m.training_step(batch(5)).loss.backward()
    assert m.prototypes.weight.grad is not None and m.prototypes.weight.grad.abs().sum() > 0


def test_queue_fills_after_queue_start_and_joins_sinkhorn_once_full():
    m = make(queue_size=32, queue_start=0.5).eval()  # eval: deterministic forwards for the comparisons
    assert len(m.queues) == 2 and all(len(q) == 0 for q in m.queues)
    b0, b1, b2 = batch(0), batch(1), batch(2)
    m.training_step(b0)
    m.on_step_end(0.2)  # before queue_start: nothing stored
    assert all(len(q) == 0 for q in m.queues)
    m.training_step(b1)
    m.on_step_end(0.6)
    assert all(len(q) == 16 for q in m.queues)
    with torch.no_grad():  # the queue holds the normalised projections of the two global crops of b1
        z = F.normalize(m.projector(m.encoder(torch.cat(b1.views[:2]))), dim=1)
    torch.testing.assert_close(m.queues[0].items(), z[:16])
    torch.testing.assert_close(m.queues[1].items(), z[16:])
    # half full: not used yet
    torch.testing.assert_close(m.training_step(b2).loss, explicit_loss(m, b2.views), rtol=1e-5, atol=1e-6)
    m.on_step_end(0.7)
    assert all(len(q) == 32 for q in m.queues)
    queues = [q.items() for q in m.queues]
    loss = m.training_step(b0).loss
    torch.testing.assert_close(loss, explicit_loss(m, b0.views, queues), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(loss, explicit_loss(m, b0.views))  # the queue changed the codes
    assert all(not b.requires_grad for b in m.buffers())


def test_queue_needs_one_queue_per_global_crop():
    m = make(queue_size=32, queue_crops=3)
    with pytest.raises(ValueError, match="queue_crops"):
        m.training_step(batch())


def test_codes_come_from_the_global_crops_only(monkeypatch):
    import selfsup.methods.swav as swav

    calls = []
    real = swav.sinkhorn
    monkeypatch.setattr(swav, "sinkhorn", lambda s, *a, **k: calls.append(s.shape) or real(s, *a, **k))
    make().training_step(batch(num_local=4))  # 2 global + 4 local crops
    assert calls == [(16, 20), (16, 20)]
