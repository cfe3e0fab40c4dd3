"""Projection and prediction heads shared by methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError


class WSLinear(nn.Linear):
    """A linear layer with weight standardisation (Qiao et al. 2019): each output unit's weights are
    standardised to zero mean and unit variance before use. With GroupNorm it replaces batch
    statistics in BYOL's heads (Richemond et al. 2020, "BYOL works even without batch statistics")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(1, keepdim=True)) / (w.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
        return F.linear(x, w, self.bias)


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    bn: bool = True,
    last_bn: bool = False,
    gn_ws: bool = False,
) -> nn.Sequential:
    """Linear-(BN)-ReLU x (num_layers-1), then Linear (and an affine-free BN when ``last_bn``).

    SimCLR: 2 layers, BN in the hidden layer. BYOL: 2 layers, hidden 4096, output 256.
    SimCLR v2 / SimSiam use 3 layers with a final BN (``last_bn``). ``gn_ws`` (with ``bn`` False):
    weight-standardised linear layers and GroupNorm (32 groups) in the hidden layers instead.
    """
    if bn and gn_ws:
        raise SelfsupError("choose BatchNorm (bn) or GroupNorm + weight standardisation (gn_ws), not both")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [(WSLinear if gn_ws else nn.Linear)(dim, hidden_dim, bias=not (bn or gn_ws))]
        if gn_ws:
            layers.append(nn.GroupNorm(min(32, hidden_dim), hidden_dim))
        if bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
