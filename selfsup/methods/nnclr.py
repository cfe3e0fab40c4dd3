"""NNCLR — Dwibedi, Aytar, Tompson, Sermanet, Zisserman. "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021.

Idea: SimCLR whose positive is not the other view of the same image but the nearest neighbour
of the image's embedding in a support set Q — a FIFO queue of embeddings of recently seen
images. A neighbour is another image, likely of the same kind, so the positive pairs carry more
semantic variation than augmentations alone give. Loss (eq. 2, with the prediction head):

    L_i = -log exp(NN(z_i, Q) . p_i^+ / tau) / sum_k exp(NN(z_i, Q) . p_k^+ / tau),

z = h(f(x)) the projection of view 1, p^+ = g(z^+) the prediction of view 2, symmetrised (the
transposed softmax, and the views swapped). The neighbour carries no gradient; the support set
receives z of view 1 after each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses import infonce_bound
from selfsup.losses.moco import nnclr_loss, two_views
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.nn.queue import SupportSet
from selfsup.registry import BuildContext, register


@dataclass
class NNCLRConfig:
    temperature: float = 0.1
    proj_hidden: int = 2048  # projector: 3 layers, 2048-2048-256, BN in every layer
    proj_dim: int = 256  # d, the embedding the support set stores
    pred_hidden: int = 4096  # predictor: 256 -> 4096 -> 256
    queue_size: int = 98304  # the support set (paper: 98,304 at batch 4096; 100 MB of float32 at d 256)
    decoupled: bool = False  # DCL (Yeh et al. 2022): the positive left out of each softmax's denominator


@register("nnclr", config=NNCLRConfig, views="byol")
class NNCLR(Method):
    """NNCLR: the positive is the nearest neighbour from a support queue of past embeddings."""

    def __init__(self, encoder: nn.Module, cfg: NNCLRConfig = NNCLRConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, num_layers=3, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, num_layers=2)
        self.support = SupportSet(cfg.queue_size, cfg.proj_dim)  # Q, in buffers (checkpointed)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = two_views(batch.views, self.name)  # [N, C, H, W] each
        n = x1.shape[0]
        z = self.projector(self.encoder(torch.cat([x1, x2])))  # [2N, D]
        p = self.predictor(z)  # [2N, D]
        z1, z2, p1, p2 = z[:n], z[n:], p[:n], p[n:]
        # NN(z_i, Q) [N, D] (unit, no gradient) and its cosine [N], in Q as of this step, before this
        # step's z1; on the first step Q is empty and NN(z) = z (the step is then SimCLR-with-predictor)
        (nn1, cos1), (nn2, cos2) = self.support.neighbours(z1, z2)
        tau, dcl = self.cfg.temperature, self.cfg.decoupled
        loss12, candidates = nnclr_loss(nn1, p2, tau, dcl)  # NN of view 1 vs predictions of view 2
        loss21, _ = nnclr_loss(nn2, p1, tau, dcl)  # and the views swapped
        loss = (loss12 + loss21) / 2
        self.support.stage(z1)  # enqueued in on_step_end
        # how close the positives the loss uses are (1.0 = the image itself);
        # with labels one would log the neighbours' class agreement instead
        logs: dict[str, torch.Tensor | float] = {"nn_cosine": (cos1.mean() + cos2.mean()) / 2}
        if not dcl:  # DCL's loss is no InfoNCE: log N - L would not bound anything
            logs["infonce_bound"] = infonce_bound(loss.detach(), candidates)
        return StepOutput(loss, logs)

    def on_step_end(self, progress: float) -> None:
        self.support.flush()  # Q <- Q + {z1}: the oldest entries drop out
