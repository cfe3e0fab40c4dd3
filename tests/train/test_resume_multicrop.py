"""SwAV (queues, prototype-freeze counter) and DINO (centre, teacher, progress buffer) resume exactly."""

from __future__ import annotations

import pytest

from selfsup.train import fit
from test_resume import assert_same_weights, interrupted_then_resumed, weights

HEADS = {
    # the queue fills from the first step and is full (64 = one batch) from the second: resuming must
    # restore its contents; prototypes are frozen for 3 steps, across the interruption
    "swav": (
        "method.proj_hidden=32",
        "method.proj_dim=16",
        "method.num_prototypes=10",
        "method.queue_size=64",
        "method.queue_start=0.0",
        "method.freeze_prototypes_iters=3",
    ),
    "dino": ("method.out_dim=32", "method.hidden_dim=32", "method.bottleneck_dim=8", "method.freeze_last_layer=0.2"),
}
OVERRIDES = ("train.epochs=2", "optim.warmup=0.25", "views.num_local=2", "views.local_size=5")


@pytest.mark.parametrize("method,stop,every_step", [("swav", 2, True), ("dino", 5, True), ("dino", 6, False)])
def test_multicrop_methods_resume_exactly(tiny_config, tmp_path, monkeypatch, method, stop, every_step):
    overrides = (*OVERRIDES, *HEADS[method])
    fit(tiny_config(method, *overrides), tmp_path / "a", progress_bar=False)
    b = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, method, stop, every_step, *overrides)
    assert_same_weights(tmp_path / "a", b)  # buffers included: queues, counters, centre
    keys = weights(b).keys()
    assert {"swav": "queues.0.data", "dino": "center"}[method] in keys
