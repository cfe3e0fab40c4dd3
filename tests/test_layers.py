"""The code's layers are the documented ones (docs/architecture.md): import-linter checks the contract in
pyproject.toml (a layer imports only layers below it: applications > train > eval > engine > methods >
parts > core); no module imports selfsup inside a function or another module's private names; ruff's
lint rules hold."""

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
    out = subprocess.run(
        [exe, "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0 and "selfsup.methods is not allowed to import selfsup.train" in out.stdout


def test_ruff_finds_nothing_and_the_code_is_formatted():
    """The lint rules in pyproject.toml (undefined and unused names, mutable defaults, == None), and ruff's
    formatter (line length 120): `ruff format selfsup tests benchmarks` fixes what this reports."""
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is part of the test extra: pip install -e '.[test]'"
    for command in (["check"], ["format", "--check"]):
        out = subprocess.run(
            [exe, *command, "--no-cache", "selfsup", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_every_layer_type_checks():
    """mypy over what [tool.mypy] in pyproject.toml names, which must be every module of the package: each
    top-level module and sub-package of selfsup/ (the recipes are data) is named there, so a new module is
    checked from the day it is added, and the files come from that one place."""
    from mypy import api

    import tomllib

    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    package = ROOT / "selfsup"
    modules = {p.name for p in package.glob("*.py")} | {
        p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name != "recipes"
    }
    checked = {Path(f).name for f in files if Path(f).parent.name == "selfsup"}
    assert modules - checked == set(), f"add {sorted(modules - checked)} to [tool.mypy] files in pyproject.toml"
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), *[str(ROOT / f) for f in files]])
    assert status == 0, stdout[-4000:] + stderr[-2000:]


def _imports(path: Path):
    """(import node, whether it sits inside a function) for every selfsup import of a file."""
    import ast

    tree = ast.parse(path.read_text())
    inside = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("selfsup"):
            yield node, id(node) in inside
        elif isinstance(node, ast.Import) and any(a.name.startswith("selfsup") for a in node.names):
            yield node, id(node) in inside


def test_no_module_imports_another_modules_private_names():
    bad = [
        f"{p.relative_to(ROOT)}:{n.lineno} {n.module}.{a.name}"
        for p in (ROOT / "selfsup").rglob("*.py")
        for n, _ in _imports(p)
        if hasattr(n, "module")
        for a in n.names
        if a.name.startswith("_") and a.name != "__version__"
    ]
    assert not bad, "private names imported across modules (make them public or move them):\n" + "\n".join(bad)


def test_no_selfsup_import_inside_a_function():
    """An import inside a function hides a dependency (and, between layers, a cycle). The one exception is
    the Python API in selfsup/__init__.py, above every layer: `import selfsup.data` must not load the loop."""
    bad = [
        f"{p.relative_to(ROOT)}:{n.lineno}"
        for p in (ROOT / "selfsup").rglob("*.py")
        if p != ROOT / "selfsup" / "__init__.py"
        for n, inside in _imports(p)
        if inside
    ]
    assert not bad, "selfsup imports inside functions:\n" + "\n".join(bad)
