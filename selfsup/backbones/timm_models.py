"""Any timm model as an encoder (``--backbone timm:NAME``), and weights a user already has.

timm (Wightman, "PyTorch Image Models") builds hundreds of architectures by name; with
``num_classes=0`` a model returns its globally pooled features, which is the encoder contract
([B, C, H, W] -> [B, num_features]). Nothing is downloaded: the model is built with random weights,
and ``backbone.weights=FILE`` loads a local file the user brings (``load_backbone_weights``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.errors import SelfsupError, UnknownNameError

PREFIX = "timm:"
_CLASSIFIER_KEYS = ("fc.", "head.", "classifier.", "head.fc.", "last_linear.")  # heads a feature encoder drops


class TimmBackbone(nn.Module):
    """``timm.create_model(name, num_classes=0, in_chans=...)``: pooled features, ``num_features`` wide.
    ``image_size`` is passed to models that take one (ViTs size their position embeddings by it)."""

    def __init__(self, name: str, in_channels: int = 3, image_size: int | None = None):
        super().__init__()
        import timm

        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            raise UnknownNameError(
                f"timm has no model {name!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
                + " (timm.list_models('PATTERN*') lists them)"
            )
        kwargs: dict[str, Any] = dict(pretrained=False, num_classes=0, in_chans=in_channels)
        model = None
        try:
            model = timm.create_model(name, img_size=image_size, **kwargs) if image_size else None
        except TypeError:  # a CNN: no img_size argument
            model = None
        self.model: nn.Module = model if model is not None else timm.create_model(name, **kwargs)
        self.num_features = int(getattr(self.model, "num_features"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # [B, num_features]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or a torch file read with ``weights_only=True``
    (never unpickling code); a checkpoint that nests them under "state_dict" or "model" is unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone.weights={path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise SelfsupError(
                f"backbone.weights={path}: not a weights file torch.load(weights_only=True) reads "
                f"({type(e).__name__}); give a .safetensors or a state dict saved with torch.save"
            ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SelfsupError(f"backbone.weights={path}: expected a dict of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in sd.items()}  # DDP's prefix


def load_backbone_weights(encoder: nn.Module, path: str | Path) -> dict:
    """Load a state dict into ``encoder`` before pretraining: keys of selfsup's backbones (torchvision's
    ResNet names), of timm's model (for ``timm:`` backbones, with or without the ``model.`` prefix) or
    of a selfsup export. Classifier heads in the file are ignored; any other missing or unexpected key,
    or a shape that differs, is an error naming it. Returns {"loaded": n, "ignored": [keys]}."""
    sd = read_state_dict(path)
    own = encoder.state_dict()
    if isinstance(encoder, TimmBackbone) and not any(k.startswith("model.") for k in sd):
        sd = {f"model.{k}": v for k, v in sd.items()}
    if not any(k in own for k in sd) and all(k.startswith("encoder.") for k in sd):
        sd = {k.removeprefix("encoder."): v for k, v in sd.items()}  # a whole selfsup method's checkpoint
    ignored = [k for k in sd if k not in own and any(k.split("model.", 1)[-1].startswith(c) for c in _CLASSIFIER_KEYS)]
    unexpected = [k for k in sd if k not in own and k not in ignored]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape
    ]
    if unexpected or missing or shapes:
        raise SelfsupError(
            f"backbone.weights={path} does not fit the {getattr(encoder, 'backbone_args', {}).get('name')} "
            f"backbone: "
            + "; ".join(
                p
                for p in (
                    f"missing {missing[:3]}" if missing else "",
                    f"unexpected {unexpected[:3]}" if unexpected else "",
                    f"other shapes {shapes[:2]}" if shapes else "",
                )
                if p
            )
            + ". Check backbone.name, width, small_stem and the input channels against the file's model"
        )
    encoder.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return {"loaded": len(sd) - len(ignored), "ignored": ignored}
