"""What every semi-supervised method shares: its training settings, its views, its registry.

A semi-supervised method (``SemiMethod``) turns one step's batches — B labelled images with their
labels and mu B unlabelled images, uint8 — into a loss for a classifier (encoder -> linear head);
``selfsup.semi.train`` runs the steps. Each method declares its paper's hyper-parameters as a
dataclass (``Config``) and the training settings its paper used (``defaults``: optimiser, learning
rate, schedule, mu, EMA), which ``SemiConfig`` takes unless the user overrides them.
"""

from __future__ import annotations

import abc
import difflib
import math
from dataclasses import dataclass, fields
from typing import Callable, ClassVar

import torch
from torch import nn

from selfsup.config import ConfigError, from_dict
from selfsup.errors import SelfsupError
from selfsup.registry import Registry
from selfsup.transforms import ops
from selfsup.transforms.randaugment import strong_augment, weak_augment


@dataclass
class SemiConfig:
    """Training settings common to every method (the method's ``defaults`` replace these defaults)."""

    steps: int = 1000  # optimiser steps (FixMatch trains 2^20 on a GPU; a CPU affords thousands)
    batch_size: int = 64  # B labelled images per step (FixMatch's CIFAR-10 value)
    mu: int = 7  # unlabelled images per labelled one in a step (FixMatch's ratio)
    optimizer: str = "sgd"  # sgd (Nesterov) | adam | adamw
    lr: float = 0.03
    encoder_lr: float | None = None  # None: lr; a lower rate protects a pretrained encoder (--init)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "fixmatch"  # fixmatch: lr cos(7 pi k / 16 K) | constant | linear-tail (last third to 0)
    ema: float = 0.999  # decay of the weights' moving average the classifier keeps (0: keep the last weights)
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    flip_p: float = 0.5  # of the weak (and strong) views; 0 where mirror images are other classes (digits)
    seed: int = 0  # batch order, augmentation draws, head initialisation

    def check(self) -> None:
        bad = [(k, getattr(self, k)) for k in ("steps", "batch_size", "mu") if getattr(self, k) < 1]
        if bad:
            raise SelfsupError(f"{bad[0][0]}={bad[0][1]}: must be at least 1")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise SelfsupError(f"optimizer {self.optimizer!r}: choose sgd, adam or adamw")
        if self.schedule not in ("fixmatch", "constant", "linear-tail"):
            raise SelfsupError(f"schedule {self.schedule!r}: choose fixmatch, constant or linear-tail")
        if self.precision not in ("fp32", "bf16"):
            raise SelfsupError(f"precision {self.precision!r}: choose fp32 or bf16")
        if not 0 <= self.ema < 1:
            raise SelfsupError(f"ema={self.ema}: a decay in [0, 1) (0 keeps the last weights)")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning-rate multiplier at ``step`` of ``total``: FixMatch's cos(7 pi k / 16 K) (ends at
    0.2 of the base rate), constant (MixMatch), or VAT's linear decay to 0 over the last third."""
    k = min(step, total) / max(1, total)
    if schedule == "fixmatch":
        return math.cos(7 * math.pi * k / 16)
    if schedule == "linear-tail":
        return min(1.0, 3 * (1 - k))
    return 1.0


class Views:
    """The weak and strong views of uint8 batches, normalised for the encoder: [B,C,H,W] -> float
    [B,C,size,size]. One generator draws every parameter, so a seeded run sees the same views."""

    def __init__(self, mean, std, size: int, flip_p: float, gen: torch.Generator, device: torch.device):
        self.mean, self.std, self.size, self.flip_p, self.gen, self.device = mean, std, size, flip_p, gen, device

    def _float(self, images: torch.Tensor) -> torch.Tensor:
        x = ops.to_float(images.to(self.device))
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return x

    def weak(self, images: torch.Tensor) -> torch.Tensor:
        return ops.normalize(weak_augment(self._float(images), flip_p=self.flip_p, gen=self.gen), self.mean, self.std)

    def strong(self, images: torch.Tensor) -> torch.Tensor:
        return ops.normalize(strong_augment(self._float(images), flip_p=self.flip_p, gen=self.gen), self.mean, self.std)


@dataclass
class Batch:
    """One step's data: labelled images x [B,C,H,W] uint8 with labels y [B], unlabelled images u
    [mu B,C,H,W] uint8, the step and the planned total (for ramps)."""

    x: torch.Tensor
    y: torch.Tensor
    u: torch.Tensor
    step: int
    total: int


class SemiMethod(abc.ABC):
    """A semi-supervised method: ``loss(model, batch, views)`` -> (scalar loss, detached scalars to log:
    tensors, read by the loop only when it logs, so that a step holds no host sync for them).

    ``Config``: the paper's hyper-parameters (a dataclass); ``defaults``: the paper's training
    settings (fields of ``SemiConfig``)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    defaults: ClassVar[dict] = {}

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None else self.Config()

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Batch, views: Views) -> tuple[torch.Tensor, dict]:
        """The step's loss and what to log (detached tensors or numbers)."""


SEMI_METHODS: Registry[type[SemiMethod]] = Registry("semi-supervised method")


def register_semi(name: str) -> Callable[[type[SemiMethod]], type[SemiMethod]]:
    """Class decorator registering a SemiMethod under ``name``."""

    def wrap(cls: type[SemiMethod]) -> type[SemiMethod]:
        SEMI_METHODS.add(name, cls)
        cls.name = name
        return cls

    return wrap


def list_semi_methods() -> list[str]:
    return SEMI_METHODS.names()


def create_semi_method(name: str, overrides: dict | None = None) -> tuple[SemiMethod, SemiConfig]:
    """(the method with its paper's hyper-parameters, the training settings) with ``overrides``
    (field -> value) applied to whichever of the two has the field; an unknown field is an error."""
    cls = SEMI_METHODS.get(name)
    method_fields = {f.name for f in fields(cls.Config)}
    train_fields = {f.name for f in fields(SemiConfig)}
    over = dict(overrides or {})
    unknown = sorted(set(over) - method_fields - train_fields)
    if unknown:
        known = sorted(method_fields | train_fields)
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{name}: unknown setting {unknown[0]!r}{hint} Settings: {', '.join(known)}")
    # from_dict checks and coerces the types (a typo'd number is an error naming the key)
    method_cfg = from_dict(cls.Config, {k: v for k, v in over.items() if k in method_fields}, name)
    train = from_dict(SemiConfig, {**cls.defaults, **{k: v for k, v in over.items() if k in train_fields}}, name)
    train.check()
    return cls(method_cfg), train
