"""The harness behind `selfsup claims`: train each claim's arms (seeded runs under one budget),
measure them, decide a verdict, and write docs/claims.md.

A claim (selfsup.claims.catalog) is a statement, the arms of its experiment (a method with
overrides, e.g. SimSiam with and without stop-gradient), a ``measure`` (run directory -> named
numbers) and a ``decide`` (numbers per arm -> verdict and reason). Runs live in
OUT/runs/<method>-<hash of the arm's settings>/seed<k>/, ordinary run directories shared by every
claim with the same arm (SimCLR's default run serves five claims); a finished run and a claim's
measurement of it (``claim_<name>.json``) are never redone, so an interrupted `selfsup claims` resumes.

Verdicts: "holds", "does not hold", or "inconclusive at this scale". With several seeds a
difference counts only when it exceeds twice the spread (the larger std of the two arms); with
one seed only a difference above the claim's margin counts, and the page says one seed was run.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from selfsup.bench import mean_std


@dataclass
class Arm:
    """One configuration of a claim's experiment."""
    name: str
    method: str
    overrides: tuple[str, ...] = ()
    data: str | None = None  # None: the claims' data set (--data)
    backbone: str | None = None


@dataclass
class Claim:
    name: str
    statement: str
    arms: list[Arm]
    measure: Callable[[Path], dict[str, float]]  # a finished run -> its numbers
    decide: Callable[[dict[str, list[dict]]], tuple[str, str]]  # arm -> per-seed numbers -> (verdict, reason)
    columns: list[str] = field(default_factory=list)  # which numbers the table shows


def arm_key(arm: Arm, data: str) -> str:
    """A run directory name for the arm's settings: identical arms of different claims share runs."""
    import hashlib

    sig = json.dumps([arm.method, sorted(arm.overrides), arm.data or data, arm.backbone])
    return f"{arm.method}-{hashlib.sha1(sig.encode()).hexdigest()[:8]}"


def compare(a: list[float], b: list[float], margin: float) -> tuple[str, float]:
    """Is a above b? ("higher" | "lower" | "tie", the difference of means). With seeds, a difference
    must exceed max(margin, 2 x the larger std); with one seed, the margin."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    spread = max(s for s in (sa, sb, 0.0) if s is not None)
    need = max(margin, 2 * spread)
    d = ma - mb
    return ("higher" if d > need else "lower" if d < -need else "tie"), d


def verdict_from(outcome: str, expected: str = "higher") -> str:
    if outcome == "tie":
        return "inconclusive at this scale"
    return "holds" if outcome == expected else "does not hold"


def run_claims(claims: list[Claim], out: str | Path, data: str = "fashion-mnist", budget: str = "5m",
               seeds: int = 1, device: str = "cpu", progress_bar: bool = True, doc: str | Path | None = None,
               extra_overrides: tuple[str, ...] = ()) -> dict:
    """Train, measure and judge ``claims``; write ``doc`` (markdown); returns {claim: result}."""
    from selfsup.bench import Entry, _clear_unfinished, _namespace
    from selfsup.cli import build_config
    from selfsup.train import fit

    out = Path(out)
    results = {}
    for c in claims:
        per_arm: dict[str, list[dict]] = {}
        commands = []
        for arm in c.arms:
            per_arm[arm.name] = []
            for seed in range(seeds):
                run = out / "runs" / arm_key(arm, data) / f"seed{seed}"
                overrides = [*arm.overrides, *extra_overrides, f"train.seed={seed}", f"train.device={device}"]
                commands.append(f"selfsup pretrain --method {arm.method} --data {arm.data or data} --budget {budget}"
                                + (f" --backbone {arm.backbone}" if arm.backbone else "") + f" --out {run} "
                                + " ".join(o for o in overrides if not o.startswith("train.device")))
                cache = run / f"claim_{c.name}.json"
                if not cache.is_file():
                    if not (run / "summary.json").is_file():
                        resuming = (run / "checkpoints" / "last" / "meta.json").is_file()
                        print(f"== claim {c.name}: {arm.name} seed {seed} ({'resuming' if resuming else 'training'})")
                        if resuming:
                            from selfsup.config import load_run_config

                            fit(load_run_config(run), run, resume=True, progress_bar=progress_bar)
                        else:
                            _clear_unfinished(run)
                            ns = _namespace(Entry(arm.name, arm.method), arm.data or data, None, arm.backbone,
                                            budget, None, run, overrides)
                            fit(build_config(ns), run, progress_bar=progress_bar)
                    cache.write_text(json.dumps(c.measure(run), indent=1))
                per_arm[arm.name].append(json.loads(cache.read_text()))
        verdict, reason = c.decide(per_arm)
        results[c.name] = {"statement": c.statement, "verdict": verdict, "reason": reason, "arms": per_arm,
                           "columns": c.columns, "commands": commands}
        print(f"claim {c.name}: {verdict} — {reason}")
    if doc:
        write_doc(results, doc, data, budget, seeds)
    return results


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_doc(results: dict, path: str | Path, data: str, budget: str, seeds: int) -> Path:
    """docs/claims.md: per claim the statement, the commands, a table (mean ± std over seeds) and the verdict."""
    import torch

    lines = ["# The seeds' claims, reproduced", "",
             f"Generated by `selfsup claims` on {time.strftime('%Y-%m-%d')}, commit {_commit()}, "
             f"{platform.machine()} with {torch.get_num_threads()} torch threads; data set {data}, "
             f"{budget} of training per run, {seeds} seed(s) per arm"
             + (" — with one seed a difference counts only above each claim's margin, and spreads are unknown."
                if seeds == 1 else ", a difference counts only above twice the larger spread."), ""]
    verdicts = [r["verdict"] for r in results.values()]
    lines += [f"Summary: {verdicts.count('holds')} hold, {verdicts.count('does not hold')} do not hold, "
              f"{sum(v.startswith('inconclusive') for v in verdicts)} inconclusive at this scale.", ""]
    for name, r in results.items():
        lines += [f"## {name}: {r['verdict']}", "", f"**Claim.** {r['statement']}", "", f"**Verdict.** {r['reason']}", ""]
        cols = r["columns"] or sorted({k for runs in r["arms"].values() for m in runs for k in m})
        lines.append("| arm | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for arm, runs in r["arms"].items():
            cells = []
            for col in cols:
                vals = [m[col] for m in runs if isinstance(m.get(col), (int, float))]
                if not vals:
                    cells.append("—")
                    continue
                mu, sd = mean_std(vals)
                cells.append(f"{mu:.3g}" + (f" ± {sd:.2g}" if sd is not None else ""))
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += ["", "<details><summary>commands</summary>", "", "```bash", *r["commands"], "```", "", "</details>", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
