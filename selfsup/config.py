"""Run configuration: dataclasses with defaults, YAML recipes and dotted ``key=value`` overrides.

Layers, later wins: dataclass defaults (the papers') < recipe ``configs/<method>_<data>.yaml``
< ``--config FILE`` < command-line flags < ``key=value``. Unknown keys and wrong types are
errors that name the closest valid key, because a typo that silently does nothing wastes a
15-minute run; values a type admits but a run cannot use (``train.batch_size=-3``, NaN, a
probability of 2) are errors naming the key, the allowed range, the value and the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfsup.errors import SelfsupError
from selfsup.registry import get_method_spec, view_preset


LOGGERS = ("tensorboard", "wandb", "mlflow")  # train.loggers (selfsup.train.loggers)


class ConfigError(SelfsupError):
    """A configuration that cannot be used; the message says which key and how to fix it."""


@dataclass(frozen=True)
class Bound:
    """Allowed values of a number: lo <= v <= hi (strict where ``*_open``); None = no limit. A config field
    carries its bound in ``field(metadata={"bound": ...})`` (see ``bounded``), checked after compose: values
    the types admit but a run cannot use (train.batch_size=-3 would fail minutes later, deep in the loader, or
    silently train nothing); a list or tuple is checked element by element."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def admits(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return self.hi is None or (v < self.hi or (not self.hi_open and v == self.hi))

    def words(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


POSITIVE, COUNT, NONNEG = Bound(0, lo_open=True), Bound(1), Bound(0)
PROB, FRACTION = Bound(0, 1), Bound(0, 1, lo_open=True)


def bounded(default: Any, bound: Bound, ordered: bool = False) -> Any:
    """A dataclass field with its allowed range; ``ordered``: a (low, high) pair with low <= high."""
    return field(default=default, metadata={"bound": bound, "ordered": ordered})


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    dir: str | None = None  # --data-dir; else $SELFSUP_DATA, the Debian path, torchvision's download
    image_size: int | None = bounded(None, COUNT)  # resize on load; None keeps the native size (28 for Fashion-MNIST)
    mean: list[float] | None = None  # per-channel normalisation; None = computed from the training set
    std: list[float] | None = bounded(None, POSITIVE)
    limit: int | None = bounded(None, COUNT)  # use only the first N training images (quick experiments, tests)
    stream: bool = False  # imagefolder: decode batches from disk in worker processes instead of in memory
    workers: int = bounded(2, NONNEG)  # decoding processes of a streamed folder (0: in the training process)


@dataclass
class BackboneConfig:
    name: str = "resnet18"
    width: float = bounded(1.0, POSITIVE)  # channel multiplier (0.25 -> 16-32-64-128 channels for ResNet-18)
    small_stem: bool = True  # 3x3 conv stem, no max-pool: the CIFAR variant for images <= 64 px
    stem_stride: int = bounded(1, COUNT)  # stride of the small stem; 2 makes layer1 4x cheaper on 28-px inputs
    # ViTs (vit_micro / vit_tiny / vit_small / vit_base); their image side is the views' size
    patch_size: int = bounded(4, COUNT)  # 28-32 px images: a 7x7 or 8x8 grid of tokens
    pos_embed: str = "sincos"  # sincos (fixed, MAE / MoCo v3) | learned (the original ViT)
    drop_path: float = bounded(0.0, Bound(0, 1, hi_open=True))  # stochastic depth rate of the last block
    pool: str = "token"  # the features evaluation reads: token ([CLS]) | avg (the patch tokens' mean: BEiT's probe)
    # a local weights file (safetensors, or a torch state dict: torchvision's, timm's, a selfsup export)
    # loaded into the encoder before pretraining starts; name: timm:NAME builds any timm model
    weights: str | None = None


@dataclass
class OptimConfig:
    name: str = "lars"  # sgd | lars | adamw
    lr: float = bounded(0.3, NONNEG)  # base learning rate for a batch of 256 (scaled linearly when scale_lr)
    scale_lr: bool = True
    weight_decay: float = bounded(1e-6, NONNEG)
    momentum: float = bounded(0.9, PROB)
    betas: tuple[float, float] = bounded((0.9, 0.999), Bound(0, 1, hi_open=True))
    warmup: float = bounded(0.05, PROB)  # fraction of training spent in linear warm-up (works for epochs and budgets)
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = bounded(0.0, PROB)
    clip_grad: float | None = bounded(None, POSITIVE)


@dataclass
class TrainConfig:
    epochs: int = bounded(100, COUNT)
    budget: str | None = None  # wall-clock budget, e.g. "15m", "90s", "1h"; overrides epochs. A planning input: the
    # loop times a few steps of a throwaway copy, fixes the number of steps the budget affords (planned_steps in
    # summary.json), and every schedule follows the step; the plan is checked on the way (replan) and the wall
    # clock guards (1.5 x budget)
    replan: bool = True  # a budget's plan is checked at 10/25/50/75/90 % of it against the loop's own rate and the
    # steps left re-planned when they differ by > 3 % (false: the probe's plan only, which train.steps=N repeats)
    steps: int | None = bounded(
        None, COUNT
    )  # the schedule's length in optimiser steps, instead of epochs or a budget (a budget
    # run's planned_steps given here repeats its weights on any machine when its plan was never changed)
    batch_size: int = bounded(256, COUNT)
    accumulate: int = bounded(1, COUNT)  # gradient accumulation steps
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = False
    seed: int = 0
    threads: int | None = bounded(None, COUNT)  # torch intra-op threads; None = torch's default
    log_every: int = bounded(20, COUNT)  # steps between metrics.jsonl rows
    monitor_every: int = bounded(1, NONNEG)  # epochs between online kNN monitor evaluations (0 = only at the end)
    monitor_train: int = bounded(5000, NONNEG)  # images of the training set forming the monitor's kNN bank
    monitor_val: int = bounded(
        1000, NONNEG
    )  # labelled training images held out of that bank, which it classifies: a validation
    # slice (seeded, fixed); training never reads the test split, which is kept for final numbers
    checkpoint_every: int = bounded(1, NONNEG)  # epochs between checkpoints (last/ is always kept)
    checkpoint_minutes: float = bounded(5.0, POSITIVE)  # also checkpoint at least this often in long epochs
    max_steps: int | None = bounded(None, COUNT)  # stop after N optimiser steps (tests, debugging)
    checkpoint_steps: int = bounded(0, NONNEG)  # also checkpoint every N optimiser steps (0 = off)
    sync_bn: bool = False  # distributed: BatchNorm statistics over the global batch (SyncBatchNorm)
    loggers: tuple[str, ...] = ("tensorboard",)  # any of LOGGERS; metrics.jsonl is always written


@dataclass
class EvalConfig:
    knn_k: tuple[int, ...] = bounded((200, 20), COUNT)
    knn_temperature: float = bounded(0.07, POSITIVE)
    linear_val_fraction: float = bounded(0.1, Bound(0, 1, True, True))
    linear_l2: tuple[float, ...] = bounded((1e-6, 1e-5, 1e-4, 1e-3, 1e-2), NONNEG)
    batch_size: int = bounded(512, COUNT)
    # side of the images the evaluation (and the online monitor) encodes; None = views.size, else the
    # data's. Larger than views.size is FixRes (Touvron et al. 2019, "Fixing the train-test resolution
    # discrepancy"): random resized crops enlarge objects at training, so a test image shown whole at a
    # higher resolution matches their apparent size — and training at the lower one is cheaper.
    size: int | None = bounded(None, COUNT)


@dataclass
class RunConfig:
    """A run's whole configuration. In a layer (a recipe, a config file, overrides) ``method`` is a mapping of
    ``name`` and the method's fields and ``views`` a mapping of overrides of the method's view preset; after
    ``resolve`` (the one compose step) ``method`` is the method's config dataclass (its paper defaults filled
    in), ``method_name`` its registered name and ``views`` a ``ViewConfig`` (the preset with the overrides)."""

    method: Any = field(default_factory=lambda: {"name": "simclr"})
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    views: Any = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str | None = None
    # set by resolve, written as method.name; "derived": no layer gives it (from_dict refuses it as a key)
    method_name: str = field(default="simclr", metadata={"derived": True})


# ----------------------------------------------------------------------------------- parsing


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-6 as a float (PyYAML follows YAML 1.1, where a float needs a dot) and
    refuses a key given twice in one mapping (YAML says last wins: a silent, likely unintended choice)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section (delete one)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?$"
        r"|^[-+]?[0-9][0-9_]*\.[0-9_]*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _suggest(key: str, valid: list[str]) -> str:
    # a valid key that is a word of the typo ('lr' in 'lr_rate') beats mere spelling closeness
    words = [v for v in valid if v in key.split("_") or key.startswith(v + "_")]
    close = words[:1] + [c for c in difflib.get_close_matches(key, valid, n=2) if c not in words]
    if not close:
        return f" Valid keys: {', '.join(valid)}."
    return " Did you mean " + " or ".join(repr(c) for c in close[:2]) + "?"


def _describe(tp: Any) -> str:
    """The annotation ``tp`` in words, for error messages: ``int | None`` -> 'an integer or null'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        words = " or ".join(_describe(a) for a in args if a is not type(None))
        return words + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
        return f"a list of {_PLURAL.get(args[0], 'values') if args else 'values'}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    return _WORDS.get(tp, getattr(tp, "__name__", str(tp)))


_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Any: "any value"}
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples, ints to floats.

    Every refusal is a ConfigError ``"<key>: expected <type in words>, got <value>"``.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        # an element's own error ('data.mean[0]: ...') is the precise one; else name every accepted type
        precise = [e for e in errors if not e.startswith(f"{path}: expected")]
        raise ConfigError(precise[0] if precise else f"{path}: expected {_describe(tp)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value] if origin is tuple and typing.get_args(tp)[-1:] == (Ellipsis,) else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {_describe(tp)}, got {len(value)} ({list(value)!r})")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item: Any = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, bool) and isinstance(value, bool) != (tp is bool):
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    return value


def from_dict(cls: type, data: dict | Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(f"unknown config key {full!r}.{_suggest(str(key), list(fields))}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-friendly dict (tuples become lists); a resolved RunConfig writes its method as
    ``{name, **fields}``, the form a layer gives (so that ``resolve([to_dict(cfg)])`` equals ``cfg``)."""
    if isinstance(obj, RunConfig):
        d = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("derived")}
        if dataclasses.is_dataclass(obj.method):
            d["method"] = {"name": obj.method_name, **d["method"]}
        return d
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict:
    """``optim.lr=0.1`` -> {"optim": {"lr": 0.1}}; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"override key {key!r} is not a dotted name (e.g. train.batch_size=128)")
    try:
        value = _yaml(raw) if raw != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse the value: {e}") from None
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _renamed(data: dict) -> dict:
    """``data`` with keys renamed since a config was written under their old names (train.monitor_test,
    before 2026-12-06, is train.monitor_val), so that old runs' config.yaml files still load."""
    train = data.get("train")
    if isinstance(train, dict) and "monitor_test" in train:
        train = {k: v for k, v in train.items() if k != "monitor_test"}
        train.setdefault("monitor_val", data["train"]["monitor_test"])
        data = {**data, "train": train}
    return data


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist (check the --config path)")
    try:
        data = _yaml(path.read_text()) or {}
    except yaml.YAMLError as e:  # one line: the file, the line, the problem
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}{where}: not valid YAML: {what}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (method:, train:, ...)")
    data = _renamed(data)
    try:  # unknown keys and wrong types of the file alone, so that the message can name the file
        from_dict(
            RunConfig, {**data, "method": {"name": data["method"]}} if isinstance(data.get("method"), str) else data
        )
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return data


