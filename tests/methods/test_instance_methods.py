"""InstDisc, InvaSpread, SupCon and CMC: bank rules, the fixed NCE normaliser, no gradient into
banks, CMC's views and concatenated encoder, SupCon's refusal of unlabelled data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selfsup
from selfsup.data.batch import Batch
from selfsup.losses.contrastive import info_nce
from selfsup.losses.instance import nce_instance
from selfsup.registry import get_method_spec
from selfsup.transforms import Views, view_preset


def make(name, in_channels=1, num_samples=40, **cfg):
    torch.manual_seed(0)
    return selfsup.create_method(
        name, backbone="convnet", in_channels=in_channels, width=0.25, num_samples=num_samples, **cfg
    )


def batch_for(name, b=8, channels=1, seed=0, labels=True, n=40):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, channels, 8, 8), dtype=torch.uint8, generator=g)
    index = torch.randperm(n, generator=g)[:b]
    batch = Batch(images, index, torch.randint(0, 3, (b,), generator=g) if labels else None)
    views = Views(view_preset(get_method_spec(name).views), [0.3] * channels, [0.35] * channels, image_size=8)
    batch.views = views(images, g)
    return batch


def sgd_step(method, batch):
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    out = method.training_step(batch)
    out.loss.backward()
    opt.step()
    opt.zero_grad()
    return out


# ------------------------------------------------------------------------------------ InstDisc


def test_instdisc_bank_moves_only_in_on_step_end_by_the_momentum_rule():
    m = make("instdisc").train()
    batch = batch_for("instdisc")
    before = m.bank.data.clone()
    out = m.training_step(batch)
    assert torch.equal(m.bank.data, before), "the bank changed inside training_step"
    out.loss.backward()
    assert not m.bank.data.requires_grad and m.bank.data.grad is None
    with torch.no_grad():
        f = m.embedding(batch.views[0])  # eval of the same weights: the features the step stored
    m.on_step_end(0.1)
    i = batch.index
    torch.testing.assert_close(m.bank.data[i], F.normalize(0.5 * before[i] + 0.5 * f, dim=1), rtol=1e-5, atol=1e-6)
    others = torch.ones(len(m.bank), dtype=torch.bool)
    others[i] = False
    assert torch.equal(m.bank.data[others], before[others])
    m.on_step_end(0.2)  # the pending list was consumed: a second call changes nothing
    torch.testing.assert_close(m.bank.data[i], F.normalize(0.5 * before[i] + 0.5 * f, dim=1), rtol=1e-5, atol=1e-6)


def test_instdisc_z_is_estimated_once_kept_fixed_and_checkpointed():
    m = make("instdisc").train()
    assert m.nce_z.item() == 0
    sgd_step(m, batch_for("instdisc", seed=0))
    m.on_step_end(0.1)
    z = m.nce_z.item()
    assert z > 0
    sgd_step(m, batch_for("instdisc", seed=1))
    m.on_step_end(0.2)
    assert m.nce_z.item() == z
    # a fresh instance loading the state dict continues with the same Z and the same loss
    m2 = make("instdisc").train()
    m2.load_state_dict(m.state_dict())
    assert m2.nce_z.item() == z
    b = batch_for("instdisc", seed=2)
    torch.manual_seed(5)
    l1 = m.training_step(b).loss
    torch.manual_seed(5)
    l2 = m2.training_step(b).loss
    assert l1.item() == pytest.approx(l2.item(), rel=1e-6)


def test_instdisc_loss_is_nce_plus_the_proximal_term():
    m = make("instdisc", negatives=32).train()
    batch = batch_for("instdisc")
    torch.manual_seed(3)
    out = m.training_step(batch)
    torch.manual_seed(3)
    noise = m.bank.sample(32)
    with torch.no_grad():
        f = m.embedding(batch.views[0])
        v = m.bank.data[batch.index]
        nce, _, _ = nce_instance(f, v, m.bank.data[noise], 0.07, m.nce_z.log(), len(m.bank))
        prox = (f - v).pow(2).sum(1).mean()
    assert out.loss.item() == pytest.approx((nce + 30 * prox).item(), rel=1e-4)
    assert {"nce_pos", "nce_noise", "prox", "infonce_bound", "nce_z"} <= set(out.logs)


def test_instdisc_softmax_variant_is_info_nce_over_the_sampled_bank_entries():
    m = make("instdisc", negatives=16, loss="softmax", prox_lambda=0.0).train()
    batch = batch_for("instdisc")
    torch.manual_seed(4)
    out = m.training_step(batch)
    torch.manual_seed(4)
    noise = m.bank.sample(16)
    with torch.no_grad():
        want, k = info_nce(m.embedding(batch.views[0]), m.bank.data[batch.index], m.bank.data[noise], 0.07)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.logs["infonce_bound"] == pytest.approx(torch.log(torch.tensor(17.0)).item() - want.item(), rel=1e-4)
    assert m.nce_z.item() == 0  # the softmax needs no normaliser


def test_instdisc_rejects_an_unknown_loss():
    with pytest.raises(ValueError, match="'nce' or 'softmax'"):
        make("instdisc", loss="ncee")


# ---------------------------------------------------------------------------------- InvaSpread


def test_invaspread_has_no_bank_and_no_frozen_state():
    m = make("invaspread")
    assert all(p.requires_grad for p in m.parameters())
    assert not [n for n, _ in m.named_buffers() if "bank" in n or "queue" in n]
    out = m.train().training_step(batch_for("invaspread"))
    assert out.logs["spreading"] > 0 and out.logs["invariance"] > 0


# ------------------------------------------------------------------------------------- SupCon


def test_supcon_refuses_unlabelled_batches_and_names_the_fix():
    m = make("supcon").train()
    with pytest.raises(ValueError, match="needs a class label") as e:
        m.training_step(batch_for("supcon", labels=False))
    assert "--method simclr" in str(e.value) and "labelled dataset" in str(e.value)


def test_supcon_is_marked_as_using_labels(capsys):
    from selfsup.cli import main

    assert get_method_spec("supcon").uses_labels
    assert not get_method_spec("instdisc").uses_labels
    assert main(["list", "methods", "-v"]) == 0
    assert "supcon  (uses labels)" in capsys.readouterr().out


def test_supcon_positives_come_from_labels():
    m = make("supcon").eval()  # eval: BatchNorm statistics do not depend on the batch split
    b = batch_for("supcon")
    same = Batch(b.images, b.index, torch.zeros_like(b.labels), b.views)
    distinct = Batch(b.images, b.index, torch.arange(len(b.labels)), b.views)
    assert m.training_step(same).loss.item() != pytest.approx(m.training_step(distinct).loss.item())


# ----------------------------------------------------------------------------------------- CMC


def test_cmc_gray_views_are_image_and_sobel_gradient():
    m = make("cmc")
    ramp = torch.arange(8.0).repeat(8, 1)[None, None]  # intensity rises by 1 per column
    v1, v2 = m.encoder.views(ramp)
    assert torch.equal(v1, ramp) and v2.shape == (1, 2, 8, 8)
    torch.testing.assert_close(v2[0, 0, :, 1:-1], torch.ones(8, 6))  # d/dx = 1 inside
    torch.testing.assert_close(v2[0, 1], torch.zeros(8, 8))  # no vertical change anywhere (replicate pad)


def test_cmc_colour_views_are_y_and_dbdr():
    m = make("cmc", in_channels=3)
    x = torch.randn(2, 3, 8, 8)
    y, dbdr = m.encoder.views(x)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    torch.testing.assert_close(y, 0.299 * r + 0.587 * g + 0.114 * b)
    torch.testing.assert_close(dbdr[:, :1], -0.450 * r - 0.883 * g + 1.333 * b)
    torch.testing.assert_close(dbdr[:, 1:], -1.333 * r + 1.116 * g + 0.217 * b)
    grey = torch.randn(2, 1, 8, 8).expand(2, 3, 8, 8)
    assert m.encoder.views(grey)[1].abs().max() < 1e-5  # grey has no chrominance
    assert m.encoder.enc1.features[0].in_channels == 1 and m.encoder.enc2.features[0].in_channels == 2
    out = m.train().training_step(batch_for("cmc", channels=3))
    out.loss.backward()
    assert all(p.grad is not None for p in m.encoder.parameters())


def test_cmc_encoder_is_the_concatenation_of_both_view_encoders():
    m = make("cmc").eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        h = m.encoder(x)
        v1, v2 = m.encoder.views(x)
        want = torch.cat([m.encoder.enc1(v1), m.encoder.enc2(v2)], 1)
    assert m.encoder.num_features == m.encoder.enc1.num_features + m.encoder.enc2.num_features
    torch.testing.assert_close(h, want)
    assert {n.split(".")[0] for n, _ in m.named_parameters()} == {"encoder", "head1", "head2"}


def test_cmc_loss_is_the_two_directions_against_the_other_views_bank():
    m = make("cmc", negatives=24).train()
    batch = batch_for("cmc")
    torch.manual_seed(7)
    out = m.training_step(batch)
    torch.manual_seed(7)
    neg = m.bank1.sample(24)
    with torch.no_grad():
        z1, z2 = m.embed_views(batch.views[0])
        i = batch.index
        l12, _ = info_nce(z1, m.bank2.data[i], m.bank2.data[neg], 0.07)
        l21, _ = info_nce(z2, m.bank1.data[i], m.bank1.data[neg], 0.07)
    assert out.loss.item() == pytest.approx((l12 + l21).item(), rel=1e-4)


def test_cmc_banks_update_after_the_step_and_get_no_gradient():
    m = make("cmc").train()
    batch = batch_for("cmc")
    b1, b2 = m.bank1.data.clone(), m.bank2.data.clone()
    assert not torch.equal(b1, b2)  # two independent random initialisations
    out = m.training_step(batch)
    out.loss.backward()
    assert torch.equal(m.bank1.data, b1) and torch.equal(m.bank2.data, b2)
    assert m.bank1.data.grad is None and m.bank2.data.grad is None
    with torch.no_grad():
        z1, z2 = m.embed_views(batch.views[0])
    m.on_step_end(0.5)
    i = batch.index
    torch.testing.assert_close(m.bank1.data[i], F.normalize(0.5 * b1[i] + 0.5 * z1, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.bank2.data[i], F.normalize(0.5 * b2[i] + 0.5 * z2, dim=1), rtol=1e-5, atol=1e-6)


def test_cmc_needs_a_backbone_it_can_clone():
    from torch import nn

    class Plain(nn.Module):
        num_features = 4

        def forward(self, x):
            return x.flatten(1)[:, :4]

    with pytest.raises(TypeError, match="create_backbone"):
        selfsup.create_method("cmc", backbone=Plain(), num_samples=10)
