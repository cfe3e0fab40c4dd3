"""torch.distributed helpers that are no-ops in a single process."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the summed gradient, so in-batch
    negatives from other processes contribute gradients exactly as in one big batch."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.zeros_like(x) for _ in range(world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        g = torch.stack(grads)
        dist.all_reduce(g)
        return g[rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[B, D] per process -> [world*B, D], differentiable; identity in one process."""
    if world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), 0)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """[B, ...] per process -> [world*B, ...] in rank order, no gradient; identity in one process.
    For what enters queues and memory banks: every process must store the same keys."""
    if world_size() == 1:
        return x
    out = [torch.zeros_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, 0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over processes, in place (DINO's centre, SwAV's Sinkhorn sums); identity in one process."""
    if world_size() > 1:
        dist.all_reduce(x)
        x /= world_size()
    return x


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over processes whose backward sums the incoming gradients too (the adjoint of a sum
    that every process computes). Every process then holds W x the one-big-batch gradient of a
    loss it computes identically, and DDP's average over processes makes it exact — the same
    convention as ``gather_with_grad``."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over processes (Barlow Twins' cross-correlation and batch statistics,
    summed so that a distributed batch behaves as one batch); identity in one process."""
    if world_size() == 1:
        return x
    return _AllReduceWithGrad.apply(x)
