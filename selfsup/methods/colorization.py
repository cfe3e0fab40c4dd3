"""Colorization and the split-brain autoencoder: predict one part of an image's colour from another.

Colorization — Zhang, Isola, Efros. "Colorful Image Colorization", ECCV 2016. Idea: from the
lightness L of Lab predict the colour ab. Colour is ambiguous (a shirt may be red or blue), so
regressing ab gives grey-brown averages; the paper classifies each pixel over quantised ab bins
(grid 10; the bins sRGB reaches — 313 in the paper, 260 with the lattice used here), with
soft targets (each pixel's 5 nearest bins, Gaussian sigma 5) and class rebalancing: a pixel whose
colour bin is rare weighs more, w ∝ ((1 - lambda) p~ + lambda / Q)^-1 with p~ the training set's bin
distribution smoothed by a Gaussian (sigma 5) and lambda 1/2 (eq. 3-4). Colours are decoded by the
annealed mean, T = 0.38 (eq. 5). ``mode: regression`` is the L2 baseline.

Split-brain autoencoder — Zhang, Isola, Efros. "Split-Brain Autoencoders", CVPR 2017. Idea: two
half-width networks, one predicting ab from L and one predicting L from ab (both as
classification: ab bins as above, L in 50 bins); the representation is both halves' features
concatenated, so it sees the whole image though each half was trained on a part.

Both need colour images and absolute colours: the views are un-normalised with the dataset's mean
and std (``normalization``) before the conversion to Lab (selfsup.transforms.color). On
Fashion-MNIST use the SYNTHETIC colour set ``color-fashion-mnist`` (hue by class, selfsup.data.colored).
What evaluation sees (``encoder``): RGB view -> Lab -> the half network(s) -> pooled features.
Logged: ``pretext/color_acc`` (pixels whose most likely ab bin is the true one; split-brain also
``pretext/lightness_acc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import clone_backbone
from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms.color import annealed_mean, gamut_ab_bins, lab_to_rgb, rgb_to_lab, soft_encode
from selfsup.transforms.ops import denormalize
from selfsup.transforms import eval_view

L_BINS = 50  # split-brain's ab -> L classes: L in 0..100, bins of 2


class LabEncoder(nn.Module):
    """What evaluation sees: normalised RGB [B, 3, H, W] -> Lab -> for each part (L, ab) its network
    -> pooled features, concatenated [B, sum of F]. L enters as L / 50 - 1, ab as ab / 110 (~[-1, 1])."""

    def __init__(self, mean, std, nets: dict[str, nn.Module]):
        super().__init__()
        self.mean, self.std = list(mean), list(std)
        self.nets = nn.ModuleDict(nets)  # keys "L" and/or "ab"
        self.num_features = sum(cast(int, n.num_features) for n in nets.values())

    def lab(self, x: torch.Tensor) -> torch.Tensor:
        """normalised RGB -> Lab [B, 3, H, W]."""
        return rgb_to_lab(denormalize(x.float(), self.mean, self.std))

    @staticmethod
    def inputs(lab: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"L": lab[:, :1] / 50 - 1, "ab": lab[:, 1:] / 110}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.inputs(self.lab(x))
        return torch.cat([net(parts[k].to(x.dtype)) for k, net in self.nets.items()], dim=1)


def _check_inputs(name: str, image_shape, normalization):
    if image_shape[0] != 3 or len(normalization[0]) != 3:
        raise SelfsupError(
            f"{name} needs colour (3-channel) images; for Fashion-MNIST use the synthetic colour set "
            f"--data color-fashion-mnist (or color-digits)"
        )


def rebalancing_weights(ab: torch.Tensor, centres: torch.Tensor, lam: float = 0.5, sigma: float = 5.0) -> torch.Tensor:
    """Zhang et al. 2016, eq. 4: per-bin weights [Q] from training pixels' ab [P, 2]: the empirical bin
    distribution, smoothed by a Gaussian over the bin centres, mixed with uniform, inverted,
    normalised so the expected weight under the smoothed distribution is 1."""
    q = len(centres)
    counts = torch.bincount(torch.cdist(ab, centres).argmin(1), minlength=q).float()
    kernel = torch.exp(-torch.cdist(centres, centres).pow(2) / (2 * sigma**2))
    p = kernel @ (counts / counts.sum())
    p = p / p.sum()
    w = 1 / ((1 - lam) * p + lam / q)
    return w / (p * w).sum()


class _ColourTask(Method):
    """Shared machinery: Lab of the view, dense logits from a network's feature maps, the ab bins
    and their rebalancing weights (estimated once from the training images, kept as buffers)."""

    encoder: LabEncoder
    cfg: ColorizationConfig | SplitBrainConfig
    # buffers: the ab bin centres [Q, 2], their rebalancing weights [Q], whether the weights were estimated
    centres: torch.Tensor
    weights: torch.Tensor
    weights_ready: torch.Tensor

    def _setup_bins(self, grid: float):
        centres = gamut_ab_bins(grid)
        self.register_buffer("centres", centres)
        self.register_buffer("weights", torch.ones(len(centres)))
        self.register_buffer("weights_ready", torch.tensor(False))

    def on_epoch_start(self, epoch, data):
        if bool(self.weights_ready):
            return None
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(data.dataset.images), generator=g)[:2000]
        lab = rgb_to_lab(data.dataset.images[idx].float() / 255)  # [n, 3, H, W]
        ab = lab[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2)
        ab = ab[torch.randperm(len(ab), generator=g)[:200_000]]
        self.weights.copy_(rebalancing_weights(ab, self.centres, self.cfg.rebalance, self.cfg.prior_sigma))
        self.weights_ready.fill_(True)
        return {"color/max_weight": float(self.weights.max()), "color/bins": float(len(self.centres))}

    @staticmethod
    def _dense(net: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> per-pixel outputs [B, K, H, W]: a 1x1 conv on the feature maps, upsampled."""
        return F.interpolate(head(net.forward_maps(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)  # type: ignore[operator]  # a backbone's method

    def _ab_loss(self, logits: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rebalanced soft cross-entropy over the ab bins (eq. 2-3) and the per-pixel bin accuracy."""
        target = soft_encode(ab.float(), self.centres, self.cfg.soft_k, self.cfg.soft_sigma)  # [B, Q, H, W]
        hard = target.argmax(1)  # [B, H, W]
        ce = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
        return (self.weights[hard] * ce).mean(), (logits.argmax(1) == hard).float().mean().detach()

    def _picture(self, images, data, ab_pred_fn, title: str) -> dict:
        x = eval_view(images[:12], data.mean, data.std, data.size)
        lab = self.encoder.lab(x)
        grey = lab.clone()
        grey[:, 1:] = 0
        pred = torch.cat([lab[:, :1], ab_pred_fn(x, lab)], dim=1)
        rows = [("input L", lab_to_rgb(grey)), ("colourised", lab_to_rgb(pred)), ("original", lab_to_rgb(lab))]
        return {"colorization": Picture(rows, None, title + " (synthetic colour data: hue by class)")}


@dataclass
class ColorizationConfig:
    mode: str = "classification"  # classification (the paper) | regression (its L2 baseline)
    grid: float = 10.0  # ab bin size
    rebalance: float = 0.5  # lambda of eq. 4
    prior_sigma: float = 5.0  # smoothing of the empirical bin distribution
    soft_k: int = 5  # soft-encoding: nearest bins per pixel
    soft_sigma: float = 5.0
    temperature: float = 0.38  # annealed-mean decoding (pictures)


@register("colorization", config=ColorizationConfig, views="pretext", needs=Needs(views=1, color=True))
class Colorization(_ColourTask):
    """Predict the ab colour channels from the lightness L, per pixel."""

    cfg: ColorizationConfig

    def __init__(
        self, encoder: nn.Module, cfg: ColorizationConfig = ColorizationConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        normalization: tuple[Sequence[float], Sequence[float]] = ctx.require("normalization")  # (mean, std)
        image_shape = ctx.require("image_shape")
        _check_inputs("colorization", image_shape, normalization)
        if cfg.mode not in ("classification", "regression"):
            raise SelfsupError(f"method.mode={cfg.mode!r}: choose classification or regression")
        self.cfg = cfg
        self.encoder = LabEncoder(*normalization, {"L": clone_backbone(encoder, in_channels=1)})
        self._setup_bins(cfg.grid)
        out = len(self.centres) if cfg.mode == "classification" else 2
        self.head = nn.Conv2d(cast(int, self.encoder.nets["L"].num_features), out, 1)

    def _predict(self, lab: torch.Tensor, dtype) -> torch.Tensor:
        return self._dense(self.encoder.nets["L"], self.head, self.encoder.inputs(lab)["L"].to(dtype))

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [B, 3, H, W] normalised RGB
        lab = self.encoder.lab(x)
        out = self._predict(lab, x.dtype)  # [B, Q or 2, H, W]
        if self.cfg.mode == "classification":
            loss, acc = self._ab_loss(out, lab[:, 1:])
        else:
            loss = F.mse_loss(out.float(), lab[:, 1:] / 110)
            near = torch.cdist(out.detach().float().permute(0, 2, 3, 1).reshape(-1, 2) * 110, self.centres).argmin(1)
            true = torch.cdist(lab[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2), self.centres).argmin(1)
            acc = (near == true).float().mean()
        return StepOutput(loss, {"pretext/color_acc": acc})

    def pictures(self, images, data) -> dict:
        def ab(x, lab):
            out = self._predict(lab, x.dtype)
            return (
                annealed_mean(out, self.centres, self.cfg.temperature)
                if self.cfg.mode == "classification"
                else out.float() * 110
            )

        return self._picture(images, data, ab, f"Colorization ({self.cfg.mode})")


@dataclass
class SplitBrainConfig:
    grid: float = 10.0
    rebalance: float = 0.5
    prior_sigma: float = 5.0
    soft_k: int = 5
    soft_sigma: float = 5.0
    temperature: float = 0.38
    half_width: bool = True  # each half gets half the channels, so the pair costs about one network


@register("splitbrain", config=SplitBrainConfig, views="pretext", needs=Needs(views=1, color=True))
class SplitBrain(_ColourTask):
    """Two half networks: L -> ab and ab -> L; features of both, concatenated."""

    cfg: SplitBrainConfig

    def __init__(
        self, encoder: nn.Module, cfg: SplitBrainConfig = SplitBrainConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        normalization: tuple[Sequence[float], Sequence[float]] = ctx.require("normalization")  # (mean, std)
        image_shape = ctx.require("image_shape")
        _check_inputs("splitbrain", image_shape, normalization)
        self.cfg = cfg
        width = cast(dict[str, Any], encoder.backbone_args).get("width", 1.0) * (0.5 if cfg.half_width else 1.0)
        nets = {
            "L": clone_backbone(encoder, in_channels=1, width=width),
            "ab": clone_backbone(encoder, in_channels=2, width=width),
        }
        self.encoder = LabEncoder(*normalization, nets)
        self._setup_bins(cfg.grid)
        self.head_ab = nn.Conv2d(cast(int, nets["L"].num_features), len(self.centres), 1)  # L -> ab bins
        self.head_l = nn.Conv2d(cast(int, nets["ab"].num_features), L_BINS, 1)  # ab -> L bins

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]
        lab = self.encoder.lab(x)
        parts = self.encoder.inputs(lab)
        loss_ab, acc_ab = self._ab_loss(
            self._dense(self.encoder.nets["L"], self.head_ab, parts["L"].to(x.dtype)), lab[:, 1:]
        )
        logits_l = self._dense(self.encoder.nets["ab"], self.head_l, parts["ab"].to(x.dtype))  # [B, 50, H, W]
        l_bin = (lab[:, 0] / (100 / L_BINS)).long().clamp(0, L_BINS - 1)
        loss_l = F.cross_entropy(logits_l.float(), l_bin)
        acc_l = (logits_l.argmax(1) == l_bin).float().mean().detach()
        return StepOutput(
            loss_ab + loss_l,
            {
                "pretext/color_acc": acc_ab,
                "pretext/lightness_acc": acc_l,
                "loss_ab": loss_ab.detach(),
                "loss_l": loss_l.detach(),
            },
        )

    def pictures(self, images, data) -> dict:
        def ab(x, lab):
            logits = self._dense(self.encoder.nets["L"], self.head_ab, self.encoder.inputs(lab)["L"].to(x.dtype))
            return annealed_mean(logits, self.centres, self.cfg.temperature)

        return self._picture(images, data, ab, "Split-brain: the L -> ab half")
