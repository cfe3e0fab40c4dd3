"""DINOv2's additions as options of DINO: the defaults leave DINO as it was (its loss is exactly
``dino_loss`` of the same outputs), KoLeo adds weight x the regulariser on each global crop's student
features, Sinkhorn-Knopp replaces the centre (which then never moves)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import selfsup
from selfsup.backbones.vit import ViT
from selfsup.data.batch import Batch
from selfsup.losses.distillation import dino_loss, koleo, sinkhorn_knopp_teacher
from selfsup.nn.multicrop import encode_crops
from selfsup.transforms import Views, view_preset

HEADS = dict(out_dim=40, hidden_dim=32, bottleneck_dim=8)


def make(**cfg):
    torch.manual_seed(0)
    encoder = ViT("vit_micro", in_channels=1, image_size=8, patch_size=2)  # no BatchNorm: train mode is exact
    return selfsup.create_method("dino", backbone=encoder, in_channels=1, **{**HEADS, **cfg}).train()


def batch(seed=0, b=16):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 1, 8, 8), dtype=torch.uint8, generator=g)
    out = Batch(images, torch.arange(b))
    cfg = dataclasses.replace(view_preset("dino"), num_local=2, local_size=4)
    out.views = Views(cfg, [0.3], [0.35], image_size=8)(images, g)
    return out


@torch.no_grad()
def outputs(m, views):
    h = encode_crops(m.encoder, views)
    s = m.head(h).view(len(views), len(views[0]), -1)
    t = m.teacher_head(m.teacher_encoder(torch.cat(views[:2]))).view(2, len(views[0]), -1)
    return h, s, t


def test_defaults_leave_dino_bit_identical():
    m = make()
    m.center.normal_()
    assert m.cfg.koleo_weight == 0 and m.cfg.centering == "centre"
    b = batch()
    _, s, t = outputs(m, b.views)
    out = m.training_step(b)
    assert torch.equal(out.loss.detach(), dino_loss(s, t, m.center, 0.1, m.teacher_temp()))
    assert "koleo" not in out.logs


def test_koleo_adds_its_weighted_term_per_global_crop():
    b = batch()
    base = make().training_step(b).loss
    m = make(koleo_weight=0.1)
    h, _, _ = outputs(m, b.views)
    out = m.training_step(b)
    expected = koleo(h[:16]) + koleo(h[16:32])  # each global crop on its own, summed (the official)
    torch.testing.assert_close(out.logs["koleo"], expected)
    torch.testing.assert_close(out.loss, base + 0.1 * expected)
    out.loss.backward()
    assert m.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_sinkhorn_centering_replaces_the_centre():
    m = make(centering="sinkhorn")
    b = batch()
    _, s, t = outputs(m, b.views)
    out = m.training_step(b)
    p_t = sinkhorn_knopp_teacher(t, m.teacher_temp())
    terms = [-(p_t[i] * torch.log_softmax(s[j] / 0.1, -1)).sum(-1).mean() for i in range(2) for j in range(4) if i != j]
    torch.testing.assert_close(out.loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)
    m.on_step_end(0.3)
    assert torch.equal(m.center, torch.zeros(40))


def test_option_checks():
    with pytest.raises(ValueError, match="centering"):
        make(centering="sinkhorn_knopp")
    with pytest.raises(ValueError, match="koleo_weight"):
        make(koleo_weight=-1.0)
