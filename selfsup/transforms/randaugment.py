"""The weak and strong views of the semi-supervised methods, batched with per-image parameters.

Weak (FixMatch, Sohn et al. 2020, section 2.3; MixMatch's augmentation): a random horizontal flip
and a random translation of up to 12.5 % of the side, the image's border reflected into the gap.

Strong: RandAugment (Cubuk et al. 2020) as FixMatch uses it (appendix, table 12): for every image,
2 operations drawn from the 14 below, each at a magnitude drawn uniformly from its range (FixMatch's
"RandAugment with random magnitude" instead of one global magnitude), then Cutout (DeVries & Taylor
2017) of a square up to half the side, filled with gray.

Written by hand rather than with torchvision.transforms.v2.RandAugment because v2 draws one op and
one magnitude for the whole batch; here each image gets its own pair, and each op runs once on
the sub-batch that drew it (geometric ops as one affine ``grid_sample``), so a batch of 512 costs a
few dozen tensor ops, not 512 PIL round trips. Input and output: float images in [0, 1], [B,C,H,W].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.transforms.ops import luma, uniform

GRAY = 0.5  # fill for pixels a geometric op uncovers (FixMatch's (128, 128, 128))


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: ``degenerate + factor * (x - degenerate)``, clamped; factor [B]."""
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0, 1)


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: float = GRAY) -> torch.Tensor:
    """Warp each image by its 2x3 ``theta`` (output -> input, normalised coordinates); outside: ``fill``."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    ones = torch.ones_like(x[:, :1])
    out = F.grid_sample(torch.cat([x, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = out[:, -1:]
    return out[:, :-1] + (1 - inside) * fill


def _identity_theta(n: int, x: torch.Tensor) -> torch.Tensor:
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    return theta


def autocontrast(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to the full [0, 1] range (no magnitude)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-8), x)


def brightness(x, v):
    return _blend(x, torch.zeros_like(x), v)


def color(x, v):
    return _blend(x, luma(x).expand_as(x), v)


def contrast(x, v):
    return _blend(x, luma(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), v)


def equalize(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel of each image over 256 levels, PIL's ImageOps.equalize
    exactly: step = (pixels - count of the highest level present) // 255, and level i maps to
    (step // 2 + pixels below i) // step; a channel with step 0 is left as it is."""
    b, c, h, w = x.shape
    levels = (x * 255).round().long().clamp(0, 255).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float))
    top = 255 - (hist.flip(1) > 0).float().argmax(1, keepdim=True)  # the highest level present
    step = torch.div(h * w - hist.gather(1, top), 255, rounding_mode="floor")  # [B*C, 1]
    below = hist.cumsum(1) - hist
    lut = torch.div(torch.div(step, 2, rounding_mode="floor") + below, step.clamp_min(1), rounding_mode="floor")
    lut = torch.where(step > 0, lut.clamp(max=255), torch.arange(256.0, device=x.device)) / 255
    return lut.gather(1, levels).view(b, c, h, w)


def identity(x, v):
    return x


