"""View presets and the Views pipeline."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from selfsup.transforms.views import ViewConfig
from selfsup.transforms import Views, eval_view, list_view_presets, view_preset

IDENTITY = ViewConfig(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_p=0.0,
    jitter_p=0.0,
    gray_p=0.0,
    blur_p=(0.0, 0.0),
    solarize_p=(0.0, 0.0),
)


def images(b=5, c=3, s=8, seed=0):
    return torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("c", [1, 3])
def test_views_are_two_normalised_views(c):
    mean, std = [0.1, 0.5, 0.3][:c], [0.2, 0.25, 0.5][:c]
    x = images(c=c)
    v1, v2 = Views(IDENTITY, mean, std, image_size=8)(x, torch.Generator().manual_seed(0))
    expected = (x.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == torch.float32
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("preset", ["simclr", "byol"])
def test_preset_views_differ_and_are_seeded(preset):
    assert preset in list_view_presets()
    x = images(b=16, c=3, s=16)
    views = Views(view_preset(preset), [0.5] * 3, [0.25] * 3, image_size=16)
    a = views(x, torch.Generator().manual_seed(1))
    b = views(x, torch.Generator().manual_seed(1))
    assert len(a) == 2
    assert a[0].shape == (16, 3, 16, 16)
    assert not torch.allclose(a[0], a[1])  # two different views of each image
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    # un-normalised values stay in [0, 1]
    raw = [v * 0.25 + 0.5 for v in a]
    assert min(r.min().item() for r in raw) >= -1e-5 and max(r.max().item() for r in raw) <= 1 + 1e-5


def test_views_size_resizes_and_eval_uses_it():
    cfg = dataclasses.replace(IDENTITY, size=4)
    views = Views(cfg, [0.0], [1.0], image_size=8)
    v1, _ = views(images(c=1), torch.Generator().manual_seed(0))
    assert v1.shape == (5, 1, 4, 4)
    assert views.eval(images(c=1)).shape == (5, 1, 4, 4)


def test_byol_preset_is_asymmetric_and_presets_are_copies():
    byol = view_preset("byol")
    assert byol.blur_p == (1.0, 0.1) and byol.solarize_p == (0.0, 0.2)
    assert tuple(byol.jitter) == (0.4, 0.4, 0.2, 0.1)  # BYOL's table 6: saturation 0.2
    byol.flip_p = 0.0
    assert view_preset("byol").flip_p == 0.5  # mutating a returned preset must not change the preset
    with pytest.raises(KeyError):
        view_preset("nope")


def test_eval_view_resizes_and_normalises():
    x = images(b=3, c=3, s=8)
    y = eval_view(x, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 16)
    assert y.shape == (3, 3, 16, 16)
    # a constant image stays constant through the (antialiased) resize
    const = torch.full((2, 1, 8, 8), 102, dtype=torch.uint8)
    z = eval_view(const, [0.2], [0.4], 20)
    torch.testing.assert_close(z, torch.full((2, 1, 20, 20), (0.4 - 0.2) / 0.4), rtol=0, atol=1e-5)
    # at the native size it is exactly to_float + normalise
    same = eval_view(x, [0.1, 0.2, 0.3], [1.0, 2.0, 4.0], 8)
    expected = (x.float() / 255 - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([1.0, 2.0, 4.0]).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(same, expected)


def test_cmc_views_never_gray_a_colour_image():
    """CMC splits colour into Y and DbDr: a grayed view (DbDr = 0) or a hue shift would let one view
    predict the other, so its preset is crop and flip only (the official code)."""
    import torch

    from selfsup.transforms import Views

    cfg = view_preset("cmc")
    assert cfg.jitter_p == 0 and cfg.gray_p == 0 and cfg.blur_p == (0.0, 0.0)
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(200, 3, 16, 16, dtype=torch.uint8)
    images[:, 0] = 200  # saturated red
    views = Views(cfg, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 16)(images, g)
    for v in views:
        spread = (v.amax(1) - v.amin(1)).flatten(1).amin(1)  # per image: the least colourful pixel
        assert bool((spread > 0.5).all())  # every pixel of every view keeps its colour
