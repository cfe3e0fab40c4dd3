"""Multi-crop views (SwAV/DINO presets and the num_global/num_local fields of ViewConfig)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from selfsup.config import resolve
from selfsup.transforms.views import ViewConfig
from selfsup.nn.multicrop import encode_crops, num_global_crops
from selfsup.transforms import Views, view_preset

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def images(b=8, c=3, s=28, seed=0):
    return torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset,locals_,local_size", [("swav", 6, 12), ("dino", 8, 12)])
def test_presets_give_globals_then_smaller_locals(preset, locals_, local_size):
    views = Views(view_preset(preset), MEAN, STD, image_size=28)
    out = views(images(), torch.Generator().manual_seed(0))
    assert len(out) == 2 + locals_
    assert [tuple(v.shape) for v in out[:2]] == [(8, 3, 28, 28)] * 2
    # 96/224 of the side when local_size is not given: 28 px -> 12 px
    assert [tuple(v.shape) for v in out[2:]] == [(8, 3, local_size, local_size)] * locals_
    assert num_global_crops(out) == 2
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out)


def test_preset_values_follow_the_papers():
    swav, dino = view_preset("swav"), view_preset("dino")
    assert swav.crop_scale == (0.14, 1.0) and swav.local_scale == (0.05, 0.14) and swav.num_local == 6
    assert swav.blur_p == (0.5, 0.5) and swav.local_blur_p == 0.5 and swav.solarize_p == (0.0, 0.0)
    assert dino.crop_scale == (0.4, 1.0) and dino.local_scale == (0.05, 0.4) and dino.num_local == 8
    # DINO: blur 1.0 on global 1, 0.1 + solarize 0.2 on global 2, blur 0.5 on the locals
    assert dino.blur_p == (1.0, 0.1) and dino.solarize_p == (0.0, 0.2)
    assert dino.local_blur_p == 0.5 and dino.local_solarize_p == 0.0


def test_default_config_is_the_classic_two_views_unchanged():
    """The new fields' defaults keep today's behaviour: same two views, same random stream."""
    cfg = ViewConfig()
    assert cfg.num_global == 2 and cfg.num_local == 0
    views = Views(cfg, MEAN, STD, image_size=16)
    x = images(s=16)
    out = views(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    xf = x.float() / 255
    ref = [views.view(xf, i, g) for i in range(2)]
    assert len(out) == 2 and all(torch.equal(a, b) for a, b in zip(out, ref))


def test_multicrop_is_seeded_and_independent_per_sample_and_per_crop():
    cfg = dataclasses.replace(view_preset("swav"), num_local=4, local_size=10)
    views = Views(cfg, MEAN, STD, image_size=20)
    same = images(b=1, s=20).expand(16, -1, -1, -1).contiguous()  # one image, 16 times
    a = views(same, torch.Generator().manual_seed(1))
    b = views(same, torch.Generator().manual_seed(1))
    c = views(same, torch.Generator().manual_seed(2))
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # a seed fixes every crop
    assert not all(torch.equal(p, q) for p, q in zip(a, c))
    for v in a:  # the same image gets different crops within a batch: parameters are per sample
        assert len({tuple(r.flatten().tolist()) for r in v}) == 16
    assert not torch.equal(a[2], a[3]) and not torch.equal(a[0], a[1])  # and per crop


def test_locals_are_smaller_crops_of_the_same_image():
    """With no colour augmentation, a local crop of a constant image has that image's value, and a
    local crop of a two-tone image lies within that image's range: each row comes from its own image."""
    cfg = dataclasses.replace(
        view_preset("dino"),
        jitter_p=0.0,
        gray_p=0.0,
        blur_p=(0.0, 0.0),
        solarize_p=(0.0, 0.0),
        local_blur_p=0.0,
        num_local=3,
        local_size=6,
    )
    views = Views(cfg, [0.0], [1.0], image_size=16)
    levels = torch.arange(8, dtype=torch.uint8) * 30  # image b is constant at level b
    x = levels.view(8, 1, 1, 1).expand(8, 1, 16, 16).contiguous()
    out = views(x, torch.Generator().manual_seed(0))
    for v in out:
        expected = (levels.float() / 255).view(8, 1, 1, 1).expand_as(v)
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-5)
    assert out[-1].shape == (8, 1, 6, 6) and out[0].shape == (8, 1, 16, 16)


def test_local_crops_cover_small_areas():
    """local_scale (0.05, 0.14): a local crop of a half-black/half-white image is mostly uniform more
    often than a global crop with scale (0.14, 1), which nearly always straddles the edge."""
    cfg = dataclasses.replace(
        view_preset("swav"),
        jitter_p=0.0,
        gray_p=0.0,
        blur_p=(0.0, 0.0),
        local_blur_p=0.0,
        flip_p=0.0,
        num_local=1,
        local_size=8,
    )
    x = torch.zeros(256, 1, 32, 32, dtype=torch.uint8)
    x[..., 16:] = 255
    g, loc = Views(cfg, [0.0], [1.0], image_size=32)(x, torch.Generator().manual_seed(0))[1:]
    spread = lambda v: (v.amax((1, 2, 3)) - v.amin((1, 2, 3)) < 0.05).float().mean()  # noqa: E731
    assert spread(loc) > spread(g) + 0.2


def test_config_validation():
    with pytest.raises(ValueError, match="smaller"):
        Views(dataclasses.replace(ViewConfig(), num_local=2, local_size=8), MEAN, STD, image_size=8)
    with pytest.raises(ValueError, match="at least 2 views"):
        Views(dataclasses.replace(ViewConfig(), num_global=1), MEAN, STD, image_size=8)
    # the fields are ordinary recipe keys: a run config overrides them
    cfg = resolve([{"method": "simclr", "views": {"num_local": 4, "local_size": 5, "local_scale": [0.1, 0.3]}}])
    assert cfg.views.num_local == 4 and cfg.views.local_scale == (0.1, 0.3)


def test_encode_crops_groups_by_size_and_keeps_the_order():
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    calls = []
    enc.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    views = Views(view_preset("swav"), MEAN, STD, image_size=14)(images(b=4, s=14), torch.Generator().manual_seed(0))
    h = encode_crops(enc, views)
    assert calls == [(8, 3, 14, 14), (24, 3, 6, 6)]  # one pass per size: 2 globals, 6 locals
    expected = torch.cat([enc(v) for v in views])
    torch.testing.assert_close(h, expected)
    # two same-size views: exactly one pass over their concatenation
    assert torch.equal(encode_crops(enc, views[:2]), enc(torch.cat(views[:2])))


def test_encode_crops_keeps_the_running_statistics_of_the_global_crops():
    """Evaluation uses BN running statistics on full-size images: the local-crop pass must not move them."""
    torch.manual_seed(0)
    enc = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).train()
    ref = copy.deepcopy(enc)
    views = Views(view_preset("swav"), MEAN, STD, image_size=14)(images(b=4, s=14), torch.Generator().manual_seed(0))
    encode_crops(enc, views)
    ref(torch.cat(views[:2]))
    torch.testing.assert_close(enc[1].running_mean, ref[1].running_mean)
    torch.testing.assert_close(enc[1].running_var, ref[1].running_var)
    assert enc[1].momentum == 0.1  # restored after the local pass
