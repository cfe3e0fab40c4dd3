"""Registries: one idiom (``Registry[T]``: add, get with "did you mean", names) for methods, view presets,
backbones, data sets and semi-supervised methods.

A method registers itself with ``@register("simclr", config=SimCLRConfig, views="simclr")``.
The registry is what ``selfsup list methods``, ``create_method`` and the registry-wide tests
iterate over, so adding a method is: its file, its recipe in ``configs/``, nothing else.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from selfsup.errors import SelfsupError, UnknownNameError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Names -> things of one kind. ``add`` refuses a duplicate name; ``get`` (and ``reg[name]``) fails on
    an unknown one with the closest known name and the list, as a KeyError subclass (``error``: another
    exception class, e.g. the data side's DatasetError). Iterates in registration order; ``names()`` sorted."""

    def __init__(self, kind: str, error: type[Exception] = UnknownNameError):
        self.kind, self.error = kind, error
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise SelfsupError(f"{self.kind} {name!r} is already registered ({self._items[name]!r})")
        self._items[name] = item
        return item

    def get(self, name: str, hint: str = "") -> T:  # type: ignore[override]  (fails instead of returning None)
        if name not in self._items:
            raise self.error(unknown_name_message(self.kind, name, list(self._items)) + hint)
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:  # Mapping's would call get, which raises for a miss
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def copy(self) -> "Registry[T]":
        other = Registry(self.kind, self.error)
        other._items = dict(self._items)
        return other


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    config: type  # dataclass holding the method's hyper-parameters (paper defaults)
    views: str  # name of the view preset in selfsup.transforms.views
    uses_labels: bool = False  # supervised reference points are marked as such
    summary: str = ""


METHODS: Registry[MethodSpec] = Registry("method")


def register(name: str, *, config: type, views: str, uses_labels: bool = False) -> Callable[[type], type]:
    """Class decorator that registers a Method under ``name``; duplicate names fail."""

    def wrap(cls: type) -> type:
        if name in METHODS:
            raise SelfsupError(f"method {name!r} is already registered by {METHODS[name].cls.__module__}")
        doc = (cls.__doc__ or "").strip().splitlines()
        METHODS.add(name, MethodSpec(name, cls, config, views, uses_labels, doc[0] if doc else ""))
        cls.name = name
        return cls

    return wrap


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown method 'simclrr'; did you mean 'simclr'? Known: ...' — shared by every registry (and by
    config keys). Case is ignored for the suggestion ('Fashion-MNIST' -> 'fashion-mnist')."""
    close = difflib.get_close_matches(name, known, n=1) or difflib.get_close_matches(str(name).lower(), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} Known {kind}s: {', '.join(sorted(known))}"


# View presets (selfsup.transforms.views registers them): name -> a ViewConfig of the preset's defaults.
# Kept here so that composing a configuration (core) can read a method's preset without importing
# the transforms that apply it.
VIEW_PRESETS: Registry = Registry("view preset")


def register_view_preset(name: str, defaults) -> None:
    VIEW_PRESETS.add(name, defaults)


def view_preset(name: str):
    """A fresh copy of the preset's ViewConfig (changing it leaves the preset as it was)."""
    return dataclasses.replace(VIEW_PRESETS.get(name))


def list_view_presets() -> list[str]:
    return VIEW_PRESETS.names()


def get_method_spec(name: str) -> MethodSpec:
    return METHODS.get(name)


def list_methods() -> list[str]:
    return METHODS.names()


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
