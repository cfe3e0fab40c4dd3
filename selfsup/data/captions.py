"""Captioned image sets for image-text methods (CLIP), built offline, and user captions from a file.

SYNTHETIC captions: ``captioned-fashion-mnist`` and ``captioned-digits`` pair each image with a
templated, varied sentence that names the item (with synonyms) and attributes measured from the
pixels themselves — brightness (dark / light), size (small / large, from the foreground area) and,
for clothes, width (narrow / wide) — e.g. "a photo of a large dark pullover", "sneaker, small and
light". The captions carry the class, so a CLIP trained on them is weakly supervised: it is the
image-text reference point, and every number on these sets says the captions are generated.

Users bring their own pairs as an image folder with a ``captions.tsv`` (file name, tab, caption):
``selfsup.data.folder.load_captions_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from selfsup.data.dataset import ImageDataset
from selfsup.data.digits import load_digits
from selfsup.data.fashion_mnist import load_fashion_mnist

FASHION_NAMES = [
    ["t-shirt", "top", "tee"],
    ["trouser", "pair of trousers", "pants"],
    ["pullover", "sweater", "jumper"],
    ["dress", "gown"],
    ["coat", "jacket"],
    ["sandal", "open shoe"],
    ["shirt", "blouse"],
    ["sneaker", "trainer", "running shoe"],
    ["bag", "handbag"],
    ["ankle boot", "boot"],
]
DIGIT_NAMES = [
    [w, str(d)] for d, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
]
TEMPLATES = [
    "a photo of a {adj} {name}",
    "a {adj} {name}",
    "{name}, {adj}",
    "an image showing a {adj} {name}",
    "this is a {adj} {name}",
    "a picture of one {adj} {name}",
    "{adj} {name} on a black background",
]


def attributes(images: torch.Tensor) -> list[list[str]]:
    """Words measured from uint8 [N, 1, H, W]: brightness, size and width, each against the set's median."""
    x = images[:, 0].float() / 255
    fg = x > 0.1
    area = fg.flatten(1).float().mean(1)
    bright = (x * fg).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp_min(1)
    cols = fg.any(1).float().sum(1)  # columns the item spans
    words = []
    for a, b, w in zip(
        (area > area.median()).tolist(), (bright > bright.median()).tolist(), (cols > cols.median()).tolist()
    ):
        words.append(["large" if a else "small", "light" if b else "dark", "wide" if w else "narrow"])
    return words


def caption(names: list[list[str]], labels: torch.Tensor, images: torch.Tensor, seed: int) -> list[str]:
    """One templated caption per image: a random template, synonym and 1-2 of its attribute words."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for y, words in zip(labels.tolist(), attributes(images)):
        pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
        chosen = [words[i] for i in sorted(torch.randperm(3, generator=g)[: 1 + pick(2)].tolist())]
        adj = " and ".join(chosen) if pick(2) else " ".join(chosen)
        out.append(TEMPLATES[pick(len(TEMPLATES))].format(adj=adj, name=names[y][pick(len(names[y]))]))
    return out


def _captioned(base, names, name: str):
    def load(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
        ds = base(split, root, image_size)
        caps = caption(names, ds.labels, ds.images, {"train": 0, "test": 1}.get(split, 2))
        return ImageDataset(ds.images, ds.labels, ds.classes, name, caps)

    load.__doc__ = f"{base.__name__[5:]} with SYNTHETIC templated captions (selfsup.data.captions)."
    return load


load_captioned_fashion_mnist = _captioned(load_fashion_mnist, FASHION_NAMES, "captioned-fashion-mnist")
load_captioned_digits = _captioned(load_digits, DIGIT_NAMES, "captioned-digits")
