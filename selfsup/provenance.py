"""Where a result came from: the code's commit, the command, the versions and the machine. Every run
directory records it (RUN_DIR/provenance.json), and the benchmarks and the claims stamp their files with
the same commit, so a number in the docs can be traced to the code that made it."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# the checkout this package was loaded from (None when installed from a wheel: no commit to name)
_CHECKOUT = Path(__file__).resolve().parent.parent


def code_commit() -> str:
    """The short commit of the checkout selfsup runs from, with "-dirty" when its code or recipes (not its
    docs or results) have uncommitted changes; "unknown" outside a git checkout (a wheel install)."""
    if not (_CHECKOUT / ".git").exists():
        return "unknown"
    try:
        git: dict[str, Any] = dict(capture_output=True, text=True, cwd=_CHECKOUT, timeout=10)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **git).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "selfsup", "configs"], **git).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("-dirty" if dirty else "")) or "unknown"


def provenance() -> dict:
    """{date, commit, command, python, torch, selfsup, machine, cpus}: what made a result, as JSON."""
    import torch  # loaded when called: the core layer stays light to import

    try:
        version = importlib.metadata.version("selfsup")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": code_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "selfsup": version,
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
