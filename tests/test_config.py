"""Configuration: layering, validation with suggestions, override and duration parsing."""

from __future__ import annotations

import pytest

from selfsup.config import (
    ConfigError,
    RunConfig,
    from_dict,
    load_run_config,
    load_yaml,
    parse_duration,
    parse_override,
    resolve,
    save_config,
    to_dict,
    TrainConfig,
)


def error_of(*layers) -> str:
    with pytest.raises(ConfigError) as e:
        resolve(list(layers))
    return str(e.value)


SIMCLR = {"method": {"name": "simclr"}}


@pytest.mark.parametrize(
    "override,bad,suggestion",
    [
        ("optim.lr_rate=0.1", "optim.lr_rate", "lr"),
        ("train.bath_size=64", "train.bath_size", "batch_size"),
        ("method.temprature=0.2", "method.temprature", "temperature"),
        ("backbone.widht=0.5", "backbone.widht", "width"),
        ("trian.epochs=3", "trian", "train"),
        ("views.flip_pp=0.1", "views.flip_pp", "flip_p"),
    ],
)
def test_unknown_key_at_any_level_suggests_the_close_key(override, bad, suggestion):
    msg = error_of(SIMCLR, parse_override(override))
    assert repr(bad) in msg
    assert "Did you mean" in msg
    assert repr(suggestion) in msg.split("Did you mean", 1)[1]  # among the suggestions (one or several)


def test_far_typo_lists_valid_keys():
    msg = error_of(SIMCLR, parse_override("optim.zzzzzz=1"))
    assert "Valid keys" in msg and "'lr'" not in msg and "lr" in msg


@pytest.mark.parametrize(
    "override",
    [
        "train.batch_size=abc",
        "train.batch_size=1.5",
        "optim.lr=fast",
        "backbone.small_stem=3",
        "train.epochs=true",
        "views.crop_scale=[0.2]",
        "data.mean=0.5",
    ],
)
def test_wrong_types_are_refused(override):
    msg = error_of(SIMCLR, parse_override(override))
    assert override.split("=")[0] in msg


def test_type_coercion():
    cfg = resolve(
        [
            SIMCLR,
            parse_override("optim.lr=1"),
            parse_override("views.crop_scale=[0.2, 1]"),
            parse_override("eval.knn_k=20"),
        ]
    )
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.views.crop_scale == (0.2, 1.0)
    assert cfg.eval.knn_k == (20,)
    assert from_dict(TrainConfig, {"max_steps": None}).max_steps is None


def test_parse_override():
    assert parse_override("optim.lr=0.1") == {"optim": {"lr": 0.1}}
    assert parse_override("train.max_steps=null") == {"train": {"max_steps": None}}
    assert parse_override("views.jitter=[0.1, 0.2, 0.3, 0.0]") == {"views": {"jitter": [0.1, 0.2, 0.3, 0.0]}}
    assert parse_override("train.budget=15m") == {"train": {"budget": "15m"}}
    assert parse_override("out=") == {"out": None}
    for bad in ("optim.lr", "optim..lr=1", "1abc=2", "optim.lr=[1, 2"):
        with pytest.raises(ConfigError):
            parse_override(bad)


@pytest.mark.parametrize(
    "text,value",
    [("1e-6", 1e-6), ("5e-4", 5e-4), ("1.0e30", 1e30), ("2E3", 2000.0), ("1.0e-6", 1e-6), ("0.3", 0.3), ("3", 3.0)],
)
def test_scientific_notation_is_a_number(text, value, tmp_path):
    """`optim.weight_decay=1e-6` is how people write it; YAML 1.1 (PyYAML) reads 1e-6 as a string."""
    cfg = resolve([SIMCLR, parse_override(f"optim.weight_decay={text}")])
    assert cfg.optim.weight_decay == pytest.approx(value) and isinstance(cfg.optim.weight_decay, float)
    (tmp_path / "c.yaml").write_text(f"optim:\n  lr: {text}\n")
    assert resolve([SIMCLR, load_yaml(tmp_path / "c.yaml")]).optim.lr == pytest.approx(value)


