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

    def get(self, name: str, hint: str = "") -> T:  # type: ignore[override]  # fails instead of returning None
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
        other: Registry[T] = Registry(self.kind, self.error)
        other._items = dict(self._items)
        return other


@dataclass(frozen=True)
class Needs:
    """What a method needs from a run, declared once at registration (``@register(..., needs=Needs(...))``)
    and read by the loop, the data side, ``instantiate``'s checks, the tests and bench — never probed
    on the method object."""

    views: int = 2  # augmented views training_step reads (1: single-view pretext tasks, no second view made)
    color: bool = False  # 3-channel images (colorization, split-brain: Lab)
    backbone: str = "any"  # "vit": patches and tokens (MAE, I-JEPA, ...); "any": every backbone
    text: bool = False  # caption tokens in batch.texts (CLIP); the class has ``encode_text``
    boxes: bool = False  # each view's crop geometry in batch.boxes (VICRegL's location matching)
    video: bool = False  # the frames of a video in batch.images (moving-shapes; Shuffle and Learn)
    labels: bool = False  # trains on labels: a supervised reference point, marked in listings and tables
    # some steps leave trainable parameters without a gradient (SwAV's frozen prototypes, DINO's frozen
    # last layer): DDP must then look for them every step (find_unused_parameters)
    skips_parameters: bool = False

    def __post_init__(self):
        if self.views < 1 or self.backbone not in ("any", "vit"):
            raise SelfsupError(
                f"Needs(views={self.views}, backbone={self.backbone!r}): views >= 1, backbone 'any' or 'vit'"
            )


@dataclass(frozen=True)
class BuildContext:
    """What every method's ``__init__(encoder, cfg, ctx)`` receives beside its config: ``num_samples`` the
    training-set size (memory banks), ``image_shape`` (C, H, W) of the views (decoders, pixel heads),
    ``normalization`` the views' (mean, std) (methods that need absolute colours: Lab). A field is None
    where the caller did not know it; ``require`` says how to give it."""

    num_samples: int | None = None
    image_shape: tuple | None = None
    normalization: tuple | None = None
    method: str = "this method"  # the registered name, for messages (instantiate fills it)

    _HOW = {
        "num_samples": ("the training-set size", "num_samples=len(dataset)"),
        "image_shape": ("the views' (C, H, W)", "image_size=H, in_channels=C"),
        "normalization": ("the views' (mean, std)", "normalization=(mean, std)"),
    }

    def require(self, field: str):
        """The field's value; a clear error (what it is, how to pass it) where the caller did not give it."""
        value = getattr(self, field)
        if value is None or (field == "num_samples" and value < 1):
            what, how = self._HOW[field]
            raise SelfsupError(
                f"{self.method} needs {what} ({field}): selfsup.create_method(..., {how}), "
                "or train through selfsup pretrain (which passes it)"
            )
        return value


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    config: type  # dataclass holding the method's hyper-parameters (paper defaults)
    views: str  # name of the view preset in selfsup.transforms.views
    needs: Needs = Needs()
    summary: str = ""

    @property
    def uses_labels(self) -> bool:
        return self.needs.labels


METHODS: Registry[MethodSpec] = Registry("method")


def register(
    name: str, *, config: type, views: str, needs: Needs = Needs(), summary: str | None = None
) -> Callable[[type], type]:
    """Class decorator that registers a Method under ``name`` with its config dataclass (the paper's
    defaults), its view preset and what it needs. Duplicate names fail. One class may be registered under
    several names (MoCo v1 and v2 differ only in their config, each with its own ``summary``, the
    listing's line; default: the class docstring's first line): the instance gets its name and needs
    from the spec when ``instantiate`` builds it, the class is left as it is."""

    def wrap(cls: type) -> type:
        if name in METHODS:
            raise SelfsupError(f"method {name!r} is already registered by {METHODS[name].cls.__module__}")
        if needs.text and not callable(getattr(cls, "encode_text", None)):
            raise SelfsupError(f"method {name!r} declares needs.text but {cls.__name__} has no encode_text(ids)")
        doc = (cls.__doc__ or "").strip().splitlines()
        METHODS.add(name, MethodSpec(name, cls, config, views, needs, summary or (doc[0] if doc else "")))
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


def instantiate(spec: MethodSpec, encoder, cfg, ctx: BuildContext = BuildContext()):
    """``spec.cls(encoder, cfg, ctx)`` after checking the spec's needs against what it is given (a ViT for
    the ViT-only methods, colour views for the Lab ones) with one message each; the instance carries
    the spec's ``name`` and ``needs``."""
    if spec.needs.backbone == "vit" and not hasattr(encoder, "patch_size"):
        raise SelfsupError(
            f"{spec.name} needs a ViT backbone (patches and tokens), not "
            f"{type(encoder).__name__}: e.g. --backbone vit_tiny (or vit_micro)"
        )
    if spec.needs.color and ctx.image_shape is not None and ctx.image_shape[0] != 3:
        raise SelfsupError(
            f"{spec.name} needs colour images (3 channels), got {ctx.image_shape[0]}: "
            "use a colour data set (e.g. --data color-digits, cifar10, an RGB image folder)"
        )
    method = spec.cls(encoder, cfg, dataclasses.replace(ctx, method=spec.name))
    method.name, method.needs = spec.name, spec.needs
    return method
