"""A real install: the wheel built from this checkout, installed into a fresh virtual environment,
carries the recipes, so its `selfsup pretrain` command, run outside a checkout, resolves and trains the
same recipe as in one (configs/ in a checkout is a link to the package's recipes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel, pip-installed into a new venv. Its dependencies (torch and friends, gigabytes that pip
    could not download here) come from the test's own environment through a .pth line, which puts that
    site-packages after the venv's own: the venv's selfsup is the wheel's, never the checkout's (the
    checkout's editable-install hook lives in a .pth file there, and .pth files on an appended path are
    not run)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy of the sources: setuptools leaves build/lib behind in the tree it builds, and a module
    # since moved or deleted there would be packed into the next wheel
    src = tmp / "src"
    shutil.copytree(ROOT / "selfsup", src / "selfsup", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp / "dist").glob("selfsup-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps-from-the-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    return {"tmp": tmp, "venv": venv, "site": site, "wheel": wheel}


def _selfsup(installed: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(
        [str(installed["venv"] / "bin" / "selfsup"), *args],
        cwd=installed["tmp"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out


def test_the_wheel_holds_every_recipe_and_module(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    recipes = {p.relative_to(ROOT / "selfsup").as_posix() for p in (ROOT / "selfsup" / "recipes").rglob("*.yaml")}
    assert recipes and {f"selfsup/{r}" for r in recipes} <= names
    modules = {f"selfsup/{p.relative_to(ROOT / 'selfsup').as_posix()}" for p in (ROOT / "selfsup").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == modules  # every module, and nothing stale


def test_the_installed_command_resolves_the_recipe(installed):
    out = _selfsup(installed, "pretrain", "--method", "simclr", "--data", "digits", "--print-config").stdout
    recipe = next(line for line in out.splitlines() if line.startswith("recipe: "))
    # the venv's copy of the package, not the checkout's
    assert recipe == f"recipe: {installed['site'] / 'selfsup' / 'recipes' / 'simclr_digits.yaml'}"
    cfg = yaml.safe_load(out[out.index("\n", out.index("recipe: ")) + 1 :])
    # configs/simclr_digits.yaml's values, not the generic defaults (a full ResNet-18, batch 256)
    assert (cfg["backbone"]["name"], cfg["backbone"]["width"], cfg["train"]["batch_size"]) == ("convnet", 0.5, 128)
    assert not list(installed["tmp"].glob("runs"))  # --print-config trains nothing


def test_the_installed_command_trains_with_the_recipe(installed):
    run = installed["tmp"] / "r"
    _selfsup(
        installed,
        "pretrain",
        "--method",
        "simclr",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--out",
        str(run),
        "train.device=cpu",
    )
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["backbone"]["name"], cfg["backbone"]["width"], cfg["method"]["temperature"]) == ("convnet", 0.5, 0.5)
    assert (run / "summary.json").is_file() and list((run / "checkpoints").iterdir())
