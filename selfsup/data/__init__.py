"""Data loading for selfsup: whole datasets as in-memory uint8 image tensors."""

from selfsup.data.sources import (
    DATASETS,
    DatasetError,
    ImageDataset,
    list_datasets,
    load_dataset,
)

from selfsup.data.colored import (load_color_digits, load_color_fashion_mnist, load_tinted_digits,
                                  load_tinted_fashion_mnist)
from selfsup.data.captions import load_captioned_digits, load_captioned_fashion_mnist
from selfsup.data.video import load_moving_shapes

# synthetic colour sets (hue by class) for the colour pretext tasks: colorization, split-brain
DATASETS.add("color-fashion-mnist", load_color_fashion_mnist)
DATASETS.add("color-digits", load_color_digits)
# the same with a random hue per image (colour a nuisance, not the label): the colour-augmentation ablation
DATASETS.add("tinted-fashion-mnist", load_tinted_fashion_mnist)
DATASETS.add("tinted-digits", load_tinted_digits)
DATASETS.add("captioned-fashion-mnist", load_captioned_fashion_mnist)  # SYNTHETIC templated captions (CLIP)
DATASETS.add("captioned-digits", load_captioned_digits)
DATASETS.add("moving-shapes", load_moving_shapes)  # SYNTHETIC videos as 2x2 frame mosaics (video colorization)

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "list_datasets", "load_dataset"]
