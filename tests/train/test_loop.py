"""The training loop's outputs and its failure modes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from selfsup.config import load_run_config, to_dict
from selfsup.methods.simclr import SimCLR
from selfsup.train import TrainingError, fit
from selfsup.train.callbacks import warn_collapse
from selfsup.train.optim import lr_factor


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_config):
    """One tiny SimCLR run with the kNN monitor on: 256 images, batch 64, 2 epochs = 8 steps."""
    run = tmp_path_factory.mktemp("loop") / "run"
    cfg = tiny_config(
        "simclr", "train.epochs=2", "train.monitor_train=200", "train.monitor_val=100", "optim.warmup=0.25"
    )
    summary = fit(cfg, run, progress_bar=False)
    return cfg, run, summary


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_metrics_rows(finished_run):
    cfg, run, summary = finished_run
    train_rows = [r for r in rows(run) if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9))  # log_every=1
    for r in train_rows:
        for key in ("loss", "lr", "images_per_s", "epoch", "progress", "infonce_bound"):
            assert key in r, key
        assert r["images_per_s"] > 0 and r["loss"] > 0
    # the logged lr is the schedule evaluated at the step's progress: warm-up, then cosine
    for r in train_rows:
        assert r["lr"] == pytest.approx(cfg.optim.lr * lr_factor((r["step"] - 1) / 8, cfg.optim))
    assert train_rows[0]["lr"] == 0.0 and train_rows[2]["lr"] == pytest.approx(cfg.optim.lr)
    monitor_rows = [r for r in rows(run) if "monitor/knn20_top1" in r]
    assert [r["step"] for r in monitor_rows] == [4, 8]  # after epoch 1, and once at the end
    assert 0.0 <= monitor_rows[-1]["monitor/knn20_top1"] <= 1.0
    assert summary["steps"] == 8 and summary["epochs"] == 2
    assert summary["images_seen"] == 8 * 64
    assert json.loads((run / "summary.json").read_text())["steps"] == 8


def test_the_run_records_what_trained_it(finished_run, tiny_config, tmp_path):
    import subprocess

    from selfsup.train import resume

    _, run, _ = finished_run
    rec = json.loads((run / "provenance.json").read_text())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2]).stdout.strip()  # fmt: skip
    assert rec["commit"].removesuffix("-dirty") == head or (rec["commit"] == "unknown" and not head)
    assert rec["torch"] == torch.__version__ and rec["cpus"] >= 1 and rec["machine"]
    assert {"command", "python", "selfsup", "torch_threads"} <= set(rec)
    # a resume keeps the first record and adds its own
    cfg = tiny_config("simclr", "train.epochs=1", "train.monitor_train=0")
    fit(cfg, tmp_path / "r", progress_bar=False)
    resume(tmp_path / "r", progress_bar=False, changes=["train.epochs=2"])
    again = json.loads((tmp_path / "r" / "provenance.json").read_text())
    assert len(again["resumed"]) == 1 and again["resumed"][0]["commit"] == again["commit"]


def test_config_yaml_round_trips(finished_run):
    cfg, run, _ = finished_run
    loaded = load_run_config(run)
    assert to_dict(loaded) == to_dict(cfg)
    assert loaded.data.mean is not None and loaded.data.std is not None  # statistics were stored


def test_curves_png_and_tensorboard_events(finished_run):
    _, run, _ = finished_run
    with Image.open(run / "curves.png") as im:
        im.load()
        assert im.size[0] > 100 and im.size[1] > 100
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert "loss" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 9))


def test_checkpoint_files(finished_run):
    _, run, _ = finished_run
    last = run / "checkpoints" / "last"
    assert {p.name for p in last.iterdir()} >= {"model.safetensors", "state.pt", "meta.json"}
    meta = json.loads((last / "meta.json").read_text())
    assert meta["method"] == "simclr" and meta["step"] == 8
    assert not list((run / "checkpoints").glob(".*"))  # no temporary directories left behind


def test_nan_loss_names_the_step_and_suggests_a_lower_lr(tiny_config, tmp_path, monkeypatch):
    real = SimCLR.training_step
    calls = {"n": 0}

    def step(self, batch):
        out = real(self, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", step)
    with pytest.raises(TrainingError) as e:
        fit(tiny_config("simclr"), tmp_path / "run", progress_bar=False)
    msg = str(e.value)
    # --resume cannot change the learning rate: the message says to start again (no checkpoint exists yet)
    assert "step 2" in msg and "optim.lr" in msg and "No checkpoint was written" in msg and "another --out" in msg


def test_a_nan_between_checks_is_reported_at_its_step_and_never_checkpointed(tiny_config, tmp_path, monkeypatch):
    """The loss is read on the host only before a metrics row, a checkpoint and at an epoch's end (no sync
    each step): a NaN at step 2 of a run that logs every 100 steps still names step 2, and no checkpoint
    of the weights it spoiled is written (train.checkpoint_steps=3 would have written one at step 3)."""
    real = SimCLR.training_step
    calls = {"n": 0}

    def step(self, batch):
        out = real(self, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", step)
    with pytest.raises(TrainingError, match="non-finite loss at step 2") as e:
        fit(
            tiny_config("simclr", "train.log_every=100", "train.checkpoint_steps=3"),
            tmp_path / "run",
            progress_bar=False,
        )
    assert calls["n"] == 3 and "No checkpoint was written" in str(e.value)  # stopped at the checkpoint
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()


def test_exploding_learning_rate_is_a_training_error(tiny_config, tmp_path):
    cfg = tiny_config("simclr", "optim.name=sgd", "optim.lr=1.0e+30", "optim.warmup=0.0", "train.epochs=3")
    with pytest.raises(TrainingError, match="lower optim.lr"):
        fit(cfg, tmp_path / "run", progress_bar=False)


def test_batch_size_larger_than_dataset_is_explained(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="--batch-size"):
        fit(tiny_config("simclr", "train.batch_size=512"), tmp_path / "run", progress_bar=False)


def test_gradient_accumulation_counts_optimiser_steps(tiny_config, tmp_path):
    summary = fit(
        tiny_config("simclr", "train.batch_size=32", "train.accumulate=2"), tmp_path / "run", progress_bar=False
    )
    assert summary["steps"] == 4 and summary["images_seen"] == 256


def test_budget_run_stops_on_time(tiny_config, tmp_path):
    """The budget, not the epochs, ends the run: timed before the first step, it becomes a number of
    steps the run then trains exactly (no bound on seconds is asserted: the machine may be busy)."""
    summary = fit(tiny_config("simclr", "train.budget=1s", "train.epochs=1000"), tmp_path / "run", progress_bar=False)
    assert 0 < summary["planned_steps"] < 1000 * 4  # far short of 1000 epochs
    assert summary["steps"] <= summary["planned_steps"]  # equal unless the 1.5 x budget guard stopped it


def test_a_budget_plans_a_number_of_steps_that_repeats_exactly(tiny_config, tmp_path):
    """--budget times a throwaway copy before the first step and fixes the schedule's length; every
    schedule follows the step, so train.steps=<planned> (any machine, any load) trains the same weights."""
    from safetensors.torch import load_file

    a = fit(
        tiny_config("simclr", "train.budget=3s", "train.epochs=1000", "train.monitor_every=0", "train.replan=false"),
        tmp_path / "a",
        progress_bar=False,
    )
    planned = a["planned_steps"]
    assert planned is not None and a["steps"] <= planned
    b = fit(
        tiny_config(
            "simclr",
            f"train.steps={planned}",
            f"train.max_steps={a['steps']}",
            "train.epochs=1000",
            "train.monitor_every=0",
        ),
        tmp_path / "b",
        progress_bar=False,
    )
    assert b["planned_steps"] == planned and b["steps"] == a["steps"]
    wa = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    lr_a = [r["lr"] for r in map(json.loads, (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    lr_b = [r["lr"] for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert lr_a == lr_b  # the schedule is a function of the step alone


def test_a_budget_is_replanned_when_the_machine_slows_down(tiny_config, tmp_path, monkeypatch):
    """The loop's clock is a fake one that only the steps advance: the probe's steps cost 4 ms, every step
    after them 34 ms (a busy neighbour). Planned once, the run would last ~8 x its budget (the 1.5 x guard
    would cut its schedule short); re-planned from the loop's own rate it ends its schedule (progress 1)
    within a step of the budget, and the schedules' clock never goes back or leaps at a re-plan."""
    from types import SimpleNamespace

    from selfsup.methods.simclr import SimCLR
    from selfsup.train import loop

    clock, calls, forward = [0.0], [0], SimCLR.forward

    def slowed(self, batch):
        calls[0] += 1
        clock[0] += 0.004 if calls[0] <= 10 else 0.034  # the plan's 2 + 8 probe steps are fast
        return forward(self, batch)

    monkeypatch.setattr(SimCLR, "forward", slowed)
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    cfg = tiny_config(
        "simclr",
        "train.budget=3s",
        "train.epochs=100000",
        "train.monitor_every=0",
        "train.log_every=1",
        "train.batch_size=32",
    )
    summary = fit(cfg, tmp_path / "run", progress_bar=False)
    plan = summary["budget_plan"]
    planned = [p["planned_steps"] for p in plan]
    assert planned[0] >= 700 and len(plan) >= 2 and planned[-1] < 100  # the probe's plan, then re-planned
    assert summary["steps"] == summary["planned_steps"]  # the schedule ran to its end, not to the guard
    # seconds of the fake clock, exact (not a timing): within one slowed step of the budget
    assert 3.0 - 0.034 <= summary["train_seconds"] <= 3.0 + 0.034
    rows = [
        r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "progress" in r
    ]
    progress = [r["progress"] for r in rows]
    assert progress[-1] == 1.0 and all(b > a for a, b in zip(progress, progress[1:]))
    # a re-plan changes the clock's pace to (1 - p) / steps left <= 1 / steps left; recomputing step / N
    # with the new N instead would leap (here from ~8/750 to ~8/90 of the schedule)
    pace = max(1 / (p["planned_steps"] - p["step"]) for p in plan)
    assert max(b - a for a, b in zip(progress, progress[1:])) <= pace * (1 + 1e-9)


