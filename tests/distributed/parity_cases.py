"""The methods whose distributed step must equal one process's step on the whole batch.

Shared by the torchrun worker (``parity_worker.py``: 2 processes, B rows each) and the test
(one process, the same 2B rows): both build the same method from the same seed and the same
global batch, and each process takes its slice of every view.
"""

from __future__ import annotations

import torch

import selfsup
from selfsup.data.batch import Batch

B = 8  # rows per process; the one-process reference sees 2B
SIZE, LOCAL = 16, 8

# small heads so a step takes milliseconds; each method in its distributed-sensitive setting
CASES = {
    "simclr": dict(proj_hidden=32, proj_dim=16),
    "clip": dict(embed_dim=16, text_width=16, text_layers=1, text_heads=2, context=12),
    "barlow": dict(proj_hidden=32, proj_dim=32),
    "vicreg": dict(proj_hidden=32, proj_dim=32),
    "vibcreg": dict(proj_hidden=32, proj_dim=32, iternorm_groups=4),  # IterNorm statistics of the global batch
    "swav": dict(num_prototypes=10, proj_hidden=32, proj_dim=16, freeze_prototypes_iters=0),
    "dino": dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, freeze_last_layer=0.0),
}
MULTI_CROP = {"swav", "dino"}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return selfsup.create_method(name, backbone="convnet", in_channels=1, width=0.25, image_size=SIZE, **CASES[name])


def global_batch(name: str, world: int = 2) -> Batch:
    """The whole batch of ``world * B`` rows, the same in every process (a fixed seed)."""
    g = torch.Generator().manual_seed(1)
    n = world * B
    images = torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=g)
    texts = torch.randint(1, 30, (n, 12), generator=g) if name == "clip" else None
    batch = Batch(images, torch.arange(n), None, texts=texts)
    views = [torch.randn(n, 1, SIZE, SIZE, generator=g) for _ in range(2)]
    if name in MULTI_CROP:
        views += [torch.randn(n, 1, LOCAL, LOCAL, generator=g) for _ in range(2)]
    batch.views = views
    return batch


def eval_images() -> torch.Tensor:
    """37 uint8 images (not a multiple of 2 processes or of the batch) for sharded extraction."""
    return torch.randint(0, 256, (37, 1, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))


def shard(batch: Batch, rank: int, world: int = 2) -> Batch:
    """Rows [rank*B, (rank+1)*B) of every tensor: what process ``rank`` holds."""
    s = slice(rank * B, (rank + 1) * B)
    out = Batch(batch.images[s], batch.index[s], None, texts=batch.texts[s] if batch.texts is not None else None)
    out.views = [v[s] for v in batch.views]
    return out


def step(model: torch.nn.Module, batch: Batch) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, gradients by parameter name) of one forward/backward through ``model`` (the method or
    its DDP wrapper)."""
    model.train()
    loss = model(batch).loss
    loss.backward()
    module = getattr(model, "module", model)
    grads = {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads
