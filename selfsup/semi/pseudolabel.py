"""Pseudo-label (Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for
Deep Neural Networks").

The idea: treat the class the network currently predicts for an unlabelled image as if it were the
true label, recomputed at every update, and weigh that loss by a coefficient that starts at 0 and
ramps up (eq. 15-16), so the early, poor predictions do not teach the network its own mistakes:
L = l_s + alpha(t) l_u, alpha(t) = 0 before T1, alpha_f (t - T1)/(T2 - T1) up to T2, alpha_f after.
Paper: alpha_f 3, T1 100 and T2 600 epochs (here fractions of the steps). ``threshold`` > 0 keeps only
confident pseudo-labels (the variant of Oliver et al. 2018's comparison; the paper has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.losses.semi import confidence_mask, pseudo_label_weight
from selfsup.semi.base import Batch, SemiMethod, Views, register_semi


@dataclass
class PseudoLabelConfig:
    alpha_f: float = 3.0
    t1: float = 0.1  # ramp start, as a fraction of the steps (the paper's epoch 100)
    t2: float = 0.6  # ramp end (the paper's epoch 600)
    threshold: float = 0.0  # 0: every pseudo-label counts, as the paper


@register_semi("pseudolabel")
class PseudoLabel(SemiMethod):
    """Pseudo-label: the network's own argmax on unlabelled images, as labels, with a ramped weight."""

    Config = PseudoLabelConfig
    defaults = dict(optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=5e-4, schedule="fixmatch", mu=1, ema=0.0)

    def loss(self, model, batch: Batch, views: Views):
        c = self.cfg
        b = len(batch.x)
        logits = model(torch.cat([views.weak(batch.x), views.weak(batch.u)])).float()
        l_s = F.cross_entropy(logits[:b], batch.y)
        labels, mask = confidence_mask(logits[b:], c.threshold)  # argmax, recomputed at every update
        l_u = (F.cross_entropy(logits[b:], labels, reduction="none") * mask).mean()
        alpha = pseudo_label_weight(batch.step / batch.total, c.t1, c.t2, c.alpha_f)
        return l_s + alpha * l_u, {"l_s": l_s.detach(), "l_u": l_u.detach(), "alpha": alpha}
