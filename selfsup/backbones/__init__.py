"""Encoders: ``create_backbone(name, in_channels, **kwargs)`` -> module with ``num_features``."""
from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from selfsup.backbones.convnet import ConvNet
from selfsup.backbones.resnet import _LAYERS, ResNet
from selfsup.registry import unknown_name_message

BACKBONES: dict[str, Callable[..., nn.Module]] = {name: partial(ResNet, name) for name in _LAYERS}
BACKBONES["convnet"] = ConvNet


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def create_backbone(name: str = "resnet18", in_channels: int = 3, width: float = 1.0,
                    small_stem: bool = True, stem_stride: int = 1) -> nn.Module:
    """Build an encoder. Every backbone maps [B, in_channels, H, W] to [B, num_features].

    >>> create_backbone("resnet18", in_channels=1, width=0.5).num_features
    256
    """
    if name not in BACKBONES:
        raise KeyError(unknown_name_message("backbone", name, list(BACKBONES)))
    return BACKBONES[name](in_channels=in_channels, width=width, small_stem=small_stem, stem_stride=stem_stride)


__all__ = ["BACKBONES", "ConvNet", "ResNet", "create_backbone", "list_backbones"]
