"""Barlow Twins and VICReg across processes (gloo, 2 CPU processes) equal the one-big-batch losses,
and their gradients, averaged over processes as DDP does, are the one-big-batch gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.losses.redundancy import barlow_twins_loss, vicreg_loss

WORLD = 2
LOSSES = {"barlow": lambda a, b: barlow_twins_loss(a, b, lambd=0.05), "vicreg": lambda a, b: vicreg_loss(a, b)}


def _worker(rank: int, init_file: str, out_dir: str, z1: torch.Tensor, z2: torch.Tensor) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        n = z1.shape[0] // WORLD
        out = {}
        for name, fn in LOSSES.items():
            a = z1[rank * n : (rank + 1) * n].clone().requires_grad_()
            b = z2[rank * n : (rank + 1) * n].clone().requires_grad_()
            loss, terms = fn(a, b)
            loss.backward()
            out[name] = {"loss": loss.detach(), "terms": terms, "ga": a.grad, "gb": b.grad}
        torch.save(out, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_redundancy_losses_equal_one_big_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, d = 8, 5
    z1 = torch.randn(n, d, generator=g) * 2 + 1
    z2 = 0.5 * z1 + torch.randn(n, d, generator=g)
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), z1, z2), nprocs=WORLD, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]
    h = n // WORLD
    for name, fn in LOSSES.items():
        f1, f2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        full, terms = fn(f1, f2)
        full.backward()
        for r, p in enumerate(parts):
            # every process computes the whole batch's loss (C and the statistics are summed over processes)
            assert p[name]["loss"].item() == pytest.approx(full.item(), rel=1e-5), name
            for k, v in terms.items():
                assert p[name]["terms"][k].item() == pytest.approx(v.item(), rel=1e-5, abs=1e-7), (name, k)
            # DDP averages gradients over processes: averaged, they are the whole batch's gradients
            torch.testing.assert_close(p[name]["ga"] / WORLD, f1.grad[r * h : (r + 1) * h], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(p[name]["gb"] / WORLD, f2.grad[r * h : (r + 1) * h], rtol=1e-4, atol=1e-6)
