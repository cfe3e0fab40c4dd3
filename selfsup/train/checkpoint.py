"""Checkpoints: weights in safetensors, optimiser/RNG/loop state loaded with weights_only=True.

A checkpoint is a directory written under a temporary name and renamed into place, so a
crash mid-write leaves the previous one intact.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path: str | Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict, meta: dict) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in method.state_dict().items()}
    save_file(tensors, tmp / "model.safetensors", metadata={k: str(v) for k, v in meta.items()})
    torch.save({"optimizer": optimizer.state_dict() if optimizer else None, "state": state}, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    old = path.parent / f".{path.name}.old{os.getpid()}"
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(path: str | Path) -> dict:
    p = Path(path) / "meta.json"
    if not p.is_file():
        raise CheckpointError(f"{path} holds no checkpoint (meta.json missing); was the run started?")
    return json.loads(p.read_text())


def load_weights(path: str | Path, method: torch.nn.Module, expect: dict | None = None) -> dict:
    """Load weights into ``method``; ``expect`` (e.g. method and backbone names) must match the meta."""
    path = Path(path)
    meta = read_meta(path)
    for key, want in (expect or {}).items():
        if str(meta.get(key)) != str(want):
            raise CheckpointError(f"checkpoint {path} is from {key} {meta.get(key)!r}, not {want!r}: "
                                  f"point at a run of the same {key}, or change --{key} to {meta.get(key)!r}")
    try:
        tensors = load_file(path / "model.safetensors")
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{path / 'model.safetensors'} is unreadable ({e}); the file is damaged") from None
    try:
        missing, unexpected = method.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatches: another width or channel count
        raise CheckpointError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[-1].strip()}): it was "
                              f"made with another backbone configuration ({meta.get('backbone')})") from None
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}): it was made with another method or backbone configuration")
    return meta


def load_state(path: str | Path) -> dict:
    """Optimiser, RNG and loop state; weights_only=True refuses anything but tensors and plain data."""
    file = Path(path) / "state.pt"
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing: the checkpoint is incomplete; start a new run") from None
    except Exception as e:  # truncated zip, or a pickle asking for code weights_only refuses
        raise CheckpointError(f"{file} is damaged or unsafe to load ({type(e).__name__}); it was refused. "
                              f"Start a new run, or restore the file from a backup") from None
