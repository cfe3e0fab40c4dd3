"""Data loading for selfsup: whole datasets as in-memory uint8 image tensors."""

from selfsup.data.dataset import DatasetError, ImageDataset
from selfsup.data.sources import DATASETS, list_datasets, load_dataset

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "list_datasets", "load_dataset"]
