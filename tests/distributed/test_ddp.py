"""Distributed correctness, proven with 2 real processes (torchrun, gloo on the CPU).

One launch runs every case (parity_worker.py); the tests compare with one process holding the
whole batch (parity_cases.py builds both from the same seed and data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import parity_cases as pc  # noqa: E402

WORLD = 2


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        str(Path(__file__).parent / "parity_worker.py"),
        str(out),
    ]
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
        assert torch.allclose(got["grads"][k], g, rtol=1e-4, atol=1e-5 * scale), (
            f"{name}: gradient of {k} differs by {(got['grads'][k] - g).abs().max().item():.3g} (scale {scale:.3g})"
        )


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


def test_sharded_feature_extraction_returns_every_row_in_order(two_process_results):
    from selfsup.nn.features import extract_features

    want = extract_features(pc.build("simclr").encoder, pc.eval_images(), [0.5], [0.25], pc.SIZE, batch_size=8)
    got = torch.load(two_process_results / "features.pt", weights_only=True)
    assert got.shape == want.shape == (37, want.shape[1])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_torchrun_selfsup_pretrain_then_resume_equals_an_uninterrupted_run(tmp_path):
    """The README's command line under torchrun: rank 0 alone writes the run, the monitor's sharded
    kNN learns, and a run stopped at step 12 and resumed in a new process group ends with the
    weights of one run straight to step 20 (every process's random streams are restored)."""

    def pretrain(run: Path, steps: int) -> subprocess.CompletedProcess:
        return torchrun(
            "-m",
            "selfsup",
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "digits",
            "--no-recipe",
            "--backbone",
            "convnet",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--out",
            str(run),
            "backbone.width=0.25",
            "data.limit=640",
            "train.device=cpu",
            "train.threads=1",
            "train.monitor_val=300",
            "train.monitor_every=0",
            "train.log_every=1",
            "train.sync_bn=true",
            f"train.max_steps={steps}",
        )

    whole, run = tmp_path / "whole", tmp_path / "run"
    for p in (pretrain(whole, 20), pretrain(run, 12)):
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        assert p.stdout.count("run directory:") == 1  # printed by rank 0 only
    cfg_path = run / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("max_steps: 12", "max_steps: 20"))
    p = torchrun("-m", "selfsup", "pretrain", "--resume", str(run))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count("resumed") == 1

    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 21))  # one writer, read as one run
    knn = [r["monitor/knn20_top1"] for r in rows if "monitor/knn20_top1" in r]
    assert knn and knn[-1] > 0.5  # 10 classes: chance is 0.1
    a = load_file(whole / "checkpoints" / "last" / "model.safetensors")
    b = load_file(run / "checkpoints" / "last" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=lambda m: f"{k}: {m}")


@pytest.mark.slow
def test_every_method_trains_checkpoints_and_resumes_under_torchrun(tmp_path):
    """``fit`` of every registered method, 3 steps then resumed to 5, in one 2-process group (~2 min)."""
    p = torchrun(str(Path(__file__).parent / "methods_worker.py"), str(tmp_path), timeout=1800)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    from selfsup.registry import list_methods

    assert set(results) == set(list_methods())
    failed = {k: v for k, v in results.items() if v != "ok"}
    assert not failed, "\n\n".join(f"{k}: {v}" for k, v in failed.items())
