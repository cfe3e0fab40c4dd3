"""Bank methods resume exactly: an interrupted and resumed InstDisc / CMC run ends with the weights,
memory banks and NCE normaliser of an uninterrupted one (all of it lives in buffers)."""

from __future__ import annotations

import pytest
import torch
from resuming import interrupt_after
from safetensors.torch import load_file

from selfsup.train import fit, resume

OVERRIDES = ("train.epochs=2", "optim.warmup=0.25", "method.negatives=64")  # 4 steps per epoch


def weights(run):
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


@pytest.mark.parametrize("method,stop", [("instdisc", 3), ("cmc", 5)])
def test_bank_method_resumes_exactly(tiny_config, tmp_path, monkeypatch, method, stop):
    fit(tiny_config(method, *OVERRIDES), tmp_path / "a", progress_bar=False)
    with monkeypatch.context() as m:
        interrupt_after(m, stop)  # Ctrl-C during optimiser step stop + 1
        with pytest.raises(KeyboardInterrupt):
            fit(tiny_config(method, *OVERRIDES, "train.checkpoint_minutes=1.0e-6"), tmp_path / "b", progress_bar=False)
    resume(tmp_path / "b", progress_bar=False)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    banks = [k for k in wa if "bank" in k]
    assert banks, "the memory bank must be part of the checkpoint"
    if method == "instdisc":
        assert wa["nce_z"] > 0
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=lambda msg: f"{k}: {msg}")
