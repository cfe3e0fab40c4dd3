"""One optimisation step, shared by the pretraining loop (selfsup.train.loop), fine-tuning, distillation and the
semi-supervised loop (selfsup.eval.finetune, selfsup.eval.distill, selfsup.semi.train): bf16 autocast for the
forward pass, gradient accumulation (with DDP's no_sync on the micro-batches that do not end a step), clipping,
the learning-rate schedule as a function of the step, the finite check with an error that says what to lower,
backward / step / zero_grad, the step count and the progress bar.

    steps = Stepper(opt, total, cosine, Runtime(device, "bf16"), "fine-tuning", "lower the learning rates", progress)
    while steps.left:
        with steps.autocast():
            logits = model(x)                      # [B, K]
        steps.update(F.cross_entropy(logits.float(), y))
    steps.close()

The pretraining loop feeds micro-batches (``backward`` returns True when one ended a step) and checks
finiteness ``deferred``: the step of the first non-finite loss stays on the device (reading a loss on the host
every micro-step would stall a GPU) until ``first_bad()`` reads it — before a metrics row or a checkpoint.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from selfsup.errors import SelfsupError
from selfsup.nn.runtime import Runtime


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    """Scale every group's ``base_lr`` by the schedule's ``factor``, except groups flagged ``fixed_lr``
    (SimSiam's predictor keeps a constant lr, no warm-up, no decay: Chen & He 2021, sec. 4.2)."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * (1.0 if g.get("fixed_lr") else factor)


class Stepper:
    """``update(loss)`` takes one step of ``opt`` at the rate ``base_lr * schedule(step, total)`` of each group
    (see set_lr; a group without ``base_lr`` gets its rate when the Stepper was made)."""

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        total: int | None,
        schedule: Callable[[int, Any], float] | None,  # (step, total): total is the int given here (None: open)
        runtime: Runtime,  # the device (the deferred flag lives there) and the autocast
        what: str,
        fix: str,
        progress: bool = False,
        desc: str | None = None,
        *,
        start: int = 0,
        accumulate: int = 1,
        clip_grad: float = 0.0,
        clip_params: list[torch.nn.Parameter] | None = None,
        deferred: bool = False,
    ):
        from tqdm.auto import tqdm

        self.opt, self.total, self.schedule = opt, total, schedule
        for g in opt.param_groups:
            g.setdefault("base_lr", g["lr"])
        self.runtime = runtime
        self.device = runtime.device
        self.what, self.fix = what, fix  # "fine-tuning", "lower the learning rates (now ...) or use fp32"
        self.accumulate, self.clip_grad, self.deferred = accumulate, clip_grad, deferred
        # clipped together: the optimiser's parameters unless the caller names them (the loop: all the method's)
        self.clip_params = clip_params or [p for g in opt.param_groups for p in g["params"]]
        self.step, self.micro = start, 0
        self.loss = torch.tensor(float("nan"))  # the last micro-batch's, detached (nan before the first)
        self._bad = torch.full((), -1, dtype=torch.long, device=self.device)  # deferred: first bad step, or -1
        self.bar = tqdm(total=total, desc=desc or what, disable=not progress, unit="step", dynamic_ncols=True)
        opt.zero_grad(set_to_none=True)

    @property
    def left(self) -> bool:
        return self.total is None or self.step < self.total

    @property
    def ends_step(self) -> bool:
        """Whether the next micro-batch ends an optimiser step (DDP reduces gradients only on that one)."""
        return (self.micro + 1) % self.accumulate == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.runtime.autocast()

    def no_sync(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """DDP's no_sync on a micro-batch that does not end a step (a no-op for a model outside DDP)."""
        no_sync = getattr(model, "no_sync", None)  # DistributedDataParallel's
        if self.ends_step or not callable(no_sync):
            return contextlib.nullcontext()
        return no_sync()

    def backward(self, loss: torch.Tensor, model: torch.nn.Module | None = None) -> bool:
        """One micro-batch's backward pass (``loss / accumulate``); on the last micro-batch of a step, clip,
        set the rate, step and zero the gradients. Returns whether a step was taken."""
        if self.deferred:  # no host sync: the flag is read by first_bad()
            self._bad.copy_(torch.where((self._bad < 0) & ~torch.isfinite(loss.detach()), self.step, self._bad))
        elif not torch.isfinite(loss):  # refused before anything is stepped
            raise SelfsupError(f"{self.what} diverged (loss {loss.item()}) at step {self.step}: {self.fix}")
        ends = self.ends_step
        with self.no_sync(model) if model is not None else contextlib.nullcontext():
            (loss / self.accumulate).backward()
        self.loss = loss.detach()
        self.micro += 1
        if not ends:
            return False
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.clip_params, self.clip_grad)
        if self.schedule is not None:  # None: the rates stay as they are
            set_lr(self.opt, self.schedule(self.step, self.total))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.micro = 0
        self.step += 1
        self.bar.update(1)
        return True

    def update(self, loss: torch.Tensor) -> None:
        """One step on one batch (no accumulation)."""
        self.backward(loss)

    def first_bad(self) -> int:
        """The step of the first non-finite loss seen with ``deferred``, or -1 (one host sync)."""
        return int(self._bad)

    def close(self) -> None:
        self.bar.close()
