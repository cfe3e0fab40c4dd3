"""FastSiam — Pototzky, Sultan & Schmidt-Thieme. "FastSiam: Resource-Efficient Self-supervised
Learning on a Single GPU", GCPR 2022.

Idea: SimSiam with a steadier target. Each image gets K views (the paper's K = 4); every view's
prediction p_i is pulled towards the mean of the OTHER K - 1 views' projections, through a stop-
gradient. Averaging several views makes the target less noisy, so small batches and few epochs —
one GPU, or a CPU — learn what SimSiam needs far more compute for. Loss:
L = (1/K) sum_i D(p_i, stopgrad(mean_{j != i} z_j)) with D(p, z) = -cos(p, z).
With K = 2 it is SimSiam's eq. 3 exactly (tested).

Everything else is SimSiam's (selfsup.methods.simsiam): the projector and predictor, one pass per view
(each view's own BatchNorm statistics), the predictor's unscheduled learning rate, and SimSiam's
augmentations (the ``fastsiam`` view preset: SimCLR's with four global views). The target is the mean
of the unnormalised projections, as lightly's reference implementation (examples/pytorch/fastsiam.py).
"""

from __future__ import annotations

from typing import cast

import torch

from selfsup.errors import SelfsupError
from selfsup.losses.distillation import negative_cosine
from selfsup.methods.base import StepOutput
from selfsup.methods.simsiam import SimSiam, SimSiamConfig
from selfsup.registry import BuildContext, register, register_view_preset
from selfsup.transforms.views import ViewConfig

# SimSiam's augmentations (SimCLR's), K = 4 views; registered beside the one method that uses it
register_view_preset("fastsiam", ViewConfig(num_global=4))


@register("fastsiam", config=SimSiamConfig, views="fastsiam")
class FastSiam(SimSiam):
    """FastSiam: each view's prediction matches the mean projection of the other views, through a stop-gradient."""

    def __init__(self, encoder, cfg: SimSiamConfig = SimSiamConfig(), ctx: BuildContext = BuildContext()):
        if cfg.nn_support:  # SimSiam's NNSiam option; FastSiam's mean target has no nearest-neighbour variant here
            raise SelfsupError(
                "fastsiam has no nearest-neighbour target: method.nn_support is SimSiam's (NNSiam); "
                "leave it at 0 or use --method simsiam"
            )
        super().__init__(encoder, cfg, ctx)

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # K views [N, C, H, W]
        k = len(views)
        z = torch.stack([self.projector(self.encoder(x)) for x in views])  # [K, N, D], one pass per view
        p = [self.predictor(z_i) for z_i in z]  # K x [N, D]
        others = (z.sum(0, keepdim=True) - z) / (k - 1)  # [K, N, D]: row i is the mean of the z_j, j != i
        loss = cast(torch.Tensor, sum(negative_cosine(p[i], others[i], self.cfg.stop_gradient) for i in range(k))) / k
        return StepOutput(loss, {"views": float(k)})
