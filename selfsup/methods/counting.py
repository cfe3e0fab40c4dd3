"""Counting — Noroozi, Pirsiavash, Favaro. "Representation Learning by Learning to Count", ICCV 2017.

Idea: features that count visual primitives (how many eyes, wheels, buttons) must satisfy an
equation: the counts of the whole image equal the sum of the counts of its tiles. With phi a
non-negative feature vector, D a 2x downsampling and T_1..T_4 the 2x2 tiles (the same size as D x),
phi(D x) = sum_i phi(T_i x). That alone is solved by phi = 0, so a contrastive term asks another
image y's counts to differ by at least a margin M (eq. 4):

    L = ||phi(D x) - sum_i phi(T_i x)||^2 + max(0, M - ||phi(D y) - sum_i phi(T_i x)||^2).

phi is the encoder followed by a linear layer and a ReLU (the paper: 1000 counts, M = 10); y is
another image of the batch. Logged: the two distances ``count_fit`` = ||phi(D x) - sum phi(T_i x)||^2
and ``count_contrast`` = ||phi(D y) - sum phi(T_i x)||^2, and their ratio ``pretext/count_ratio``:
below 1 when an image's tiles add up to its own counts better than to another image's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.methods.base import Method, StepOutput
from selfsup.registry import BuildContext, Needs, register


@dataclass
class CountingConfig:
    num_counts: int = 1000  # the paper's phi dimension
    margin: float = 10.0  # M


@register("counting", config=CountingConfig, views="pretext", needs=Needs(views=1))
class Counting(Method):
    """The counts of the whole image equal the sum of the counts of its 2x2 tiles."""

    def __init__(self, encoder: nn.Module, cfg: CountingConfig = CountingConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.counts = nn.Sequential(nn.Linear(cast(int, encoder.num_features), cfg.num_counts), nn.ReLU())

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return self.counts(self.encoder(x)).float()  # non-negative counts [N, K]

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [N, C, H, W]
        n, _, h, w = x.shape
        h2, w2 = h // 2, w // 2
        x = x[..., : 2 * h2, : 2 * w2]
        tiles = torch.cat(
            [x[..., i * h2 : (i + 1) * h2, j * w2 : (j + 1) * w2] for i in (0, 1) for j in (0, 1)]
        )  # [4N, ...]
        down = F.interpolate(x, size=(h2, w2), mode="bilinear", align_corners=False, antialias=True)  # D x: [N, ...]
        f = self.phi(torch.cat([down, tiles]))  # one pass: [5N, K]
        whole, parts = f[:n], f[n:].view(4, n, -1).sum(0)  # phi(D x), sum_i phi(T_i x)
        other = whole.roll(1, dims=0)  # phi(D y): another image of the batch
        fit = (whole - parts).pow(2).sum(1)  # [N]
        contrast = (other - parts).pow(2).sum(1)
        loss = (fit + F.relu(self.cfg.margin - contrast)).mean()
        return StepOutput(
            loss,
            {
                "pretext/count_ratio": (fit.mean() / contrast.mean().clamp_min(1e-6)).detach(),
                "count_fit": fit.mean().detach(),
                "count_contrast": contrast.mean().detach(),
            },
        )
