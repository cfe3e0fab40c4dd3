"""Synchronised BatchNorm: batch statistics over the global batch of every process.

Why: SimCLR, BYOL, Barlow Twins and VICReg normalise their projection heads with BatchNorm, and
the papers compute those statistics over the whole global batch (SimCLR sec. B.9: "global BN").
With per-process BN a distributed run is a different model from a one-process run with the same
global batch; with synchronised BN it is the same model (tests/distributed check the gradients).

torch's ``nn.SyncBatchNorm`` is fused and used on CUDA, but it refuses CPU tensors, and gloo on
the CPU is how selfsup runs and tests distributed training here. So this module writes the CPU
version by hand: two differentiable all-reduces (the sum, then the centred sum of squares), with
the gradient convention of ``selfsup.dist``. In one process it is exactly ``BatchNorm``.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup import dist
from selfsup.errors import SelfsupError


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d/3d whose training-mode statistics are those of the global batch.

    Every process must hold the same number of rows (the loader drops the last incomplete batch,
    so it does). The same state-dict keys as BatchNorm, so checkpoints load either way."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise SelfsupError(f"SyncBatchNorm expects [N, C, ...] input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or dist.world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()  # statistics in float32 also under bf16 autocast
        n = xf.numel() // xf.shape[1] * dist.world_size()  # rows x positions of the global batch
        mean = dist.all_reduce_sum_with_grad(xf.sum(dims)) / n  # [C]
        xc = xf - mean.view(shape)
        var = dist.all_reduce_sum_with_grad(xc.pow(2).sum(dims)) / n  # [C], biased (as BN normalises)
        if self.track_running_stats:
            # the buffers exist whenever running statistics are tracked (narrowed for the type checker)
            assert self.num_batches_tracked is not None and self.running_mean is not None
            assert self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / max(1, n - 1), m)  # unbiased, as BatchNorm stores it
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Every BatchNorm in ``module`` replaced by a synchronised one sharing its parameters and
    buffers (so an optimiser built before or after sees the same tensors): torch's fused
    ``nn.SyncBatchNorm`` on CUDA, this file's on the CPU."""
    if device is not None and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, device)
        if new is not child:
            setattr(module, name, new)
    return module
