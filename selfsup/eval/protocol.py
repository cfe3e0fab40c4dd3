"""An evaluation protocol as one object: what runs it, which options it takes, how its result reads.

``selfsup.eval.run`` registers every protocol in its ``PROTOCOLS`` registry next to the function that
runs it (``@protocol("knn", summary=..., options=...)``); ``selfsup eval`` builds its allowed flags and
its error messages from the registry and prints ``describe(result)``, and ``selfsup bench`` picks the
protocols it may run (``bench``) and those that apply to a run (``applies``) from it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# a user's own labelled images (and test images): CLI flag -> run() keyword
USER_LABELS = {"labels": "labels", "test": "test"}


@dataclass(frozen=True)
class Protocol:
    name: str
    run: Callable[..., dict]  # run(run_dir, device=..., **options) -> result, also written to RUN_DIR/eval_*.json
    summary: Callable[[dict], str]  # the one human line (or a few) of a result
    options: Mapping[str, str] = field(default_factory=dict)  # CLI flag (argparse dest) -> run() keyword
    applies: Callable[[Path], bool] | None = None  # can a finished run (its directory) be measured? None: any encoder
    note: str = ""  # where it applies, for messages: "pretext-task runs only"
    bench: bool = True  # `selfsup bench` may run it with its defaults (False: it needs its own options)
    sharded: bool = False  # under torchrun, its feature extraction is sharded over the processes
    progress: bool = False  # run() takes progress= (a progress bar)

    def __call__(self, run_dir, device: str = "cpu", **options) -> dict:
        return self.run(run_dir, device=device, **options)

    @property
    def takes_labels(self) -> bool:
        return "labels" in self.options

    def describe(self, res: dict) -> str:
        """``summary(res)``; on a user's labels, followed by how it was tested."""
        line = self.summary(res)
        if "evaluation" not in res or "num_labelled" not in res:
            return line
        worst = min(((c, a) for c, a in res["per_class"].items() if a is not None), key=lambda t: t[1], default=None)
        return (f"{line}\n  {res['num_labelled']} labelled images, {res['evaluation']}"
                + (" (± std over folds)" if "top1_std" in res else f" ({res['num_test']} images)")
                + (f"; weakest class {worst[0]} {pct(worst[1])}" if worst else "")
                + (f"\n  confusion matrix: {res['picture']}" if res.get("picture") else ""))


def pct(x) -> str:
    """A fraction as a percentage with two decimals; '—' for None."""
    return "—" if x is None else f"{100 * x:.2f} %"


def plus_minus(res: dict, key: str) -> str:
    """' ± 1.23' (a spread in %) when ``res`` has ``key``, else ''."""
    return f" ± {100 * res[key]:.2f}" if key in res else ""
