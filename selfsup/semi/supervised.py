"""Supervised on the labels alone: the baseline every semi-supervised method must beat.

The same loop, classifier, weak views (flip and shift), optimiser, schedule and EMA as FixMatch,
with the unlabelled term removed: l = H(y, p(y | alpha(x))). It draws unlabelled batches like every
method (the batch order is then the same) but never looks at them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from selfsup.semi.base import Batch, SemiMethod, Views, register_semi


@dataclass
class SupervisedConfig:
    pass


@register_semi("supervised")
class Supervised(SemiMethod):
    """Labels only: cross-entropy on weakly augmented labelled images."""

    Config = SupervisedConfig
    defaults = dict(optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=5e-4, schedule="fixmatch", mu=1, ema=0.999)

    def loss(self, model, batch: Batch, views: Views):
        l_s = F.cross_entropy(model(views.weak(batch.x)).float(), batch.y)
        return l_s, {"l_s": l_s.detach()}
