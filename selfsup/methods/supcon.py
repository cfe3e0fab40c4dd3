"""SupCon — Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan. "Supervised
Contrastive Learning", NeurIPS 2020.

Idea: SimCLR's batch contrast with the labels let in. Every other view of the same class is a
positive (not only the image's own second view), everything else a negative; the loss averages
-log softmax over the positives outside the log (L_out, eq. 2). It needs labels: it is the
supervised reference point of the contrastive family, not a self-supervised method, and is
registered with ``uses_labels=True`` so listings and benchmarks can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.contrastive import infonce_bound
from selfsup.losses.instance import supcon
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, Needs, register


class MissingLabelsError(SelfsupError):
    """SupCon was handed an unlabelled batch."""


@dataclass
class SupConConfig:
    temperature: float = 0.1
    proj_hidden: int = 2048  # projection network: one hidden layer of 2048, output 128 (paper, sec. 3.1)
    proj_dim: int = 128


@register("supcon", config=SupConConfig, views="simclr", needs=Needs(labels=True))
class SupCon(Method):
    """SupCon (uses labels): positives are all views of the same class in the batch (L_out)."""

    def __init__(self, encoder: nn.Module, cfg: SupConConfig = SupConConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        if batch.labels is None:
            raise MissingLabelsError(
                "supcon is supervised contrastive learning: it needs a class label for every image, and this "
                "dataset has none (an unlabelled folder?). Train it on a labelled dataset "
                "(e.g. --data fashion-mnist, or an image folder with one sub-folder per class), or pick a "
                "self-supervised method such as --method simclr."
            )
        x1, x2 = batch.views  # [N, C, H, W] each
        n = x1.shape[0]
        z = self.embedding(torch.cat([x1, x2]))  # [2N, D]
        loss, candidates = supcon(z[:n], z[n:], batch.labels, self.cfg.temperature)
        # log N - L as for every InfoNCE loss; with |P(i)| > 1 positives it cannot exceed about
        # log(N / |P(i)|), so read it as a progress signal rather than a tight bound
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), candidates)})
