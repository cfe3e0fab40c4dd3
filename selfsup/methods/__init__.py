"""Every method; importing this package registers them all.

Each module in this package registers its method(s) when imported, so adding a method is
adding its file: nothing here needs editing.
"""

import importlib
import pkgutil

from selfsup.methods.base import EncodesText, EpochContext, FinetunesOwnEncoder, Method, StepOutput, encoder_to_finetune

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["EncodesText", "EpochContext", "FinetunesOwnEncoder", "Method", "StepOutput", "encoder_to_finetune"]
