"""Optimisers (SGD, LARS, AdamW) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from selfsup.config import OptimConfig
from selfsup.errors import SelfsupError
from selfsup.nn.stepper import set_lr  # noqa: F401  (the schedule's rates: train.optim is where users look)


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017), as SimCLR and BYOL use it.

    SGD with momentum whose per-tensor learning rate is scaled by the trust ratio
    eta * ||w|| / ||g + wd * w||. Groups marked ``lars_exclude`` (norms, biases) get plain SGD
    without weight decay. Written here because torch ships no LARS.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not g["lars_exclude"]:
                    if g["weight_decay"]:
                        d = d.add(p, alpha=g["weight_decay"])
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0), g["eta"] * w_norm / d_norm, torch.ones_like(w_norm)
                    )
                    d = d.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.clone(d).detach()
                else:
                    state["mu"].mul_(g["momentum"]).add_(d)
                p.add_(state["mu"], alpha=-g["lr"])


def build_optimizer(groups: list[dict], cfg: OptimConfig, batch_size: int) -> torch.optim.Optimizer:
    """The optimiser over a method's ``param_groups``; a group may carry ``lr_scale`` (its base rate relative
    to the run's: All4One's transformer at 0.1 of it), ``fixed_lr`` (see selfsup.nn.stepper.set_lr) and ``lars_exclude``."""
    lr = cfg.lr * batch_size / 256 if cfg.scale_lr else cfg.lr
    for g in groups:
        g.setdefault("weight_decay", cfg.weight_decay)
    opt: torch.optim.Optimizer
    if cfg.name == "sgd":
        groups = [{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups]
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.name == "lars":
        opt = LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.name == "adamw":
        groups = [{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups]
        opt = torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    else:
        raise SelfsupError(f"optim.name {cfg.name!r}: choose sgd, lars or adamw")
    for g in opt.param_groups:
        g["base_lr"] = lr * g.get("lr_scale", 1.0)
        g["lr"] = g["base_lr"]
    return opt


def lr_factor(progress: float, cfg: OptimConfig) -> float:
    """Multiplier of the base rate at ``progress`` in [0, 1] of training: linear warm-up over
    the first ``cfg.warmup`` fraction, then cosine decay to ``min_lr_ratio`` (or constant).
    Defined on progress rather than steps so that a wall-clock budget schedules the same way."""
    progress = min(max(progress, 0.0), 1.0)
    if cfg.warmup > 0 and progress < cfg.warmup:
        return progress / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    t = (progress - cfg.warmup) / max(1e-12, 1 - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