def recipes_dir() -> Path:
    """The recipes, package data (``selfsup/recipes``; ``configs/`` in a checkout links to it), so
    that a wheel installed anywhere finds them."""
    return Path(__file__).resolve().parent / "recipes"


def recipe_path(method: str, data: str) -> Path | None:
    p = recipes_dir() / f"{method}_{data}.yaml"
    return p if p.is_file() else None


# Data a user brings: without a recipe of their own they borrow the method's CPU recipe for small
# images (Fashion-MNIST's), less the image sides it picked for 28-px items (the folder's own side is used).
USER_DATA = ("imagefolder", "array", "cifar10", "cifar100")
BORROWED_RECIPE_DATA = "fashion-mnist"
_DATA_SPECIFIC = {"views": ("size", "local_size"), "eval": ("size",), "data": ("image_size", "mean", "std")}


def recipe_for(method: str, data: str) -> tuple[Path | None, bool]:
    """(the recipe for ``method`` on ``data``, whether it is borrowed from another data set)."""
    own = recipe_path(method, data)
    if own or data not in USER_DATA:
        return own, False
    borrowed = recipe_path(method, BORROWED_RECIPE_DATA)
    return borrowed, borrowed is not None


def resolve_names(layers: list[dict]) -> tuple[str, str]:
    """(method, data) names as the layers set them, to pick the recipe."""
    method, data = "simclr", "fashion-mnist"
    for layer in layers:
        m = layer.get("method")
        if isinstance(m, dict) and "name" in m:
            method = m["name"]
        elif isinstance(m, str):
            method = m
        d = layer.get("data")
        if isinstance(d, dict) and "name" in d:
            data = d["name"]
    return method, data


