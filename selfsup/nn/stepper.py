"""One optimisation step of a supervised objective, shared by fine-tuning, distillation and the semi-supervised
loop (selfsup.eval.finetune, selfsup.eval.distill, selfsup.semi.train): bf16 autocast for the forward pass,
the learning-rate schedule as a function of the step, the finite check with an error that says what to lower,
zero_grad / backward / step, the step count and the progress bar. The pretraining loop (selfsup.train.loop)
keeps its own: gradient accumulation, DDP's no_sync and a finite flag read without a host sync per step.

    steps = Stepper(opt, total, cosine, "bf16", device, "fine-tuning", "lower the learning rates", progress)
    while steps.left:
        with steps.autocast():
            logits = model(x)                      # [B, K]
        steps.update(F.cross_entropy(logits.float(), y))
    steps.close()
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from selfsup.errors import SelfsupError


class Stepper:
    """``update(loss)`` takes one step of ``opt`` at the rate ``base * schedule(step, total)`` of each group
    (the groups' rates when the Stepper was made are the bases)."""

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        total: int,
        schedule: Callable[[int, int], float],
        precision: str,
        device: torch.device | str,
        what: str,
        fix: str,
        progress: bool = False,
        desc: str | None = None,
    ):
        from tqdm.auto import tqdm

        self.opt, self.total, self.schedule = opt, total, schedule
        self.base_lrs = [g["lr"] for g in opt.param_groups]
        self.device_type = torch.device(device).type
        self.bf16 = precision == "bf16"
        self.what, self.fix = what, fix  # "fine-tuning", "lower the learning rates (now ...) or use fp32"
        self.step = 0
        self.loss = torch.tensor(float("nan"))  # the last step's, detached (nan before the first)
        self.bar = tqdm(total=total, desc=desc or what, disable=not progress, unit="step", dynamic_ncols=True)

    @property
    def left(self) -> bool:
        return self.step < self.total

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def update(self, loss: torch.Tensor) -> None:
        """Refuse a non-finite loss (nothing is stepped), else step at this step's rate and count it."""
        if not torch.isfinite(loss):
            raise SelfsupError(f"{self.what} diverged (loss {loss.item()}) at step {self.step}: {self.fix}")
        for g, lr in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = lr * self.schedule(self.step, self.total)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss = loss.detach()
        self.step += 1
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
