"""View presets: how a method turns a batch of raw images into the views it trains on.

A preset is a set of ``ViewConfig`` defaults; ``views:`` in a recipe overrides single fields.
``Views`` applies them to a whole uint8 batch at once, on the batch's device.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from selfsup.config import COUNT, FRACTION, NONNEG, POSITIVE, PROB, bounded
from selfsup.errors import SelfsupError
from selfsup.registry import list_view_presets, register_view_preset, view_preset  # noqa: F401  (public here too)
from selfsup.transforms import ops


@dataclasses.dataclass
class ViewConfig:
    """Augmentation of each view; two-element tuples hold (view 1, view 2) for asymmetric recipes."""

    size: int | None = bounded(None, COUNT)  # output side; None = the data's image size
    crop_scale: tuple[float, float] = bounded((0.08, 1.0), FRACTION, ordered=True)
    crop_ratio: tuple[float, float] = bounded((3 / 4, 4 / 3), POSITIVE, ordered=True)
    flip_p: float = bounded(0.5, PROB)
    jitter_p: float = bounded(0.8, PROB)
    jitter: tuple[float, float, float, float] = bounded(
        (0.4, 0.4, 0.4, 0.1), NONNEG
    )  # brightness, contrast, saturation, hue
    gray_p: float = bounded(0.2, PROB)
    blur_p: tuple[float, float] = bounded((0.5, 0.5), PROB)
    blur_sigma: tuple[float, float] = bounded((0.1, 2.0), POSITIVE, ordered=True)
    solarize_p: tuple[float, float] = bounded((0.0, 0.0), PROB)
    # weak[i % 2] True: global crop i is a weak view, crop and flip only (no jitter, grayscale, blur,
    # solarize), as the teacher/target view of MSF and ReSSL
    weak: tuple[bool, bool] = (False, False)
    # multi-crop (Caron et al. 2020, SwAV sec. 3.2): ``num_global`` crops at ``size`` with ``crop_scale``
    # (global crop i, counted from 0, uses blur_p[i % 2] and solarize_p[i % 2]), then ``num_local`` smaller crops.
    # The defaults (2 global, 0 local) are the classic two views.
    num_global: int = bounded(2, COUNT)
    num_local: int = bounded(0, NONNEG)
    local_size: int | None = bounded(
        None, COUNT
    )  # side of a local crop; None = 96/224 of the global side, the papers' ratio
    local_scale: tuple[float, float] = bounded((0.05, 0.14), FRACTION, ordered=True)  # SwAV's; DINO uses (0.05, 0.4)
    local_blur_p: float = bounded(0.5, PROB)
    local_solarize_p: float = bounded(0.0, PROB)


def view_config(cfg) -> ViewConfig:
    """A copy of a resolved RunConfig's views (the caller may change it without changing the run's)."""
    return dataclasses.replace(cfg.views)


# SimCLR (Chen et al. 2020, appendix A): crop 0.08-1, flip, colour jitter 0.8 x (0.4,0.4,0.4,0.1),
# grayscale 0.2, blur 0.5 on both views.
# BYOL (Grill et al. 2020, table 6): jitter (0.4, 0.4, 0.2, 0.1) (saturation 0.2), asymmetric blur (1.0, 0.1)
# and solarize (0, 0.2); Barlow Twins, VICReg, MoCo v3 and NNCLR use the same.
# MoCo v1 / InstDisc (Wu et al. 2018; He et al. 2020, sec. 4): crop 0.2-1, jitter 0.4 on all four
# channels applied always, grayscale 0.2, flip; no blur.
# SwAV multi-crop (Caron et al. 2020, sec. 3.2 and the official code): 2 x 224 px with scale 0.14-1 and
# 6 x 96 px with scale 0.05-0.14; colour distortion of strength 1 (jitter 0.8 x (0.8,0.8,0.8,0.2)),
# grayscale 0.2, blur 0.5 on every crop.
# DINO (Caron et al. 2021, appendix / official main_dino.py defaults): 2 x 224 px with scale 0.4-1 and
# 8 x 96 px with scale 0.05-0.4 (their ResNet-50 run: 0.14-1 and 0.05-0.14); jitter 0.8 x (0.4,0.4,0.2,0.1),
# grayscale 0.2; BYOL's asymmetry on the globals (blur 1.0 / 0.1, solarize 0 / 0.2), blur 0.5 on locals.
# CMC (Tian et al. 2019, official train_CMC.py): random resized crop (scale 0.2-1) and flip only, then the colour
# split: colour jitter or grayscale would let one view predict the other (a grayed image has DbDr = 0).
# Weak/strong (MSF, Koohpayegani et al. 2021, official train_msf.py; ReSSL, Zheng et al. 2021): view 1 weak
# (crop 0.2-1 and flip only) for the target/teacher, view 2 strong (MoCo v2's: crop 0.2-1, flip,
# jitter 0.8 x (0.4,0.4,0.4,0.1), grayscale 0.2, blur 0.5) for the online network/student.
# Pretext tasks (rotation, relative position, jigsaw, autoencoders): one lightly augmented view; the
# task makes its own labels from it (RotNet's CIFAR runs: random crop and flip only).
_PRESETS: dict[str, ViewConfig] = {
    "simclr": ViewConfig(),
    "pretext": ViewConfig(crop_scale=(0.6, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=(0.0, 0.0), num_global=1),
    "byol": ViewConfig(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2)),
    "cmc": ViewConfig(crop_scale=(0.2, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=(0.0, 0.0)),
    "mocov1": ViewConfig(crop_scale=(0.2, 1.0), jitter_p=1.0, jitter=(0.4, 0.4, 0.4, 0.4), blur_p=(0.0, 0.0)),
    "swav": ViewConfig(
        crop_scale=(0.14, 1.0),
        jitter=(0.8, 0.8, 0.8, 0.2),
        blur_p=(0.5, 0.5),
        num_global=2,
        num_local=6,
        local_scale=(0.05, 0.14),
        local_blur_p=0.5,
    ),
    "dino": ViewConfig(
        crop_scale=(0.4, 1.0),
        jitter=(0.4, 0.4, 0.2, 0.1),
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
        num_global=2,
        num_local=8,
        local_scale=(0.05, 0.4),
        local_blur_p=0.5,
        local_solarize_p=0.0,
    ),
    "weak_strong": ViewConfig(crop_scale=(0.2, 1.0), blur_p=(0.0, 0.5), weak=(True, False)),
}

# the papers' local/global side ratio (96 px of 224), used when ``local_size`` is not given
LOCAL_SIZE_RATIO = 96 / 224


for _name, _defaults in _PRESETS.items():
    register_view_preset(_name, _defaults)


class Views:
    """Makes the augmented, normalised views of a uint8 batch.

    images [B,C,H,W] uint8 -> [global_1, ..., global_G, local_1, ..., local_L]: G = cfg.num_global
    crops, each float [B,C,S,S] (S = cfg.size or H), then L = cfg.num_local multi-crop views
    [B,C,s,s] with s < S (cfg.local_size, default 96/224 of S). Every view of every image draws its
    own crop, flip, jitter, grayscale, blur and solarize parameters (selfsup.transforms.ops); all
    draws come from ``gen`` in a fixed order (globals, then locals), so a seed fixes every view.
    With the defaults (2 globals, no locals) this is the classic pair [view1, view2].
    Methods tell global from local crops by size: the leading views of the first view's size.
    """

    def __init__(self, cfg: ViewConfig, mean, std, image_size: int, min_views: int = 2):
        self.cfg = cfg
        self.mean, self.std = list(mean), list(std)
        self.size = cfg.size or image_size
        self.local_size = cfg.local_size or max(1, round(self.size * LOCAL_SIZE_RATIO))
        if cfg.num_global < 1 or cfg.num_local < 0 or cfg.num_global + cfg.num_local < min_views:
            raise SelfsupError(
                f"views: num_global={cfg.num_global}, num_local={cfg.num_local}: this method needs at "
                f"least {min_views} views and at least one global crop (e.g. views.num_global={max(2, min_views)})"
            )
        if cfg.num_local and self.local_size >= self.size:
            # methods tell the crops apart by size, so local crops must be the smaller ones
            raise SelfsupError(
                f"views.local_size={self.local_size} must be smaller than the global crop side "
                f"{self.size} (multi-crop's local crops are the small ones)"
            )

    def _crop(
        self,
        x: torch.Tensor,
        size: int,
        scale,
        blur_p: float,
        solarize_p: float,
        gen: torch.Generator | None,
        weak: bool = False,
        thetas: list | None = None,
    ) -> torch.Tensor:
        c = self.cfg
        v, theta = ops.random_resized_crop(x, size, scale, c.crop_ratio, c.flip_p, gen, return_theta=True)
        if thetas is not None:  # the crop geometry, for methods that declare needs.boxes
            thetas.append(theta)
        if weak:
            return ops.normalize(v, self.mean, self.std)
        v = ops.color_jitter(v, c.jitter, c.jitter_p, gen)
        v = ops.random_grayscale(v, c.gray_p, gen)
        v = ops.gaussian_blur(v, blur_p, c.blur_sigma, gen=gen)
        if solarize_p > 0:
            v = ops.solarize(v, solarize_p, gen=gen)
        return ops.normalize(v, self.mean, self.std)

    def view(self, x: torch.Tensor, i: int, gen: torch.Generator | None, thetas: list | None = None) -> torch.Tensor:
        """Global crop ``i`` of float images ``x`` (asymmetric recipes alternate blur/solarize by i % 2)."""
        c = self.cfg
        return self._crop(x, self.size, c.crop_scale, c.blur_p[i % 2], c.solarize_p[i % 2], gen, c.weak[i % 2], thetas)

    def local_view(self, x: torch.Tensor, gen: torch.Generator | None, thetas: list | None = None) -> torch.Tensor:
        """One small multi-crop view: [B,C,local_size,local_size]."""
        c = self.cfg
        return self._crop(x, self.local_size, c.local_scale, c.local_blur_p, c.local_solarize_p, gen, thetas=thetas)

    def __call__(self, images: torch.Tensor, gen: torch.Generator | None = None, boxes: bool = False):
        """The views; with ``boxes``, (views, boxes): boxes[v] is view v's crop geometry theta [B, 2, 3]
        (``ops.random_resized_crop``), for methods that declare ``needs.boxes`` (VICRegL). Same draws either way."""
        x = ops.to_float(images)
        thetas: list[torch.Tensor] = []
        views = [self.view(x, i, gen, thetas) for i in range(self.cfg.num_global)]
        views += [self.local_view(x, gen, thetas) for _ in range(self.cfg.num_local)]
        return (views, thetas) if boxes else views

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic view evaluation uses: resize to the training size, normalise."""
        return eval_view(images, self.mean, self.std, self.size)


def eval_view(images: torch.Tensor, mean, std, size: int) -> torch.Tensor:
    x = ops.to_float(images)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ops.normalize(x, mean, std)
