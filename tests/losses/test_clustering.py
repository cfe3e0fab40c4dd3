"""SwAV's Sinkhorn-Knopp codes and swapped-prediction loss against explicit computations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F

from selfsup.losses.clustering import sinkhorn, swapped_prediction


def cosines(n, k, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.T  # [N, K] in [-1, 1], like z . C


def official_sinkhorn(out: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """The official SwAV ``distributed_sinkhorn`` for one process, transcribed literally."""
    Q = torch.exp(out / eps).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iters):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def test_codes_marginals():
    """Each sample's code sums to 1 (the paper's columns sum to 1/B before the final x B); with
    enough iterations each prototype receives B/K samples (rows 1/K: the equal partition)."""
    s = cosines(64, 10)
    q = sinkhorn(s, epsilon=0.05, iterations=200)
    b, k = s.shape
    torch.testing.assert_close(q.sum(1), torch.ones(b))  # rows of [B, K] = the paper's columns
    torch.testing.assert_close((q / b).sum(0), torch.full((k,), 1 / k), rtol=1e-4, atol=1e-6)
    assert (q >= 0).all()
    # three iterations (the paper's): sample marginals exact, prototype marginals approach 1/K with
    # every iteration and are already more balanced than a plain softmax of the same scores
    torch.testing.assert_close(sinkhorn(s, 0.05, 3).sum(1), torch.ones(b))
    gap = lambda q: ((q / b).sum(0) - 1 / k).abs().max().item()  # noqa: E731
    gaps = [gap(sinkhorn(s, 0.05, it)) for it in (1, 2, 3, 10)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.1 * gaps[0]
    assert gaps[2] < 0.7 * gap(torch.softmax(s / 0.05, 1))


def test_matches_the_official_code_and_entropic_transport():
    s = cosines(32, 12, seed=1)
    torch.testing.assert_close(sinkhorn(s, 0.05, 3), official_sinkhorn(s.clone(), 0.05, 3), rtol=1e-5, atol=1e-7)
    # at convergence Q is the entropic optimal transport plan with uniform marginals: an independent
    # log-domain Sinkhorn (dual potentials f, g) gives the same plan
    eps, b, k = 0.1, *s.shape
    f, g = torch.zeros(b, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    m = s.double() / eps
    for _ in range(2000):
        f = -math.log(b) - torch.logsumexp(m + g[None], dim=1)
        g = -math.log(k) - torch.logsumexp(m + f[:, None], dim=0)
    plan = torch.exp(m + f[:, None] + g[None]) * b  # rows sum to 1
    torch.testing.assert_close(sinkhorn(s, eps, 2000).double(), plan, rtol=1e-4, atol=1e-6)


def test_no_overflow_with_a_small_epsilon_and_no_gradient():
    s = cosines(16, 8, seed=2)
    assert s.max() / 0.007 > 88  # exp overflows float32 here: the official code returns NaN
    assert not torch.isfinite(official_sinkhorn(s.clone(), 0.007, 3)).all()
    q = sinkhorn(s.clone().requires_grad_(), epsilon=0.007, iterations=3)
    assert torch.isfinite(q).all() and not q.requires_grad
    torch.testing.assert_close(q.sum(1), torch.ones(16))


def test_shared_rows_are_plain_rows_in_one_process():
    s = cosines(24, 6, seed=3)
    torch.testing.assert_close(sinkhorn(s, 0.05, 3, num_shared=10), sinkhorn(s, 0.05, 3))


def test_swapped_prediction_equals_the_official_loop():
    v, g, b, k, t = 5, 2, 6, 7, 0.1
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(v, b, k, generator=gen)
    codes = torch.softmax(torch.randn(g, b, k, generator=gen), dim=-1)
    loss = 0
    for i in range(g):  # swav/main_swav.py: for crop_id in crops_for_assign ...
        subloss = 0
        for w in [w for w in range(v) if w != i]:
            x = scores[w] / t
            subloss -= torch.mean(torch.sum(codes[i] * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (v - 1)
    loss /= g
    torch.testing.assert_close(swapped_prediction(scores, codes, t), loss)


def test_swapped_prediction_gradient_reaches_scores_not_codes():
    scores = torch.randn(3, 4, 5, requires_grad=True)
    codes = torch.softmax(torch.randn(2, 4, 5), -1).requires_grad_()
    swapped_prediction(scores, codes, 0.1).backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    assert codes.grad is None


WORLD = 2


def _worker(rank: int, init_file: str, out_dir: str, queue: torch.Tensor, batches: torch.Tensor) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        q = sinkhorn(torch.cat([queue, batches[rank]]), 0.05, 3, num_shared=queue.shape[0])
        torch.save(q, Path(out_dir) / f"{rank}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow  # ~40 s on the shared 2-core machine (two spawned interpreters); run with -m slow
def test_distributed_codes_equal_one_big_batch(tmp_path):
    """Two processes, each with the same (gathered) queue and its own batch, give the codes that
    one process computes for [queue; batch_0; batch_1]: the sums are all-reduced, the queue counted once."""
    s = cosines(8 + 2 * 6, 5, seed=4)
    queue, batches = s[:8], s[8:].view(2, 6, 5)
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), queue, batches), nprocs=WORLD, join=True)
    full = sinkhorn(s, 0.05, 3)
    for r in range(WORLD):
        q = torch.load(tmp_path / f"{r}.pt")
        torch.testing.assert_close(q[:8], full[:8], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(q[8:], full[8 + 6 * r : 8 + 6 * (r + 1)], rtol=1e-5, atol=1e-7)


def test_swapped_prediction_is_float32_under_autocast():
    gen = torch.Generator().manual_seed(0)
    scores, codes = torch.randn(3, 5, 7, generator=gen), torch.softmax(torch.randn(2, 5, 7, generator=gen), -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = swapped_prediction(scores, codes, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, swapped_prediction(scores, codes, 0.1))
