"""SimCLR and BYOL with multi-crop views: unchanged with two views, extra positives with locals;
the loop trains every multi-crop method on views of two sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import selfsup
from selfsup.data.batch import Batch
from selfsup.losses import normalized_mse, nt_xent
from selfsup.train import fit
from selfsup.transforms import Views, view_preset


def make(name, **cfg):
    torch.manual_seed(0)
    return selfsup.create_method(name, backbone="convnet", in_channels=1, width=0.25, **cfg)


def batch(preset, num_local, seed=0, b=16):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 1, 8, 8), dtype=torch.uint8, generator=g)
    out = Batch(images, torch.arange(b))
    cfg = dataclasses.replace(view_preset(preset), num_local=num_local, local_size=5)
    out.views = Views(cfg, [0.3], [0.35], image_size=8)(images, g)
    return out


@pytest.mark.parametrize("decoupled", [False, True])
def test_simclr_two_views_is_exactly_the_classic_loss(decoupled):
    m = make("simclr", proj_hidden=32, proj_dim=16, decoupled=decoupled).train()
    b = batch("simclr", 0)
    out = m.training_step(b)
    x1, x2 = b.views  # the two-view code before multi-crop, verbatim
    n = x1.shape[0]
    z = m.projector(m.encoder(torch.cat([x1, x2])))
    ref, _ = nt_xent(z[:n], z[n:], m.cfg.temperature, decoupled)
    assert torch.equal(out.loss, ref)
    # DCL's loss bounds no mutual information: the method must not log it as InfoNCE's bound
    assert ("infonce_bound" in out.logs) is not decoupled


def test_byol_two_views_is_exactly_the_classic_loss():
    m = make("byol", proj_hidden=32, proj_dim=16, pred_hidden=32).train()
    b = batch("byol", 0)
    loss = m.training_step(b).loss
    x1, x2 = b.views
    n = x1.shape[0]
    x = torch.cat([x1, x2])
    p = m.predictor(m.projector(m.encoder(x)))
    with torch.no_grad():
        z_t = m.target_projector(m.target_encoder(x))
    assert torch.equal(loss, normalized_mse(p[:n], z_t[n:]) + normalized_mse(p[n:], z_t[:n]))


def test_simclr_locals_are_extra_positives_of_the_globals():
    m = make("simclr", proj_hidden=32, proj_dim=16).eval()  # eval: BN independent of the batching
    b = batch("simclr", 3)
    with torch.no_grad():
        z = [m.projector(m.encoder(v)) for v in b.views]
    pairs = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]  # no local-local pairs
    ref = torch.stack([nt_xent(z[i], z[j], m.cfg.temperature)[0] for i, j in pairs]).mean()
    torch.testing.assert_close(m.training_step(b).loss, ref)


def test_byol_locals_predict_the_targets_of_the_globals():
    m = make("byol", proj_hidden=32, proj_dim=16, pred_hidden=32).eval()
    seen = []
    m.target_encoder.register_forward_hook(lambda mod, i, o: seen.append(tuple(i[0].shape)))
    b = batch("byol", 3)
    loss = m.training_step(b).loss
    assert seen == [(32, 1, 8, 8)]  # the target network sees the two global crops only
    with torch.no_grad():
        p = [m.predictor(m.projector(m.encoder(v))) for v in b.views]
        t = [m.target_projector(m.target_encoder(v)) for v in b.views[:2]]
    terms = [normalized_mse(p[j], t[i]) for i in range(2) for j in range(5) if j != i]
    torch.testing.assert_close(loss, 2 * torch.stack(terms).mean())


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_multicrop_gradients_reach_the_encoder(name):
    m = make(name).train()
    m.training_step(batch(name, 4)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())


@pytest.mark.parametrize(
    "method,views",
    [
        # the swav preset's 6 locals, at 5 px rather than its 3 px (96/224 of 8): in bf16 on the CPU, torch
        # 2.14.1's backward of a stride-2 3x3 convolution on a 1x1 input (what 3-px crops become in the
        # convnet's last layer) intermittently returns NaN gradients (docs/methods/multicrop.md)
        ("swav", {"local_size": 5}),
        ("dino", {"num_local": 4, "local_size": 5}),
        ("simclr", {"num_local": 2, "local_size": 6}),
    ],
)
def test_loop_trains_on_views_of_two_sizes(tiny_config, tmp_path, method, views):
    """fit() puts every view in channels_last whatever its size; BN running statistics stay those
    of the global crops, which evaluation uses."""
    heads = {
        "swav": {
            "proj_hidden": 32,
            "proj_dim": 16,
            "num_prototypes": 10,
            "queue_size": 64,
            "queue_start": 0.0,
            "freeze_prototypes_iters": 1,
        },
        "dino": {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 8},
    }.get(method, {})
    cfg = tiny_config(
        method,
        "train.channels_last=true",
        "train.precision=bf16",
        "train.epochs=2",
        *(f"method.{k}={v}" for k, v in heads.items()),
        views=views,
    )
    summary = fit(cfg, tmp_path / "run", progress_bar=False)
    assert summary["steps"] == 8
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 8 and all('"loss": NaN' not in r for r in rows)