def posterize(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Keep the ``v`` (4-8) most significant bits of each 8-bit value."""
    drop = (8 - v.round()).view(-1, 1, 1, 1)
    step = 2.0**drop
    return torch.floor((x * 255).round() / step) * step / 255


def rotate(x, v):
    """Rotate by ``v`` degrees about the centre."""
    a = torch.deg2rad(v).to(x.dtype)
    theta = _identity_theta(len(x), x)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return _affine(x, theta)


def sharpness(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, /13); the border stays as it is."""
    c = x.shape[1]
    k = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    k[1, 1] = 5
    k = (k / 13).expand(c, 1, 3, 3)
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(x, k, groups=c)
    return _blend(x, smooth, v)


def shear_x(x, v):
    theta = _identity_theta(len(x), x)
    theta[:, 0, 1] = v.to(x.dtype)
    return _affine(x, theta)


def shear_y(x, v):
    theta = _identity_theta(len(x), x)
    theta[:, 1, 0] = v.to(x.dtype)
    return _affine(x, theta)


def solarize(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Invert pixels at or above the threshold ``v`` in [0, 1]."""
    t = v.view(-1, 1, 1, 1).to(x.dtype)
    return torch.where(x >= t, 1 - x, x)


def translate_x(x, v):
    """Shift by the fraction ``v`` of the width."""
    theta = _identity_theta(len(x), x)
    theta[:, 0, 2] = 2 * v.to(x.dtype)  # normalised coordinates span 2
    return _affine(x, theta)


def translate_y(x, v):
    theta = _identity_theta(len(x), x)
    theta[:, 1, 2] = 2 * v.to(x.dtype)
    return _affine(x, theta)


# FixMatch's RandAugment pool (table 12): op, magnitude range (drawn uniformly per image)
POOL = (
    (autocontrast, (0.0, 0.0)),
    (brightness, (0.05, 0.95)),
    (color, (0.05, 0.95)),
    (contrast, (0.05, 0.95)),
    (equalize, (0.0, 0.0)),
    (identity, (0.0, 0.0)),
    (posterize, (4.0, 8.0)),
    (rotate, (-30.0, 30.0)),
    (sharpness, (0.05, 0.95)),
    (shear_x, (-0.3, 0.3)),
    (shear_y, (-0.3, 0.3)),
    (solarize, (0.0, 1.0)),
    (translate_x, (-0.3, 0.3)),
    (translate_y, (-0.3, 0.3)),
)


def rand_augment(x: torch.Tensor, num_ops: int = 2, gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``num_ops`` operations drawn from ``POOL`` (with replacement, as RandAugment) to each
    image, each at a uniformly drawn magnitude. [B,C,H,W] in [0, 1] -> same."""
    b = len(x)
    ops = torch.randint(len(POOL), (b, num_ops), generator=gen)  # drawn on the CPU, like ops._rand
    u = torch.rand(b, num_ops, generator=gen)
    x = x.clone()
    for slot in range(num_ops):
        for k, (op, (lo, hi)) in enumerate(POOL):
            sel = (ops[:, slot] == k).nonzero().flatten()
            if len(sel):
                mag = (lo + (hi - lo) * u[sel, slot]).to(x.device)
                x[sel.to(x.device)] = op(x[sel.to(x.device)], mag).to(x.dtype)
    return x


def cutout(
    x: torch.Tensor, max_frac: float = 0.5, fill: float = GRAY, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Fill a square of side ``U(0, max_frac) x side`` centred at a uniform position with ``fill``
    (clipped at the border), one per image."""
    b, _, h, w = x.shape
    side = uniform(b, gen, x.device, 0.0, max_frac) * min(h, w)
    cy, cx = uniform(b, gen, x.device, 0, h), uniform(b, gen, x.device, 0, w)
    ys = torch.arange(h, device=x.device).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=x.device).view(1, 1, w) + 0.5
    inside = ((ys - cy.view(-1, 1, 1)).abs() <= side.view(-1, 1, 1) / 2) & (
        (xs - cx.view(-1, 1, 1)).abs() <= side.view(-1, 1, 1) / 2
    )  # [B,H,W]
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)


def weak_augment(
    x: torch.Tensor, translate: float = 0.125, flip_p: float = 0.5, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Flip with probability ``flip_p`` and translate by up to ``translate`` of each side (FixMatch's
    weak view); the uncovered border is the image reflected, as the papers' pad-and-crop."""
    b = len(x)
    flip = torch.where(uniform(b, gen, x.device) < flip_p, -1.0, 1.0).to(x.dtype)
    tx = uniform(b, gen, x.device, -translate, translate).to(x.dtype)
    ty = uniform(b, gen, x.device, -translate, translate).to(x.dtype)
    theta = _identity_theta(b, x)
    theta[:, 0, 0] = flip
    theta[:, 0, 2], theta[:, 1, 2] = 2 * tx, 2 * ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="reflection", align_corners=False)


def strong_augment(
    x: torch.Tensor, num_ops: int = 2, cutout_frac: float = 0.5, flip_p: float = 0.5, gen: torch.Generator | None = None
) -> torch.Tensor:
    """FixMatch's strong view: the weak view, then RandAugment, then Cutout."""
    return cutout(rand_augment(weak_augment(x, flip_p=flip_p, gen=gen), num_ops, gen), cutout_frac, gen=gen)
