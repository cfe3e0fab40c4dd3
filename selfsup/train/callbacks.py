"""What the training loop calls beside the optimisation: the online monitor, the method's pictures and the
training curves. The loop calls every callback at four points — ``start`` (before the first step), ``epoch_end``,
``end`` (the weights are final, before the last checkpoint) and ``close`` (summary.json is written) — each under
a forked random state, so that a callback changes no weight and no random stream of the run: a run trains the
same weights with or without them. A callback that draws or writes files does so on the main process only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from selfsup import dist
from selfsup.config import RunConfig
from selfsup.data.dataset import validation_split
from selfsup.eval import effective_rank, embedding_std, extract_features, knn_accuracy
from selfsup.methods.base import EpochContext, Method
from selfsup.nn.runtime import Runtime
from selfsup.train.loggers import RunLogger
from selfsup.train.pictures import draw, plot_curves
from selfsup.transforms import eval_view

if TYPE_CHECKING:
    from selfsup.data.dataset import ImageDataset


@dataclass
class Fit:
    """The run being trained, as a callback sees it."""

    cfg: RunConfig
    method: Method
    runtime: Runtime  # the training's device, precision and memory format
    run_dir: Path
    logger: RunLogger
    epoch_ctx: EpochContext
    eval_size: int  # the side the monitor and pictures see
    state: dict  # the loop's (step, epoch, train_seconds, ...); a checkpoint saves it, so a callback may keep numbers there
    resume: bool
    done: Callable[[], bool]
    summary: dict[str, Any] = field(default_factory=dict)  # the last monitor values; at close the run's summary

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def log(self, values: dict) -> None:
        """A metrics row at the loop's current step."""
        st = self.state
        self.logger.log({"step": st["step"], "epoch": st["epoch"], "train_seconds": st["train_seconds"], **values})


class Callback:
    """Does nothing at every point; subclasses override the ones they need."""

    def start(self, fit: Fit) -> None:
        pass

    def epoch_end(self, fit: Fit) -> None:
        pass

    def end(self, fit: Fit) -> None:
        pass

    def close(self, fit: Fit) -> None:
        pass


