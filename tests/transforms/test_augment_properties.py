"""Property-based tests (hypothesis) of the batched augmentations and the views built from them:
for random batch sizes, channel counts, image sizes, crop scales and strengths, the output has the
configured shape and dtype, stays finite and in range, is a function of the generator's seed, is the
identity where the strengths are zero, and crops never sample outside the image."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings, strategies as st

from selfsup.transforms.views import ViewConfig
from selfsup.transforms import Views, eval_view, ops

FAST = settings()  # the profile in tests/conftest.py sets the counts

batch_sizes = st.integers(1, 5)
channels = st.sampled_from([1, 3])
sides = st.integers(1, 24)
seeds = st.integers(0, 2**31 - 1)
probs = st.floats(0, 1)


def _pair(lo: float, hi: float):
    return st.lists(st.floats(lo, hi), min_size=2, max_size=2).map(lambda v: tuple(sorted(v)))


scales = _pair(0.01, 1.0)
ratios = _pair(0.5, 2.0)
jitters = st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.5))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int, c: int, h: int, w: int | None = None, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w or h, generator=gen(seed))


# ------------------------------------------------------------------------------ random_resized_crop


@FAST
@given(batch_sizes, channels, sides, sides, sides, scales, ratios, probs, seeds)
def test_crop_shape_dtype_range_and_seed(b, c, h, w, size, scale, ratio, flip_p, seed):
    x = images(b, c, h, w, seed)
    y = ops.random_resized_crop(x, size, scale, ratio, flip_p, gen(seed))
    side = (1, size) if h == 1 < w else (size, 1) if w == 1 < h else (size, size)  # 1-D signals stay 1-D
    assert y.shape == (b, c, *side) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1 + 1e-6  # bilinear: convex combinations
    assert torch.equal(y, ops.random_resized_crop(x, size, scale, ratio, flip_p, gen(seed)))


def _ramps(b: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose value is the column (resp. row) coordinate, 0 at one edge, 1 at the other."""
    cols = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(b, 1, h, w).contiguous()
    rows = torch.linspace(0, 1, h).view(1, 1, h, 1).expand(b, 1, h, w).contiguous()
    return cols, rows


@FAST
@given(batch_sizes, st.integers(2, 24), st.integers(2, 24), st.integers(2, 24), scales, ratios, st.booleans(), seeds)
def test_crops_stay_inside_the_image(b, h, w, size, scale, ratio, flip, seed):
    """A crop window reaching past the border would be filled by reflection padding, which folds a
    coordinate ramp back on itself: every output row of the column ramp must stay monotonic
    (increasing, or decreasing when flipped), and every column of the row ramp increasing."""
    cols, rows = _ramps(b, h, w)
    flip_p = 1.0 if flip else 0.0
    yc = ops.random_resized_crop(cols, size, scale, ratio, flip_p, gen(seed))
    yr = ops.random_resized_crop(rows, size, scale, ratio, flip_p, gen(seed))
    dx = yc.diff(dim=-1)
    assert (dx <= 1e-5).all() if flip else (dx >= -1e-5).all()
    assert (yr.diff(dim=-2) >= -1e-5).all()
    assert yc.min() >= -1e-6 and yc.max() <= 1 + 1e-6


@FAST
@given(batch_sizes, st.integers(4, 24), scales, seeds)
def test_crop_area_lies_within_the_scale(b, side, scale, seed):
    """With square crops (ratio 1) at the image's own size, a crop of area fraction a spans sqrt(a)
    of the column ramp; half a pixel at a border may be clipped off, never more."""
    cols, _ = _ramps(b, side, side)
    y = ops.random_resized_crop(cols, side, scale, (1.0, 1.0), 0.0, gen(seed))
    span = y[:, 0, 0, -1] - y[:, 0, 0, 0]  # the crop's width as a fraction of the image's
    tol = 1 / (side - 1) + 1e-4
    assert (span <= math.sqrt(scale[1]) + 1e-4).all()
    assert (span >= math.sqrt(scale[0]) - tol).all()


# ------------------------------------------------------------------------------ colour, blur, solarize


@FAST
@given(batch_sizes, channels, sides, jitters, probs, seeds)
def test_color_jitter_range_seed_and_zero_strength_identity(b, c, side, strength, p, seed):
    x = images(b, c, side, seed=seed)
    y = ops.color_jitter(x, strength, p, gen(seed))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, ops.color_jitter(x, strength, p, gen(seed)))
    assert torch.equal(ops.color_jitter(x, strength, 0.0, gen(seed)), x)  # p = 0: untouched
    assert torch.allclose(ops.color_jitter(x, (0.0, 0.0, 0.0, 0.0), p, gen(seed)), x, atol=1e-6)


