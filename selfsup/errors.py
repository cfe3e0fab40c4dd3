"""selfsup's exceptions for what a user asked for: a bad input, configuration, file or combination.

Every message names the fix. The command line turns these (and only these) into one line,
``selfsup: error: ...``, and exit code 2; any other exception is a bug in selfsup and keeps its
traceback. ``SelfsupError`` is a ValueError, and the name lookups a KeyError, so callers written
against the built-in exceptions keep working.
"""

from __future__ import annotations


class SelfsupError(ValueError):
    """A user error: what was asked for cannot be done as asked; the message says what to change."""


class UnknownNameError(SelfsupError, KeyError):
    """An unknown name (method, backbone, view preset, ...); the message suggests the nearest."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class IncompatibleError(SelfsupError, TypeError):
    """Two valid choices that do not go together (e.g. a method needing ViT tokens given a ResNet)."""
