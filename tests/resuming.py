"""A helper for the resume tests of every directory (tests/ is on sys.path through its conftest.py)."""

from __future__ import annotations

from selfsup.train import loop


def interrupt_after(monkeypatch, steps: int) -> None:
    """Ctrl-C during optimiser step ``steps + 1`` (after its backward, before the update)."""
    calls = {"n": 0}
    real = loop.lr_factor  # the loop's schedule, asked once per optimiser step (the budget's probe never asks)

    def lr_factor(progress, cfg):
        calls["n"] += 1
        if calls["n"] > steps:
            raise KeyboardInterrupt
        return real(progress, cfg)

    monkeypatch.setattr(loop, "lr_factor", lr_factor)
