"""train.loggers: TensorBoard gets the config, the pictures and the hparams; W&B (offline) and MLflow
(a local file store) get the same metrics; nothing is sent anywhere."""

from __future__ import annotations

import json

import pytest

from selfsup.config import ConfigError
from selfsup.train import fit


def _events(tb_dir):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        yield from EventFileLoader(str(f)).Load()


def test_tensorboard_has_config_pictures_and_hparams(tiny_config, tmp_path):
    cfg = tiny_config("rotation", "train.max_steps=3")
    fit(cfg, tmp_path / "r", progress_bar=False)
    tags = {v.tag for e in _events(tmp_path / "r" / "tb") if e.HasField("summary") for v in e.summary.value}
    assert "config/text_summary" in tags  # the resolved config as text
    assert any(t.startswith("pictures/") for t in tags)  # rotation draws its four rotated inputs
    assert "_hparams_/experiment" in tags and "_hparams_/session_start_info" in tags  # HParams dashboard
    assert "loss" in tags and "final/steps" in tags


def test_wandb_offline_and_mlflow_file_store_get_the_same_metrics(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what selfsup sets for its local store
    run = tmp_path / "r"
    fit(
        tiny_config("rotation", "train.max_steps=3", "train.loggers=[tensorboard,wandb,mlflow]"),
        run,
        progress_bar=False,
    )
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    # W&B offline: one run folder whose log (protobuf records, values as JSON text) holds every logged
    # loss exactly as metrics.jsonl has it, the config, and the method's picture as a media file
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    log = next(offline[0].glob("run-*.wandb")).read_bytes()
    assert all(json.dumps(v).encode() in log for v in losses) and b"rotation" in log
    assert list((offline[0] / "files" / "media" / "images").rglob("*.png"))
    # MLflow: the local store under the run, read back with MLflow's own client
    client = mlflow.tracking.MlflowClient((run / "mlruns").resolve().as_uri())
    run_id = (run / "mlflow_run_id.txt").read_text()
    history = client.get_metric_history(run_id, "loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(losses)
    assert client.get_run(run_id).data.params["method.name"] == "rotation"
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "pictures")
    }
    assert "config.yaml" in artifacts and any(a.startswith("pictures/") for a in artifacts)


def test_unknown_or_missing_loggers_fail_before_training(tiny_config, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown logger 'comet'"):
        tiny_config("simclr", "train.loggers=[comet]")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(ConfigError, match="pip install wandb"):
        fit(tiny_config("simclr", "train.loggers=[wandb]"), tmp_path / "r", progress_bar=False)
    assert not (tmp_path / "r").exists()