def test_layers_later_wins_and_merge_deeply():
    cfg = resolve(
        [
            {"method": {"name": "simclr", "temperature": 0.3}, "optim": {"lr": 0.1, "momentum": 0.8}},
            {"optim": {"lr": 0.2}, "train": {"epochs": 7}},
            parse_override("optim.lr=0.4"),
        ]
    )
    assert cfg.optim.lr == 0.4  # last layer wins
    assert cfg.optim.momentum == 0.8  # earlier key in the same section survives
    assert cfg.train.epochs == 7
    assert cfg.method.temperature == 0.3
    assert cfg.train.batch_size == RunConfig().train.batch_size  # untouched: the default


def test_default_method_survives_a_layer_that_sets_only_its_fields():
    """Defaults are the first layer: a recipe or override that sets method.temperature keeps the
    default method name (simclr), as `selfsup pretrain --data digits` picks simclr's recipe."""
    cfg = resolve([{"method": {"temperature": 0.5}}])
    assert cfg.method_name == "simclr" and cfg.method.temperature == 0.5
    assert resolve([{}]).method_name == "simclr"


def test_method_fields_and_view_preset_are_resolved():
    cfg = resolve([{"method": "byol"}])
    assert cfg.method_name == "byol"
    assert cfg.method.tau_base == 0.996  # the method's defaults are filled in
    assert cfg.views.solarize_p == (0.0, 0.2)  # BYOL's view preset
    cfg = resolve([{"method": "byol", "views": {"flip_p": 0.0}}])
    assert cfg.views.flip_p == 0.0 and cfg.views.blur_p == (1.0, 0.1)


def test_after_compose_the_method_and_views_are_typed_and_round_trip():
    from selfsup.methods.byol import BYOLConfig
    from selfsup.transforms.views import ViewConfig

    cfg = resolve([{"method": {"name": "byol", "tau_base": 0.99}, "views": {"flip_p": 0.0}}])
    assert type(cfg.method) is BYOLConfig and type(cfg.views) is ViewConfig  # parsed once, not dicts
    d = to_dict(cfg)
    assert d["method"]["name"] == "byol" and d["method"]["tau_base"] == 0.99 and "method_name" not in d
    again = resolve([d])
    assert again == cfg and to_dict(again) == d
    assert "unknown config key 'method_name'" in error_of({"method_name": "byol"})  # derived, never given
    assert "method: expected a mapping" in error_of({"method": 5})
    assert "views: expected a mapping" in error_of({"views": [0.2, 1.0]})


def test_unknown_method_lists_known_ones():
    msg = error_of({"method": {"name": "simclrr"}})
    assert "simclrr" in msg and "'simclr'" in msg and "byol" in msg


@pytest.mark.parametrize(
    "layer,word",
    [
        ({"optim": {"name": "adam"}}, "adamw"),
        ({"train": {"precision": "fp16"}}, "bf16"),
        ({"train": {"budget": "ten minutes"}}, "15m"),
    ],
)
def test_enumerations_are_checked(layer, word):
    assert word in error_of(SIMCLR, layer)


def test_parse_duration():
    assert parse_duration("15m") == 900.0
    assert parse_duration("90s") == 90.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("45") == 45.0
    assert parse_duration(30) == 30.0
    for bad in ("abc", "15x", "-5m", "m", "1h30m", ""):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_save_and_load_round_trip(tmp_path):
    cfg = resolve(
        [
            {
                "method": {"name": "byol", "tau_base": 0.99},
                "data": {"name": "digits", "mean": [0.3], "std": [0.4]},
                "train": {"budget": "90s", "max_steps": 12},
                "eval": {"knn_k": [10, 3]},
            }
        ]
    )
    save_config(cfg, tmp_path / "config.yaml")
    loaded = load_run_config(tmp_path)
    assert to_dict(loaded) == to_dict(cfg)
    assert loaded.eval.knn_k == (10, 3)


def test_missing_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--config"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a run directory"):
        load_run_config(tmp_path)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_yaml(tmp_path / "bad.yaml")


def test_an_old_run_config_with_monitor_test_still_loads(tmp_path):
    """train.monitor_test (configs written before 2026-12-06) is read as train.monitor_val."""
    from selfsup.config import load_yaml, resolve

    (tmp_path / "c.yaml").write_text("method: simclr\ntrain:\n  monitor_test: 123\n  epochs: 2\n")
    cfg = resolve([load_yaml(tmp_path / "c.yaml")])
    assert cfg.train.monitor_val == 123 and cfg.train.epochs == 2
