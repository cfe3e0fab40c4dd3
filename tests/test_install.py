"""A real install: the wheel carries the recipes, so `selfsup pretrain` installed outside a checkout
resolves the same recipe as in one (configs/ in a checkout is a link to the package's recipes)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without dependencies: the test's own torch and
    friends serve) into a folder that is first on the path, away from the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("selfsup-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True)
    return tmp


def _run(installed: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(installed / "site")}
    out = subprocess.run([sys.executable, "-c", code], cwd=installed, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_wheel_holds_every_recipe(installed):
    names = set(zipfile.ZipFile(next((installed / "dist").glob("*.whl"))).namelist())
    recipes = {p.relative_to(ROOT / "selfsup").as_posix() for p in (ROOT / "selfsup" / "recipes").rglob("*.yaml")}
    assert recipes and {f"selfsup/{r}" for r in recipes} <= names


def test_an_installed_selfsup_resolves_the_recipe(installed):
    out = _run(installed, "import selfsup, selfsup.config as c, argparse\n"
                          "from selfsup.cli import build_config\n"
                          "print(selfsup.__file__)\n"
                          "ns = argparse.Namespace(config=None, method='simclr', data='digits', data_dir=None, "
                          "backbone=None, epochs=None, budget=None, batch_size=None, overrides=[], out='r', "
                          "no_recipe=False)\n"
                          "cfg = build_config(ns)\n"
                          "print(cfg.backbone.name, cfg.backbone.width, cfg.train.batch_size)")
    lines = out.strip().splitlines()
    assert lines[0].startswith(str(installed / "site"))  # the installed copy, not the checkout
    assert "recipes/simclr_digits.yaml" in lines[1] and str(installed / "site") in lines[1]
    assert lines[-1] == "convnet 0.5 128"  # configs/simclr_digits.yaml's values, not the ResNet-18 defaults
