"""Shared fixtures: single-threaded torch, tiny run configurations, an isolated data environment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import settings as hypothesis_settings

from selfsup.config import RunConfig, deep_merge, parse_override, resolve

# The suite shares a 2-core machine with training runs. A torch thread pool wider than the free
# cores spins and gets 10-30x slower, so tests run single-threaded (SELFSUP_TEST_THREADS overrides).
torch.set_num_threads(int(os.environ.get("SELFSUP_TEST_THREADS", "1")))

# Property tests draw the same examples on every run, so the suite is a repeatable check and a
# red CI always reproduces; HYPOTHESIS_PROFILE=explore draws fresh examples to hunt for new faults
# (a fault found there becomes an @example in its test) and HYPOTHESIS_EXAMPLES of them (default 300).
hypothesis_settings.register_profile("suite", derandomize=True, print_blob=True, max_examples=30, deadline=None)
hypothesis_settings.register_profile(
    "explore",
    derandomize=False,
    print_blob=True,
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

# Small heads for the methods the tiny configs know; a method not listed keeps its defaults.
TINY_HEADS = {
    "simclr": {"temperature": 0.5, "proj_hidden": 64, "proj_dim": 32},
    "byol": {"proj_hidden": 64, "proj_dim": 32, "pred_hidden": 64, "tau_base": 0.98},
}


def tiny_layers(method: str = "simclr", *overrides: str, **sections: dict) -> list[dict]:
    """Config layers for a seconds-long run on 256 digits images with a width-0.25 convnet."""
    base = {
        "method": {"name": method, **TINY_HEADS.get(method, {})},
        "data": {"name": "digits", "limit": 256},
        "backbone": {"name": "convnet", "width": 0.25},
        "views": {"crop_scale": [0.3, 1.0], "flip_p": 0.0, "blur_p": [0.0, 0.0]},
        "optim": {"name": "lars", "lr": 1.0, "scale_lr": False},
        # cpu: the resume tests compare weights to 1e-6, which nondeterministic GPU kernels would not give
        "train": {"batch_size": 64, "epochs": 1, "monitor_train": 0, "log_every": 1, "seed": 0, "device": "cpu"},
    }
    base = deep_merge(base, sections)
    return [base, *(parse_override(o) for o in overrides)]


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config("byol", "train.epochs=2", optim={"lr": 0.5})`` -> a validated RunConfig."""

    def make(method: str = "simclr", *overrides: str, **sections: dict) -> RunConfig:
        return resolve(tiny_layers(method, *overrides, **sections))

    return make


@pytest.fixture
def no_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No dataset anywhere: empty $SELFSUP_DATA, no downloads, empty cache, no Debian package."""
    from selfsup.data import fashion_mnist

    empty = tmp_path / "empty-data"
    empty.mkdir()
    monkeypatch.setenv("SELFSUP_DATA", str(empty))
    monkeypatch.setenv("SELFSUP_ALLOW_DOWNLOAD", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIRS", [])
    return empty


_LEARNS = re.compile(r"_(learns?|learning)(_|$)")  # test_simclr_learns_digits, test_colour_tasks_learn, ...


def pytest_collection_modifyitems(items):
    """Mark the tests that train a method and check that it learns (their names say so) as ``learning``."""
    for item in items:
        if _LEARNS.search(item.originalname or item.name) and "learning_rate" not in item.name:
            item.add_marker(pytest.mark.learning)