def test_rgb_array_data_with_bf16_and_channels_last(tiny_config, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, (128, 8, 8, 3), dtype=np.uint8),
        y=rng.integers(0, 3, 128),
        x_test=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
        y_test=rng.integers(0, 3, 40),
    )
    for method in ("simclr", "byol"):
        cfg = tiny_config(
            method,
            "train.precision=bf16",
            "train.channels_last=true",
            "train.monitor_train=64",
            "train.monitor_val=40",
            "train.batch_size=32",
            data={"name": "array", "dir": str(path), "limit": None},
        )
        summary = fit(cfg, tmp_path / method, progress_bar=False)
        assert summary["steps"] == 4
        assert len(cfg.data.mean) == 3  # per-channel statistics of the RGB data
        train_rows = [r for r in rows(tmp_path / method) if "loss" in r]
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train_rows)
        assert 0.0 <= summary["monitor/knn20_top1"] <= 1.0


def warned(summary: dict) -> str:
    """The warnings warn_collapse gives for ``summary``, as one string ('' when silent)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_collapse(summary)
    assert all(issubclass(w.category, UserWarning) for w in caught)
    return " ".join(str(w.message) for w in caught)


def test_collapse_warnings_from_the_diagnostics():
    assert "embeddings look collapsed" in warned(  # complete collapse: one point
        {"diag/embedding_std": 0.001, "diag/embedding_dim": 128, "diag/embedding_rank": 1.0}
    )
    assert "dimensional collapse" in warned(  # spread, but along ~one direction
        {"diag/embedding_std": 0.08, "diag/embedding_dim": 128, "diag/embedding_rank": 1.5}
    )
    assert warned({"diag/embedding_std": 0.08, "diag/embedding_dim": 128, "diag/embedding_rank": 40.0}) == ""
    # close together, as the random initialisation left them (a short run): not a collapse
    assert (
        warned(
            {
                "diag/embedding_std": 0.003,
                "diag/initial_embedding_std": 0.004,
                "diag/embedding_dim": 128,
                "diag/embedding_rank": 20.0,
            }
        )
        == ""
    )
    assert "0.0040 at initialisation" in warned(  # training shrank them: warned
        {
            "diag/embedding_std": 0.001,
            "diag/initial_embedding_std": 0.004,
            "diag/embedding_dim": 128,
            "diag/embedding_rank": 20.0,
        }
    )
    # few directions from the start (a random ViT): not training's doing
    assert (
        warned(
            {
                "diag/embedding_std": 0.08,
                "diag/embedding_dim": 128,
                "diag/embedding_rank": 1.9,
                "diag/initial_embedding_rank": 2.2,
            }
        )
        == ""
    )
    assert "(30.00 at initialisation): dimensional collapse" in warned(
        {
            "diag/embedding_std": 0.08,
            "diag/embedding_dim": 128,
            "diag/embedding_rank": 1.2,
            "diag/initial_embedding_rank": 30.0,
        }
    )


def test_training_and_its_monitor_never_read_the_test_split(tiny_config, tmp_path, monkeypatch):
    """Choices are made on validation data carved from train (the monitor's slice); the test split is
    read only by the final evaluation, after training."""
    from selfsup.data.sources import DATASETS

    real, read = DATASETS.get("digits"), []

    def recording(split, root, image_size):
        read.append(split)
        return real(split, root, image_size)

    monkeypatch.setitem(DATASETS._items, "digits", recording)
    cfg = tiny_config("simclr", "train.epochs=2", "train.monitor_train=200", "train.monitor_val=100")
    summary = fit(cfg, tmp_path / "run", progress_bar=False)
    assert 0.0 <= summary["monitor/knn20_top1"] <= 1.0  # the monitor ran ...
    assert read and set(read) == {"train"}  # ... on a slice of train, as did everything else


def test_one_validation_permutation_the_monitor_inside_the_benchmarks():
    from selfsup.data.dataset import validation_split

    small, rest = validation_split(1000, 50)
    large, _ = validation_split(1000, 200)
    assert len(small) == 50 and sorted(torch.cat([small, rest]).tolist()) == list(range(1000))  # a partition
    assert torch.equal(large[:50], small)  # the monitor's slice is inside every larger validation split
    assert torch.equal(validation_split(1000, 50)[0], small)  # fixed: seeded, not the global RNG
