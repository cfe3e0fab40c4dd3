"""Batched image augmentations with independent random parameters per sample.

Written by hand rather than taken from torchvision.transforms.v2 because v2 draws one set of
parameters per call (the whole batch gets the same crop), and a per-image loop over PIL is
what makes the usual pipelines slow on a CPU. Here a whole batch [B, C, H, W] (float in
[0, 1]) is cropped, resized and flipped by one ``grid_sample`` and jittered by a few
broadcasted tensor ops. Every random draw comes from an explicit ``torch.Generator`` so that
a seeded run — and a resumed one — sees the same views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def uniform(n: int, gen: torch.Generator | None, device, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """``n`` draws from U[lo, hi), one per image of a batch."""
    # parameters are drawn on the CPU generator (cheap, device-independent determinism), then moved
    return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(device)


def _coin(n: int, p: float, gen: torch.Generator | None, device) -> torch.Tensor:
    return uniform(n, gen, device) < p


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    flip_p: float = 0.5,
    gen: torch.Generator | None = None,
    return_theta: bool = False,
):
    """Crop a random area fraction ``scale`` with aspect ``ratio`` from each image, resize it to
    ``size`` and flip it horizontally with probability ``flip_p``. [B,C,H,W] -> [B,C,size,size], as
    torchvision's; a 1-D signal keeps its layout: [B,C,1,T] -> [B,C,1,size] (and [B,C,T,1] likewise).

    One affine sampling grid per image: theta maps output coordinates in [-1, 1] to the
    crop's window in the input. Crops wider than the image are clipped to it, which stands in
    for torchvision's 10 rejection-sampling retries. ``return_theta``: also return theta [B, 2, 3]
    (the crop's geometry, flip included: a point (u, v) of the view in [-1, 1] comes from the image
    point theta @ (u, v, 1)), for methods that match locations across views (VICRegL).
    """
    b, dev = x.shape[0], x.device
    area = uniform(b, gen, dev, *scale)
    log_r = uniform(b, gen, dev, math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (uniform(b, gen, dev) * 2 - 1) * (1 - w)  # centre, in normalised coordinates
    cy = (uniform(b, gen, dev) * 2 - 1) * (1 - h)
    flip = torch.where(_coin(b, flip_p, gen, dev), -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    h_in, w_in = x.shape[-2:]
    side = (1, size) if h_in == 1 < w_in else (size, 1) if w_in == 1 < h_in else (size, size)  # 1-D stays 1-D
    grid = F.affine_grid(theta, [b, x.shape[1], *side], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return (out, theta) if return_theta else out


def luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, [B,3,H,W] -> [B,1,H,W]; identity for one channel."""
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Hue shift as a rotation of the chroma plane in YIQ space (one 3x3 matrix per image);
    close to an HSV hue shift and far cheaper than converting to HSV and back."""
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device, dtype=x.dtype
    )
    from_yiq = torch.linalg.inv(to_yiq)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = from_yiq @ rot @ to_yiq  # [B,3,3]
    return torch.einsum("bij,bjhw->bihw", m, x)


def color_jitter(
    x: torch.Tensor, strength=(0.4, 0.4, 0.4, 0.1), p: float = 0.8, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter with per-sample factors, applied to each
    image with probability ``p``. Saturation and hue only act on 3-channel images.
    The order is fixed (b, c, s, h) rather than random as in torchvision: one less draw, and
    the SimCLR ablations show the strength, not the order, matters."""
    b, dev = x.shape[0], x.device
    bri, con, sat, hue = strength
    shape = (b, 1, 1, 1)
    out = x * uniform(b, gen, dev, 1 - bri, 1 + bri).view(shape)
    out = out.clamp(0, 1)
    mean = luma(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * uniform(b, gen, dev, max(0.0, 1 - con), 1 + con).view(shape) + mean).clamp(0, 1)
    if x.shape[1] == 3:
        g = luma(out)
        out = ((out - g) * uniform(b, gen, dev, max(0.0, 1 - sat), 1 + sat).view(shape) + g).clamp(0, 1)
        if hue > 0:
            out = _rotate_hue(out, uniform(b, gen, dev, -hue, hue) * 2 * math.pi).clamp(0, 1)
    apply = _coin(b, p, gen, dev).view(shape)
    return torch.where(apply, out, x)


def random_grayscale(x: torch.Tensor, p: float = 0.2, gen: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image by its luma (kept at 3 channels) with probability ``p``."""
    apply = _coin(x.shape[0], p, gen, x.device)  # drawn even for 1 channel: same RNG stream either way
    if x.shape[1] == 1:
        return x
    return torch.where(apply.view(-1, 1, 1, 1), luma(x).expand_as(x), x)


def gaussian_blur(
    x: torch.Tensor, p: float = 0.5, sigma=(0.1, 2.0), kernel_frac: float = 0.1, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian blur with a per-sample sigma, kernel side ~10 % of the image (SimCLR), applied
    with probability ``p``. Separable: two grouped 1-D convolutions with one kernel per image.
    ``sigma`` is in pixels, as in torchvision's GaussianBlur."""
    b, c, h, w = x.shape
    dev = x.device
    apply = _coin(b, p, gen, dev)
    s = uniform(b, gen, dev, *sigma)
    if p <= 0:
        return x
    k = max(3, int(round(kernel_frac * h)) | 1)
    k = min(k, 2 * min(h, w) - 1)  # reflect padding needs k // 2 < the side: tiny (1-2 px) multi-crop views
    r = torch.arange(k, device=dev, dtype=x.dtype) - k // 2
    ker = torch.exp(-(r[None] ** 2) / (2 * s[:, None].to(x.dtype) ** 2))  # [B,k]
    ker = ker / ker.sum(1, keepdim=True)
    ker = ker.repeat_interleave(c, 0)  # [B*C,k]
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), ker.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), ker.view(b * c, 1, k, 1), groups=b * c)
    return torch.where(apply.view(-1, 1, 1, 1), y.view(b, c, h, w), x)


def solarize(
    x: torch.Tensor, p: float = 0.2, threshold: float = 0.5, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Invert pixels above ``threshold`` with probability ``p`` per image (BYOL's second view)."""
    apply = _coin(x.shape[0], p, gen, x.device).view(-1, 1, 1, 1)
    return torch.where(apply & (x >= threshold), 1 - x, x)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """The inverse of ``normalize``, clamped to [0, 1]: for showing views and reconstructions."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float32 in [0, 1]."""
    return images.float().div_(255.0)
