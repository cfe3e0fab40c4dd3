"""Virtual adversarial training (Miyato et al. 2018, "Virtual Adversarial Training: A Regularization
Method for Supervised and Semi-Supervised Learning").

The idea: smooth the classifier around every input, labelled or not, in the direction it is most
sensitive to. r_adv (norm epsilon) maximises KL(p(y|x) || p(y|x + r)) and is found by power
iteration on the Hessian of that divergence (eq. 11-13); the loss adds the local distributional
smoothness LDS = KL(p(y|x) || p(y|x + r_adv)) to the cross-entropy: L = l_s + alpha LDS. Paper
settings: one power iteration, xi 1e-6, alpha 1, epsilon 2.0 on MNIST (8.0 for CIFAR-10 with ZCA),
Adam at 0.001 decayed linearly to 0 over the last third; "VAT + EntMin" adds the prediction entropy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.semi import entropy, vat_loss
from selfsup.semi.base import Batch, SemiMethod, Views, register_semi


@dataclass
class VATConfig:
    epsilon: float = 2.0  # norm of r_adv, in the normalised input's units (MNIST's value)
    xi: float = 1e-6  # finite-difference step of the power iteration
    power_iterations: int = 1
    alpha: float = 1.0  # weight of LDS
    entmin: float = 0.0  # weight of the entropy term (1.0: the paper's VAT + EntMin)


@contextlib.contextmanager
def frozen_batch_norm_statistics(model: nn.Module):
    """Batch norm still normalises by the batch, but its running statistics do not move (momentum 0):
    the perturbed inputs of the power iteration are not data the classifier should be evaluated on."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


@register_semi("vat")
class VAT(SemiMethod):
    """VAT: the classifier's output must not change under the worst small perturbation of any input."""

    Config = VATConfig
    defaults = dict(optimizer="adam", lr=0.001, weight_decay=0.0, schedule="linear-tail", mu=1, ema=0.0)

    def loss(self, model, batch: Batch, views: Views):
        c = self.cfg
        b = len(batch.x)
        x = torch.cat([views.weak(batch.x), views.weak(batch.u)])  # LDS on labelled and unlabelled alike
        logits = model(x).float()
        l_s = F.cross_entropy(logits[:b], batch.y)
        with frozen_batch_norm_statistics(model):
            lds = vat_loss(lambda v: model(v).float(), x, logits, c.epsilon, c.xi, c.power_iterations, views.gen)
        loss = l_s + c.alpha * lds
        logs = {"l_s": l_s.detach(), "lds": lds.detach()}
        if c.entmin:
            ent = entropy(logits[b:])
            loss = loss + c.entmin * ent
            logs["entropy"] = ent.detach()
        return loss, logs
