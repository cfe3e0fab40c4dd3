"""The training loop, optimisers and checkpoints."""
from selfsup.train.loop import TrainingError, fit, resume

__all__ = ["TrainingError", "fit", "resume"]
