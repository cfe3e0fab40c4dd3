"""The strong and weak views: each RandAugment op against PIL (the papers' implementation) where PIL
has it, per-image independence, determinism under a seed, and Cutout's geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from selfsup.transforms import randaugment as ra


def _img(seed=0, c=3, side=16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(20, 230, (1, c, side, side), generator=g).float() / 255


def _pil(x: torch.Tensor) -> Image.Image:
    a = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(a if a.shape[2] == 3 else a[..., 0])


def _back(img: Image.Image) -> torch.Tensor:
    a = np.asarray(img).astype(np.float32) / 255
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1)[None]


@pytest.mark.parametrize(
    "name, ours, theirs",
    [
        ("posterize", lambda x: ra.posterize(x, torch.tensor([5.0])), lambda im: ImageOps.posterize(im, 5)),
        ("solarize", lambda x: ra.solarize(x, torch.tensor([128 / 255])), lambda im: ImageOps.solarize(im, 128)),
        ("autocontrast", lambda x: ra.autocontrast(x, torch.tensor([0.0])), ImageOps.autocontrast),
        (
            "brightness",
            lambda x: ra.brightness(x, torch.tensor([0.6])),
            lambda im: ImageEnhance.Brightness(im).enhance(0.6),
        ),
        ("equalize", lambda x: ra.equalize(x, torch.tensor([0.0])), ImageOps.equalize),
    ],
)
def test_ops_match_pil(name, ours, theirs):
    x = _img()
    got, ref = ours(x), _back(theirs(_pil(x)))
    assert (got - ref).abs().max().item() <= 1.5 / 255, name  # within a gray level: PIL rounds to uint8


def test_contrast_and_color_blend_towards_their_degenerate_images():
    x = _img()
    assert torch.allclose(ra.contrast(x, torch.tensor([0.0])), ra.luma(x).mean().expand_as(x), atol=1e-6)
    gray = ra.color(x, torch.tensor([0.0]))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    for op in (ra.contrast, ra.color, ra.brightness, ra.sharpness):
        assert torch.allclose(op(x, torch.tensor([1.0])), x, atol=1e-6)  # factor 1: the image itself


def test_geometric_ops_at_zero_are_the_identity_and_fill_uncovered_pixels_gray():
    x = _img(side=12)
    for op in (ra.rotate, ra.shear_x, ra.shear_y, ra.translate_x, ra.translate_y):
        assert torch.allclose(op(x, torch.tensor([0.0])), x, atol=1e-5)
    # PIL's convention (FixMatch's ops): output(x) = input(x + v w), a shift left uncovering the right edge
    moved = ra.translate_x(x, torch.tensor([0.25]))  # a quarter of the width: 3 columns
    assert torch.allclose(moved[..., -3:], torch.full_like(moved[..., -3:], ra.GRAY), atol=1e-5)
    assert torch.allclose(moved[..., :-3], x[..., 3:], atol=1e-5)


def test_every_image_draws_its_own_ops_and_a_seed_repeats_them():
    x = _img().expand(64, -1, -1, -1).contiguous()
    a = ra.rand_augment(x, gen=torch.Generator().manual_seed(0))
    b = ra.rand_augment(x, gen=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    distinct = {tuple(v.flatten()[:40].mul(1000).round().tolist()) for v in a}
    assert len(distinct) > 30  # one image, 64 different augmentations
    assert a.min() >= 0 and a.max() <= 1


def test_cutout_fills_one_square_of_at_most_half_the_side():
    x = torch.zeros(200, 1, 20, 20)
    y = ra.cutout(x, 0.5, fill=1.0, gen=torch.Generator().manual_seed(0))
    for img in y[:, 0]:
        rows, cols = img.sum(1).nonzero().flatten(), img.sum(0).nonzero().flatten()
        if len(rows):
            h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert h <= 11 and w <= 11 and img.sum() == h * w  # one filled rectangle (clipped at the border)
    assert (y.flatten(1).sum(1) > 0).float().mean() > 0.9


def test_weak_view_is_a_flip_and_a_small_shift():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(500, -1, -1, -1) / 64
    y = ra.weak_augment(x, translate=0.125, flip_p=0.5, gen=torch.Generator().manual_seed(0))
    # nearest sampling of a shifted grid: every output value is an input value
    assert set((y * 64).round().unique().tolist()) <= set(range(64))
    flipped = (y[:, 0, 4, 1:7] - y[:, 0, 4, 0:6]).mean(1) < 0  # values fall along a row
    assert 0.4 < flipped.float().mean() < 0.6
