"""FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence").

The idea: the model's prediction on a weakly augmented unlabelled image (flip and shift), when it is
confident (max probability >= tau), becomes a hard pseudo-label for a strongly augmented view of the
same image (RandAugment + Cutout). Loss = l_s + lambda_u l_u (eq. 1-2): l_s the cross-entropy on the
weakly augmented labelled batch, l_u the masked cross-entropy averaged over all mu B unlabelled images.
Paper settings (CIFAR-10): tau 0.95, lambda_u 1, mu 7, B 64, SGD with Nesterov momentum 0.9,
lr 0.03 with cos(7 pi k / 16 K) decay, weight decay 5e-4, an EMA of the weights (0.999) for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.losses.semi import fixmatch_unlabelled
from selfsup.semi.base import Batch, SemiMethod, Views, register_semi


@dataclass
class FixMatchConfig:
    threshold: float = 0.95  # tau
    lambda_u: float = 1.0


@register_semi("fixmatch")
class FixMatch(SemiMethod):
    """FixMatch: confident weak-view predictions supervise the strong view."""

    Config = FixMatchConfig
    defaults = dict(optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=5e-4, schedule="fixmatch", mu=7, ema=0.999)

    def loss(self, model, batch: Batch, views: Views):
        b = len(batch.x)
        # one forward over labelled, weak and strong views: batch norm sees them together, as the paper's code
        x = torch.cat([views.weak(batch.x), views.weak(batch.u), views.strong(batch.u)])
        logits = model(x).float()
        logits_x = logits[:b]
        logits_uw, logits_us = logits[b:].chunk(2)  # [mu B, K] each
        l_s = F.cross_entropy(logits_x, batch.y)
        l_u, mask = fixmatch_unlabelled(logits_uw, logits_us, self.cfg.threshold)
        return l_s + self.cfg.lambda_u * l_u, {"l_s": l_s.detach(), "l_u": l_u.detach(), "mask": mask.mean()}
