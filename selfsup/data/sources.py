"""Every dataset by name: the :data:`DATASETS` registry and :func:`load_dataset`.

Every source returns an :class:`~selfsup.data.dataset.ImageDataset` holding ``uint8 [N, C, H, W]``
images.  Self-supervised pre-training on small images is data-loading bound,
so we decode once, keep compact uint8 tensors in memory, and leave
augmentation to GPU-side code.  Nothing is cached on disk.

Sources, one module each: ``fashion-mnist`` (idx files, incl. the Debian
``dataset-fashion-mnist`` package; ``fashion_mnist.py``), ``digits`` (bundled with
scikit-learn; ``digits.py``), ``cifar10`` / ``cifar100`` (python pickle batches, read with a
restricted unpickler; ``cifar.py``), ``imagefolder`` (a folder of image files; ``folder.py``),
``array`` (``.npy`` / ``.npz``; ``arrays.py``) and ``signals`` (synthetic labelled 1-D waveforms,
generated from a seed; ``signals.py``).  Then the sets derived from them: synthetic colour,
captioned and video sets (``colored.py``, ``captions.py``, ``video.py``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Optional

from selfsup.data.arrays import load_array
from selfsup.data.captions import load_captioned_digits, load_captioned_fashion_mnist
from selfsup.data.cifar import load_cifar10, load_cifar100
from selfsup.data.colored import (
    load_color_digits,
    load_color_fashion_mnist,
    load_tinted_digits,
    load_tinted_fashion_mnist,
)
from selfsup.data.dataset import SPLITS, DatasetError, ImageDataset, resize_images
from selfsup.data.digits import load_digits
from selfsup.data.fashion_mnist import load_fashion_mnist
from selfsup.data.folder import load_imagefolder
from selfsup.data.signals import load_signals
from selfsup.data.video import load_moving_shapes
from selfsup.registry import Registry

__all__ = ["DATASETS", "Loader", "list_datasets", "load_dataset"]

Loader = Callable[[str, Optional[Path], Optional[int]], ImageDataset]

DATASETS: Registry[Loader] = Registry("dataset", error=DatasetError)
for _name, _loader in (
    ("fashion-mnist", load_fashion_mnist),
    ("digits", load_digits),
    ("cifar10", load_cifar10),
    ("cifar100", load_cifar100),
    ("imagefolder", load_imagefolder),
    ("array", load_array),
    ("signals", load_signals),
):
    DATASETS.add(_name, _loader)

# synthetic colour sets (hue by class) for the colour pretext tasks: colorization, split-brain
DATASETS.add("color-fashion-mnist", load_color_fashion_mnist)
DATASETS.add("color-digits", load_color_digits)
# the same with a random hue per image (colour a nuisance, not the label): the colour-augmentation ablation
DATASETS.add("tinted-fashion-mnist", load_tinted_fashion_mnist)
DATASETS.add("tinted-digits", load_tinted_digits)
DATASETS.add("captioned-fashion-mnist", load_captioned_fashion_mnist)  # SYNTHETIC templated captions (CLIP)
DATASETS.add("captioned-digits", load_captioned_digits)
DATASETS.add("moving-shapes", load_moving_shapes)  # SYNTHETIC videos as 2x2 frame mosaics (video colorization)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, in registration order (the sources, then derived sets)."""
    return list(DATASETS)


def load_dataset(
    name: str,
    split: str = "train",
    root: Optional[str | os.PathLike[str]] = None,
    image_size: Optional[int] = None,
) -> ImageDataset:
    """Load dataset ``name`` (see :func:`list_datasets`) fully into memory.

    ``root`` is a folder or file whose meaning depends on the source;
    ``image_size`` resizes every image to a square of that side.
    """
    loader = DATASETS.get(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if image_size is not None and image_size <= 0:
        raise DatasetError(f"image_size must be a positive integer, got {image_size}")
    path = Path(root).expanduser() if root is not None else None
    ds = loader(split, path, image_size)
    if image_size is not None and tuple(ds.images.shape[-2:]) != (image_size, image_size):
        ds = dataclasses.replace(ds, images=resize_images(ds.images, image_size))
    return ds
