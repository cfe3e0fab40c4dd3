"""Name -> method registry.

A method registers itself with ``@register("simclr", config=SimCLRConfig, views="simclr")``.
The registry is what ``selfsup list methods``, ``create_method`` and the registry-wide tests
iterate over, so adding a method is: its file, its recipe in ``configs/``, nothing else.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Callable

from selfsup.errors import SelfsupError, UnknownNameError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    config: type  # dataclass holding the method's hyper-parameters (paper defaults)
    views: str  # name of the view preset in selfsup.transforms.views
    uses_labels: bool = False  # supervised reference points are marked as such
    summary: str = ""


_METHODS: dict[str, MethodSpec] = {}


def register(name: str, *, config: type, views: str, uses_labels: bool = False) -> Callable[[type], type]:
    """Class decorator that registers a Method under ``name``; duplicate names fail."""

    def wrap(cls: type) -> type:
        if name in _METHODS:
            raise SelfsupError(f"method {name!r} is already registered by {_METHODS[name].cls.__module__}")
        doc = (cls.__doc__ or "").strip().splitlines()
        _METHODS[name] = MethodSpec(name, cls, config, views, uses_labels, doc[0] if doc else "")
        cls.name = name
        return cls

    return wrap


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown method 'simclrr'; did you mean 'simclr'? Known: ...' — shared by every registry."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} Known {kind}s: {', '.join(sorted(known))}"


# View presets (selfsup.transforms.views registers them): name -> a ViewConfig of the preset's defaults.
# Kept here so that composing a configuration (core) can read a method's preset without importing
# the transforms that apply it.
_VIEW_PRESETS: dict[str, object] = {}


def register_view_preset(name: str, defaults) -> None:
    if name in _VIEW_PRESETS:
        raise SelfsupError(f"view preset {name!r} is already registered")
    _VIEW_PRESETS[name] = defaults


def view_preset(name: str):
    """A fresh copy of the preset's ViewConfig (changing it leaves the preset as it was)."""
    if name not in _VIEW_PRESETS:
        raise UnknownNameError(unknown_name_message("view preset", name, list(_VIEW_PRESETS)))
    return dataclasses.replace(_VIEW_PRESETS[name])


def list_view_presets() -> list[str]:
    return sorted(_VIEW_PRESETS)


def get_method_spec(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise UnknownNameError(unknown_name_message("method", name, list(_METHODS)))
    return _METHODS[name]


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_specs() -> list[MethodSpec]:
    return [get_method_spec(n) for n in list_methods()]


def instantiate(cls: type, encoder, cfg, num_samples: int | None = None, image_shape: tuple | None = None,
                normalization: tuple | None = None):
    """``cls(encoder, cfg)``, plus, for methods whose __init__ asks for them: ``num_samples=`` the
    training-set size (memory banks), ``image_shape=(C, H, W)`` of the views (decoders, pixel
    heads) and ``normalization=(mean, std)`` of the views (methods that need absolute colours: Lab)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    extra = {}
    if "num_samples" in params:
        extra["num_samples"] = num_samples
    for name, value, how in (("image_shape", image_shape, "image_size=H (the views' side)"),
                             ("normalization", normalization, "normalization=(mean, std) of the views")):
        if name in params:
            if value is None:  # every method that asks needs it: say so here, once, not in each method
                raise SelfsupError(f"{cls.__name__} needs the views' {name}: create_method(..., {how})")
            extra[name] = value
    return cls(encoder, cfg, **extra)
