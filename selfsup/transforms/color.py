"""CIE Lab colour space and the quantised ab bins of colorization (Zhang, Isola, Efros 2016).

Written by hand: torchvision has no Lab conversion, and kornia would be a dependency for two
formulas. sRGB (D65) -> linear RGB -> XYZ -> Lab, batched on [N, 3, H, W] in [0, 1]; L in [0, 100],
a and b roughly in [-110, 110].
"""

from __future__ import annotations

import torch

from selfsup.losses.precision import float32_loss as _float32  # autocast off: Lab in bf16 would be off by ~1 L unit

_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])  # D65


@_float32
def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], [N, 3, H, W] -> Lab [N, 3, H, W] (L 0..100)."""
    rgb = rgb.float().clamp(0, 1)
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("oc,nchw->nohw", _RGB_TO_XYZ.to(rgb.device), lin) / _WHITE.to(rgb.device).view(1, 3, 1, 1)
    eps = 216 / 24389
    f = torch.where(xyz > eps, xyz.clamp_min(1e-12) ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


@_float32
def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab [N, 3, H, W] -> sRGB in [0, 1] (out-of-gamut colours clamped)."""
    lab = lab.float()
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    eps = 6 / 29
    xyz = torch.where(f > eps, f**3, (f - 16 / 116) * 3 * eps**2) * _WHITE.to(lab.device).view(1, 3, 1, 1)
    lin = torch.einsum("oc,nchw->nohw", torch.linalg.inv(_RGB_TO_XYZ).to(lab.device), xyz).clamp(0, 1)
    return torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin).clamp(0, 1)


def gamut_ab_bins(grid: float = 10.0, samples: int = 40) -> torch.Tensor:
    """Centres [Q, 2] of the ``grid``-spaced ab bins that sRGB colours reach (Zhang et al.: 313 bins
    at grid 10). Found by converting a ``samples``^3 lattice of the RGB cube; deterministic."""
    v = torch.linspace(0, 1, samples)
    rgb = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(1, 3, -1, 1)
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T  # [S^3, 2]
    cells = torch.unique(torch.round(ab / grid), dim=0)
    return cells * grid


@_float32
def soft_encode(ab: torch.Tensor, centres: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """Zhang et al.'s soft target: each pixel's ab [N, 2, H, W] spread over its ``k`` nearest bin centres
    with Gaussian weights (sigma in ab units), normalised: [N, Q, H, W]."""
    n, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # [P, 2]
    d2 = torch.cdist(flat, centres.to(ab.device)).pow(2)  # [P, Q]
    near, idx = d2.topk(k, dim=1, largest=False)
    wts = torch.exp(-near / (2 * sigma**2))
    out = torch.zeros_like(d2).scatter_(1, idx, wts / wts.sum(1, keepdim=True))
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float = 0.38) -> torch.Tensor:
    """Zhang et al.'s decoding, eq. 5: the mean of the bin centres under softmax(logits / T); T 0.38
    sits between the mean (desaturated) and the mode (patchy). [N, Q, H, W] -> ab [N, 2, H, W]."""
    p = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("nqhw,qc->nchw", p, centres.to(p.device))
