"""MaskFeat's HOG: hand-checked edges, a pixel-by-pixel computation, the official bins, patch layout."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.transforms.hog import hog, hog_patch_targets


def edge(kind: str, size: int = 8) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    step = {"vertical": j >= size // 2, "horizontal": i >= size // 2, "diagonal": i + j >= size, "anti": j >= i}[kind]
    return step.float()[None, None]  # [1, 1, S, S]


@pytest.mark.parametrize("kind,bin_", [("vertical", 0), ("diagonal", 2), ("anti", 7)])
def test_an_edge_puts_all_its_mass_in_the_bin_of_its_gradient(kind, bin_):
    """A vertical edge has a horizontal gradient (0 degrees): bin 0. The staircase i + j >= S has, by
    symmetry, g_x = g_y (x right, y down): 45 degrees, bin round(45 / 20) = 2; the anti-diagonal's
    gradient is at 135 degrees: bin 7. Read in the centre cell, away from the reflected borders."""
    h = hog(edge(kind, 24), cell=8)  # 3 x 3 cells: [1, 1, 9, 3, 3]
    assert h.shape == (1, 1, 9, 3, 3)
    expected = torch.zeros(9)
    expected[bin_] = 1.0
    torch.testing.assert_close(h[0, 0, :, 1, 1], expected)


def test_a_horizontal_edge_is_a_90_degree_gradient_and_a_flat_image_has_none():
    h = hog(edge("horizontal"), cell=8)[0, 0, :, 0, 0]
    expected = torch.zeros(9)
    expected[4] = 1.0  # 90 degrees, the edge between bins 4 and 5: bin 4, where the official code puts it
    torch.testing.assert_close(h, expected)
    assert torch.equal(hog(torch.full((1, 1, 8, 8), 0.7), cell=4), torch.zeros(1, 1, 9, 2, 2))


def reference_hog(x: torch.Tensor, cell: int, nbins: int = 9) -> torch.Tensor:
    """HOG computed pixel by pixel in plain Python: Sobel gradients with reflected borders, each pixel's
    magnitude into the bin whose centre k * 180 / nbins degrees is nearest its unsigned orientation
    (half-way between two: the lower one),
    summed per cell, each cell's histogram divided by its L2 norm."""
    b, c, h, w = x.shape
    out = torch.zeros(b, c, nbins, h // cell, w // cell, dtype=torch.float64)
    refl = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)  # noqa: E731
    for n in range(b):
        for ch in range(c):
            px = lambda i, j: float(x[n, ch, refl(i, h), refl(j, w)])  # noqa: E731
            for i in range(h):
                for j in range(w):
                    gx = sum(wt * (px(i + di, j + 1) - px(i + di, j - 1)) for di, wt in ((-1, 1), (0, 2), (1, 1)))
                    gy = sum(wt * (px(i + 1, j + dj) - px(i - 1, j + dj)) for dj, wt in ((-1, 1), (0, 2), (1, 1)))
                    theta = math.degrees(math.atan2(gy, gx)) % 180.0  # unsigned, [0, 180)
                    k = (math.ceil(theta / (180.0 / nbins) + 0.5) - 1) % nbins  # a tie goes to the lower bin
                    out[n, ch, k, i // cell, j // cell] += math.hypot(gx, gy)
    norm = out.pow(2).sum(2, keepdim=True).sqrt().clamp_min(1e-12)
    return (out / norm).float()


def test_hog_equals_a_pixel_by_pixel_computation():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hog(x, cell=4), reference_hog(x, 4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hog(x, cell=2), reference_hog(x, 2), atol=1e-5, rtol=1e-5)


def test_bins_are_the_official_ones_in_another_order():
    """SlowFast's HOGLayerC bins floor(atan2(gx', gy') / pi * 9) mod 9 with gx' = left - right and
    gy' = up - down Sobel responses: the same sets of orientations, bin j = (4 - k) mod 9."""
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    wx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).expand(3, 1, 3, 3)
    gx, gy = (torch.nn.functional.conv2d(p, k, groups=3) for k in (wx, wx.transpose(2, 3)))
    j = torch.floor(torch.atan2(gx, gy) / math.pi * 9).long() % 9
    votes = torch.zeros(3, 3, 9, 16, 16).scatter_(2, j[:, :, None], torch.hypot(gx, gy)[:, :, None])
    official = torch.nn.functional.normalize(votes.view(3, 3, 9, 2, 8, 2, 8).sum((4, 6)), dim=2)
    ours = hog(x, cell=8)
    torch.testing.assert_close(ours, official[:, :, [(4 - k) % 9 for k in range(9)]], atol=1e-5, rtol=1e-5)


def test_contrast_and_brightness_do_not_change_hog():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(hog(3.0 * x - 0.4, cell=4), hog(x, cell=4), atol=1e-5, rtol=1e-5)


def test_patch_targets_gather_the_cells_of_each_patch():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    h = hog(x, cell=4)  # [2, 3, 9, 4, 4]
    t = hog_patch_targets(x, patch=8, cell=4)  # 2 x 2 patches, each 2 x 2 cells x 3 channels x 9 bins
    assert t.shape == (2, 4, 3 * 4 * 9)
    for p, (pi, pj) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        cells = h[:, :, :, 2 * pi : 2 * pi + 2, 2 * pj : 2 * pj + 2]  # [2, C, 9, 2, 2]
        torch.testing.assert_close(t[:, p], cells.permute(0, 1, 3, 4, 2).reshape(2, -1))
    torch.testing.assert_close(hog_patch_targets(x, 4, 4), h.permute(0, 3, 4, 1, 2).reshape(2, 16, 27))
    with pytest.raises(ValueError, match="tile"):
        hog_patch_targets(x, patch=4, cell=3)
