"""The contract every method fulfils; the loop and the evaluation know nothing else."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from selfsup.data.batch import Batch
from selfsup.data.dataset import ImageDataset
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime
from selfsup.registry import Needs


@dataclass
class EpochContext:
    """What ``on_epoch_start`` may use: the training set and how evaluation would view it.

    DeepCluster extracts features of the whole set with it; a bank refresh could too.
    ``features(module)`` runs ``module`` (in eval mode, no gradient) over every training image
    through the deterministic evaluation view and returns float32 [N, F] on the CPU.
    """

    dataset: ImageDataset  # .images uint8 [N,C,H,W], .labels (never for unsupervised use)
    mean: list[float]
    std: list[float]
    size: int
    runtime: Runtime  # the training's device, precision and memory format

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def features(self, module: nn.Module, batch_size: int = 512) -> torch.Tensor:
        return extract_features(
            module, self.dataset.images, self.mean, self.std, self.size, batch_size, runtime=self.runtime
        )


@dataclass
class Picture:
    """What a method shows people, as tensors (the loop and the report draw it; a method never
    imports a plotting library): ``rows`` = [(row name, float images [B,C,H,W] in [0, 1])],
    ``captions[r][b]`` an optional text under image b of row r (a predicted label, an error)."""

    rows: list[tuple[str, torch.Tensor]]
    captions: list[list[str]] | None = None
    title: str = ""


@dataclass
class StepOutput:
    loss: torch.Tensor
    # scalars to log; tensors are fine (the loop calls .item() only on logging steps, so the
    # training step never forces a device sync)
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)


class Method(nn.Module, abc.ABC):
    """Base class: ``encoder`` is what evaluation and export see.

    Subclasses set ``self.encoder`` (a backbone with ``num_features``) and implement
    ``training_step``. State changes (EMA targets, queues, banks) belong in the hooks, which
    the loop always calls, never inside ``forward``.
    """

    # The registered name and what the method needs (selfsup.registry.Needs: views, colour, a ViT, captions,
    # crop boxes, video, labels, DDP's unused parameters), declared at registration and set on the instance by
    # selfsup.registry.instantiate; the class defaults are for a method built by hand.
    name = "method"
    needs: Needs = Needs()
    # The fraction of training done, a host float, for schedules read inside training_step (DINO's teacher
    # temperature, its frozen last layer): reading a device buffer there would cost a device-to-host copy and
    # a sync every step on a GPU. The loop sets it before the first step (a resumed run starts where it
    # stopped) and after every step, before on_step_end; a ``progress`` buffer a method keeps is its
    # checkpointed record, written in on_step_end.
    progress_now: float = 0.0
    # __init__(encoder, cfg, ctx): ctx is a selfsup.registry.BuildContext (training-set size for memory banks,
    # the views' shape for decoders, their normalisation for Lab); build_method and create_method pass it.
    encoder: nn.Module

    @abc.abstractmethod
    def training_step(self, batch: Batch) -> StepOutput:
        """One step's loss on ``batch.views`` (and logs)."""

    def forward(self, batch: Batch) -> StepOutput:
        """``training_step``: the loop calls the module (so DistributedDataParallel, which hooks
        ``forward``, sees the step) rather than the method."""
        return self.training_step(batch)

    def on_step_end(self, progress: float) -> None:
        """After each optimiser step; ``progress`` in [0, 1] is the fraction of training done."""

    def on_epoch_start(self, epoch: int, data: EpochContext) -> dict[str, float] | None:
        """Before each epoch (DeepCluster's k-means, bank refreshes); not called again when a run
        resumes mid-epoch, so whatever it computes must live in buffers (checkpointed).
        May return scalars (e.g. DeepCluster's NMI between consecutive clusterings) that the loop
        logs to metrics.jsonl as a row of their own."""

    def epoch_order(self, epoch: int, generator: torch.Generator) -> torch.Tensor | None:
        """The training-set indices of epoch ``epoch``, in order (int64 [N], repeats allowed: e.g.
        DeepCluster samples uniformly over its clusters); None = the loader's seeded permutation.
        Called after ``on_epoch_start`` and again when a run resumes mid-epoch, so it must depend
        only on ``generator`` (seeded by the loader from the run's seed and the epoch) and on the
        method's buffers."""
        return None

    @property
    def evaluated_encoder(self) -> nn.Module:
        """The network evaluation, export, classifiers and the training monitor read: ``encoder`` unless the
        paper evaluates another one (I-JEPA and MSN: their EMA target encoder)."""
        return self.encoder

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The vector the loss acts on, for collapse diagnostics; default: encoder features."""
        return self.encoder(x)

    def pictures(self, images: torch.Tensor, data: EpochContext) -> dict:
        """What the task sees and produces, for people: {name: Picture}, drawn and saved by the loop as
        RUN_DIR/pictures/<name>.png at the end of training. ``images``: a few fixed uint8 [B,C,H,W]
        test images; ``data`` gives the normalisation (mean, std, size) and the device. Default: none."""
        return {}

    def param_groups(self) -> list[dict]:
        """Trainable parameters; norms and biases get no weight decay (and no LARS adaptation)."""
        decay: list[nn.Parameter]
        no_decay: list[nn.Parameter]
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


# Optional abilities, as Protocols (checked with isinstance, not getattr probes).


@runtime_checkable
class FinetunesOwnEncoder(Protocol):
    """A method whose paper fine-tunes another network than the evaluated encoder: SimCLR v2 fine-tunes
    the backbone plus the projection head's first layer."""

    @property
    def finetune_encoder(self) -> nn.Module: ...


@runtime_checkable
class EncodesText(Protocol):
    """An image-text method (``Needs.text``; CLIP): caption token ids [B, L] -> text embeddings [B, D]."""

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor: ...


def encoder_to_finetune(method: Method) -> nn.Module:
    """What fine-tuning, distillation's teacher and classifiers start from: the method's own
    ``finetune_encoder`` where it has one, else its evaluated encoder."""
    return method.finetune_encoder if isinstance(method, FinetunesOwnEncoder) else method.evaluated_encoder
