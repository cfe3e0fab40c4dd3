"""The contract every method fulfils; the loop and the evaluation know nothing else."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import nn

from selfsup.data.batch import Batch


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

    name = "method"
    encoder: nn.Module

    @abc.abstractmethod
    def training_step(self, batch: Batch) -> StepOutput:
        """One step's loss on ``batch.views`` (and logs)."""

    def on_step_end(self, progress: float) -> None:
        """After each optimiser step; ``progress`` in [0, 1] is the fraction of training done."""

    def on_epoch_start(self, epoch: int, data) -> None:
        """Before each epoch (DeepCluster's k-means, bank refreshes)."""

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The vector the loss acts on, for collapse diagnostics; default: encoder features."""
        return self.encoder(x)

    def param_groups(self) -> list[dict]:
        """Trainable parameters; norms and biases get no weight decay (and no LARS adaptation)."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]