@dataclass
class Composed:
    """A composed configuration and where its layers came from (what the CLI prints)."""

    cfg: "RunConfig"
    recipe: Path | None
    borrowed: bool  # the recipe is another data set's (USER_DATA without one of its own)
    method: str
    data: str


def compose(
    flags: dict | None = None, config_file: str | Path | None = None, overrides=(), use_recipe: bool = True
) -> Composed:
    """The one place a run's configuration is made (CLI, Python API, bench and claims alike):
    method paper defaults < recipe for (method, data) < ``config_file`` < ``flags`` (nested dicts,
    as the CLI's flags) < ``overrides`` ("key=value" strings or dicts). Pure: prints nothing."""
    file_layer = load_yaml(config_file) if config_file else {}
    over = [parse_override(o) if isinstance(o, str) else o for o in overrides]
    layers = [file_layer, flags or {}, *over]
    method, data = resolve_names(layers)
    recipe, borrowed = recipe_for(method, data) if use_recipe else (None, False)
    base = []
    if recipe:
        layer = load_yaml(recipe)
        if borrowed:
            layer = {
                k: (
                    {f: v for f, v in sec.items() if f not in _DATA_SPECIFIC.get(k, ())}
                    if isinstance(sec, dict)
                    else sec
                )
                for k, sec in layer.items()
            }
        base.append(layer)
    return Composed(resolve(base + layers), recipe, borrowed, method, data)


