"""The config parser under bad input (issue 9): wrong types and out-of-range values name the key,
the expected type and the value given; property-based tests (hypothesis) over overrides."""

from __future__ import annotations

import dataclasses
import re
import typing
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given, settings, strategies as st

import selfsup
from selfsup.config import (
    BackboneConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    load_run_config,
    load_yaml,
    parse_override,
    recipes_dir,
    resolve,
    save_config,
    to_dict,
)
from selfsup.transforms.views import ViewConfig
from selfsup.data import list_datasets
from selfsup.registry import get_method_spec

SIMCLR = {"method": {"name": "simclr"}}
FAST = settings()  # the profile in tests/conftest.py sets the counts


def error_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        resolve([SIMCLR, *(parse_override(o) for o in overrides)])
    return str(e.value)


# ------------------------------------------------------------------------ named cases, exact messages


@pytest.mark.parametrize(
    "override,needles",
    [
        ("train.epochs=abc", ["train.epochs", "an integer", "'abc'"]),
        ("optim.lr=[1,2]", ["optim.lr", "a number", "[1, 2]"]),
        ("train.batch_size=-3", ["train.batch_size", "an integer >= 1", "-3", "default is train.batch_size=256"]),
        ("train.batch_size=1.5", ["train.batch_size", "an integer", "1.5"]),
        ("train.epochs=true", ["train.epochs", "an integer", "True"]),
        ("backbone.small_stem=3", ["backbone.small_stem", "true or false", "3"]),
        ("data.image_size=big", ["data.image_size", "an integer or null", "'big'"]),
        ("data.mean=[0.5, x]", ["data.mean[1]", "a number", "'x'"]),
        ("views.jitter=[0.4, 0.4]", ["views.jitter", "a list of 4 numbers", "got 2"]),
        ("optim.lr=.nan", ["optim.lr", "a finite number", "nan"]),
        ("optim.momentum=1.5", ["optim.momentum", "in [0, 1]", "1.5", "default is optim.momentum=0.9"]),
        ("views.blur_p=[0.5, 2]", ["views.blur_p[1]", "in [0, 1]", "views.blur_p=[0.5, 2.0]"]),
        ("views.crop_scale=[0.9, 0.2]", ["views.crop_scale", "low <= high", "views.crop_scale=[0.2, 0.9]"]),
        ("eval.linear_val_fraction=1", ["eval.linear_val_fraction", "in (0, 1)", "1.0"]),
        ("backbone.width=0", ["backbone.width", "> 0", "0.0"]),
        ("method.name=5", ["method.name", "a string", "selfsup list methods", "5"]),
        ("method.temperature=hot", ["method.temperature", "a number", "'hot'"]),
    ],
)
def test_wrong_types_and_ranges_name_key_expected_type_and_value(override, needles):
    msg = error_of(override)
    for n in needles:
        assert n in msg, (n, msg)


def test_unknown_keys_suggest_the_close_one():
    msg = error_of("train.epoch=3")
    assert "unknown config key 'train.epoch'" in msg and "'epochs'" in msg


def test_a_yaml_file_with_a_list_where_a_mapping_belongs_names_the_file_and_the_key(tmp_path):
    f = tmp_path / "recipe.yaml"
    f.write_text("train:\n  - epochs: 3\n  - batch_size: 64\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(f)
    msg = str(e.value)
    assert str(f) in msg and "train: expected a mapping of keys" in msg and "'epochs': 3" in msg
    f.write_text("optim:\n  betas: 0.9\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml: optim.betas: expected a list of 2 numbers, got 0.9"):
        load_yaml(f)
    f.write_text("train:\n  epochs: 3\n  7: x\n")  # a key that is not even a string
    with pytest.raises(ConfigError, match=r"recipe.yaml: unknown config key 'train.7'"):
        load_yaml(f)
    f.write_text("method: byol\ntrain:\n  epochs: 3\n")  # the short form of method stays valid
    assert load_yaml(f) == {"method": "byol", "train": {"epochs": 3}}


def test_every_shipped_recipe_passes_the_type_and_range_checks():
    recipes = sorted(recipes_dir().rglob("*.yaml"))
    assert len(recipes) > 20
    for path in recipes:
        method = max((m for m in selfsup.list_methods() if path.stem.startswith(m + "_")), key=len)
        resolve([{"method": method}, load_yaml(path)])  # raises ConfigError naming the key if not


# ------------------------------------------------------------------------ property-based


def _floats(lo, hi, **kw):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, **kw)


