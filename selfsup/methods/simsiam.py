"""SimSiam — Chen & He. "Exploring Simple Siamese Representation Learning", CVPR 2021.

Idea: BYOL without the momentum encoder. One network f (encoder + projector) sees both views;
a predictor h maps one view's projection z1 to p1, which is pulled towards the other view's
projection z2 — through which no gradient flows. The stop-gradient alone prevents collapse
(sec. 4.1: without it the output collapses to a constant at once); the paper reads it as an
EM-like alternation between the representation and a per-image target. Loss (eq. 3):
L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 with D(p, z) = -cos(p, z).

Heads (sec. 3 "Baseline settings"): projector 3 layers, 2048-d, BN on every layer including
the output (which has no ReLU); predictor a bottleneck 2048 -> 512 -> 2048 with BN and ReLU in
the hidden layer only. Optimiser: SGD, lr 0.05 * batch / 256, momentum 0.9, weight decay 1e-4,
cosine decay — except the predictor, whose lr is not decayed (sec. 4.3 / the official
``--fix-pred-lr``): ``param_groups`` marks its groups ``fixed_lr``. Views: the paper uses
SimCLR/MoCo v2 augmentations with crops of 0.2-1 (the recipes set crop_scale).

NNSiam (an option, ``nn_support > 0``; Dwibedi et al. 2021, NNCLR, which also applies its
nearest-neighbour idea to SimSiam; lightly's NNSiam): each stop-gradient target z is
replaced, before the loss, by its nearest neighbour (cosine) in a support set Q, a FIFO queue of past
projections (``SupportSet``, NNCLR's): L = D(p1, NN(z2, Q)) / 2 + D(p2, NN(z1, Q)) / 2. Q receives
this step's z1 in ``on_step_end``, and is looked up as it was before the step (empty on the first
step: each z is then its own neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.distillation import negative_cosine
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.nn.queue import SupportSet
from selfsup.registry import BuildContext, register


@dataclass
class SimSiamConfig:
    proj_hidden: int = 2048
    proj_dim: int = 2048
    proj_layers: int = 3  # ImageNet; the paper's CIFAR-10 experiments use 2
    pred_hidden: int = 512  # the bottleneck, 1/4 of proj_dim (sec. 3, "Baseline settings")
    stop_gradient: bool = True  # False is the paper's collapse ablation (fig. 2)
    fixed_pred_lr: bool = True  # the predictor's lr follows no schedule (sec. 4.3)
    nn_support: int = 0  # NNSiam: size of the support set whose nearest neighbour replaces each target; 0 = SimSiam


@register("simsiam", config=SimSiamConfig, views="simclr")
class SimSiam(Method):
    """SimSiam: a predictor matches the other view's projection, through a stop-gradient."""

    def __init__(self, encoder: nn.Module, cfg: SimSiamConfig = SimSiamConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        # Linear-BN-ReLU x (layers-1), Linear-BN: the output BN is affine-free, as in the official code
        self.projector = mlp(
            cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, cfg.proj_layers, last_bn=True
        )
        # Linear-BN-ReLU, Linear: no BN or ReLU on the prediction
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, 2)
        if cfg.nn_support > 0 and not cfg.stop_gradient:
            raise SelfsupError(
                "method.nn_support replaces the targets by support-set vectors, which carry no gradient: "
                "the stop_gradient=false ablation means nothing with it; set one of them back"
            )
        # NNSiam's support set Q of past projections (buffers, checkpointed); None = plain SimSiam
        self.support = SupportSet(cfg.nn_support, cfg.proj_dim) if cfg.nn_support > 0 else None

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))  # z, whose collapse fig. 2 measures

    def training_step(self, batch) -> StepOutput:
        x1, x2 = batch.views  # [N, C, H, W] each
        # one pass per view, as the official code: BatchNorm statistics are each view's own
        z1, z2 = self.projector(self.encoder(x1)), self.projector(self.encoder(x2))  # [N, D] each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # [N, D] each
        logs: dict[str, torch.Tensor | float]
        sg, logs = self.cfg.stop_gradient, {}
        if self.support is not None:  # NNSiam: each target -> its nearest neighbour in Q (before this step)
            self.support.stage(z1)  # enqueued in on_step_end
            (z1, cos1), (z2, cos2) = self.support.neighbours(z1, z2)  # [N, D] unit, no gradient; [N]
            logs["nn_cosine"] = (cos1.mean() + cos2.mean()) / 2  # 1.0 = the image itself
        loss = negative_cosine(p1, z2, sg) / 2 + negative_cosine(p2, z1, sg) / 2  # eq. 3, in [-1, 1]
        return StepOutput(loss, logs)

    def on_step_end(self, progress: float) -> None:
        if self.support is not None:
            self.support.flush()  # Q <- Q + this step's z1

    def param_groups(self) -> list[dict]:
        """The base split (no weight decay on norms and biases), with the predictor's groups
        flagged ``fixed_lr``: a schedule that honours the flag keeps them at the base lr."""
        pred = {id(p) for p in self.predictor.parameters()}
        groups = []
        for g in super().param_groups():
            rest = [p for p in g["params"] if id(p) not in pred]
            mine = [p for p in g["params"] if id(p) in pred]
            opts = {k: v for k, v in g.items() if k != "params"}
            groups.append({**opts, "params": rest})
            groups.append({**opts, "params": mine, "fixed_lr": self.cfg.fixed_pred_lr})
        return [g for g in groups if g["params"]]
