"""Batched augmentations (``ops``) and the view presets methods train on (``views``)."""

from selfsup.transforms.views import Views, eval_view, list_view_presets, view_preset

__all__ = ["Views", "eval_view", "list_view_presets", "view_preset"]
