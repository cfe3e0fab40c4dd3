"""NT-Xent across processes (gloo, 2 CPU processes) equals NT-Xent on the whole batch in one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup import dist as sdist
from selfsup.losses import nt_xent

WORLD = 2


def _worker(rank: int, init_file: str, out_dir: str, z1: torch.Tensor, z2: torch.Tensor, tau: float) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        n = z1.shape[0] // WORLD
        a = z1[rank * n : (rank + 1) * n].clone().requires_grad_()
        b = z2[rank * n : (rank + 1) * n].clone().requires_grad_()
        loss, candidates = nt_xent(a, b, tau)
        loss.backward()
        torch.save(
            {
                "loss": loss.detach(),
                "candidates": candidates,
                "ga": a.grad,
                "gb": b.grad,
                "rank": sdist.rank(),
                "world": sdist.world_size(),
            },
            Path(out_dir) / f"{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_distributed_nt_xent_equals_one_big_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, d, tau = 6, 5, 0.3
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), z1, z2, tau), nprocs=WORLD, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]
    assert [p["rank"] for p in parts] == [0, 1] and all(p["world"] == WORLD for p in parts)

    f1, f2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    full, candidates = nt_xent(f1, f2, tau)
    full.backward()
    assert all(p["candidates"] == candidates == 2 * n - 1 for p in parts)
    # every anchor sees the same 2N - 1 candidates, so the mean of the per-process losses is the loss
    assert torch.stack([p["loss"] for p in parts]).mean().item() == pytest.approx(full.item(), abs=1e-5)
    # DDP averages gradients over processes: averaged, they are the whole batch's gradients
    h = n // WORLD
    for r, p in enumerate(parts):
        torch.testing.assert_close(p["ga"] / WORLD, f1.grad[r * h : (r + 1) * h], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p["gb"] / WORLD, f2.grad[r * h : (r + 1) * h], rtol=1e-4, atol=1e-6)


def test_single_process_helpers_are_identities():
    assert sdist.rank() == 0 and sdist.world_size() == 1 and sdist.is_main() and not sdist.is_dist()
    x = torch.randn(3, 2)
    assert sdist.gather_with_grad(x) is x
