"""Data loading for selfsup: whole datasets as in-memory uint8 image tensors."""

from selfsup.data.sources import (
    DATASETS,
    DatasetError,
    ImageDataset,
    list_datasets,
    load_dataset,
)

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "list_datasets", "load_dataset"]
