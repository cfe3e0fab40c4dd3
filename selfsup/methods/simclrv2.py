"""SimCLR v2 — Chen, Kornblith, Swersky, Norouzi, Hinton. "Big Self-Supervised Models are Strong
Semi-Supervised Learners", NeurIPS 2020.

Idea: the semi-supervised recipe "pretrain big, fine-tune on few labels, distil". Pretraining is
SimCLR's NT-Xent between two augmented views (eq. 1 of SimCLR) with two changes to the head:

- a deeper projection head g: 3 layers instead of 2, batch norm in every layer (section 2);
- the head is not thrown away: fine-tuning starts from its MIDDLE layer, i.e. from
  ``ReLU(BN(W1 h))`` after the head's first layer, rather than from h = f(x) (section 2: it
  fine-tunes from the head's first layer).

``finetune_encoder`` is that network, backbone + the head's first Linear-BN-ReLU, with
``num_features`` = the head's hidden width; ``selfsup eval finetune`` and ``selfsup distill``
fine-tune it when a method has one. kNN and the linear probe keep using ``self.encoder`` (the
backbone), like every other method.

Left out: the MoCo-style memory of negatives the paper adds (section 2; a gain of about
1 % on ImageNet, small because batches of 4096 already hold many negatives). Negatives
here are the other 2(N-1) views of the batch, as in SimCLR. The selective-kernel ResNets and
the width/depth scaling are about the backbone, chosen with ``backbone.*``, not here.
The fine-tune and distillation steps are protocols in ``selfsup/eval/finetune.py`` and
``selfsup/eval/distill.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses import infonce_bound, nt_xent
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, register


@dataclass
class SimCLRv2Config:
    temperature: float = 0.1  # ImageNet, as SimCLR
    proj_hidden: int | None = None  # None: the encoder's feature width (the paper's hidden layers keep it)
    proj_dim: int = 128
    proj_layers: int = 3  # the paper's choice; fine-tuning starts after the first of them
    finetune_layer: int = 1  # head layers (Linear-BN-ReLU) kept for fine-tuning: 1 = the middle of a 3-layer head


class HeadPrefix(nn.Module):
    """Backbone followed by the first Linear-BN-ReLU layer(s) of a projection head: what SimCLR v2
    fine-tunes. It shares (does not copy) the method's modules; fine-tuning deep-copies it.

    [B, C, H, W] -> [B, num_features] (the head's hidden width; the backbone's when no layer is kept).
    """

    def __init__(self, backbone: nn.Module, layers: list[nn.Module], num_features: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(*layers)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@register("simclrv2", config=SimCLRv2Config, views="simclr")
class SimCLRv2(Method):
    """SimCLR v2: NT-Xent through a 3-layer BN head; fine-tune from the head's middle layer."""

    def __init__(self, encoder: nn.Module, cfg: SimCLRv2Config = SimCLRv2Config(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if not 0 <= cfg.finetune_layer < cfg.proj_layers:
            raise SelfsupError(
                f"method.finetune_layer={cfg.finetune_layer} must be in 0..{cfg.proj_layers - 1} "
                f"(the hidden layers of a {cfg.proj_layers}-layer head)"
            )
        self.cfg = cfg
        self.encoder = encoder
        d = cast(int, encoder.num_features)
        self.hidden = cfg.proj_hidden or d
        # Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN: BN in every layer, no biases (BN follows).
        # The last BN is affine-free here; the paper's keeps a scale, which a cosine loss ignores anyway.
        self.projector = mlp(d, self.hidden, cfg.proj_dim, cfg.proj_layers, bn=True, last_bn=True)

    @property
    def finetune_encoder(self) -> HeadPrefix:
        """Backbone + the head up to its middle: built on demand (not a registered submodule), so the
        checkpoint holds each weight once. Every hidden layer of ``mlp`` is 3 modules: Linear, BN, ReLU."""
        k = self.cfg.finetune_layer
        width = self.hidden if k > 0 else cast(int, self.encoder.num_features)
        return HeadPrefix(self.encoder, list(self.projector[: 3 * k]), width)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = batch.views  # [N, C, H, W] each
        n = x1.shape[0]
        h = self.encoder(torch.cat([x1, x2]))  # one pass over the 2N views: [2N, F]
        z = self.projector(h)  # g(h), three layers: [2N, D]
        loss, candidates = nt_xent(z[:n], z[n:], self.cfg.temperature)
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), candidates)})
