"""Data loading for selfsup: whole datasets as in-memory uint8 image tensors."""

from selfsup.data.sources import (
    DATASETS,
    DatasetError,
    ImageDataset,
    list_datasets,
    load_dataset,
)

from selfsup.data.colored import load_color_digits, load_color_fashion_mnist

# synthetic colour sets (hue by class) for the colour pretext tasks: colorization, split-brain
DATASETS["color-fashion-mnist"] = load_color_fashion_mnist
DATASETS["color-digits"] = load_color_digits

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "list_datasets", "load_dataset"]
