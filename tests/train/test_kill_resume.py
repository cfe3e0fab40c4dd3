"""kill -9 at a random step, then ``selfsup pretrain --resume``: the same final weights as a run
that was never interrupted. A real subprocess and a real SIGKILL (no Python cleanup runs), for a
method with an EMA teacher (BYOL) and one with a queue (MoCo v2, with shuffled BN).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).parents[2]
STEPS = 24  # 384 images / batch 32 = 12 steps an epoch, 2 epochs

ARGS = {
    "byol": ["method.proj_hidden=64", "method.proj_dim=32", "method.pred_hidden=64"],
    "mocov2": ["method.queue_size=128", "method.dim=32", "method.mlp_hidden=64", "method.bn_groups=2"],
}


def pretrain(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "selfsup", "pretrain", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def command(method: str, out: Path) -> list[str]:
    return [
        "--method",
        method,
        "--data",
        "digits",
        "--no-recipe",
        "--backbone",
        "convnet",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "backbone.width=0.25",
        "data.limit=384",
        "train.device=cpu",
        "train.threads=1",
        "train.monitor_train=0",
        "train.log_every=1",
        "train.checkpoint_steps=1",
        *ARGS[method],
    ]


def logged_step(run: Path) -> int:
    try:
        rows = (run / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(r)["step"] for r in rows if r.strip().endswith("}")), default=0)
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("method", list(ARGS))
def test_kill_9_at_a_random_step_then_resume_gives_the_uninterrupted_weights(tmp_path, method):
    whole = pretrain(*command(method, tmp_path / "whole"))
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out[-2000:]

    # a seeded draw (per method), so a failure names a step that can be tried again; the kill itself
    # lands wherever the process is at that moment (mid-step, mid-checkpoint), which is the point
    kill_at = random.Random(f"kill-{method}").randint(3, STEPS - 4)
    run = tmp_path / "killed"
    p = pretrain(*command(method, run))
    deadline = time.time() + 300
    while logged_step(run) < kill_at and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, f"the run ended before the kill at step {kill_at}:\n{out[-2000:]}"
    killed_at = logged_step(run)
    assert killed_at < STEPS

    r = pretrain("--resume", str(run))
    out, _ = r.communicate(timeout=300)
    assert r.returncode == 0, out[-2000:]
    assert "resumed" in out
    a = load_file(tmp_path / "whole" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(
            b[k], a[k], rtol=0, atol=1e-6, msg=lambda m: f"{k} after a kill at step {killed_at}: {m}"
        )
    steps = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert steps == list(range(1, STEPS + 1))  # the log reads as one run: no step twice, none missing
