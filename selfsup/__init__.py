"""selfsup: self-supervised visual representation learning — every method, one loop, one evaluation.

>>> import selfsup
>>> method = selfsup.create_method("simclr", backbone="resnet18", in_channels=1, width=0.25)
>>> method.encoder.num_features
128
"""
from __future__ import annotations

__version__ = "0.1.0"

from selfsup.backbones import create_backbone, list_backbones
from selfsup.registry import list_methods


def create_method(name: str, backbone="resnet18", in_channels: int = 3, width: float = 1.0,
                  small_stem: bool = True, num_samples: int | None = None, image_size: int | None = None,
                  normalization: tuple | None = None, **config):
    """Build a registered method around a backbone (a name or an ``nn.Module`` with ``num_features``).

    ``config`` overrides fields of the method's config dataclass, e.g. ``temperature=0.5``.
    ``num_samples`` is the training-set size, for methods with a memory bank (InstDisc, CMC);
    ``image_size`` the side of the training views, for methods with a decoder (autoencoders);
    ``normalization`` the views' (mean, std), for methods that need absolute colours (colorization).
    """
    from selfsup.config import from_dict
    from selfsup.registry import get_method_spec, instantiate

    spec = get_method_spec(name)
    cfg = from_dict(spec.config, config, "method")
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, in_channels=in_channels, width=width, small_stem=small_stem,
                                   image_size=image_size)
    return instantiate(spec.cls, backbone, cfg, num_samples,
                       (in_channels, image_size, image_size) if image_size else None, normalization)


def list_datasets() -> list[str]:
    from selfsup.data import list_datasets as _ld

    return _ld()


__all__ = ["__version__", "create_backbone", "create_method", "list_backbones", "list_datasets", "list_methods"]
