"""torch.distributed helpers that are no-ops in a single process.

A run joins a process group when ``torchrun`` (or any launcher that sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT) started it: ``init_from_env``. gloo on the CPU, NCCL on CUDA.

Gradient convention, shared by ``gather_with_grad``, ``all_reduce_sum_with_grad`` and the
SyncBatchNorm in ``selfsup.nn.sync_bn``: every process computes a loss over its own rows (a mean
over them, or a quantity every process computes identically); the backward of a collective sums
the incoming gradients over processes; DDP then averages the parameter gradients. Together that
is exactly the gradient of one process's loss on the whole global batch (tests/distributed prove it).
"""

from __future__ import annotations

import os

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


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_dist() else 0


def env_world_size() -> int:
    """The world size a launcher asked for (torchrun sets WORLD_SIZE), before any group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str = "auto") -> bool:
    """Join the process group that torchrun describes in the environment; True when distributed.

    Idempotent, and a no-op for a plain ``python``/``selfsup`` process. On CUDA each process takes
    the GPU of its LOCAL_RANK and uses NCCL; otherwise gloo (CPU tensors)."""
    if is_dist():
        return True
    if env_world_size() <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} not set: launch with "
            f"`torchrun --nproc_per_node=N -m selfsup pretrain ...`"
        )
    cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def destroy() -> None:
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...]; [obj] in one process (RNG states for checkpoints)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every process (a shuffle permutation, a clustering)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def all_reduce_max(value: float) -> float:
    """The largest ``value`` over processes. The loop takes the max of the per-process training
    seconds so that every process sees the same progress, learning rate and end of a budget."""
    if not is_dist():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_true(flag: bool) -> bool:
    """True when ``flag`` holds on every process (a finite loss: one NaN stops all of them)."""
    if not is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


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


@torch.no_grad()
def gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """Like ``gather`` for row counts that differ between processes (the shards of an evaluation set)."""
    if world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    sizes = [int(s.item()) for s in counts]
    pad = x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))
    parts = [x.new_zeros((max(sizes), *x.shape[1:])) for _ in sizes]
    dist.all_gather(parts, torch.cat([x, pad]).contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


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
