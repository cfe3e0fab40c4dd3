"""Exponential moving averages of networks (BYOL/MoCo/DINO targets) and their momentum schedule."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy that receives no gradients: the EMA target starts equal to the online net."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """theta_target <- m * theta_target + (1 - m) * theta_online, parameters only. The target keeps its
    own buffers: its batch-norm running statistics are those of its own forward passes (in train mode),
    as in the official MoCo (only ``param_k`` are updated), BYOL and DINO code, so the target (the DINO
    teacher offered for evaluation among them) carries statistics of its own weights, not the student's."""
    t_params: list[torch.Tensor] = list(target.parameters())
    o_params: list[torch.Tensor] = list(online.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1 - momentum)


def cosine_momentum(base: float, progress: float, final: float = 1.0) -> float:
    """BYOL's schedule tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, from ``base`` to ``final``."""
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
