"""The training loop, optimisers and checkpoints.

``fit``, ``resume`` and ``TrainingError`` are loaded on first use (PEP 562), so that the lower
layers (selfsup.engine reads checkpoints) can import ``selfsup.train.checkpoint`` without pulling
in the loop, which itself builds methods through selfsup.engine."""

__all__ = ["TrainingError", "fit", "resume"]


def __getattr__(name: str):
    if name in __all__:
        from selfsup.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'selfsup.train' has no attribute {name!r}")
