"""Synthetic colour datasets: for the colour pretext tasks (colorization, split-brain), grey images
coloured so that the colour is predictable from the shape (color-*); for the colour-augmentation
ablation, coloured by a random hue that says nothing of the class (tinted-*).

SYNTHETIC — say so wherever a number from them is reported. Fashion-MNIST and the digits have no
colour, and nothing may be downloaded here, so each item is tinted with a hue chosen by its class
(class k of K: hue k / K) plus a little per-image noise (hue +- 0.03, saturation 0.6-1): its grey
intensity becomes the brightness (HSV value), the black background stays black. A network that
recognises a sneaker can then predict its colour, which is the premise of colorization on natural
images (the sky is blue, grass is green). Colours are drawn from a seed per split, so every load
gives the same images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from selfsup.data.dataset import ImageDataset
from selfsup.data.digits import load_digits
from selfsup.data.fashion_mnist import load_fashion_mnist

HUE_NOISE = 0.03
SATURATION = (0.6, 1.0)


def colorize(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int, by_class: bool = True
) -> torch.Tensor:
    """uint8 [N, 1, H, W] grey + labels [N] -> uint8 [N, 3, H, W] tinted by class (``by_class``), or by a hue
    drawn uniformly per image, independent of the class."""
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    if by_class:
        hue = (labels.float() / num_classes + HUE_NOISE * (2 * torch.rand(n, generator=g) - 1)) % 1.0
    else:
        hue = torch.rand(n, generator=g)
    sat = SATURATION[0] + (SATURATION[1] - SATURATION[0]) * torch.rand(n, generator=g)
    from matplotlib.colors import hsv_to_rgb

    v = images[:, 0].float() / 255  # [N, H, W]
    hsv = torch.stack([hue.view(n, 1, 1).expand_as(v), sat.view(n, 1, 1).expand_as(v), v], dim=-1)
    rgb = torch.from_numpy(hsv_to_rgb(hsv.numpy()))  # [N, H, W, 3]
    return (rgb.permute(0, 3, 1, 2) * 255).round().clamp(0, 255).to(torch.uint8)


def _colored(base, name: str, by_class: bool = True):
    def load(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
        ds = base(split, root, image_size)
        seed = {"train": 0, "test": 1}.get(split, 2)
        return ImageDataset(
            colorize(ds.images, ds.labels, len(ds.classes), seed, by_class), ds.labels, ds.classes, name
        )

    load.__doc__ = (
        f"SYNTHETIC colour version of {base.__name__[5:]}: "
        + ("hue by class" if by_class else "a random hue per image, independent of the class")
        + " (selfsup.data.colored)."
    )
    return load


load_color_fashion_mnist = _colored(load_fashion_mnist, "color-fashion-mnist")
load_color_digits = _colored(load_digits, "color-digits")
# Colour as a nuisance, not a cue: two crops of one image share its hue, so a contrastive task can be solved
# from colour alone — the shortcut SimCLR's colour distortion removes (Chen et al. 2020, sec. 3 and fig. 6).
# On color-* the hue is the label, and that shortcut would be the answer; the augmentation claim uses these.
load_tinted_fashion_mnist = _colored(load_fashion_mnist, "tinted-fashion-mnist", by_class=False)
load_tinted_digits = _colored(load_digits, "tinted-digits", by_class=False)