def resolve(layers: list[dict]) -> RunConfig:
    """Merge dict layers (later wins) and validate everything, including the method's own fields."""
    merged: dict = {"method": {"name": "simclr"}}  # layers may set method fields without naming it
    for layer in layers:
        if isinstance(layer.get("method"), str):
            layer = {**layer, "method": {"name": layer["method"]}}
        merged = deep_merge(merged, layer)
    cfg = from_dict(RunConfig, _renamed(merged))
    for key, what in (
        ("method", "its name and settings, e.g. method: {name: simclr, temperature: 0.5}"),
        ("views", "overrides of the method's view preset, e.g. views: {crop_scale: [0.4, 1.0]}"),
    ):
        if not isinstance(getattr(cfg, key), dict):
            raise ConfigError(f"{key}: expected a mapping of {what}; got {getattr(cfg, key)!r}")
    if not isinstance(cfg.method.get("name"), str):
        raise ConfigError(
            f"method.name: expected a method name (a string; `selfsup list methods`), got {cfg.method.get('name')!r}"
        )
    try:
        spec = get_method_spec(cfg.method["name"])
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    cfg.method_name = spec.name
    cfg.method = from_dict(spec.config, {k: v for k, v in cfg.method.items() if k != "name"}, "method")
    preset = view_preset(spec.views)  # a ViewConfig (selfsup.transforms.views registers the presets)
    cfg.views = from_dict(type(preset), deep_merge(to_dict(preset), cfg.views), "views")
    if cfg.optim.name not in ("sgd", "lars", "adamw"):
        raise ConfigError(f"optim.name {cfg.optim.name!r}: choose sgd, lars or adamw")
    if cfg.train.precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision {cfg.train.precision!r}: choose fp32 or bf16")
    if cfg.train.budget is not None and parse_duration(cfg.train.budget) <= 0:
        raise ConfigError(
            f"train.budget (--budget) {cfg.train.budget!r}: a budget must be positive, e.g. 90s, 15m "
            f"or 1.5h (leave it out to train train.epochs)"
        )
    unknown = [n for n in cfg.train.loggers if n not in LOGGERS]
    if unknown:
        raise ConfigError(
            f"train.loggers: unknown logger {unknown[0]!r}; choose any of {', '.join(LOGGERS)}, "
            f"e.g. train.loggers=[tensorboard,wandb]"
        )
    _check_bounds(cfg, preset)
    return cfg


def _check_bounds(cfg: RunConfig, preset: Any) -> None:
    """Refuse out-of-range values with the key, the allowed range, the value and the default; the bounds are
    the fields' metadata (``bounded``), the views' those of the method's preset (a ViewConfig)."""
    sections = [
        (name, getattr(cfg, name), dataclasses.fields(getattr(RunConfig(), name)))
        for name in ("data", "backbone", "optim", "train", "eval")
    ]
    sections.append(("views", cfg.views, dataclasses.fields(preset)))
    defaults = to_dict(RunConfig())
    defaults["views"] = to_dict(preset)
    for section, values, fields in sections:
        for f in fields:
            bound = f.metadata.get("bound")
            value = getattr(values, f.name)
            if bound is None or value is None:
                continue
            key = f"{section}.{f.name}"
            items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
            for i, v in items:
                if not bound.admits(v):
                    where, given = (key, "") if i is None else (f"{key}[{i}]", f" in {key}={_flow(value)}")
                    kind = "an integer" if isinstance(v, int) else "a number"
                    raise ConfigError(
                        f"{where}: expected {kind} {bound.words()}, got {v!r}{given} "
                        f"(the default is {key}={_flow(defaults[section][f.name])})"
                    )
            if f.metadata.get("ordered") and value[0] > value[1]:
                raise ConfigError(
                    f"{key}: expected [low, high] with low <= high, got {_flow(value)}; "
                    f"write {key}={_flow(sorted(value))}"
                )


