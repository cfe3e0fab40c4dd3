"""Checkpoints: round trip, refusal of mismatched or damaged files, no code execution on load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import selfsup
from selfsup.checkpoint import (
    CheckpointDamaged,
    CheckpointError,
    load_checkpoint,
    load_state,
    load_weights,
    read_meta,
    save_checkpoint,
)


def make(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return selfsup.create_method(name, backbone="convnet", in_channels=1, width=0.25, **kw)


def save(path: Path, method, name: str, optimizer=None, state=None) -> None:
    save_checkpoint(
        path,
        method,
        optimizer,
        state or {"loop": {"step": 3}},
        {"method": name, "backbone": "convnet(width=0.25, small_stem=True)", "step": 3},
    )


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "previous"]  # no temporaries
    load_weights(tmp_path / "previous", fresh)  # the replaced one is kept, one step behind
    assert torch.equal(fresh.encoder.features[0].weight + 1.0, m.encoder.features[0].weight)


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


def two_checkpoints(tmp_path: Path):
    """checkpoints/last at step 5 over checkpoints/previous at step 3; returns the step-3 weights."""
    m = make("simclr")
    save_checkpoint(tmp_path / "last", m, None, {"loop": {"step": 3}}, {"method": "simclr", "step": 3})
    old = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        m.encoder.features[0].weight.mul_(2.0)
    save_checkpoint(tmp_path / "last", m, None, {"loop": {"step": 5}}, {"method": "simclr", "step": 5})
    return old


def test_a_truncated_last_checkpoint_is_detected_and_the_previous_one_used(tmp_path):
    old = two_checkpoints(tmp_path)
    f = tmp_path / "last" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # what a full disk or a crash can leave
    m = make("simclr", seed=7)
    with pytest.warns(UserWarning, match="damaged.*using the previous checkpoint .*previous \\(step 3\\)"):
        meta, state, used = load_checkpoint(tmp_path / "last", m, {"method": "simclr"})
    assert used == tmp_path / "previous" and meta["step"] == 3 and state["state"]["loop"] == {"step": 3}
    assert all(torch.equal(m.state_dict()[k], v) for k, v in old.items())


def test_a_kill_between_the_two_renames_leaves_previous_to_resume_from(tmp_path):
    two_checkpoints(tmp_path)
    (tmp_path / "last").rename(tmp_path / ".last.tmp123")  # last moved away, the new one not yet in place
    meta, _, used = load_checkpoint(tmp_path / "last", make("simclr"), {"method": "simclr"})
    assert used.name == "previous" and meta["step"] == 3


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    two_checkpoints(tmp_path)
    for d in ("last", "previous"):
        (tmp_path / d / "state.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointDamaged, match="no usable checkpoint"):
        load_checkpoint(tmp_path / "last", make("simclr"))
    with pytest.raises(CheckpointDamaged, match="holds no checkpoint"):
        load_checkpoint(tmp_path / "empty" / "last", make("simclr"))


def test_a_checkpoint_of_another_method_is_an_error_not_a_fallback(tmp_path):
    save(tmp_path / "last", make("byol"), "byol")
    save(tmp_path / "last", make("byol"), "byol")
    with pytest.raises(CheckpointError, match="byol") as e:
        load_checkpoint(tmp_path / "last", make("simclr"), {"method": "simclr"})
    assert not isinstance(e.value, CheckpointDamaged)


def test_disk_full_while_saving_loses_no_earlier_checkpoint(tmp_path, monkeypatch):
    import errno

    from selfsup import checkpoint

    old = two_checkpoints(tmp_path)
    real = checkpoint.torch.save

    def full_disk(obj, f, *a, **kw):  # the weights were written; the disk fills on state.pt
        real(obj, f, *a, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    m = make("simclr", seed=4)
    with pytest.raises(CheckpointError, match="No space left on device.*intact.*Free disk space"):
        save_checkpoint(tmp_path / "last", m, None, {"loop": {"step": 7}}, {"method": "simclr", "step": 7})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "previous"]  # no half-written temporary
    fresh = make("simclr", seed=9)
    meta, _, used = load_checkpoint(tmp_path / "last", fresh)
    assert used.name == "last" and meta["step"] == 5
    w = "encoder.features.0.weight"
    assert torch.equal(fresh.state_dict()[w], 2 * old[w])  # step 5's weights, untouched by the failed save
