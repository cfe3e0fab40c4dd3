"""Relative position — Doersch, Gupta, Efros. "Unsupervised Visual Representation Learning by Context
Prediction", ICCV 2015.

Idea: show the network the centre patch of a 3x3 grid and one of its 8 neighbours; it must say
which neighbour. Knowing that an ear sits above-left of a nose needs object parts, not pixels.
Details (sec. 3): a gap between patches and a random jitter of each patch, so that the answer
cannot come from continuing edges or textures across the border; the two patches go through one
shared encoder (two streams, tied weights), their features are concatenated and an MLP predicts
the 8-way label. Logged: ``pretext/relpos_acc``.

Small images: a 28-px image leaves 7-px patches; ``resize`` enlarges the view first (the recipes
use 48 px -> 14-px patches), which the encoder then sees at evaluation too (views.size is not
changed: evaluation still uses the dataset's side).

Where this differs from the paper, knowingly: the default gap is about a quarter of a patch (side / 14;
the paper leaves half a patch, 48 px between 96-px patches), since at 28-48 px a half-patch gap leaves
patches of a few pixels (set ``gap`` to follow the paper); and there is no countermeasure against
chromatic aberration (the paper's colour dropping: 2 of 3 channels replaced by noise per patch), which
the gray data sets here do not need and colour data may (a known shortcut on colour photographs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms.pretext import relative_position_pairs, resize
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class RelPosConfig:
    gap: int | None = None  # px between patches; None: side / 14 (2 px at 28; the paper: 48 px between 96-px patches)
    jitter: int | None = None  # px each patch moves in x and y; None: side / 28 (1 px at 28; the paper: up to 7 px)
    patch: int | None = None  # px; None: the largest that fits the (resized) view
    resize: int | None = None  # enlarge the view to this side first (None: as it is)
    head_hidden: int = 512  # the paper's fc7 (4096) on the concatenated fc6 features, scaled down


@register("relpos", config=RelPosConfig, views="pretext", needs=Needs(views=1))
class RelativePosition(Method):
    """Predict where a neighbouring patch sits relative to the centre patch (8-way)."""

    def __init__(self, encoder: nn.Module, cfg: RelPosConfig = RelPosConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.head = mlp(2 * cast(int, encoder.num_features), cfg.head_hidden, 8, 2)

    def geometry(self, side: int) -> tuple[int, int, int]:
        """(patch, gap, jitter) in px for views of ``side`` px (after ``resize``)."""
        c = self.cfg
        gap = c.gap if c.gap is not None else max(1, round(side / 14))
        jitter = c.jitter if c.jitter is not None else round(side / 28)
        return c.patch or (side - 2 * gap - 2 * jitter) // 3, gap, jitter

    def _pairs(self, x: torch.Tensor, gen: torch.Generator | None = None):
        """Labels and jitter from ``gen``; None: the global RNG, which the loop seeds and checkpoints."""
        x = resize(x, self.cfg.resize)
        return relative_position_pairs(x, *self.geometry(x.shape[-1]), gen)

    def training_step(self, batch) -> StepOutput:
        centre, other, y = self._pairs(batch.views[0])  # [N,C,p,p] x 2, [N]
        n = len(y)
        f = self.encoder(torch.cat([centre, other]))  # one pass, shared weights: [2N, F]
        logits = self.head(torch.cat([f[:n], f[n:]], dim=1))  # [N, 8]
        loss = F.cross_entropy(logits.float(), y)
        return StepOutput(loss, {"pretext/relpos_acc": (logits.argmax(1) == y).float().mean().detach()})

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:8], data.mean, data.std, data.size)
        centre, other, y = self._pairs(x, torch.Generator().manual_seed(0))
        f = self.encoder(torch.cat([centre, other]))
        pred = self.head(torch.cat([f[: len(y)], f[len(y) :]], dim=1)).argmax(1).cpu()
        name = ["up-left", "up", "up-right", "left", "right", "down-left", "down", "down-right"]  # NEIGHBOURS' order
        rows = [
            ("image", denormalize(x, data.mean, data.std)),
            ("centre", denormalize(centre, data.mean, data.std)),
            ("neighbour", denormalize(other, data.mean, data.std)),
        ]
        # true and predicted place on two lines: "down-right / pred down-right" is wider than a cell
        caps = [[], [], [f"{name[int(t)]}\npred {name[int(p)]}" for t, p in zip(y.cpu(), pred)]]
        return {"relpos": Picture(rows, caps, "Relative position: true / predicted place of the neighbour")}