def _flow(value: Any) -> str:
    """A value as it is written on the command line: [0.2, 1.0], 256, null."""
    return yaml.safe_dump(to_dict(value), default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def view_size(cfg: RunConfig, image_size: int) -> int:
    """Side of the training views: views.size, else the data's ``image_size``."""
    return cfg.views.size or image_size


def eval_size(cfg: RunConfig, image_size: int) -> int:
    """Side of the images evaluation encodes: eval.size, else the views' side."""
    return cfg.eval.size or view_size(cfg, image_size)


def parse_duration(text: str | float | int) -> float:
    """'15m' -> 900.0 seconds; accepts s, m, h suffixes or a bare number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ConfigError(f"budget {text!r} is not a duration: use e.g. 90s, 15m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def config_yaml(cfg: RunConfig) -> str:
    """The config as config.yaml holds it (every field, in declaration order)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(config_yaml(cfg))


def load_run_config(run_dir: str | Path) -> RunConfig:
    """A run's ``config.yaml``, checked against what its checkpoint was trained with (see
    :func:`_check_against_checkpoint`), so that resuming or evaluating an edited run fails here,
    naming the key to restore, instead of deep inside weight loading."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {path} is missing (pass the --out of a pretrain run)")
    data = load_yaml(path)
    try:
        cfg = resolve([data])
    except ConfigError as e:
        # another method.name fails first on the old method's fields; the checkpoint says what to restore
        method = data.get("method")
        name = method.get("name") if isinstance(method, dict) else method
        _check_against_checkpoint({"method.name": name}, run_dir, path)
        raise ConfigError(f"{path}: {e}") from None
    now = {
        "method.name": cfg.method_name,
        **{f"backbone.{f.name}": getattr(cfg.backbone, f.name) for f in dataclasses.fields(BackboneConfig)},
        # what the encoder's input was; data.dir may change (the data moved), these may not
        **{f"data.{k}": getattr(cfg.data, k) for k in ("name", "image_size", "limit", "mean", "std")},
    }
    _check_against_checkpoint(now, run_dir, path)
    return cfg


def _check_against_checkpoint(now: dict[str, Any], run_dir: Path, path: Path) -> None:
    """Refuse a config.yaml whose method, backbone or data (``now``: dotted key -> value) differs from
    its checkpoint's meta.json (``checkpoints/last``, else ``previous``; none, or unreadable: no check)."""
    import json

    for ckpt in (run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "previous"):
        try:
            meta = json.loads((ckpt / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        break
    else:
        return
    trained = {}
    if isinstance(meta, dict) and isinstance(meta.get("method"), str):
        trained["method.name"] = meta["method"]
    backbone = meta.get("backbone") if isinstance(meta, dict) else None
    if isinstance(backbone, dict):
        trained.update({f"backbone.{k}": v for k, v in backbone.items()})
    # checkpoints older than commit 03c6925 wrote it as one string: "convnet(width=0.25, small_stem=True, stem_stride=1)"
    m = re.fullmatch(r"\s*([^()\s]+)\((.*)\)\s*", backbone) if isinstance(backbone, str) else None
    if m:
        trained["backbone.name"] = m.group(1)
        for pair in m.group(2).split(","):
            key, _, value = pair.strip().partition("=")
            trained[f"backbone.{key}"] = value
    if isinstance(meta, dict) and isinstance(meta.get("data"), dict):  # checkpoints since 2026-12-06
        trained.update({f"data.{k}": v for k, v in meta["data"].items()})
        if isinstance(meta.get("input"), dict):
            trained.update({f"data.{k}": meta["input"].get(k) for k in ("mean", "std")})
    changed = [k for k, v in trained.items() if k in now and str(now[k]) != str(v)]
    if changed:
        said = ", ".join(f"{k}={now[k]}" for k in changed)
        was = ", ".join(f"{k}={trained[k]}" for k in changed)
        restore = "; ".join(f"{k.split('.')[0]}: {{{k.split('.')[1]}: {trained[k]}}}" for k in changed)
        raise ConfigError(
            f"{path} says {said}, but the checkpoint in {ckpt} was trained with {was}: the config was "
            f"edited after training. Restore it ({restore}) to resume or evaluate this run; to try "
            f"the new settings, start a new run with another --out"
        )
