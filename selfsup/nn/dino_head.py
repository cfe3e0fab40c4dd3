"""DINO's projection head (Caron et al. 2021, sec. 3.1 and appendix; the official ``DINOHead``).

A 3-layer MLP (hidden 2048, GELU, no BatchNorm by default) to a 256-d bottleneck, L2
normalisation, then a weight-normalised linear layer to K outputs without bias. With the
weight norm g fixed to 1 (``norm_last_layer``), every output is the cosine between the
normalised bottleneck and one of K unit "prototype" rows: logits bounded by 1, which is
what keeps training stable (the paper's appendix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """[N, in_dim] -> [N, out_dim] logits; ``bottleneck(x)`` gives the normalised [N, bottleneck_dim]."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        bn: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim)] + ([nn.BatchNorm1d(hidden_dim)] if bn else []) + [nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):  # the official init (ViT-style truncated normal)
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # W = g * v / ||v|| per output row; torch's parametrisation keeps g ("original0") and v ("original1")
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(not norm_last_layer)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor, freeze_last_layer: bool = False) -> torch.Tensor:
        """``freeze_last_layer``: no gradient reaches the last layer (the official code cancels it
        during the first epoch, which helps stability)."""
        u = self.bottleneck(x)  # [N, bottleneck] (under autocast if the caller uses it)
        w = self.last_layer.weight  # [K, bottleneck], unit rows when g = 1
        if freeze_last_layer:
            w = w.detach()
        # float32: DINO's teacher temperature 0.04 would turn bf16's rounding of the cosines into
        # logit errors of ~0.1; this [N, 256] x [256, K] product is cheap next to the backbone
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(u.float(), w.float())
