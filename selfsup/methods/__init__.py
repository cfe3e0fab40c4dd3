"""Every method; importing this package registers them all."""
from selfsup.methods.base import Method, StepOutput
from selfsup.methods import byol, simclr  # noqa: F401  (registration side effect)

__all__ = ["Method", "StepOutput"]
