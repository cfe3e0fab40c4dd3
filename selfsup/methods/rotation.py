"""RotNet — Gidaris, Singh, Komodakis. "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018.

Idea: rotate an image by 0, 90, 180 or 270 degrees and ask the network which. To answer, it has to
know where an object's top is, how a shoe or a shirt is oriented — semantic knowledge that labels
never gave it. Details (sec. 3): all four rotations of each image go into the same batch (better
than one random rotation per image), a 4-way classifier on the encoder, plain cross-entropy.
The pretext accuracy is logged as ``pretext/rotation_acc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch.nn.functional as F
from torch import nn

from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms.pretext import rotations
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class RotationConfig:
    head_hidden: int = 0  # 0: a linear 4-way head; > 0: one hidden layer (the paper classifies after conv blocks)


@register("rotation", config=RotationConfig, views="pretext", needs=Needs(views=1))
class Rotation(Method):
    """Predict which of four rotations was applied."""

    def __init__(self, encoder: nn.Module, cfg: RotationConfig = RotationConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        d = cast(int, encoder.num_features)
        self.head = mlp(d, cfg.head_hidden, 4, 2) if cfg.head_hidden else nn.Linear(d, 4)

    def training_step(self, batch) -> StepOutput:
        x, y = rotations(batch.views[0])  # [4N, C, H, W], labels [4N]
        logits = self.head(self.encoder(x))  # [4N, 4]
        loss = F.cross_entropy(logits.float(), y)
        acc = (logits.argmax(1) == y).float().mean().detach()
        return StepOutput(loss, {"pretext/rotation_acc": acc})

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:8], data.mean, data.std, data.size)
        xr, y = rotations(x)
        pred = self.head(self.encoder(xr)).argmax(1)
        shown = denormalize(xr, data.mean, data.std).cpu().view(4, len(x), *x.shape[1:])
        pred = pred.view(4, len(x)).cpu()
        rows = [(f"{90 * k}°", shown[k]) for k in range(4)]
        caps = [[f"pred {90 * int(p)}°" + ("" if int(p) == k else " ✗") for p in pred[k]] for k in range(4)]
        return {"rotation": Picture(rows, caps, "RotNet: rotated inputs and the predicted angle")}
