"""MaskFeat — Wei, Fan, Xie, Wu, Yuille, Feichtenhofer. "Masked Feature Prediction for Self-Supervised
Visual Pre-Training", CVPR 2022.

Idea: mask patches and regress a *feature* of the hidden content instead of its pixels. Of the five
targets the paper compares (pixels, HOG, dVAE tokens, DINO and DeiT features), the hand-crafted
histogram of oriented gradients does best for its cost: it describes local shape and edges while
ignoring the exact intensities, and its local contrast normalisation (essential, the paper finds)
removes the brightness and contrast that pixel targets make the model spend capacity on.

Details (sec. 3 and the official SlowFast code, ``slowfast/models/masked.py``, ``operators.py``
``HOGLayerC``, ``configs/masked_ssl/in1k_VIT_B_MaskFeat_PT.yaml``): a SimMIM-style encoder — every
patch goes in, a masked one replaced by a learned [MASK] token (plus its position); block-wise
masking as BEiT's, 40 % of the patches on images (rectangles of at least a fifth of the masked
count); a linear head on the encoder's last (layer-normalised) tokens predicts, for each patch,
HOG(x)_i: the histograms of the 8 x 8-px cells it covers, 9 unsigned orientation bins, per colour
channel, each cell's histogram L2-normalised (``selfsup.transforms.hog``); the loss is the mean
squared error on the masked patches only:

    L = 1/|M| sum_{i in M} ||W z_i - HOG(x)_i||^2 / dim        z = f([x_visible, e_[MASK]])

No pixel or feature of another network is needed, so pre-training costs little beyond the encoder.
Cells: 8 px in the paper's 16-px patches (2 x 2 cells per patch); on small images the patches are
2-4 px, so ``cell_size`` 0 picks half the patch when that leaves cells of at least 4 x 4 pixels (a
16-px patch: the paper's 8) and otherwise the whole patch as one cell (a histogram of 1-4 pixels
would be a one-hot of a single gradient, not a distribution of orientations).
Logged: ``pretext/hog_mse``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.vit import ViT
from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.blockwise_masking import blockwise_mask
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms.hog import hog_patch_targets


@dataclass
class MaskFeatConfig:
    mask_ratio: float = 0.4  # images (the paper's 40 %; 90 % for video)
    cell_size: int = (
        0  # HOG cell side in pixels; 0: half the patch if >= 4 px (16-px patches: the paper's 8), else the patch
    )
    nbins: int = 9  # unsigned orientation bins


def hog_cell(patch_size: int, cell_size: int) -> int:
    """The HOG cell side for ``patch_size``-px patches (see the module docstring)."""
    if cell_size:
        if patch_size % cell_size:
            raise SelfsupError(f"method.cell_size={cell_size} must divide the ViT patch size {patch_size}")
        return cell_size
    return patch_size // 2 if patch_size % 2 == 0 and patch_size // 2 >= 4 else patch_size


@register("maskfeat", config=MaskFeatConfig, views="pretext", needs=Needs(views=1, backbone="vit"))
class MaskFeat(Method):
    """Masked patches replaced by a mask token; a linear head regresses their HOG features; MSE."""

    encoder: ViT  # the registry gives a ViT-only method a ViT

    def __init__(self, encoder: ViT, cfg: MaskFeatConfig = MaskFeatConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        image_shape = ctx.require("image_shape")
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise SelfsupError(f"method.mask_ratio={cfg.mask_ratio}: must be in (0, 1)")
        self.cfg = cfg
        self.encoder = encoder
        d, p, c = encoder.num_features, encoder.patch_size, image_shape[0]
        self.cell = hog_cell(p, cfg.cell_size)
        self.mask_token = nn.Parameter(torch.zeros(d))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(d, c * (p // self.cell) ** 2 * cfg.nbins)  # the official linear head (after a norm)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def mask(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """[N, P] bool, True = masked: BEiT's block-wise masks of round(ratio * P) patches, rectangles of at
        least a fifth of them (the official ``min_num_patches = num_mask // 5``)."""
        g = self.encoder.grid
        num = int(round(self.cfg.mask_ratio * g * g))
        return blockwise_mask(n, g, num, min_block=num // 5, device=device, generator=generator)

    def predict(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(predicted HOG [N, P, D_hog], mask [N, P] True = masked, target HOG(x) [N, P, D_hog])."""
        mask = self.mask(len(x), x.device, generator)
        z = self.encoder.tokens(x, mask=mask, mask_token=self.mask_token)[:, 1:]  # [N, P, d], normed
        target = hog_patch_targets(x, self.encoder.patch_size, self.cell, self.cfg.nbins)  # [N, P, D_hog]
        return self.head(z).float(), mask, target

    def training_step(self, batch) -> StepOutput:
        pred, mask, target = self.predict(batch.views[0])
        per_patch = F.mse_loss(pred, target, reduction="none").mean(-1)  # [N, P]
        loss = (per_patch * mask).sum() / mask.sum()  # masked patches only
        return StepOutput(loss, {"pretext/hog_mse": loss.detach()})