@dataclass
class Monitor(Callback):
    """Online kNN accuracy of a fixed validation slice of the training split (``monitor_val`` labelled
    images) against a bank of other training images (``monitor_train``), plus collapse diagnostics, every
    ``monitor_every`` epochs and at the end; at close, a warning if the embeddings collapsed.
    The test split is never read while training: it is kept for final numbers, so that nothing the
    monitor shows (and no setting chosen by looking at it) has seen a test image."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor

    @classmethod
    def build(cls, train: ImageDataset, cfg: RunConfig) -> Monitor | None:
        t = cfg.train
        if train.labels is None or t.monitor_train <= 0 or t.monitor_val <= 0 or len(train) < 2:
            return None
        n_val = min(t.monitor_val, len(train) // 2)  # disjoint: a validation image is never its own neighbour
        val, rest = validation_split(len(train), n_val)
        bank = rest[: t.monitor_train]
        return cls(train.images[bank], train.labels[bank], train.images[val], train.labels[val])

    def start(self, fit: Fit) -> None:
        if not fit.resume:  # the spread a random initialisation gives, for warn_collapse
            z0 = self.embeddings(fit.method, fit.cfg, fit.runtime, fit.eval_size)
            fit.state["initial_embedding_std"] = embedding_std(z0)
            fit.state["initial_embedding_rank"] = effective_rank(z0)

    def epoch_end(self, fit: Fit) -> None:
        every = fit.cfg.train.monitor_every
        if every and fit.state["epoch"] % every == 0 and not fit.done():
            self.end(fit)

    def end(self, fit: Fit) -> None:
        fit.summary.update(self(fit.method, fit.cfg, fit.runtime, fit.eval_size))
        fit.log(fit.summary)

    def close(self, fit: Fit) -> None:
        if dist.is_main():
            warn_collapse(fit.summary)

    @torch.no_grad()
    def __call__(self, method: Method, cfg: RunConfig, runtime: Runtime, size: int) -> dict:
        was = method.training
        kw: dict[str, Any] = dict(mean=cfg.data.mean, std=cfg.data.std, size=size, runtime=runtime)
        ftr = extract_features(method.evaluated_encoder, self.train_images, **kw)
        fte = extract_features(method.evaluated_encoder, self.val_images, **kw)
        res = knn_accuracy(ftr, self.train_labels, fte, self.val_labels, ks=(20,))
        z = self.embeddings(method, cfg, runtime, size)
        method.train(was)
        return {
            "monitor/knn20_top1": res["top1"],
            "diag/feature_std": embedding_std(fte),
            "diag/feature_rank": effective_rank(fte[:512]),
            "diag/embedding_std": embedding_std(z),
            "diag/embedding_rank": effective_rank(z),
            "diag/embedding_dim": z.shape[1],
        }

    @torch.no_grad()
    def embeddings(self, method: Method, cfg: RunConfig, runtime: Runtime, size: int) -> torch.Tensor:
        """What the loss acts on (the projection) for 512 validation images, in eval mode: [512, D] on the
        CPU."""
        was = method.training
        method.eval()
        x = eval_view(self.val_images[:512].to(runtime.device), cfg.data.mean, cfg.data.std, size)
        with runtime.autocast():
            z = method.embedding(x).float().cpu()
        method.train(was)
        return z


@dataclass
class Pictures(Callback):
    """RUN_DIR/pictures/<name>.png for each picture the method draws of ``images`` at the end (validation
    images where there are labels), also sent to the loggers (TensorBoard's images, W&B, MLflow); a failure
    only warns: a picture must never lose a finished run."""

    images: torch.Tensor

    def end(self, fit: Fit) -> None:
        if not dist.is_main():
            return
        method = fit.method
        try:
            was = method.training
            method.eval()
            with torch.no_grad():
                pics = method.pictures(self.images.to(fit.device), fit.epoch_ctx)
                figures = {name: draw(p) for name, p in pics.items()}
            method.train(was)
            out = fit.run_dir / "pictures"
            for name, fig in figures.items():
                out.mkdir(parents=True, exist_ok=True)
                fig.savefig(out / f"{name}.png", dpi=110)
            fit.logger.figures(figures, fit.state["step"])
        except Exception as e:
            warnings.warn(f"could not draw the method's pictures: {e}", stacklevel=2)


class Curves(Callback):
    """RUN_DIR/curves.png (training loss and the monitor against steps) once the run's metrics are closed; a
    missing plot must never lose a finished run."""

    def close(self, fit: Fit) -> None:
        if not dist.is_main():
            return
        try:
            plot_curves(fit.run_dir)
        except Exception as e:
            warnings.warn(f"could not draw curves.png: {e}", stacklevel=2)


def warn_collapse(summary: dict) -> None:
    """Warn when training shrank the embeddings towards a point (per-dimension std far below the 1/sqrt(D)
    of embeddings spread over the sphere) or onto about one direction (effective rank < 2) — and did so
    itself: below half of what the random initialisation gave (a random network's embeddings are often
    close together already, a random ViT's along few directions, and a short run that has not spread
    them yet is not a collapse)."""
    std, dim, rank = (summary.get(f"diag/embedding_{k}") for k in ("std", "dim", "rank"))
    std0, rank0 = summary.get("diag/initial_embedding_std"), summary.get("diag/initial_embedding_rank")
    if std is not None and dim and std < 0.2 / math.sqrt(dim) and (std0 is None or std < 0.5 * std0):
        at_start = f", {std0:.4f} at initialisation" if std0 is not None else ""
        warnings.warn(
            f"embeddings look collapsed (per-dimension std {std:.4f}{at_start}, vs ~{1 / math.sqrt(dim):.4f} "
            f"for spread-out {dim}-d embeddings); check the learning rate and the method's anti-collapse parts",
            stacklevel=3,
        )
    elif rank is not None and rank < 2 and (rank0 is None or rank < 0.5 * rank0):
        at_start = f" ({rank0:.2f} at initialisation)" if rank0 is not None else ""
        warnings.warn(f"effective rank of the embeddings is {rank:.2f}{at_start}: dimensional collapse", stacklevel=3)


def call(callbacks: list[Callback], point: str, fit: Fit) -> None:
    """Call ``point`` ("start", "epoch_end", "end" or "close") of every callback under a forked random state."""
    devices = [fit.device] if fit.device.type == "cuda" else []
    for cb in callbacks:
        with torch.random.fork_rng(devices=devices):
            getattr(cb, point)(fit)
