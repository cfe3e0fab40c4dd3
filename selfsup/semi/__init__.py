"""Semi-supervised learning: one classifier trained on a few labelled and many unlabelled images at
once (FixMatch, MixMatch, VAT, pseudo-labels; and ``supervised``, the labels-only baseline), from scratch or from a self-supervised run's encoder.

``create_semi_method(name, overrides)`` gives a method and its training settings;
``selfsup.semi.train.train_semi`` runs it; ``selfsup semi`` (``semi_classifier``) writes the same
classifier directory as ``selfsup classify``, which ``selfsup predict`` reads.
"""

from selfsup.semi import fixmatch, mixmatch, pseudolabel, supervised, vat  # noqa: F401  (each file registers its method)
from selfsup.semi.base import SemiConfig, SemiMethod, create_semi_method, list_semi_methods

__all__ = ["SemiConfig", "SemiMethod", "create_semi_method", "list_semi_methods"]
