"""Checkpoints: round trip, refusal of mismatched or damaged files, no code execution on load."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import selfsup
from selfsup.train.checkpoint import CheckpointError, load_state, load_weights, read_meta, save_checkpoint


def make(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return selfsup.create_method(name, backbone="convnet", in_channels=1, width=0.25, **kw)


def save(path: Path, method, name: str, optimizer=None, state=None) -> None:
    save_checkpoint(path, method, optimizer, state or {"loop": {"step": 3}},
                    {"method": name, "backbone": "convnet(width=0.25, small_stem=True)", "step": 3})


def test_round_trip_restores_weights_optimizer_and_state(tmp_path):
    a = make("byol", seed=0, proj_hidden=32, pred_hidden=32)
    opt = torch.optim.SGD([p for p in a.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    a.encoder.features[1].running_mean.add_(1.5)  # buffers are part of the checkpoint
    loss = sum(p.sum() for p in a.parameters() if p.requires_grad)
    loss.backward()
    opt.step()
    save(tmp_path / "last", a, "byol", opt, {"loop": {"step": 3, "epoch": 1}, "rng": {"views": torch.get_rng_state()}})
    b = make("byol", seed=1, proj_hidden=32, pred_hidden=32)
    meta = load_weights(tmp_path / "last", b, expect={"method": "byol"})
    assert meta["step"] == 3 and read_meta(tmp_path / "last")["method"] == "byol"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    state = load_state(tmp_path / "last")
    assert state["state"]["loop"] == {"step": 3, "epoch": 1}
    opt_b = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    opt_b.load_state_dict(state["optimizer"])
    bufs_a = [s["momentum_buffer"] for s in opt.state.values()]
    bufs_b = [s["momentum_buffer"] for s in opt_b.state.values()]
    assert all(torch.equal(x, y) for x, y in zip(bufs_a, bufs_b))


def test_overwriting_a_checkpoint_is_atomic_and_leaves_no_temporaries(tmp_path):
    m = make("simclr")
    save(tmp_path / "last", m, "simclr")
    with torch.no_grad():
        m.encoder.features[0].weight.add_(1.0)
    save(tmp_path / "last", m, "simclr")
    fresh = make("simclr", seed=3)
    load_weights(tmp_path / "last", fresh)
    assert torch.equal(fresh.encoder.features[0].weight, m.encoder.features[0].weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_byol_checkpoint_into_simclr_names_both(tmp_path):
    save(tmp_path / "last", make("byol"), "byol")
    with pytest.raises(CheckpointError) as e:
        load_weights(tmp_path / "last", make("simclr"), expect={"method": "simclr"})
    assert "byol" in str(e.value) and "simclr" in str(e.value)
    # without the meta check the tensors themselves do not fit
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(tmp_path / "last", make("simclr"))


def test_other_backbone_width_is_a_checkpoint_error(tmp_path):
    save(tmp_path / "last", make("simclr"), "simclr")
    torch.manual_seed(0)
    wider = selfsup.create_method("simclr", backbone="convnet", in_channels=1, width=0.5)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(tmp_path / "last", wider)


def test_truncated_weights_are_a_checkpoint_error(tmp_path):
    save(tmp_path / "last", make("simclr"), "simclr")
    f = tmp_path / "last" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_weights(tmp_path / "last", make("simclr"))


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="meta.json"):
        load_weights(tmp_path / "nothing", make("simclr"))


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): what a malicious state.pt would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def write_malicious_state(run: Path, marker: Path) -> None:
    torch.save({"optimizer": None, "state": {"loop": _RunsCode(str(marker))}}, run / "state.pt")


def test_load_state_refuses_pickled_code(tmp_path):
    save(tmp_path / "last", make("simclr"), "simclr")
    marker = tmp_path / "pwned"
    write_malicious_state(tmp_path / "last", marker)
    with pytest.raises(Exception):
        load_state(tmp_path / "last")
    assert not marker.exists(), "loading state.pt executed code from the file"
    # the crafted file really does run code on a plain unpickler, so the check above means something
    torch.load(tmp_path / "last" / "state.pt", weights_only=False)
    assert marker.exists()


def test_tampered_state_is_a_checkpoint_error(tmp_path):
    """Like a damaged model.safetensors, a state.pt that cannot be loaded safely is a CheckpointError
    (which the CLI reports in one line) rather than torch's UnpicklingError."""
    save(tmp_path / "last", make("simclr"), "simclr")
    marker = tmp_path / "pwned"
    write_malicious_state(tmp_path / "last", marker)
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "last")
    assert not marker.exists()


def test_truncated_state_is_a_checkpoint_error(tmp_path):
    save(tmp_path / "last", make("simclr"), "simclr")
    f = tmp_path / "last" / "state.pt"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "last")
