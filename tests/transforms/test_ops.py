"""Batched augmentations: shapes, ranges, per-sample randomness, seeding, exact special cases."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from selfsup.transforms import ops


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 6, c: int = 3, s: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, s, s, generator=gen(seed))


def full_pipeline(x: torch.Tensor, g: torch.Generator, size: int = 10) -> torch.Tensor:
    v = ops.random_resized_crop(x, size, gen=g)
    v = ops.color_jitter(v, p=1.0, gen=g)
    v = ops.random_grayscale(v, 0.5, gen=g)
    v = ops.gaussian_blur(v, 0.5, gen=g)
    return ops.solarize(v, 0.5, gen=g)


@pytest.mark.parametrize("c", [1, 3])
def test_shapes_dtype_and_range(c):
    x = batch(c=c, s=16)
    y = full_pipeline(x, gen(), size=10)
    assert y.shape == (6, c, 10, 10)
    assert y.dtype == torch.float32
    assert y.min() >= 0.0 and y.max() <= 1.0
    # extreme inputs stay in range too
    for extreme in (torch.zeros_like(x), torch.ones_like(x)):
        z = full_pipeline(extreme, gen(1), size=10)
        assert z.min() >= 0.0 and z.max() <= 1.0


def test_to_float_and_normalize():
    u = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    x = ops.to_float(u)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    y = ops.normalize(x, [0.0, 0.1, 0.5], [1.0, 0.5, 0.25])
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.2, 2.0]))


@pytest.mark.parametrize("c", [1, 3])
def test_each_sample_gets_its_own_random_parameters(c):
    x = batch(b=1, c=c, s=16).expand(8, -1, -1, -1).contiguous()  # 8 copies of one image
    for fn in (
        lambda t, g: ops.random_resized_crop(t, 16, gen=g),
        lambda t, g: ops.color_jitter(t, p=1.0, gen=g),
        lambda t, g: full_pipeline(t, g, 16),
    ):
        y = fn(x, gen(3))
        distinct = {tuple(row.flatten().tolist()) for row in y}
        assert len(distinct) == 8, "identical images in one batch must get different augmentations"


def test_same_seed_same_views_other_seed_other_views():
    x = batch(c=3, s=16)
    a, b, c = full_pipeline(x, gen(7)), full_pipeline(x, gen(7)), full_pipeline(x, gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("c", [1, 3])
def test_full_crop_without_flip_is_identity_and_flip_mirrors(c):
    x = batch(c=c, s=9)
    same = ops.random_resized_crop(x, 9, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, gen=gen())
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5)
    mirrored = ops.random_resized_crop(x, 9, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, gen=gen())
    torch.testing.assert_close(mirrored, torch.flip(x, dims=[-1]), rtol=0, atol=1e-5)


def test_crop_of_a_quarter_shows_part_of_the_image():
    # left half 0, right half 1: a 1/4-area crop resized to the full side is mostly one value
    # for some images, and the output is never a plain resize of the whole image.
    x = torch.zeros(64, 1, 16, 16)
    x[..., 8:] = 1.0
    y = ops.random_resized_crop(x, 16, scale=(0.25, 0.25), ratio=(1.0, 1.0), flip_p=0.0, gen=gen())
    frac_ones = y.mean(dim=(1, 2, 3))
    assert (frac_ones < 0.1).any() and (frac_ones > 0.9).any()


def test_solarize_inverts_exactly_the_bright_pixels():
    x = torch.linspace(0, 1, 2 * 3 * 5 * 5).view(2, 3, 5, 5)
    y = ops.solarize(x, p=1.0, threshold=0.5, gen=gen())
    bright = x >= 0.5
    assert torch.equal(y[bright], 1 - x[bright])
    assert torch.equal(y[~bright], x[~bright])
    assert torch.equal(ops.solarize(x, p=0.0, gen=gen()), x)


def test_gaussian_blur_constant_image_mean_and_p0():
    const = torch.full((3, 3, 20, 20), 0.37)
    torch.testing.assert_close(ops.gaussian_blur(const, p=1.0, gen=gen()), const, rtol=0, atol=1e-6)
    x = batch(b=4, c=3, s=32)
    y = ops.gaussian_blur(x, p=1.0, sigma=(1.0, 2.0), gen=gen())
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0, atol=0.02)
    assert y.std() < x.std()  # it does blur
    assert torch.equal(ops.gaussian_blur(x, p=0.0, gen=gen()), x)


@pytest.mark.parametrize("side,kernel", [(224, 23), (64, 7), (32, 3)])
def test_gaussian_blur_equals_torchvision_blur_with_sigma_in_pixels(side, kernel):
    """sigma is in pixels (torchvision's GaussianBlur) and the kernel side is ~10 % of the image, odd
    (SimCLR: 23 px at 224): with a fixed sigma the blur equals torchvision's, reflect padding included."""
    x = torch.rand(2, 3, side, side, generator=gen())
    for sigma in (0.5, 1.5):
        y = ops.gaussian_blur(x, p=1.0, sigma=(sigma, sigma), gen=gen())
        ref = TF.gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
        torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("c", [1, 3])
def test_color_jitter_with_zero_strength_is_identity(c):
    x = batch(c=c)
    y = ops.color_jitter(x, strength=(0.0, 0.0, 0.0, 0.0), p=1.0, gen=gen())
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    assert torch.equal(ops.color_jitter(x, p=0.0, gen=gen()), x)


def test_color_jitter_brightness_scales_dark_images():
    x = torch.full((16, 1, 4, 4), 0.25)
    y = ops.color_jitter(x, strength=(0.4, 0.0, 0.0, 0.0), p=1.0, gen=gen())
    factor = y[:, 0, 0, 0] / 0.25
    assert ((factor >= 0.6 - 1e-6) & (factor <= 1.4 + 1e-6)).all()
    assert factor.std() > 0.05
    assert torch.allclose(y, factor.view(-1, 1, 1, 1) * x)  # a uniform image stays uniform


def test_grayscale_gives_equal_channels_with_luma_weights():
    x = batch(c=3)
    y = ops.random_grayscale(x, p=1.0, gen=gen())
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(y[:, 0], luma)
    assert torch.equal(ops.random_grayscale(x, p=0.0, gen=gen()), x)
    one = batch(c=1)
    assert torch.equal(ops.random_grayscale(one, p=1.0, gen=gen()), one)
