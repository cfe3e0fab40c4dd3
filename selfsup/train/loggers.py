"""Where a run's numbers and pictures go: metrics.jsonl always (read back by
``selfsup.engine.read_metrics``), and the trackers people look at.

``train.loggers`` (default ``[tensorboard]``) adds any of:

- ``tensorboard``: every scalar, the resolved config as text, the method's pictures, and the run's
  hyperparameters with its final metrics in the HParams dashboard (TensorBoard's own summary writer);
- ``wandb``: Weights & Biases (``pip install wandb``); offline with ``WANDB_MODE=offline``, files under
  RUN_DIR/wandb; a resumed run continues the same W&B run (its id is kept in RUN_DIR/wandb_id.txt);
- ``mlflow``: MLflow (``pip install mlflow-skinny``), to ``MLFLOW_TRACKING_URI`` or, unset, a local
  store under RUN_DIR/mlruns; the run id is kept in RUN_DIR/mlflow_run_id.txt for a resume.

Only the main process logs. A tracker that fails mid-run warns once and is dropped: a lost dashboard
must never lose a training run. A tracker that is not installed is an error before training starts.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import yaml

from selfsup import dist
from selfsup.config import LOGGERS, ConfigError, RunConfig, to_dict

_INSTALL = {"wandb": "pip install wandb", "mlflow": "pip install mlflow-skinny (or mlflow)"}


def flat_params(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as {"optim.lr": 0.3, ...}: scalars as they are, lists as text."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[prefix] = "null" if value is None else value
        else:
            out[prefix] = json.dumps(value)

    walk("", to_dict(cfg))
    return out


def _step_of(row: str) -> float:
    """The step of a metrics.jsonl row; inf for a row a kill cut short (dropped on resume)."""
    try:
        return json.loads(row)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def check_loggers(names) -> None:
    """Unknown names and trackers that are not installed fail here, before any training."""
    import importlib.util

    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"train.loggers: unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        if name != "tensorboard" and importlib.util.find_spec(name) is None:
            raise ConfigError(f"train.loggers names {name}, which is not installed: {_INSTALL[name]}, or drop it")


class RunLogger:
    """metrics.jsonl + the configured trackers, written by the main process only."""

    def __init__(self, run_dir: Path, cfg: RunConfig, resume_step: int | None = None):
        # the trackers' run objects (SummaryWriter, a W&B run, an MLflow run), None while not started
        self.file: Any = None
        self.tb: Any = None
        self.wandb: Any = None
        self.mlflow: Any = None
        if not dist.is_main():
            return
        self.run_dir = run_dir
        path = run_dir / "metrics.jsonl"
        if resume_step is not None and path.is_file():
            # steps logged after the checkpoint will be logged again: drop them so the file reads as one run
            rows = [r for r in path.read_text().splitlines() if _step_of(r) <= resume_step]
            path.write_text("".join(r + "\n" for r in rows))
        # a fresh run (fit refused a directory with a checkpoint) starts the file anew: rows left by a run
        # killed before its first checkpoint are not this run's
        self.file = open(path, "a" if resume_step is not None else "w")
        names = cfg.train.loggers
        check_loggers(names)
        self.params = flat_params(cfg)
        config_text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        if "tensorboard" in names:
            self._start_tensorboard(run_dir, resume_step, config_text)
        if "wandb" in names:
            self._start_wandb(run_dir, cfg, resume_step)
        if "mlflow" in names:
            self._start_mlflow(run_dir, cfg, config_text)

    def _start_tensorboard(self, run_dir: Path, resume_step: int | None, config_text: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        if resume_step is None:  # a fresh run: events of a run killed before its first checkpoint are not its own
            shutil.rmtree(run_dir / "tb", ignore_errors=True)
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)
        if resume_step is None:  # markdown: a code block keeps the YAML's indentation
            self.tb.add_text("config", "```yaml\n" + config_text + "```", 0)

    def _start_wandb(self, run_dir: Path, cfg: RunConfig, resume_step: int | None) -> None:
        import wandb

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if resume_step is not None and id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        self.wandb = wandb.init(
            project="selfsup",
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=to_dict(cfg),
            reinit="create_new",
        )

    def _start_mlflow(self, run_dir: Path, cfg: RunConfig, config_text: str) -> None:
        import os

        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # a local store beside the run, readable with `mlflow ui --backend-store-uri RUN_DIR/mlruns`; MLflow 3
            # keeps its file store only on request (its database store needs SQLAlchemy, not in mlflow-skinny)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        id_file = run_dir / "mlflow_run_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the file store's deprecation notice
            self.mlflow = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_dir.name)
        id_file.write_text(self.mlflow.info.run_id)
        if run_id is None:
            mlflow.log_params({k: str(v)[:500] for k, v in self.params.items()})
            mlflow.log_text(config_text, "config.yaml")

    def _guard(self, name: str, fn) -> None:
        """Run one tracker's call; on failure warn once and drop that tracker."""
        try:
            fn()
        except Exception as e:  # a dashboard must never lose a run
            warnings.warn(
                f"{name} logging failed ({type(e).__name__}: {e}); it is switched off for this run, "
                f"metrics.jsonl still has every row",
                stacklevel=3,
            )
            setattr(self, name, None)

    def log(self, row: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        scalars = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "epoch")}
        step = int(row["step"])
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self._guard("wandb", lambda: self.wandb.log({**scalars, "epoch": row.get("epoch")}, step=step))
        if self.mlflow is not None:
            import mlflow

            clean = {k.replace("/", "_"): v for k, v in scalars.items() if math.isfinite(v)}
            self._guard("mlflow", lambda: mlflow.log_metrics(clean, step=step))

    def figures(self, figures: dict, step: int) -> None:
        """The method's pictures (matplotlib figures) to every tracker."""
        for name, fig in figures.items():
            if self.tb is not None:
                self.tb.add_figure(f"pictures/{name}", fig, step, close=False)
            if self.wandb is not None:
                import wandb

                self._guard("wandb", lambda: self.wandb.log({f"pictures/{name}": wandb.Image(fig)}, step=step))
            if self.mlflow is not None:
                import mlflow

                self._guard("mlflow", lambda: mlflow.log_figure(fig, f"pictures/{name}.png"))

    def close(self, summary: dict | None = None) -> None:
        """Final metrics (the HParams dashboard's, W&B's summary), then close everything."""
        final = {k: float(v) for k, v in (summary or {}).items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if self.tb is not None:
            if summary is not None:
                from torch.utils.tensorboard.summary import hparams

                metrics = {f"final/{k}": v for k, v in final.items()} or {"final/steps": 0.0}
                for s in hparams(self.params, metrics):  # what TensorBoard's HParams dashboard reads
                    self.tb.file_writer.add_summary(s)
                for k, v in metrics.items():
                    self.tb.add_scalar(k, v, int(final.get("steps", 0)))
            self.tb.close()
        if self.wandb is not None:
            self._guard("wandb", lambda: (self.wandb.summary.update(final), self.wandb.finish()))
        if self.mlflow is not None:
            import mlflow

            self._guard("mlflow", lambda: mlflow.end_run())
        if self.file:
            self.file.close()
