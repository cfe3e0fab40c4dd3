"""The semi-supervised training loop: labelled and unlabelled batches -> the method's loss -> SGD/Adam
-> an exponential moving average of the weights, which is the classifier kept (FixMatch and MixMatch
evaluate the EMA; VAT and pseudo-labels the last weights, ``ema=0``).

Read top to bottom: batches are drawn without replacement within each pass over a set, the
labelled set (few images) cycling many times for each pass over the unlabelled one; every schedule
is a function of the step, so the same seed trains the same weights on any machine.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.nn.stepper import Stepper
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime
from selfsup.nn.classifier import Classifier, reinitialise
from selfsup.semi.base import Batch, SemiConfig, SemiMethod, Views, lr_factor


class _Cycler:
    """Indices of ``n`` items, ``size`` at a time, a fresh permutation per pass (sets smaller than a
    batch repeat within it)."""

    def __init__(self, n: int, size: int, gen: torch.Generator):
        self.n, self.size, self.gen = n, size, gen
        self.order = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while len(self.order) < self.size:
            self.order = torch.cat([self.order, torch.randperm(self.n, generator=self.gen)])
        idx, self.order = self.order[: self.size], self.order[self.size :]
        return idx


def _optimizer(model: Classifier, cfg: SemiConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and norms (1-d parameters), as the papers' code; the encoder at
    ``encoder_lr`` when given."""
    groups = []
    for part, lr in ((model.encoder, cfg.encoder_lr if cfg.encoder_lr is not None else cfg.lr), (model.head, cfg.lr)):
        params = [p for p in part.parameters() if p.requires_grad]
        groups += [
            {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0},
        ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":  # decoupled decay: p <- p (1 - lr wd), MixMatch's 0.02 x lr
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    e: torch.Tensor  # a parameter, then a buffer
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)  # batch-norm statistics: the current ones, as the papers' EMA code


def accuracy(
    model: nn.Module, data, spec, batch_size: int = 512, runtime: Runtime | str | torch.device = "cpu"
) -> float:
    """Top-1 of ``model`` on a labelled ImageDataset, evaluated at the spec's side."""
    logits = extract_features(model, data.images, spec.mean, spec.std, spec.size, batch_size, runtime)
    return (logits.argmax(1) == data.labels).float().mean().item()


def train_semi(
    method: SemiMethod,
    cfg: SemiConfig,
    encoder: nn.Module,
    labelled,
    unlabelled,
    spec,
    num_classes: int,
    test=None,
    from_scratch: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[Classifier, dict]:
    """Train a copy of ``encoder`` plus a linear head with ``method`` on ``labelled`` (ImageDataset with
    labels) and ``unlabelled`` (ImageDataset; its labels, if any, are never read) for ``cfg.steps``.

    spec: the InputSpec (channels, side, normalisation) the encoder takes; ``from_scratch``: random
    weights of the same architecture (the baseline). Returns (the classifier kept, in eval mode, on the
    CPU; a result dict: test top-1 when ``test`` is given, labelled-set top-1, the mean of each logged
    loss term over the last tenth of the steps, every setting)."""
    cfg.check()
    if labelled.labels is None or len(labelled) < 2:
        raise SelfsupError("semi-supervised training needs at least 2 labelled images")
    t0 = time.time()
    rt = Runtime.of(cfg, device)
    device = rt.device
    enc = copy.deepcopy(encoder)  # the caller's encoder is never touched
    if from_scratch:
        reinitialise(enc, cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Classifier(enc, num_classes)
    for p in model.parameters():  # every weight trains, even ones a pretraining method froze
        p.requires_grad_(True)
    model = rt.module(model)
    ema = copy.deepcopy(model).eval() if cfg.ema > 0 else None
    opt = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    views = Views(spec.mean, spec.std, spec.size, cfg.flip_p, gen, device)
    lab_idx = _Cycler(len(labelled), cfg.batch_size, gen)
    unl_idx = _Cycler(len(unlabelled), cfg.mu * cfg.batch_size, gen)
    y_all = labelled.labels.to(device)
    steps = Stepper(
        opt,
        cfg.steps,
        lambda step, total: lr_factor(cfg.schedule, step, total),
        rt,
        method.name,
        f"lower lr (now {cfg.lr}) or use fp32",
        progress,
        method.name + (" (from scratch)" if from_scratch else ""),
    )
    tail = max(1, cfg.steps // 10)
    sums: dict = {}
    model.train()
    for step in range(cfg.steps):
        i, j = lab_idx.next(), unl_idx.next()
        batch = Batch(labelled.images[i], y_all[i.to(device)], unlabelled.images[j], step, cfg.steps)
        with steps.autocast():
            loss, logs = method.loss(model, batch, views)
        steps.update(loss)
        if ema is not None:
            _update_ema(ema, model, min(cfg.ema, (1 + step) / (10 + step)))  # bias-corrected early on
        if step >= cfg.steps - tail:  # tensors are summed where they are; read once, after the last step
            for k, v in {"loss": loss.detach(), **logs}.items():
                sums[k] = sums.get(k, 0.0) + v / tail
        if progress and step % 20 == 0:
            steps.bar.set_postfix({k: f"{float(v):.3g}" for k, v in logs.items()})
    steps.close()
    train_seconds = time.time() - t0
    keep = (ema if ema is not None else model).eval()
    kw = dict(spec=spec, runtime=Runtime(device, cfg.precision))  # contiguous inputs, as this has always read them
    result = {
        "protocol": "semi-supervised",
        "method": method.name,
        "from_scratch": from_scratch,
        "top1": accuracy(keep, test, **kw) if test is not None and test.labels is not None else None,
        "train_top1": accuracy(keep, labelled, **kw),
        "num_labelled": len(labelled),
        "num_unlabelled": len(unlabelled),
        "final": {k: float(v) for k, v in sums.items()},
        "settings": asdict(cfg),
        "method_settings": asdict(method.cfg),
        "train_seconds": train_seconds,
        "seconds": time.time() - t0,
    }
    return keep.cpu(), result
