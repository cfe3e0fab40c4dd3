"""Iterative normalisation (IterNorm): whitening by Newton iterations, no eigendecomposition.

Huang, Zhou, Zhu, Liu, Shao. "Iterative Normalization: Beyond Standardization towards Efficient
Whitening", CVPR 2019 (Algorithm 1). For a batch of features split into groups of ``c`` channels,
each group's centred features are multiplied by an approximation of Sigma^{-1/2}:

    Sigma   = eps I + (1/m) Xc^T Xc                       (biased covariance, [c, c])
    Sigma_N = Sigma / tr(Sigma)                           (eigenvalues in (0, 1]: the iteration converges)
    P_0 = I,   P_{k+1} = (3 P_k - P_k^3 Sigma_N) / 2,     k = 0 .. T-1   (Newton-Schulz)
    W = P_T / sqrt(tr(Sigma)),   output = Xc W^T

With T -> infinity W -> Sigma^{-1/2} (ZCA whitening, identity covariance); a small T (the paper's 5)
whitens only partly: directions with small eigenvalues are stretched less, which the IterNorm paper
reports as a useful middle between standardising and full whitening. Keep T small: this uncoupled
Newton iteration is not numerically stable far past convergence (rounding breaks its commutation with
Sigma and the error grows: in float32, T = 10 already diverges on a batch of condition number ~60,
where T = 5 stays bounded since each eigenvalue's factor grows at most 1.5x a step). VIbCReg (Lee & Aune 2021) puts
one at the end of its projector with 64 groups and T = 5 (``IterNorm(D, num_groups=64, T=5)`` in the
official code, ML4ITS/vibcreg ``vibcreg/normalization/iter_norm.py``, which takes its grouping rule
from huangleiBuaa/IterNorm-pytorch).

Here the gradient is plain autograd through the iteration (the official code writes the same
backward by hand). Like BatchNorm, the layer keeps running estimates of the mean and of W (momentum
0.1) for eval mode, updated by its forward in training mode, and an affine weight and bias per
channel (1 and 0 at start). Statistics run in float32 with autocast off. Across processes the mean
and covariance are those of the global batch (sums all-reduced with gradient, as SyncBatchNorm),
so a distributed run is the one-process model.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup import dist
from selfsup.errors import SelfsupError


def group_size(num_features: int, num_groups: int) -> int:
    """Channels per group, by the rule of IterNorm-pytorch (kept by the VIbCReg code): ceil(D / G),
    halved until it divides D; the number of groups is then D // size (64 groups of 64 for D = 4096,
    groups of 1 for any D when the size must fall that far)."""
    if num_features < 1 or num_groups < 1:
        raise SelfsupError(f"IterNorm needs num_features >= 1 and num_groups >= 1, got {num_features}, {num_groups}")
    size = (num_features - 1) // num_groups + 1
    while num_features % size:
        size //= 2
    return size


def newton_whitening(sigma: torch.Tensor, iterations: int) -> torch.Tensor:
    """W ~ Sigma^{-1/2} of symmetric positive definite matrices sigma [G, c, c] by T Newton-Schulz
    iterations on the trace-normalised matrix (IterNorm, Algorithm 1)."""
    eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]  # [G, 1, 1]
    sigma_n = sigma / trace
    p = eye
    for _ in range(iterations):
        p = 1.5 * p - 0.5 * (p @ p @ p) @ sigma_n
    return p / trace.sqrt()


class IterNorm(nn.Module):
    """Grouped iterative whitening of [N, D] features (see the module docstring). ``affine``: a learned
    weight and bias per channel after the whitening; ``bias=False`` keeps the weight only."""

    running_mean: torch.Tensor  # [G, c]
    running_wm: torch.Tensor  # [G, c, c]
    weight: nn.Parameter | None
    bias: nn.Parameter | None

    def __init__(
        self,
        num_features: int,
        num_groups: int = 64,
        iterations: int = 5,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        bias: bool = True,
    ):
        super().__init__()
        self.num_features, self.iterations, self.eps, self.momentum = num_features, iterations, eps, momentum
        self.group_size = group_size(num_features, num_groups)
        self.num_groups = num_features // self.group_size
        g, c = self.num_groups, self.group_size
        self.register_buffer("running_mean", torch.zeros(g, c))
        self.register_buffer("running_wm", torch.eye(c).expand(g, c, c).clone())  # W of the running estimate
        self.register_parameter("weight", nn.Parameter(torch.ones(num_features)) if affine else None)
        self.register_parameter("bias", nn.Parameter(torch.zeros(num_features)) if affine and bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise SelfsupError(
                f"IterNorm({self.num_features}) expects [N, {self.num_features}] input, got {list(x.shape)}"
            )
        n = x.shape[0]
        with torch.autocast(device_type=x.device.type, enabled=False):
            xg = x.float().reshape(n, self.num_groups, self.group_size).transpose(0, 1)  # [G, N, c]
            if self.training:
                m = n * dist.world_size()
                mean = dist.all_reduce_sum_with_grad(xg.sum(1)) / m  # [G, c]
                xc = xg - mean[:, None]
                eye = torch.eye(self.group_size, device=x.device)
                sigma = self.eps * eye + dist.all_reduce_sum_with_grad(xc.transpose(1, 2) @ xc) / m  # [G, c, c]
                wm = newton_whitening(sigma, self.iterations)  # [G, c, c]
                with torch.no_grad():
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    self.running_wm.lerp_(wm.detach(), self.momentum)
            else:
                xc, wm = xg - self.running_mean[:, None], self.running_wm
            out = (xc @ wm.transpose(1, 2)).transpose(0, 1).reshape(n, self.num_features)  # rows W xc_i
            if self.weight is not None:
                out = out * self.weight
            if self.bias is not None:
                out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, groups={self.num_groups}x{self.group_size}, T={self.iterations}, "
            f"eps={self.eps}, momentum={self.momentum}, affine={self.weight is not None}, bias={self.bias is not None}"
        )
