"""Encoders: ``create_backbone(name, in_channels, **kwargs)`` -> module with ``num_features``."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from selfsup.backbones.conv1d import Conv1dEncoder
from selfsup.backbones.convnet import ConvNet
from selfsup.backbones.resnet import RESNET_LAYERS, ResNet
from selfsup.backbones.timm_models import PREFIX, TimmBackbone
from selfsup.backbones.vit import VIT_SIZES, ViT
from selfsup.errors import IncompatibleError, SelfsupError
from selfsup.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")
for _name in RESNET_LAYERS:
    BACKBONES.add(_name, partial(ResNet, _name))
BACKBONES.add("convnet", ConvNet)
BACKBONES.add("conv1d", Conv1dEncoder)  # 1-D sequences (CPC audio encoder), input read as x.flatten(2)
for _name in VIT_SIZES:
    BACKBONES.add(_name, partial(ViT, _name))


def list_backbones() -> list[str]:
    return BACKBONES.names()


def create_backbone(
    name: str = "resnet18",
    in_channels: int = 3,
    width: float = 1.0,
    small_stem: bool = True,
    stem_stride: int = 1,
    image_size: int | None = None,
    patch_size: int = 4,
    pos_embed: str = "sincos",
    drop_path: float = 0.0,
    pool: str = "token",
) -> nn.Module:
    """Build an encoder. Every backbone maps [B, in_channels, H, W] to [B, num_features].
    ``timm:NAME`` builds timm's model NAME (global-pooled features; ``image_size`` for ViTs).

    CNNs take ``width`` (a channel multiplier), ``small_stem`` and ``stem_stride``; ViTs (vit_micro,
    vit_tiny, vit_small, vit_base) take ``image_size`` (required: their position embeddings are per
    patch), ``patch_size``, ``pos_embed`` (sincos | learned), ``drop_path`` and ``pool`` (token: the [CLS]
    output; avg: the mean of the patch tokens, as BEiT's linear probe).

    >>> create_backbone("resnet18", in_channels=1, width=0.5).num_features
    256
    """
    model: nn.Module
    if name.startswith(PREFIX):  # any timm model by name (random init; backbone.weights loads a file)
        model = TimmBackbone(name[len(PREFIX) :], in_channels, image_size)
        setattr(model, "backbone_args", {"name": name, "in_channels": in_channels, "image_size": image_size})
        return model
    build = BACKBONES.get(name, hint=f"; or {PREFIX}NAME for a timm model")
    if name in VIT_SIZES:
        if image_size is None:
            raise SelfsupError(f"{name} needs the image side (its position embeddings are per patch): image_size=...")
        if width != 1.0:
            raise SelfsupError(
                f"{name}: width={width} applies to CNNs; pick a ViT size instead ({', '.join(VIT_SIZES)})"
            )
        args = dict(
            in_channels=in_channels,
            image_size=image_size,
            patch_size=patch_size,
            pos_embed=pos_embed,
            drop_path=drop_path,
            pool=pool,
        )
        model = build(**args)
        setattr(model, "backbone_args", {"name": name, **args})
        return model
    if pool != "token":
        raise SelfsupError(
            f"backbone.pool={pool!r} applies to ViTs ({', '.join(VIT_SIZES)}); a CNN's features are "
            "always the average of its last feature map"
        )
    args = dict(in_channels=in_channels, width=width, small_stem=small_stem, stem_stride=stem_stride)
    model = build(**args)
    setattr(model, "backbone_args", {"name": name, **args})  # lets a method build a sibling (clone_backbone)
    return model


def clone_backbone(encoder: nn.Module, **changes) -> nn.Module:
    """A freshly initialised backbone of the same kind as ``encoder``, with ``changes`` applied.

    For methods with one encoder per view (CMC: L and ab of Lab need 1 and 2 input channels):
    ``clone_backbone(encoder, in_channels=2)``.
    """
    args = getattr(encoder, "backbone_args", None)
    if args is None:
        raise IncompatibleError(
            f"{type(encoder).__name__} was not built by create_backbone, so this method cannot build "
            f"a second encoder like it; pass a backbone name instead of a module"
        )
    return create_backbone(**{**args, **changes})


__all__ = ["BACKBONES", "ConvNet", "ResNet", "ViT", "clone_backbone", "create_backbone", "list_backbones"]
