"""An interrupted and resumed run ends with exactly the weights of an uninterrupted one.

Interruption is what a user does: Ctrl-C (a KeyboardInterrupt out of fit) after checkpoints were
written, then ``resume(run_dir)`` from the saved config. Checkpointing every step mid-epoch uses
``train.checkpoint_minutes`` (a tiny value: time-based checkpoints are the loop's mid-epoch ones).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from resuming import interrupt_after
from safetensors.torch import load_file

from selfsup.train import fit, resume
from selfsup.checkpoint import load_state

# 256 digits images, batch 64: 4 steps per epoch, 2 epochs = 8 steps
STEPS_PER_EPOCH = 4


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=lambda m: f"{k}: {m}")


def interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, method, stop, every_step, *overrides):
    """Run B: Ctrl-C during step ``stop + 1``, then ``resume``. Checkpoints come every step when
    ``every_step`` (time-based, tiny checkpoint_minutes), else only at epoch ends."""
    minutes = "train.checkpoint_minutes=1.0e-6" if every_step else "train.checkpoint_minutes=1000"
    with monkeypatch.context() as m:
        interrupt_after(m, stop)
        with pytest.raises(KeyboardInterrupt):
            fit(tiny_config(method, *overrides, minutes), tmp_path / "b", progress_bar=False)
    saved = load_state(tmp_path / "b" / "checkpoints" / "last")["state"]["loop"]
    resumed_from = stop if every_step else stop // STEPS_PER_EPOCH * STEPS_PER_EPOCH
    assert saved["step"] == resumed_from
    summary = resume(tmp_path / "b", progress_bar=False)
    assert summary["steps"] == 2 * STEPS_PER_EPOCH
    return tmp_path / "b"


OVERRIDES = ("train.epochs=2", "optim.warmup=0.25")


@pytest.mark.parametrize(
    "method,stop,every_step",
    [
        ("simclr", 2, True),  # mid-epoch, checkpoint of that very step
        ("simclr", 4, True),  # exactly at the epoch boundary
        ("simclr", 6, False),  # mid-epoch 2, resumed from the end of epoch 1 (two steps redone)
        ("byol", 5, True),  # EMA target and momentum schedule across an epoch boundary
        ("byol", 7, False),
    ],
)
def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_config, tmp_path, monkeypatch, method, stop, every_step):
    fit(tiny_config(method, *OVERRIDES), tmp_path / "a", progress_bar=False)
    assert load_state(tmp_path / "a" / "checkpoints" / "last")["state"]["loop"]["step"] == 2 * STEPS_PER_EPOCH
    b = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, method, stop, every_step, *OVERRIDES)
    assert_same_weights(tmp_path / "a", b)
    if method == "byol":  # the EMA target is part of the state that must survive
        assert any(k.startswith("target_encoder.") for k in weights(b))


def test_a_resnet_with_tap_wise_weight_gradients_resumes_exactly(tiny_config, tmp_path, monkeypatch):
    """ResNet-10 on 8-px digits: its last stages' 2x2 and 1x1 maps take the tap-wise weight gradient
    (selfsup.backbones.tap_conv), which must be as repeatable as oneDNN's."""
    over = (*OVERRIDES, "backbone.name=resnet10", "backbone.width=0.125")
    fit(tiny_config("simclr", *over), tmp_path / "a", progress_bar=False)
    b = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, "simclr", 3, True, *over)
    assert_same_weights(tmp_path / "a", b)


def test_resumed_metrics_read_like_one_run(tiny_config, tmp_path, monkeypatch):
    """Steps logged after the last checkpoint and then redone after the resume must not appear twice
    in metrics.jsonl (curves.png would draw them twice), so the log continues the step count."""
    b = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, "simclr", 6, False, *OVERRIDES)
    rows = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))


def test_resume_after_max_steps_continues_the_same_schedule(tiny_config, tmp_path):
    """train.max_steps means 'stop after N optimiser steps': a run stopped that way and resumed
    without the limit must be the same run as one never stopped (same lr and EMA schedule)."""
    overrides = ("train.epochs=2", "optim.warmup=0.25")
    fit(tiny_config("byol", *overrides), tmp_path / "a", progress_bar=False)
    fit(tiny_config("byol", *overrides, "train.max_steps=3"), tmp_path / "b", progress_bar=False)
    cfg_path = tmp_path / "b" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["train"]["max_steps"] == 3
    cfg["train"]["max_steps"] = None
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    resume(tmp_path / "b", progress_bar=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_resume_of_a_finished_run_changes_nothing(tiny_config, tmp_path):
    fit(tiny_config("simclr"), tmp_path / "a", progress_bar=False)
    before = weights(tmp_path / "a")
    summary = resume(tmp_path / "a", progress_bar=False)
    assert summary["steps"] == STEPS_PER_EPOCH
    after = weights(tmp_path / "a")
    assert all(torch.equal(before[k], after[k]) for k in before)
