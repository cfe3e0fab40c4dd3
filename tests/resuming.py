"""A helper for the resume tests of every directory (tests/ is on sys.path through its conftest.py)."""

from __future__ import annotations

from selfsup.train import loop


def interrupt_after(monkeypatch, steps: int) -> None:
    """Ctrl-C during optimiser step ``steps + 1`` (after its backward, before the update)."""
    calls = {"n": 0}
    real = loop.set_lr

    def set_lr(opt, factor):
        calls["n"] += 1
        if calls["n"] > steps:
            raise KeyboardInterrupt
        real(opt, factor)

    monkeypatch.setattr(loop, "set_lr", set_lr)