_PROB = _floats(0, 1)
_POS = _floats(1e-6, 1e6)
_FRACTION_PAIR = st.lists(_floats(1e-3, 1), min_size=2, max_size=2).map(sorted)

# valid values of a broad sample of keys; every one must survive override -> resolve -> save -> load
VALID = {
    "data.name": st.sampled_from(list_datasets()),
    "data.dir": st.one_of(st.none(), st.sampled_from(["/data", "~/x y", "rel/dir"])),
    "data.image_size": st.one_of(st.none(), st.integers(1, 512)),
    "data.limit": st.one_of(st.none(), st.integers(1, 10**6)),
    "data.mean": st.one_of(st.none(), st.lists(_PROB, min_size=1, max_size=3)),
    "backbone.name": st.sampled_from(selfsup.list_backbones()),
    "backbone.width": _floats(0.01, 4),
    "backbone.small_stem": st.booleans(),
    "backbone.stem_stride": st.integers(1, 4),
    "backbone.patch_size": st.integers(1, 16),
    "backbone.drop_path": _floats(0, 0.99),
    "optim.name": st.sampled_from(["sgd", "lars", "adamw"]),
    "optim.lr": _floats(0, 100),
    "optim.weight_decay": _floats(0, 1),
    "optim.momentum": _PROB,
    "optim.betas": st.lists(_floats(0, 0.999), min_size=2, max_size=2),
    "optim.warmup": _PROB,
    "optim.scale_lr": st.booleans(),
    "optim.clip_grad": st.one_of(st.none(), _POS),
    "train.epochs": st.integers(1, 10**6),
    "train.budget": st.one_of(st.none(), st.builds("{}{}".format, st.integers(1, 999), st.sampled_from("smh"))),
    "train.batch_size": st.integers(1, 4096),
    "train.accumulate": st.integers(1, 64),
    "train.precision": st.sampled_from(["fp32", "bf16"]),
    "train.device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1"]),
    "train.seed": st.integers(-(2**31), 2**31),
    "train.monitor_train": st.integers(0, 10**5),
    "train.checkpoint_minutes": _POS,
    "train.max_steps": st.one_of(st.none(), st.integers(1, 10**6)),
    "eval.knn_k": st.lists(st.integers(1, 500), min_size=1, max_size=3),
    "eval.knn_temperature": _POS,
    "eval.linear_val_fraction": _floats(0.01, 0.99),
    "views.size": st.one_of(st.none(), st.integers(1, 64)),
    "views.crop_scale": _FRACTION_PAIR,
    "views.flip_p": _PROB,
    "views.jitter": st.lists(_floats(0, 2), min_size=4, max_size=4),
    "views.blur_p": st.lists(_PROB, min_size=2, max_size=2),
    "views.num_local": st.integers(0, 8),
    "method.temperature": _POS,
    "method.proj_dim": st.integers(1, 4096),
    "out": st.one_of(st.none(), st.sampled_from(["runs/a", "/tmp/b c"])),
}


def _text(key: str, value) -> str:
    """The override as a user types it: key=value, the value in YAML flow style."""
    return f"{key}=" + yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def _get(cfg: RunConfig, key: str):
    d = to_dict(cfg)
    for part in key.split("."):
        d = d[part]
    return d


_pairs = st.lists(
    st.sampled_from(sorted(VALID)).flatmap(lambda k: st.tuples(st.just(k), VALID[k])),
    min_size=1,
    max_size=6,
    unique_by=lambda kv: kv[0],
)


