"""MixMatch (Berthelot et al. 2019, "MixMatch: A Holistic Approach to Semi-Supervised Learning").

The idea (Algorithm 1): guess a label for each unlabelled image by averaging the model's predictions
over K weak augmentations and sharpening the average (temperature T); then MixUp every labelled and
unlabelled example with a random other one (lambda' = max(lambda, 1 - lambda) keeps each mix nearer
its own example), and train with cross-entropy on the mixed labelled batch and squared error on the
mixed unlabelled one: L = L_X + lambda_U L_U. Paper settings: K 2, T 0.5, alpha 0.75, lambda_U 75 on
CIFAR-10 ramped up linearly over the first 16k of ~1M steps, Adam at 0.002 with decoupled weight
decay 0.02 x lr, constant rate, EMA 0.999 of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.losses.semi import mixmatch_unlabelled, mixup, sharpen, soft_cross_entropy
from selfsup.semi.base import Batch, SemiMethod, Views, register_semi


@dataclass
class MixMatchConfig:
    k: int = 2  # augmentations per unlabelled image for the label guess
    temperature: float = 0.5  # T of Sharpen
    alpha: float = 0.75  # Beta(alpha, alpha) of MixUp
    lambda_u: float = 75.0
    rampup: float = 0.016  # lambda_U rises linearly over this fraction of the steps (16k of 1,048k)


@register_semi("mixmatch")
class MixMatch(SemiMethod):
    """MixMatch: sharpened guesses over K augmentations, MixUp across labelled and unlabelled."""

    Config = MixMatchConfig
    defaults = dict(optimizer="adamw", lr=0.002, weight_decay=0.02, schedule="constant", mu=1, ema=0.999)

    def loss(self, model, batch: Batch, views: Views):
        c = self.cfg
        b, n_u = len(batch.x), len(batch.u)
        num_classes = model.head.out_features
        x = views.weak(batch.x)
        u = [views.weak(batch.u) for _ in range(c.k)]  # K x [N_u, C, H, W]
        with torch.no_grad():  # the guess is a target: no gradient through it
            p = torch.stack([F.softmax(model(v).float(), -1) for v in u]).mean(0)  # [N_u, K_classes]
            q = sharpen(p, c.temperature)
        all_x = torch.cat([x, *u])  # [B + K N_u, ...]
        all_t = torch.cat([F.one_hot(batch.y, num_classes).float(), q.repeat(c.k, 1)])
        perm = torch.randperm(len(all_x), generator=views.gen).to(all_x.device)  # W = Shuffle(Concat(X', U'))
        lam = _beta(c.alpha, views.gen)  # one lambda per batch, as the paper's code
        mixed_x, mixed_t = mixup(all_x, all_t, all_x[perm], all_t[perm], lam)
        logits = model(mixed_x).float()
        l_x = soft_cross_entropy(logits[:b], mixed_t[:b])
        l_u = mixmatch_unlabelled(logits[b:], mixed_t[b:])
        ramp = min(1.0, batch.step / max(1.0, c.rampup * batch.total))
        return l_x + c.lambda_u * ramp * l_u, {"l_x": l_x.detach(), "l_u": l_u.detach(), "n_u": n_u}


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, reproducible from ``gen`` (torch.distributions takes no generator)."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(torch.distributions.Beta(alpha, alpha).sample())