@FAST
@given(batch_sizes, channels, sides, probs, seeds)
def test_grayscale_is_identity_or_equal_channels(b, c, side, p, seed):
    x = images(b, c, side, seed=seed)
    y = ops.random_grayscale(x, p, gen(seed))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.equal(ops.random_grayscale(x, 0.0, gen(seed)), x)
    gray = ops.random_grayscale(x, 1.0, gen(seed))
    if c == 1:
        assert torch.equal(gray, x)
    else:
        assert torch.allclose(gray, gray[:, :1].expand_as(gray)) and gray.min() >= 0 and gray.max() <= 1 + 1e-6
    changed = (y != x).flatten(1).any(1)
    assert all(torch.equal(y[i], gray[i]) for i in range(b) if changed[i])  # each image: either or


@FAST
@given(batch_sizes, channels, sides, probs, _pair(0.1, 3.0), seeds)
def test_blur_keeps_each_image_within_its_own_range(b, c, side, p, sigma, seed):
    x = images(b, c, side, seed=seed)
    y = ops.gaussian_blur(x, p, sigma, gen=gen(seed))
    assert y.shape == x.shape and torch.isfinite(y).all()
    lo, hi = x.flatten(1).min(1).values, x.flatten(1).max(1).values
    assert (y.flatten(1).min(1).values >= lo - 1e-5).all() and (y.flatten(1).max(1).values <= hi + 1e-5).all()
    assert torch.equal(ops.gaussian_blur(x, 0.0, sigma, gen=gen(seed)), x)
    flat = torch.full_like(x, 0.3)
    assert torch.allclose(ops.gaussian_blur(flat, 1.0, sigma, gen=gen(seed)), flat, atol=1e-6)
    assert torch.equal(y, ops.gaussian_blur(x, p, sigma, gen=gen(seed)))


@FAST
@given(batch_sizes, channels, sides, st.floats(0, 1), seeds)
def test_solarize_inverts_exactly_the_pixels_above_the_threshold(b, c, side, threshold, seed):
    x = images(b, c, side, seed=seed)
    assert torch.equal(ops.solarize(x, 0.0, threshold, gen(seed)), x)
    y = ops.solarize(x, 1.0, threshold, gen(seed))
    assert torch.equal(y, torch.where(x >= threshold, 1 - x, x)) and y.min() >= 0 and y.max() <= 1


# ------------------------------------------------------------------------------ views


@st.composite
def view_configs(draw):
    size = draw(st.integers(2, 20))
    num_local = draw(st.integers(0, 3))
    return ViewConfig(
        size=size,
        crop_scale=draw(scales),
        crop_ratio=draw(ratios),
        flip_p=draw(probs),
        jitter_p=draw(probs),
        jitter=draw(jitters),
        gray_p=draw(probs),
        blur_p=draw(_pair(0, 1)),
        blur_sigma=draw(_pair(0.1, 2.0)),
        solarize_p=draw(_pair(0, 1)),
        num_global=draw(st.integers(1, 3)),
        num_local=num_local,
        local_size=draw(st.integers(1, size - 1)),
        local_scale=draw(scales),
        local_blur_p=draw(probs),
        local_solarize_p=draw(probs),
    )


@FAST
@given(view_configs(), batch_sizes, channels, st.integers(1, 24), seeds)
def test_views_have_the_configured_count_shapes_and_are_seeded(cfg, b, c, side, seed):
    x = (torch.rand(b, c, side, side, generator=gen(seed)) * 255).to(torch.uint8)
    mean, std = [0.5] * c, [0.25] * c
    views = Views(cfg, mean, std, image_size=side, min_views=1)
    out = views(x, gen(seed))
    want = [(b, c, cfg.size, cfg.size)] * cfg.num_global + [(b, c, cfg.local_size, cfg.local_size)] * cfg.num_local
    assert [tuple(v.shape) for v in out] == want
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out)
    # normalised from [0, 1]: within [(0 - mean) / std, (1 - mean) / std] = [-2, 2]
    assert all(v.min() >= -2 - 1e-4 and v.max() <= 2 + 1e-4 for v in out)
    again = views(x, gen(seed))
    assert all(torch.equal(u, v) for u, v in zip(out, again))
    assert eval_view(x, mean, std, cfg.size).shape == (b, c, cfg.size, cfg.size)


@FAST
@given(batch_sizes, channels, st.integers(1, 24), st.integers(1, 2), seeds)
def test_views_with_every_strength_zero_are_the_normalised_images(b, c, side, num_global, seed):
    cfg = ViewConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        gray_p=0.0,
        blur_p=(0.0, 0.0),
        solarize_p=(0.0, 0.0),
        num_global=num_global,
    )
    x = (torch.rand(b, c, side, side, generator=gen(seed)) * 255).to(torch.uint8)
    mean, std = [0.4] * c, [0.2] * c
    want = ops.normalize(ops.to_float(x), mean, std)
    for v in Views(cfg, mean, std, image_size=side, min_views=1)(x, gen(seed)):
        assert torch.allclose(v, want, atol=1e-4)
