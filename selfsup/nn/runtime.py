"""Where and how a network runs: the device, the arithmetic (fp32, or bf16 autocast) and the memory format
(channels_last or contiguous).

The three always travel together — the pretraining loop, its monitor, a method's epoch hook, fine-tuning,
distillation, the semi-supervised loop and evaluation each move a model, move batches and open an autocast
region with them — so they are one object, built once from the user's options (``Runtime.of(cfg.train,
device)``) and passed down, instead of three loose arguments each caller re-reads and re-applies.

    rt = Runtime("cuda", "bf16", channels_last=True)
    model = rt.module(model)
    with rt.autocast():
        logits = model(rt.inputs(x))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

M = TypeVar("M", bound=torch.nn.Module)
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Runtime:
    """``device`` (a str is accepted and made a torch.device), ``precision`` "fp32" or "bf16" (bfloat16
    autocast on the device), ``channels_last`` (modules and 4-d batches in that memory format)."""

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False

    if TYPE_CHECKING:  # the constructor takes a str too (made a torch.device below); the generated one at runtime

        def __init__(
            self, device: torch.device | str, precision: str = "fp32", channels_last: bool = False
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose {' or '.join(PRECISIONS)}")

    @classmethod
    def of(cls, section: Any, device: str | torch.device | None = None) -> Runtime:
        """From a config section with ``precision`` and ``channels_last`` (the run config's ``train``, a
        FinetuneConfig, DistillConfig or SemiConfig); ``device`` where given, else the section's ``device``."""
        return cls(section.device if device is None else device, section.precision, section.channels_last)

    @classmethod
    def coerce(cls, runtime: Runtime | str | torch.device) -> Runtime:
        """A Runtime as it is; a device alone: fp32, contiguous."""
        return runtime if isinstance(runtime, Runtime) else cls(runtime)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on the device's type when bf16, a disabled one otherwise."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def module(self, m: M) -> M:
        """``m`` moved to the device (and to channels_last if set); returns it."""
        m = m.to(self.device)
        if self.channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device; a 4-d one in channels_last if set."""
        x = x.to(self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def as_dict(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Runtime:
        return cls(d["device"], d.get("precision", "fp32"), bool(d.get("channels_last", False)))
