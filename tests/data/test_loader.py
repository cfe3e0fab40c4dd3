"""The in-memory loader: seeded epoch order, resumable position, disjoint shards; Batch.to."""

from __future__ import annotations

import pytest
import torch

from selfsup.data.batch import Batch
from selfsup.data.loader import InMemoryLoader

IMAGES = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1).expand(103, 1, 2, 2).contiguous()
LABELS = torch.arange(103) % 10


def indices(loader, epoch, start=0):
    return [b.index.tolist() for b in loader.iterate(epoch, start)]


def test_epoch_covers_the_data_once_and_drops_the_last_partial_batch():
    loader = InMemoryLoader(IMAGES, LABELS, batch_size=10, seed=3)
    assert len(loader) == 10
    batches = list(loader.iterate(0))
    assert len(batches) == 10
    flat = [i for b in batches for i in b.index.tolist()]
    assert len(flat) == len(set(flat)) == 100
    for b in batches:
        assert torch.equal(b.images[:, 0, 0, 0].long(), b.index)  # images and index agree
        assert torch.equal(b.labels, LABELS[b.index])
        assert b.images.dtype == torch.uint8 and b.views == []


def test_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    a, b = InMemoryLoader(IMAGES, LABELS, 10, seed=3), InMemoryLoader(IMAGES, LABELS, 10, seed=3)
    assert indices(a, 0) == indices(b, 0)
    assert indices(a, 0) != indices(a, 1)
    assert indices(a, 0) != indices(InMemoryLoader(IMAGES, LABELS, 10, seed=4), 0)
    assert indices(a, 2, start=4) == indices(a, 2)[4:]


def test_processes_get_disjoint_shares():
    shards = [InMemoryLoader(IMAGES, None, 10, seed=1, rank=r, world_size=3) for r in range(3)]
    assert len(shards[0]) == 103 // 30
    seen = [set(i for b in indices(s, 0) for i in b) for s in shards]
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert all(b.labels is None for b in shards[0].iterate(0))


def test_too_large_batch_names_the_largest_that_fits():
    with pytest.raises(ValueError, match="--batch-size 103"):
        InMemoryLoader(IMAGES, LABELS, batch_size=200)
    with pytest.raises(ValueError, match="--batch-size 51"):
        InMemoryLoader(IMAGES, LABELS, batch_size=60, world_size=2)


def test_batch_to_keeps_every_field():
    b = Batch(IMAGES[:4], torch.arange(4), None, [torch.zeros(4, 1, 2, 2)])
    c = b.to("cpu")
    assert torch.equal(c.images, b.images) and c.labels is None and len(c.views) == 1
