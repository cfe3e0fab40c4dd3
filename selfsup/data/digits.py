"""scikit-learn's bundled 8x8 digits, with a fixed seeded 80/20 train/test split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from selfsup.data.dataset import ImageDataset

DIGITS_SPLIT_SEED = 0
DIGITS_TRAIN_FRACTION = 0.8


def _stratified_split(labels: np.ndarray, train_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded, per-class split of indices into sorted train / test arrays."""
    perm = np.random.default_rng(seed).permutation(len(labels))
    train, test = [], []
    for c in np.unique(labels):
        idx = perm[labels[perm] == c]
        n_train = int(round(train_fraction * len(idx)))
        train.append(idx[:n_train])
        test.append(idx[n_train:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def load_digits(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """scikit-learn's 8x8 digits (values 0..16 scaled to 0..255), fixed 80/20 split.

    ``root`` is ignored: the data ships inside scikit-learn.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    idx = _stratified_split(labels, DIGITS_TRAIN_FRACTION, DIGITS_SPLIT_SEED)[split]
    return ImageDataset(
        images=torch.from_numpy(images[idx]).unsqueeze(1),
        labels=torch.from_numpy(labels[idx]),
        classes=[str(d) for d in range(10)],
        name="digits",
    )
