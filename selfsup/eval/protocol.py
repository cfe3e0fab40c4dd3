"""An evaluation protocol as one object: what runs it, which options it takes, how its result reads.

``selfsup.eval.run`` registers every protocol in its ``PROTOCOLS`` registry next to the function that
runs it (``@protocol("knn", summary=..., options=(LABELS, TEST, ...))``). Each option is declared once,
with its type and help (``Option``); ``selfsup eval`` builds its flags, their help (prefixed with the
protocols that take each), its error messages and the keywords it passes from the registry and prints
``describe(result)``, and ``selfsup bench`` picks the protocols it may run (``bench``) and those that
apply to a run (``applies``) from it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Option:
    """One flag of ``selfsup eval``: ``name`` is argparse's dest (``--from-scratch`` for ``from_scratch``),
    ``keyword`` the protocol function's argument it fills (default: ``name``), ``type`` argparse's converter,
    ``switch`` a flag without a value (store_true); ``help`` says what it does, without the protocols' names
    (the CLI prefixes those of every protocol that takes it)."""

    name: str
    help: str
    keyword: str = ""
    type: Callable[[str], object] | None = None
    switch: bool = False
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def comma_list(item: type = str) -> Callable[[str], list]:
    """argparse type for '0.01,0.1,1' -> [0.01, 0.1, 1.0] (``item`` = float) or 'tsne,umap' -> ['tsne', 'umap']."""

    def parse(text: str) -> list:
        try:
            return [item(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give comma-separated {item.__name__} values, "
                f"e.g. {'0.01,0.1,1' if item is float else 'a,b'}"
            ) from None

    return parse


# the options several protocols share, declared once
LABELS = Option(
    "labels",
    "your own labels instead of the run's dataset: a folder with one sub-folder per class, "
    "or a CSV of path,label rows (paths relative to the CSV or to the pretraining folder)",
    metavar="DIR|FILE.csv",
)
TEST = Option(
    "test",
    "with --labels: labelled images to test on (default: stratified k-fold cross-validation)",
    metavar="DIR|FILE.csv",
)
FOLDS = Option("folds", "with --labels and no --test: cross-validation folds (default 5)", type=int)
SEED = Option("seed", "subset / k-means / corruption seed (default 0)", type=int)
USER_LABELS = (LABELS, TEST)


@dataclass(frozen=True)
class Protocol:
    name: str
    run: Callable[..., dict]  # run(run_dir, device=..., **options) -> result, also written to RUN_DIR/eval_*.json
    summary: Callable[[dict], str]  # the one human line (or a few) of a result
    options: tuple[Option, ...] = ()  # its flags of `selfsup eval`
    applies: Callable[[Path], bool] | None = None  # can a finished run (its directory) be measured? None: any encoder
    note: str = ""  # where it applies, for messages: "pretext-task runs only"
    bench: bool = True  # `selfsup bench` may run it with its defaults (False: it needs its own options)
    sharded: bool = False  # under torchrun, its feature extraction is sharded over the processes
    progress: bool = False  # run() takes progress= (a progress bar)

    def __call__(self, run_dir, device: str = "cpu", **options) -> dict:
        return self.run(run_dir, device=device, **options)

    @property
    def keywords(self) -> dict[str, str]:
        """argparse dest -> run() keyword, for each of its options."""
        return {o.name: o.keyword or o.name for o in self.options}

    @property
    def takes_labels(self) -> bool:
        return LABELS in self.options

    def describe(self, res: dict) -> str:
        """``summary(res)``; on a user's labels, followed by how it was tested."""
        line = self.summary(res)
        if "evaluation" not in res or "num_labelled" not in res:
            return line
        worst = min(((c, a) for c, a in res["per_class"].items() if a is not None), key=lambda t: t[1], default=None)
        return (
            f"{line}\n  {res['num_labelled']} labelled images, {res['evaluation']}"
            + (" (± std over folds)" if "top1_std" in res else f" ({res['num_test']} images)")
            + (f"; weakest class {worst[0]} {pct(worst[1])}" if worst else "")
            + (f"\n  confusion matrix: {res['picture']}" if res.get("picture") else "")
        )


def cli_options(protocols) -> dict[str, tuple[Option, list[str]]]:
    """Every option of ``protocols`` once (in the order they declare them) with the names of the protocols
    that take it; one name declared twice with different types or help is a programming error."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for p in protocols:
        for o in p.options:
            if o.name in out and out[o.name][0] != o:
                raise ValueError(
                    f"option {o.flag} is declared twice, differently: {out[o.name][0]} and {o} "
                    f"(protocol {p.name}); declare it once and share it"
                )
            out.setdefault(o.name, (o, []))[1].append(p.name)
    return out


def pct(x) -> str:
    """A fraction as a percentage with two decimals; '—' for None."""
    return "—" if x is None else f"{100 * x:.2f} %"


def plus_minus(res: dict, key: str) -> str:
    """' ± 1.23' (a spread in %) when ``res`` has ``key``, else ''."""
    return f" ± {100 * res[key]:.2f}" if key in res else ""
