"""InstDisc — Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018.

Idea: treat every image as its own class. A non-parametric softmax compares the 128-d,
L2-normalised feature f_i = g(encoder(x_i)) with a memory bank V that holds one feature per
training image, v_i (sec. 3.1: P(i|f) = exp(v_i.f/tau) / Z_i). The sum over all n images is replaced
by noise-contrastive estimation with m noise entries drawn uniformly from the bank (sec. 3.2), with
the normaliser Z estimated once by Monte Carlo and then fixed. After each step the bank
moves towards the new features with momentum 0.5, and a proximal term lambda*||f_i - v_i||^2
(sec. 3.3) keeps each image's feature from jumping between its rare visits (one per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.contrastive import info_nce, infonce_bound
from selfsup.losses.instance import nce_instance, nce_log_z
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.queue import MemoryBank
from selfsup.registry import BuildContext, register


@dataclass
class InstDiscConfig:
    dim: int = 128  # the bank's feature size
    negatives: int = 4096  # m, noise samples per step
    temperature: float = 0.07
    bank_momentum: float = 0.5  # v_i <- normalise(0.5 v_i + 0.5 f_i)
    prox_lambda: float = 30.0  # proximal regularisation weight (paper's best, fig. 3); 0 turns it off
    loss: str = "nce"  # "nce" (the paper) | "softmax": cross-entropy over [v_i, m noise entries]


@register("instdisc", config=InstDiscConfig, views="mocov1")
class InstDisc(Method):
    """InstDisc: every image its own class; NCE against a memory bank of the whole training set."""

    nce_z: torch.Tensor  # a buffer: NCE's normalising constant Z (0: not estimated yet)

    def __init__(self, encoder: nn.Module, cfg: InstDiscConfig = InstDiscConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        num_samples = ctx.require("num_samples")
        if cfg.loss not in ("nce", "softmax"):
            raise SelfsupError(f"instdisc: method.loss must be 'nce' or 'softmax', got {cfg.loss!r}")
        self.cfg = cfg
        self.encoder = encoder
        self.head = nn.Linear(cast(int, encoder.num_features), cfg.dim)  # the paper's fc to 128-d
        self.bank = MemoryBank(num_samples, cfg.dim)
        # Z of sec. 3.2, estimated on the first batch and fixed; 0 = not yet estimated. A buffer, so a
        # resumed run continues with the very same constant.
        self.register_buffer("nce_z", torch.zeros(()))
        self._z_ready = False  # mirrors nce_z > 0, so the check costs one device sync per process, not one per step
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (index, f) to write into the bank

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)).float(), dim=1)

    def training_step(self, batch) -> StepOutput:
        x, i = batch.views[0], batch.index  # one view [B, C, H, W]; image indices [B]
        f = self.embedding(x)  # f_theta(x_i), unit 128-d: [B, D]
        v_i = self.bank.get(i)  # v_i^(t-1): the bank's entry of each image, no gradient [B, D]
        v_noise = self.bank.get(self.bank.sample(self.cfg.negatives))  # uniform P_n: [m, D]
        # Noise is shared by the batch (the official code draws m per image): the same unbiased
        # estimate of E_{P_n}, without a [B, m, D] gather (0.5 GB at B=256, m=4096).
        n, tau = len(self.bank), self.cfg.temperature
        logs: dict[str, torch.Tensor | float] = {}
        if self.cfg.loss == "nce":
            if not self._z_ready:
                if self.nce_z <= 0:
                    # Set once, before the first loss needs it (the official code does the same in its
                    # first forward); it never changes afterwards, so no state moves inside later steps.
                    self.nce_z.copy_(nce_log_z(f.detach(), v_noise, tau, n).exp())
                self._z_ready = True
            loss, pos, neg = nce_instance(f, v_i, v_noise, tau, self.nce_z.log(), n)
            logs.update({"nce_pos": pos.detach(), "nce_noise": neg.detach(), "nce_z": self.nce_z.clone()})
            with torch.no_grad():  # the softmax loss of the same candidates, only for the MI bound
                ce, candidates = info_nce(f.detach(), v_i, v_noise, tau)
        else:
            loss, candidates = info_nce(f.float(), v_i, v_noise, tau)
            ce = loss.detach()
        logs["infonce_bound"] = infonce_bound(ce, candidates)
        if self.cfg.prox_lambda:
            # sec. 3.3: lambda * ||v_i^(t) - v_i^(t-1)||^2, v^(t) the current feature, v^(t-1) the bank's
            prox = (f.float() - v_i).pow(2).sum(1).mean()
            loss = loss + self.cfg.prox_lambda * prox
            logs["prox"] = prox.detach()
        self._pending.append((i, f.detach()))
        return StepOutput(loss, logs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._z_ready = False  # a loaded nce_z may be 0 (a checkpoint from before the first step)
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        # the bank moves after the optimiser step, with the features the step computed
        for i, f in self._pending:
            self.bank.update(i, f, self.cfg.bank_momentum)
        self._pending.clear()
