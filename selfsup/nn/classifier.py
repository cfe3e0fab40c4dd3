"""The classifier every labelled protocol trains: an encoder and a new linear head (fine-tuning, the
semi-supervised methods, distillation's student), and ``reinitialise``: the same architecture at random
weights, the from-scratch baseline."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones import create_backbone


class Classifier(nn.Module):
    """encoder -> linear head: [B,C,H,W] -> logits [B, num_classes]."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(getattr(encoder, "num_features")), num_classes)  # every backbone declares it
        nn.init.normal_(self.head.weight, std=0.01)  # SimCLR's supervised head: N(0, 0.01^2), zero bias
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def reinitialise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights for ``module`` in place (and its BN statistics reset), deterministically.

    Every layer gets PyTorch's default initialisation (``reset_parameters``); then every backbone
    built by ``create_backbone`` gets exactly the weights a fresh one of its kind would have
    (its own scheme: Kaiming, zero-initialised last BN of each residual block).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        for m in module.modules():
            args = getattr(m, "backbone_args", None)
            if args is not None:
                fresh = create_backbone(**args)
                m.load_state_dict(
                    {k: v.to(p.device) for (k, v), p in zip(fresh.state_dict().items(), m.state_dict().values())}
                )
    return module
