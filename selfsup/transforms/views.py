"""View presets: how a method turns a batch of raw images into the views it trains on.

A preset is a set of ``ViewConfig`` defaults; ``views:`` in a recipe overrides single fields.
``Views`` applies them to a whole uint8 batch at once, on the batch's device.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from selfsup.config import ViewConfig
from selfsup.transforms import ops

# SimCLR (Chen et al. 2020, appendix A): crop 0.08-1, flip, colour jitter 0.8 x (0.4,0.4,0.4,0.1),
# grayscale 0.2, blur 0.5 on both views.
# BYOL (Grill et al. 2020, table 6): the same, but asymmetric blur (1.0, 0.1) and solarize (0, 0.2).
# MoCo v1 / InstDisc (Wu et al. 2018; He et al. 2020, sec. 4): crop 0.2-1, jitter 0.4 on all four
# channels applied always, grayscale 0.2, flip; no blur.
_PRESETS: dict[str, ViewConfig] = {
    "simclr": ViewConfig(),
    "byol": ViewConfig(blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2)),
    "mocov1": ViewConfig(crop_scale=(0.2, 1.0), jitter_p=1.0, jitter=(0.4, 0.4, 0.4, 0.4), blur_p=(0.0, 0.0)),
}


def view_preset(name: str) -> ViewConfig:
    if name not in _PRESETS:
        raise KeyError(f"unknown view preset {name!r}; known: {', '.join(_PRESETS)}")
    return dataclasses.replace(_PRESETS[name])


def list_view_presets() -> list[str]:
    return sorted(_PRESETS)


class Views:
    """Makes two augmented, normalised views of a uint8 batch.

    images [B,C,H,W] uint8 -> [view1, view2], each float [B,C,S,S] normalised by the
    dataset's mean/std (S = cfg.size or H).
    """

    def __init__(self, cfg: ViewConfig, mean, std, image_size: int):
        self.cfg = cfg
        self.mean, self.std = list(mean), list(std)
        self.size = cfg.size or image_size

    def view(self, x: torch.Tensor, i: int, gen: torch.Generator | None) -> torch.Tensor:
        c = self.cfg
        v = ops.random_resized_crop(x, self.size, c.crop_scale, c.crop_ratio, c.flip_p, gen)
        v = ops.color_jitter(v, c.jitter, c.jitter_p, gen)
        v = ops.random_grayscale(v, c.gray_p, gen)
        v = ops.gaussian_blur(v, c.blur_p[i], c.blur_sigma, gen=gen)
        if c.solarize_p[i] > 0:
            v = ops.solarize(v, c.solarize_p[i], gen=gen)
        return ops.normalize(v, self.mean, self.std)

    def __call__(self, images: torch.Tensor, gen: torch.Generator | None = None) -> list[torch.Tensor]:
        x = ops.to_float(images)
        return [self.view(x, i, gen) for i in range(2)]

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic view evaluation uses: resize to the training size, normalise."""
        return eval_view(images, self.mean, self.std, self.size)


def eval_view(images: torch.Tensor, mean, std, size: int) -> torch.Tensor:
    x = ops.to_float(images)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ops.normalize(x, mean, std)
