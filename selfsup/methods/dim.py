"""Deep InfoMax — Hjelm, Fedorov, Lavoie-Marchildon, Grewal, Bachman, Trischler, Bengio.
"Learning deep representations by mutual information estimation and maximization", ICLR 2019.

Idea: a representation is good when it shares much information with every local part of its
input. The encoder's local feature map M = C(x) ([B, C, h, w], each position sees a patch) and
its global vector y = E(x) (the pooled features evaluation uses) are scored by a critic
T(m, y) = phi_l(m) . phi_g(y) — a 1x1-conv network on each local position and an MLP on the
global, then a dot product (the paper's "encode-and-dot-product" architecture). DIM(L) maximises
the average over positions of a lower bound on I(m_i; y): the Jensen-Shannon estimator (default,
the paper's main choice) or InfoNCE, with the other images' locals as negatives.

M is, as in the paper, an intermediate layer's map (``local_layer``, e.g. a ResNet's "layer3": 7x7 at
28 px with a stride-1 stem, the paper's 8x8 at 32 px), so that y = f(M) passes through more layers;
``local_layer: null`` takes the last map, whose mean *is* y.

Left out: the global-DIM term (alpha = 0, as in DIM(L)) and the prior-matching adversarial term
(gamma); the paper uses gamma = 0.1 to shape the marginal of y, not for the local MI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.errors import IncompatibleError, SelfsupError
from selfsup.losses.contrastive import infonce_bound
from selfsup.losses.mutual_info import dim_infonce, dim_jsd
from selfsup.methods.base import Method, StepOutput
from selfsup.registry import BuildContext, register


@dataclass
class DIMConfig:
    estimator: str = "jsd"  # "jsd" | "infonce" (Hjelm et al. 2019, eq. 4 and 5)
    nce_negatives: str = "locals"  # infonce: "locals" (paper, eq. 5) swaps the local; "globals" swaps the global
    embed_dim: int = 2048  # units of the critic's embedding networks (the official code's mi_units)
    # the encoder submodule whose output is the local map M (a name of encoder.named_modules(), e.g.
    # "layer3" of a ResNet); None = the last map (forward_maps), whose positions average to y
    local_layer: str | None = None


class CriticEmbedding(nn.Module):
    """One side of the encode-and-dot-product critic (the official code's MI1x1ConvNet): a
    2-layer ReLU network plus a linear shortcut, then LayerNorm. Applied to every local position
    it is a 1x1-conv network (a 1x1 convolution is a Linear at every position); applied to the
    global vector it is an MLP. [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.shortcut = nn.Linear(in_dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # positions of all images share the BatchNorm statistics
        h = self.fc2(torch.relu(self.bn(self.fc1(x))))
        return self.norm(h + self.shortcut(x)).view(*shape[:-1], -1)


@register("dim", config=DIMConfig, views="simclr")
class DIM(Method):
    """Deep InfoMax (local): maximise MI between the global vector and every local feature."""

    def __init__(self, encoder: nn.Module, cfg: DIMConfig = DIMConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if cfg.estimator not in ("jsd", "infonce"):
            raise SelfsupError(f"dim estimator must be 'jsd' or 'infonce', got {cfg.estimator!r}")
        if not hasattr(encoder, "forward_maps"):
            raise IncompatibleError(f"dim needs local features: {type(encoder).__name__} has no forward_maps(x)")
        self.cfg = cfg
        self.encoder = encoder
        c = cast(int, encoder.num_features)  # forward_maps has as many channels as the pooled output
        self._local = None  # the local_layer's output of the current forward pass
        c_local = c
        if cfg.local_layer is not None:
            modules = dict(encoder.named_modules())
            if cfg.local_layer not in modules or not cfg.local_layer:
                stages = [n for n, _ in encoder.named_children()]
                raise SelfsupError(
                    f"dim local_layer={cfg.local_layer!r} is not a submodule of {type(encoder).__name__}: "
                    f"choose one of {', '.join(stages)} (or null for the last map)"
                )
            layer = modules[cfg.local_layer]
            # channels of its output: the last convolution or BatchNorm inside it
            widths = [
                getattr(m, "out_channels", None) or getattr(m, "num_features", None)
                for m in layer.modules()
                if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))
            ]
            if not widths:
                raise SelfsupError(f"dim local_layer={cfg.local_layer!r} holds no convolution: it gives no local map")
            c_local = cast(int, widths[-1])  # a Conv2d's out_channels or a BatchNorm2d's num_features
            layer.register_forward_hook(self._keep_local)
        self.local_embed = CriticEmbedding(c_local, cfg.embed_dim)  # phi_l, 1x1 convs on M
        self.global_embed = CriticEmbedding(c, cfg.embed_dim)  # phi_g, MLP on y

    def _keep_local(self, module, inputs, output) -> None:  # a hook returning a value would replace the output
        if module.training:  # only training steps read it; evaluation's forwards keep nothing alive
            self._local = output

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_embed(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [B, C, H, W]; one view
        # [B, C, h, w]; the hook keeps local_layer's map
        maps = self.encoder.forward_maps(x)  # type: ignore[operator]  # a backbone's method
        # y = E(x): every backbone's output is the mean of forward_maps over positions, so pool
        # here rather than run the encoder twice
        y = maps.mean((2, 3))  # [B, C]
        m = maps if self.cfg.local_layer is None else cast(torch.Tensor, self._local)  # M: [B, C', h', w'], the hook's
        self._local = None  # drop the reference: the step's graph holds M as long as it is needed
        local = self.local_embed(m.flatten(2).transpose(1, 2))  # [B, h*w, D]
        glob = self.global_embed(y)  # [B, D]
        if self.cfg.estimator == "jsd":
            loss, mi = dim_jsd(local, glob)
            return StepOutput(loss, {"jsd_mi": mi})
        loss, candidates = dim_infonce(local, glob, self.cfg.nce_negatives)
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), candidates)})
