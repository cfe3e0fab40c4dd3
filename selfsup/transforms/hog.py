"""Histograms of oriented gradients (Dalal & Triggs 2005) as batched tensor ops: MaskFeat's target.

The variant is MaskFeat's (Wei et al. 2022; official code: SlowFast ``slowfast/models/operators.py``,
``HOGLayerC``, and ``slowfast/models/masked.py``), not the pedestrian-detector HOG of skimage/OpenCV:

- each channel on its own (an RGB image gives 3 histograms per cell, concatenated; the paper's
  "HOG on RGB channels" beat grayscale), gradients by 3x3 Sobel filters with reflect padding;
- 9 unsigned orientation bins of 20 degrees centred on 0, 20, ..., 160 degrees, each pixel voting its
  gradient magnitude into one bin (no interpolation between bins or cells, no Gaussian window);
- the votes summed over cells of ``cell`` x ``cell`` pixels (8 on 224-px images);
- local contrast normalisation: each cell's histogram L2-normalised on its own (the official code
  normalises over the bins of one cell and channel; the paper finds this normalisation essential);
- the target of one patch is the histograms of the cells it covers (a 16-px patch: 2 x 2 cells, x 9
  bins x 3 channels = 108 numbers).

The official code bins ``atan2(g_x, g_y)`` (an angle measured from the y axis); the bins here are
the same sets of orientations, ties included, in another order (official bin j = (4 - k) mod 9 for
bin k here), which a linear head cannot tell apart.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError


def hog(x: torch.Tensor, cell: int = 8, nbins: int = 9) -> torch.Tensor:
    """[B, C, H, W] -> per-cell histograms [B, C, nbins, H/cell, W/cell], each L2-normalised over its
    bins (a cell with no gradient stays 0). Computed in float32 whatever the autocast, no gradient."""
    b, c, h, w = x.shape
    if h % cell or w % cell:
        raise SelfsupError(f"HOG cells of {cell} px must tile the {h}x{w} image")
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x = F.pad(x.float(), (1, 1, 1, 1), mode="reflect")  # [B, C, H+2, W+2]
        # Sobel by differences and sums of shifted images rather than a convolution: a flat region gives
        # exactly 0 on any device (a TF32 or reordered convolution leaves ~1e-6 that normalisation would
        # blow up into a unit histogram)
        dx, dy = x[..., :, 2:] - x[..., :, :-2], x[..., 2:, :] - x[..., :-2, :]  # right - left, down - up
        gx = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]  # [B, C, H, W], rows weighted 1-2-1
        gy = dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]  # columns weighted 1-2-1
        magnitude = torch.hypot(gx, gy)
        # unsigned orientation theta: bin k covers ((k - 1/2) pi / nbins, (k + 1/2) pi / nbins] modulo pi (ceil - 1
        # rather than floor puts a tie where the official code does: at reflected borders g_x = 0 exactly)
        k = (torch.ceil(torch.atan2(gy, gx) / math.pi * nbins + 0.5).long() - 1) % nbins  # [B, C, H, W]
        votes = torch.zeros(b, c, nbins, h, w, device=x.device)
        votes.scatter_(2, k[:, :, None], magnitude[:, :, None])  # one bin per pixel
        cells = votes.view(b, c, nbins, h // cell, cell, w // cell, cell).sum((4, 6))  # [B, C, nbins, H/cell, W/cell]
        return F.normalize(cells, p=2, dim=2)


def hog_patch_targets(x: torch.Tensor, patch: int, cell: int, nbins: int = 9) -> torch.Tensor:
    """MaskFeat's targets: [B, C, H, W] -> [B, P, C * (patch/cell)^2 * nbins], the histograms of the
    cells inside each patch (patches in row-major order, as ``patchify``)."""
    if patch % cell:
        raise SelfsupError(f"HOG cells of {cell} px must tile the {patch}-px patches")
    hist = hog(x, cell, nbins)  # [B, C, nbins, gh*k, gw*k]
    b, c, _, hc, wc = hist.shape
    k = patch // cell
    hist = hist.view(b, c, nbins, hc // k, k, wc // k, k)
    return hist.permute(0, 3, 5, 1, 4, 6, 2).reshape(b, (hc // k) * (wc // k), c * k * k * nbins)
