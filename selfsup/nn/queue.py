"""Stores of past embeddings used as negatives or neighbours: a FIFO queue (MoCo, SwAV), the
nearest-neighbour support set built on it (NNCLR; BYOL's and SimSiam's ``nn_support`` option) and a
per-image memory bank (InstDisc, CMC).

Both keep their contents in buffers, so checkpoints carry them and a resumed run continues
with exactly the same negatives. Neither ever holds a tensor with gradient history: what
goes in is detached, and what comes out is a plain tensor that a loss receives explicitly.
Keys from every process are gathered before they are stored, so all processes hold the same
queue/bank, as in one big batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.errors import SelfsupError
from selfsup.losses.moco import nearest_neighbour


class Queue(nn.Module):
    """A FIFO ring buffer of ``size`` vectors of dimension ``dim`` (MoCo's dictionary).

    ``push(keys)`` overwrites the oldest entries; ``items()`` returns the filled part, oldest
    first. Starts empty (``filled`` counts valid rows) rather than with random vectors, so early
    steps never contrast against noise that looks like data.
    """

    data: torch.Tensor  # [size, dim]
    ptr: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("data", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next row to write
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Append [B, dim] keys (gathered from all processes, in rank order)."""
        keys = dist.gather(keys.detach().float())
        b = keys.shape[0]
        if b >= self.size:  # more keys than room: keep the newest
            self.data.copy_(keys[-self.size :])
            self.ptr.zero_()
            self.filled.fill_(self.size)
            return
        p = int(self.ptr)
        idx = (torch.arange(b, device=self.data.device) + p) % self.size
        self.data[idx] = keys.to(self.data.dtype)
        self.ptr.fill_((p + b) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + b))

    def items(self) -> torch.Tensor:
        """[filled, dim], oldest first (a copy; the caller may not modify the queue through it)."""
        n, p = int(self.filled), int(self.ptr)
        if n < self.size:
            return self.data[:n].clone()
        return torch.cat([self.data[p:], self.data[:p]])

    def __len__(self) -> int:
        return int(self.filled)


class SupportSet(Queue):
    """NNCLR's support set Q (Dwibedi et al. 2021): a FIFO queue of past L2-normalised embeddings in
    which each new embedding is replaced by its nearest neighbour (cosine). NNCLR uses it for its
    positives; BYOL and SimSiam for their targets with ``nn_support > 0`` (NN-BYOL, NNSiam).

    State changes only in the method's ``on_step_end``: ``neighbours`` looks Q up as it was before the
    step, ``stage`` holds this step's embeddings (detached, normalised), and ``flush`` (from the hook)
    pushes them. The buffers are Queue's, so checkpoints hold the same keys.
    """

    def __init__(self, size: int, dim: int):
        super().__init__(size, dim)
        self._pending: list[torch.Tensor] = []

    @torch.no_grad()
    def neighbours(self, *zs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each [N, D] z: (NN(z, Q) [N, D], unit length, no gradient; its cosine to z [N]).

        While Q is empty (the first step) each z is its own neighbour: in a set that held this batch,
        z's nearest neighbour would be z itself."""
        support = self.items() if len(self) else None  # [M, D], one copy for all the lookups
        out = []
        for z in zs:
            if support is not None:
                out.append(nearest_neighbour(z, support))
            else:
                z = F.normalize(z.detach().float(), dim=1)
                out.append((z, torch.ones(z.shape[0], device=z.device)))
        return out

    def stage(self, z: torch.Tensor) -> None:
        """Hold [N, D] embeddings of this step for the next ``flush`` (Q itself is left unchanged)."""
        self._pending.append(F.normalize(z.detach().float(), dim=1))

    @torch.no_grad()
    def flush(self) -> None:
        """Q <- Q + the staged embeddings, the oldest entries dropping out; call from ``on_step_end``."""
        for z in self._pending:
            self.push(z)
        self._pending.clear()


class MemoryBank(nn.Module):
    """One L2-normalised vector per training image (Wu et al. 2018, InstDisc).

    Initialised with random unit vectors; ``update(index, v, momentum)`` sets
    bank[i] <- normalise(m * bank[i] + (1 - m) * v_i) for the images of the batch.
    ``sample(k)`` draws k random entries as negatives (with replacement, as the paper's NCE).
    """

    data: torch.Tensor  # [num_samples, dim]

    def __init__(self, num_samples: int, dim: int, seed: int = 0):
        super().__init__()
        if not num_samples or num_samples < 1:
            raise SelfsupError(
                "a memory bank needs the training-set size (num_samples); build the method with "
                "selfsup.create_method(..., num_samples=len(dataset)) or through selfsup pretrain"
            )
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("data", F.normalize(torch.randn(num_samples, dim, generator=g), dim=1))

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def get(self, index: torch.Tensor) -> torch.Tensor:
        """[B] indices -> [B, dim] entries (a copy, no gradient)."""
        return self.data[index].clone()

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k random indices (drawn on the CPU generator for reproducibility) -> [k] on the bank's device."""
        return torch.randint(len(self), (k,), generator=generator).to(self.data.device)

    @torch.no_grad()
    def update(self, index: torch.Tensor, v: torch.Tensor, momentum: float) -> None:
        """bank[i] <- normalise(m * bank[i] + (1 - m) * v_i); indices and vectors from all processes."""
        index, v = dist.gather(index), dist.gather(v.detach().float())
        mixed = momentum * self.data[index] + (1 - momentum) * v.to(self.data.dtype)
        self.data[index] = F.normalize(mixed, dim=1)
