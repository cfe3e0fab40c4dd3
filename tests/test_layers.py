"""The code's layers are the documented ones: import-linter checks the contract in pyproject.toml
(a layer imports only layers below it; applications > train, eval > engine > methods > parts > core)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_respect_the_declared_layers():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra: pip install -e '.[test]'"
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_the_contract_fails_on_a_layer_violation(tmp_path):
    """The check can fail: a copy of the package where a method imports the training loop is refused."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    shutil.copytree(ROOT / "selfsup", tmp_path / "selfsup", ignore=shutil.ignore_patterns("__pycache__", "recipes"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bad = tmp_path / "selfsup" / "methods" / "simclr.py"
    bad.write_text(bad.read_text() + "\nfrom selfsup.train import loop  # noqa\n")
    out = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0 and "selfsup.methods is not allowed to import selfsup.train" in out.stdout
