"""The training loop (``fit``, ``resume``), its optimisers, loggers and pictures."""

from selfsup.train.loop import TrainingError, fit, resume

__all__ = ["TrainingError", "fit", "resume"]
