"""Projection and prediction heads shared by methods."""
from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, bn: bool = True,
        last_bn: bool = False) -> nn.Sequential:
    """Linear-(BN)-ReLU x (num_layers-1), then Linear (and an affine-free BN when ``last_bn``).

    SimCLR: 2 layers, BN in the hidden layer. BYOL: 2 layers, hidden 4096, output 256.
    SimCLR v2 / SimSiam use 3 layers with a final BN (``last_bn``).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
