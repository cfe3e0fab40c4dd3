"""Distributed correctness, proven with 2 real processes (torchrun, gloo on the CPU).

One launch runs every case (parity_worker.py); the tests compare with one process holding the
whole batch (parity_cases.py builds both from the same seed and data).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import parity_cases as pc  # noqa: E402

WORLD = 2


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           str(Path(__file__).parent / "parity_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", list(pc.CASES))
def test_two_processes_with_b_rows_equal_one_process_with_2b(two_process_results, name):
    method = pc.build(name)
    loss, grads = pc.step(method, pc.global_batch(name, WORLD))
    got = torch.load(two_process_results / f"{name}.pt", weights_only=True)
    assert got["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert set(got["grads"]) == set(grads)
    assert len(grads) > 4  # the encoder and the head both got gradients
    for k, g in grads.items():
        scale = g.abs().max().item() + 1e-8
        assert torch.allclose(got["grads"][k], g, rtol=1e-4, atol=1e-5 * scale), \
            f"{name}: gradient of {k} differs by {(got['grads'][k] - g).abs().max().item():.3g} (scale {scale:.3g})"


def test_a_distributed_moco_queue_holds_both_processes_keys_in_rank_order(two_process_results):
    got = torch.load(two_process_results / "moco.pt", weights_only=True)
    ranks = got["ranks"]
    expected = torch.cat([ranks[0]["keys"], ranks[1]["keys"]])  # [2B, dim]
    assert expected.shape == (2 * pc.B, 16)
    assert not torch.allclose(ranks[0]["keys"], ranks[1]["keys"])  # the processes held different images
    for r in range(WORLD):
        assert torch.equal(ranks[r]["queue"], expected)


def test_the_cross_process_shuffled_forward_returns_each_process_its_own_rows(two_process_results):
    assert torch.load(two_process_results / "moco.pt", weights_only=True)["shuffle_ok"] == [True, True]

