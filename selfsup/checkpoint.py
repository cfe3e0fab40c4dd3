"""Checkpoints: weights in safetensors, optimiser/RNG/loop state loaded with weights_only=True.

A checkpoint is a directory written under a temporary name and renamed into place, so a
crash or a full disk mid-write leaves the earlier one intact. The checkpoint it replaces is kept
as ``previous`` beside it; ``load_checkpoint`` falls back to it when ``last`` is damaged (a
truncated file, or a kill between the two renames) and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from typing import IO
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from selfsup.errors import SelfsupError


class CheckpointError(SelfsupError, RuntimeError):
    """A checkpoint that cannot be written or used here; the message names the fix."""


class CheckpointDamaged(CheckpointError):
    """The files are missing, truncated or unsafe (as opposed to a checkpoint of another model)."""


def previous_of(path: str | Path) -> Path:
    """Where ``save_checkpoint(path)`` keeps the checkpoint it replaced: checkpoints/previous."""
    return Path(path).parent / "previous"


def save_checkpoint(
    path: str | Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: dict, meta: dict
) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _remove_orphans(path)
    try:
        tmp.mkdir(parents=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in method.state_dict().items()}
        save_file(tensors, tmp / "model.safetensors", metadata={k: str(v) for k, v in meta.items()})
        torch.save({"optimizer": optimizer.state_dict() if optimizer else None, "state": state}, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():  # on disk before the rename makes it the checkpoint (a power cut loses nothing)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    # disk full, quota, permissions (torch.save reports a full disk as a RuntimeError, safetensors as its own
    # error): the earlier checkpoints are untouched
    except (OSError, RuntimeError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not write the checkpoint {path} ({getattr(e, 'strerror', None) or e}); the "
            f"earlier checkpoint "
            f"in {path.parent} is intact. Free disk space, then continue with "
            f"`selfsup pretrain --resume {path.parent.parent}`"
        ) from None
    prev = previous_of(path)
    if path.exists():
        # last -> previous, then tmp -> last: a kill between the renames leaves previous to resume from
        shutil.rmtree(prev, ignore_errors=True)
        path.rename(prev)
    tmp.rename(path)


class RunLock:
    """An exclusive lock on a run directory (``RUN_DIR/.lock``, fcntl's advisory lock, released by the
    kernel when the process ends, even by kill -9): a second process that would write the same run
    fails at once, naming the holder's pid, instead of interleaving its files with the first one's."""

    NAME = ".lock"

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / self.NAME
        self.file: IO[str] | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.file = file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise CheckpointError(
                f"{self.path.parent} is being written by process {holder} (a pretrain or resume "
                f"still running): wait for it to finish, or choose another --out"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the lock


def _remove_orphans(path: Path) -> None:
    """Temporary checkpoint directories (.last.tmp<PID>) of processes that no longer run: a kill -9
    mid-write leaves one behind (tens of MB each); the next save of any process removes them."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: does the process exist?
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # it exists, owned by someone else
            pass


def read_meta(path: str | Path) -> dict:
    p = Path(path) / "meta.json"
    if not p.is_file():
        raise CheckpointDamaged(f"{path} holds no checkpoint (meta.json missing); was the run started?")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, or not JSON
        raise CheckpointDamaged(f"{p} is unreadable ({type(e).__name__}); the file is damaged") from None
    if not isinstance(meta, dict):  # valid JSON, but not the object the writer makes
        raise CheckpointDamaged(
            f"{p} holds {type(meta).__name__}, not the checkpoint's JSON object; the file is damaged"
        )
    return meta


def load_weights(path: str | Path, method: torch.nn.Module, expect: dict | None = None) -> dict:
    """Load weights into ``method``; ``expect`` (e.g. method and backbone names) must match the meta."""
    path = Path(path)
    meta = read_meta(path)
    for key, want in (expect or {}).items():
        if str(meta.get(key)) != str(want):
            raise CheckpointError(
                f"checkpoint {path} is from {key} {meta.get(key)!r}, not {want!r}: "
                f"point at a run of the same {key}, or change --{key} to {meta.get(key)!r}"
            )
    try:
        tensors = load_file(path / "model.safetensors")
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointDamaged(f"{path / 'model.safetensors'} is unreadable ({e}); the file is damaged") from None
    try:
        missing, unexpected = method.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatches: another width or channel count
        backbone = meta.get("backbone")
        if isinstance(backbone, dict):  # written as "convnet(width=0.25, ...)"
            backbone = f"{backbone.get('name')}({', '.join(f'{k}={v}' for k, v in backbone.items() if k != 'name')})"
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({str(e).splitlines()[-1].strip()}): it was "
            f"made with another configuration of the method's heads or of the backbone (it says "
            f"backbone {backbone}); compare the method and backbone sections of the "
            f"run's config.yaml with the command that built this model"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): it was made with another method or backbone configuration"
        )
    return meta


def load_state(path: str | Path) -> dict:
    """Optimiser, RNG and loop state; weights_only=True refuses anything but tensors and plain data."""
    file = Path(path) / "state.pt"
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointDamaged(f"{file} is missing: the checkpoint is incomplete") from None
    except Exception as e:  # truncated zip, or a pickle asking for code weights_only refuses
        raise CheckpointDamaged(f"{file} is damaged or unsafe to load ({type(e).__name__}); it was refused") from None


def load_checkpoint(
    path: str | Path, method: torch.nn.Module, expect: dict | None = None, with_state: bool = True
) -> tuple[dict, dict | None, Path]:
    """Weights (and, with ``with_state``, optimiser/RNG/loop state) from ``path`` (checkpoints/last),
    or from the previous checkpoint when ``path`` is damaged or missing, with a warning that names
    both. Returns (meta, state or None, the directory used). A checkpoint of another method or
    backbone is an error, never a reason to fall back."""
    path = Path(path)
    errors = []
    for cand in (path, previous_of(path)):
        try:
            meta = load_weights(cand, method, expect)
            state = load_state(cand) if with_state else None
        except CheckpointDamaged as e:
            errors.append(str(e))
            continue
        if errors:
            warnings.warn(f"{errors[0]}; using the previous checkpoint {cand} (step {meta.get('step')})", stacklevel=2)
        return meta, state, cand
    if not path.exists() and not previous_of(path).exists():
        raise CheckpointDamaged(
            f"{path.parent} holds no checkpoint: was the run started? (a run killed before its "
            f"first checkpoint has nothing to resume: start it again)"
        )
    raise CheckpointDamaged(
        f"no usable checkpoint in {path.parent}: "
        + "; ".join(errors)
        + ". Start a new run, or restore the files from a backup"
    )