@FAST
@given(_pairs)
def test_valid_overrides_round_trip_through_save_and_load(pairs):
    cfg = resolve([SIMCLR, *(parse_override(_text(k, v)) for k, v in pairs)])
    for k, v in pairs:
        got = _get(cfg, k)
        assert got == v and type(got) is type(v) or (isinstance(v, int) and got == float(v)), (k, v, got)
    with tempfile.TemporaryDirectory() as d:
        save_config(cfg, Path(d) / "config.yaml")
        assert to_dict(load_run_config(d)) == to_dict(cfg)


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


_SECTIONS = {
    "data": DataConfig,
    "backbone": BackboneConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "views": ViewConfig,
}
_LEAVES = (
    {f"{s}.{n}" for s, c in _SECTIONS.items() for n in _fields(c)}
    | {"out", "method.name"}
    | {f"method.{n}" for n in _fields(get_method_spec("simclr").config)}
)
_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_key = st.lists(
    st.one_of(_name, st.sampled_from(sorted(_SECTIONS) + ["method", "epochs", "lr", "name"])), min_size=1, max_size=3
).map(".".join)
_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_name, c, max_size=2),
    max_leaves=6,
)


def _is_valid_key(key: str) -> bool:
    """A full path to a leaf, or a section given as a whole (a mapping value may be valid there)."""
    return key in _LEAVES or key in _SECTIONS or key == "method"


@FAST
@given(_key, _value)
def test_invalid_keys_always_raise_the_config_error(key, value):
    assume(not _is_valid_key(key))
    with pytest.raises(ConfigError) as e:  # never a bare KeyError / TypeError / AttributeError
        resolve([SIMCLR, _nested(key, value)])
    assert repr(key.split(".")[0]) in str(e.value) or f"{key.split('.')[0]}." in str(e.value), str(e.value)


def _nested(key: str, value) -> dict:
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@pytest.mark.parametrize("key", sorted(_LEAVES))
@FAST
@given(value=_value)
def test_any_value_for_a_known_key_is_accepted_or_a_config_error_naming_the_key(key, value):
    try:
        cfg = resolve([SIMCLR, _nested(key, value)])
    except ConfigError as e:
        named = (key, key.split(".")[-1]) if key != "method.name" else ("method.name", "unknown method")
        assert any(n in str(e) for n in named), (key, value, str(e))
        return
    assert cfg.method_name in selfsup.list_methods()


@FAST
@given(st.text(max_size=30))
def test_parse_override_of_any_text_is_a_mapping_or_a_config_error(text):
    try:
        out = parse_override(text)
    except ConfigError as e:  # and the error quotes what was given: the whole text or its key
        assert repr(text) in str(e) or repr(text.split("=", 1)[0]) in str(e), (text, str(e))
        return
    assert isinstance(out, dict) and len(out) == 1


# numbers a run can take any value of (a seed, a view's size left to the data, ...): every other number of
# the sections declares its allowed range beside the field, so a new field cannot forget one
_UNBOUNDED_NUMBERS = {"data.mean", "train.seed"}


def test_every_number_of_the_sections_declares_its_bound_beside_the_field():
    unbounded = set()
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            numeric = any(t in (int, float) for t in _leaf_types(hints[f.name]))
            if numeric and "bound" not in f.metadata:
                unbounded.add(f"{section}.{f.name}")
    assert unbounded == _UNBOUNDED_NUMBERS


def _leaf_types(hint) -> set:
    args = typing.get_args(hint)
    return {hint} if not args else set().union(*(_leaf_types(a) for a in args if a is not Ellipsis))


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("train.batch_size", 0, "an integer >= 1"),
        ("views.crop_scale", [0.9, 0.2], "low <= high"),
        ("views.jitter_p", 1.5, "in [0, 1]"),
    ],
)
def test_a_field_bound_refuses_a_value_with_its_range_and_default(key, value, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as e:
        resolve([SIMCLR, _nested(key, value)])
    assert "the default is" in str(e.value) or "write" in str(e.value)
