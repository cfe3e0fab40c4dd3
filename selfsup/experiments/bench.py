"""`selfsup bench`: train several methods under one budget, evaluate them the same way, and write a
leaderboard (markdown, JSON, CSV) with mean ± std over seeds.

Fair by construction: every method trains on the same data for the same wall-clock budget with its
recipe (configs/<method>_<data>.yaml; a dataset's recipes share one backbone unless a recipe names its
own — on Fashion-MNIST SimCLR's and NNCLR's are wider and train at 16 px — and ``--backbone`` forces one), and every encoder is measured by the same protocols on the same cached features.
Re-running the same command resumes: finished runs and evaluations are skipped, a run stopped mid-way
continues from its last checkpoint, a run that fails is recorded as failed without stopping the
others, and a seed the machine slowed (``disturbed``: fewer than half its seeds' median steps in a
wall-clock budget) is moved aside and trained again. Layout: OUT/<name>/seed<k>/ (an ordinary run
directory each), OUT/leaderboard.{md,json,csv} (a row per method) and OUT/runs.csv (a row per run:
selfsup.experiments.table).
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
import statistics
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from selfsup.config import ConfigError, RunConfig, compose, load_run_config
from selfsup.errors import SelfsupError
from selfsup.eval.run import PROTOCOLS, evaluate, evaluate_raw_pixels
from selfsup.experiments.table import write_table
from selfsup.registry import get_method_spec, list_methods
from selfsup.train import fit

# (column, result file, key, scale) of the leaderboard; accuracies are shown in %
COLUMNS = [
    ("kNN-200", "eval_knn.json", "top1_k200", 100),
    ("kNN-20", "eval_knn.json", "top1_k20", 100),
    ("linear", "eval_linear.json", "top1", 100),
    ("cluster NMI", "eval_cluster.json", "nmi", 1),
    ("epochs", "summary.json", "epochs", 1),
    ("img/s", "eval_efficiency.json", "images_per_s", 1),
    ("emb. rank", "summary.json", "diag/embedding_rank", 1),
]


# read for every run whatever --protocols says: reading the logs costs nothing
ALWAYS = ("efficiency",)


def check_protocols(names) -> None:
    """Fails unless every name is a protocol bench may run with its defaults (``Protocol.bench``)."""
    unknown = [p for p in names if p not in PROTOCOLS or not PROTOCOLS[p].bench]
    if unknown:
        runs = [
            p.name + (f" ({p.note})" if p.note else "") for p in PROTOCOLS.values() if p.bench and p.name not in ALWAYS
        ]
        own = [p.name for p in PROTOCOLS.values() if not p.bench]
        raise ConfigError(
            f"--protocols {','.join(unknown)}: bench runs {', '.join(runs[:-1])} and {runs[-1]}, and "
            f"always reads {' and '.join(ALWAYS)}; {', '.join(own[:-1])} and {own[-1]} take their own "
            f"options: run `selfsup eval` on the runs"
        )


@dataclass
class Entry:
    """One leaderboard row: ``name`` trains ``method`` with its recipe, then ``config`` (a YAML file) on top."""

    name: str
    method: str
    config: str | None = None


def parse_entries(text: str) -> list[Entry]:
    """ "simclr,byol,byol_no_bn=byol:configs/ablations/byol_no_bn.yaml" -> entries; "all" -> every method
    that trains on a plain image set (those needing colour images, captions or videos are named
    explicitly, with their data: e.g. colorization on color-fashion-mnist)."""

    if text.strip() == "all":
        special = [m for m in list_methods() if (n := get_method_spec(m).needs).color or n.text or n.video]
        if special:
            print(
                f"bench: 'all' leaves out {', '.join(special)} (they need colour images, captions or videos: "
                f"bench them on their own data set)"
            )
        return [Entry(m, m) for m in list_methods() if m not in special]
    entries = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, spec = item.partition("=")
        method, _, config = (spec or name).partition(":")
        get_method_spec(method)  # an unknown name fails here, before hours of training
        if config and not Path(config).is_file():
            raise SelfsupError(f"{item}: config file {config} not found")
        entries.append(Entry(name, method, config or None))
    if len({e.name for e in entries}) != len(entries):
        raise SelfsupError(
            f"--methods {text!r} names a row twice; give repeated methods distinct NAME=METHOD:CONFIG names"
        )
    return entries


def bench(
    entries: list[Entry],
    data: str,
    budget: str | None = "15m",
    seeds: int = 1,
    out: str | Path | None = None,
    protocols=("knn", "linear"),
    backbone: str | None = None,
    data_dir: str | None = None,
    overrides: tuple[str, ...] = (),
    epochs: int | None = None,
    device: str = "cpu",
    progress_bar: bool = True,
) -> dict:
    """Train and evaluate every (entry, seed) not done yet; returns the leaderboard (also written to OUT)."""

    check_protocols(protocols)
    out = Path(out or f"runs/bench-{data}-{budget or f'{epochs}ep'}")
    out.mkdir(parents=True, exist_ok=True)
    protocols = list(dict.fromkeys([*ALWAYS, *protocols]))

    def train_and_evaluate(e: Entry, seed: int) -> None:
        run = out / e.name / f"seed{seed}"
        status = run / "failed.txt"
        if status.is_file():
            print(f"{e.name} seed {seed}: failed before (see {status}); delete that file to retry")
            return
        try:
            train_or_resume(
                run,
                functools.partial(
                    entry_config,
                    e,
                    data,
                    data_dir,
                    backbone,
                    budget,
                    epochs,
                    [*overrides, f"train.seed={seed}", f"train.device={device}"],
                ),
                f"{e.name} seed {seed}",
                progress_bar,
            )
            todo = [p for p in protocols if not (run / f"eval_{p}.json").is_file()]
            if not (run / "checkpoints" / "last").is_dir() and any(p != "efficiency" for p in todo):
                # an archived run (benchmarks/results keeps a run's small files, not its weights):
                # what needs the encoder cannot be measured here, and the run is not a failure
                print(
                    f"{e.name} seed {seed}: no weights in {run / 'checkpoints'} (an archived run): "
                    f"{', '.join(p for p in todo if p != 'efficiency')} left out"
                )
                todo = [p for p in todo if p == "efficiency"]
            applies = _applies(run) if todo else set()
            for p in todo:
                if p not in applies:  # e.g. pretext on a contrastive run: not a failure, no row
                    print(f"{e.name} seed {seed}: {p} does not apply to this method, left out")
                    continue
                evaluate(run, p, device=device)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one bad method must not stop the others: record it, go on
            run.mkdir(parents=True, exist_ok=True)
            status.write_text(traceback.format_exc())
            print(f"{e.name} seed {seed}: FAILED ({type(err).__name__}: {err}); details in {status}")

    for e in entries:
        for seed in range(seeds):
            train_and_evaluate(e, seed)
            _write_leaderboard(out, entries, seeds)
        # a seed the machine slowed trained another experiment than its siblings: once per call, again
        # (a wall-clock budget only: under epochs a run's steps do not depend on the machine)
        slowed = disturbed([out / e.name / f"seed{s}" for s in range(seeds)]) if budget else []
        for run, steps, median in slowed:
            set_aside(run, f"the machine slowed it: {steps} steps against its seeds' median {median:.0f}")
            train_and_evaluate(e, int(run.name.removeprefix("seed")))
            _write_leaderboard(out, entries, seeds)
    raw = out / "raw_pixels.json"
    first = next(
        (r for e in entries for r in sorted((out / e.name).glob("seed*")) if (r / "config.yaml").is_file()), None
    )
    if not raw.is_file() and first is not None:  # the reference row, on the runs' data
        raw.write_text(
            json.dumps({p: evaluate_raw_pixels(load_run_config(first), p) for p in ("knn", "linear")}, indent=1)
        )
    return _write_leaderboard(out, entries, seeds)


def _applies(run: Path) -> set[str]:
    """The protocols a finished run can be measured by (``Protocol.applies``: pretext needs logged pretext
    metrics, zero-shot and retrieval a text encoder); every other one any encoder."""
    return {p.name for p in PROTOCOLS.values() if p.applies is None or p.applies(run)}


def train_or_resume(run: Path, make_config: Callable[[], RunConfig], label: str, progress_bar: bool = True) -> None:
    """Train the run ``make_config()`` describes into ``run``, or resume it from its last checkpoint;
    nothing when it finished (summary.json): what makes `selfsup bench` and `selfsup claims` resumable."""
    if (run / "summary.json").is_file():
        return
    resuming = (run / "checkpoints" / "last" / "meta.json").is_file()
    print(f"== {label}: {'resuming' if resuming else 'training'} -> {run}")
    if resuming:
        fit(load_run_config(run), run, resume=True, progress_bar=progress_bar)
    else:
        _clear_unfinished(run)  # started, killed before its first checkpoint: start clean
        cfg = make_config()
        cfg.out = str(run)
        fit(cfg, run, progress_bar=progress_bar)


DISTURBED = 0.5  # a run with fewer steps than this fraction of its seeds' median was slowed by the machine


def disturbed(runs: list[Path]) -> list[tuple[Path, int, float]]:
    """The finished runs among the seeds of one entry or arm (one budget) that the machine slowed down, as
    (run, steps, the seeds' median steps). A wall-clock budget turns into steps at the loop's measured
    rate, so a run that other load on a shared machine slowed trains far fewer steps than its siblings:
    another experiment than the one asked for, which is trained again. The rule (fixed 2026-12-07, when a
    MoCo v2 run of the claims planned 23 steps against its siblings' 1,255 and 1,254, before that run was
    redone): fewer than DISTURBED x the median steps of the finished seeds, with two seeds or more."""
    steps = {}
    for run in runs:
        if (run / "summary.json").is_file() and not (run / "failed.txt").is_file():
            steps[run] = json.loads((run / "summary.json").read_text()).get("steps") or 0
    if len(steps) < 2:
        return []
    median = statistics.median(steps.values())
    return [(run, n, median) for run, n in steps.items() if n < DISTURBED * median]


def set_aside(run: Path, why: str) -> Path:
    """Move ``run`` to ``seed<k>.previous`` (nothing lost; an older one there is replaced) so that it trains
    again; says why. Returns the new place."""
    old = run.with_name(run.name + ".previous")
    shutil.rmtree(old, ignore_errors=True)
    run.rename(old)
    print(f"== {run}: {why}; moved to {old.name} and training it again")
    return old


def _clear_unfinished(run: Path) -> None:
    """Logs of a run killed before its first checkpoint: nothing to resume, and appending to them
    would make one metrics.jsonl tell two runs."""
    (run / "metrics.jsonl").unlink(missing_ok=True)
    shutil.rmtree(run / "tb", ignore_errors=True)


def entry_config(
    e: Entry,
    data: str | None,
    data_dir: str | None,
    backbone: str | None,
    budget: str | None,
    epochs: int | None,
    overrides,
) -> RunConfig:
    """The configuration of an entry's run, composed exactly as ``selfsup pretrain --method M [--config F]
    --data D [--data-dir DIR] [--backbone B] --budget T | --epochs E key=value...`` composes it."""
    flags: dict = {"method": {"name": e.method}} if e.method else {}
    if data or data_dir:
        flags["data"] = {**({"name": data} if data else {}), **({"dir": data_dir} if data_dir else {})}
    if backbone:
        flags["backbone"] = {"name": backbone}
    if budget:
        flags["train"] = {"budget": budget}
    elif epochs is not None:
        flags["train"] = {"epochs": epochs, "budget": None}
    return compose(flags, e.config, list(overrides)).cfg


def _value(run: Path, file: str, key: str):
    p = run / file
    if not p.is_file():
        return None
    v = json.loads(p.read_text()).get(key)
    return v if isinstance(v, (int, float)) else None


def _trained_by(run: Path) -> str:
    p = run / "provenance.json"
    return json.loads(p.read_text()).get("commit", "unknown") if p.is_file() else "unrecorded"


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample std) of a list; std None for one value, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _write_leaderboard(out: Path, entries: list[Entry], seeds: int) -> dict:
    """OUT/leaderboard.{json,csv,md} from the run directories in OUT (``build_leaderboard``)."""
    board = build_leaderboard(out, entries, seeds)
    (out / "leaderboard.json").write_text(json.dumps(board, indent=1))
    names = [c for c, *_ in COLUMNS]
    with open(out / "leaderboard.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "name",
                "method",
                "backbone",
                "seeds_done",
                "failed",
                "uses_labels",
                *[x for c in names for x in (c, c + " std")],
            ]
        )
        for r in board["rows"]:
            w.writerow(
                [
                    r["name"],
                    r["method"],
                    r.get("backbone", ""),
                    r["seeds_done"],
                    r["failed"],
                    r["uses_labels"],
                    *[("" if r[x] is None else f"{r[x]:.4g}") for c in names for x in (c, c + " std")],
                ]
            )
    (out / "leaderboard.md").write_text(leaderboard_markdown(board))
    write_table(out)  # OUT/runs.csv: a row per run, with its commit, recipe hash, machine and seed
    board["out"] = str(out)
    return board


def build_leaderboard(out: Path, entries: Sequence[Entry] = (), seeds: int = 1) -> dict:
    """The leaderboard of OUT, computed from its run directories alone (OUT/<name>/seed<k>/ and
    OUT/raw_pixels.json): ``entries`` for ``seeds`` seeds each, and every other row already in OUT with
    however many seeds it ran. Nothing is written; a committed leaderboard must equal this (tested)."""
    entries = list(entries)
    # rows of earlier calls with other method lists stay on the board (their runs are in OUT too)
    named = {e.name for e in entries}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in named):
        cfgs = sorted(d.glob("seed*/config.yaml"))
        if cfgs or any(d.glob("seed*/failed.txt")):
            entries = [*entries, Entry(d.name, load_run_config(cfgs[0].parent).method_name if cfgs else d.name)]
    rows = []
    for e in entries:
        runs = [out / e.name / f"seed{s}" for s in range(seeds)]
        if e.name not in named:  # an earlier call's row: however many seeds it ran
            runs = sorted((out / e.name).glob("seed*"))
        done = [r for r in runs if (r / "summary.json").is_file() and not (r / "failed.txt").is_file()]
        row: dict[str, Any] = {
            "name": e.name,
            "method": e.method,
            "config": e.config,
            "seeds_done": len(done),
            "seeds": len(runs),
            "failed": sum((r / "failed.txt").is_file() for r in runs),
            "uses_labels": e.method in list_methods() and get_method_spec(e.method).uses_labels,
            # the code each seed was trained by (RUN_DIR/provenance.json; runs from before it: "unrecorded")
            "commits": [_trained_by(r) for r in done],
        }
        for col, file, key, scale in COLUMNS:
            vals = [v * scale for v in (_value(r, file, key) for r in done) if v is not None]
            row[col], row[col + " std"] = mean_std(vals)
        if done:
            cfg = load_run_config(done[0])
            row["backbone"] = f"{cfg.backbone.name} x{cfg.backbone.width:g}"
        rows.append(row)
    rows.sort(key=lambda r: -(r["linear"] if r["linear"] is not None else -1))
    raw = json.loads((out / "raw_pixels.json").read_text()) if (out / "raw_pixels.json").is_file() else None
    board = {
        "rows": rows,
        "seeds": seeds,
        "raw_pixels": raw
        and {
            "kNN-200": 100 * raw["knn"]["top1_k200"],
            "kNN-20": 100 * raw["knn"]["top1_k20"],
            "linear": 100 * raw["linear"]["top1"],
        },
    }
    return board


def leaderboard_markdown(board: dict) -> str:
    """The leaderboard as OUT/leaderboard.md holds it."""
    names = [c for c, *_ in COLUMNS]

    def cell(r, c):
        m, s = r.get(c), r.get(c + " std")
        if m is None:
            return "—"
        digits = 3 if c == "cluster NMI" else (0 if c == "img/s" else (1 if c in ("epochs", "emb. rank") else 2))
        return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")

    lines = ["| method | backbone | seeds | " + " | ".join(names) + " |", "|" + "---|" * (3 + len(names))]
    for r in board["rows"]:
        name = (
            r["name"]
            + (" (uses labels)" if r["uses_labels"] else "")
            + (f" ({r['failed']} failed)" if r["failed"] else "")
        )
        lines.append(
            f"| {name} | {r.get('backbone', '—')} | {r['seeds_done']}/{r['seeds']} | "
            + " | ".join(cell(r, c) for c in names)
            + " |"
        )
    if board["raw_pixels"]:
        raw = board["raw_pixels"]
        lines.append("| raw pixels | — | — | " + " | ".join(f"{raw[c]:.2f}" if c in raw else "—" for c in names) + " |")
    # from the rows, not this call's --seeds: rows of earlier calls keep however many seeds they ran
    many = [r["seeds_done"] > 1 for r in board["rows"] if r["seeds_done"]]
    std = (
        "mean ± std over seeds"
        if many and all(many)
        else "mean ± std where a row has several seeds; one seed: no spread"
        if any(many)
        else "one seed: no spread"
    )
    return f"Accuracies in % on the test split ({std}).\n\n" + "\n".join(lines) + "\n"
