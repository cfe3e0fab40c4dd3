"""The harness behind `selfsup claims`: train each claim's arms (seeded runs under one budget),
measure them, decide a verdict, and write docs/claims.md.

A claim (selfsup.claims.catalog; its types in selfsup.claims.experiment) is a statement, the arms of its experiment (a method with
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

import functools
import json
import platform
import subprocess
import time
from pathlib import Path

from selfsup.engine import labelled_splits
from selfsup.bench import entry_config, mean_std, train_or_resume
from selfsup.config import eval_size, load_run_config
from selfsup.eval.features import raw_pixel_features
from selfsup.nn.classifier import reinitialise
from selfsup.eval.linear import linear_probe
from selfsup.eval.run import load_run
from selfsup.nn.features import extract_features, recalibrate_batchnorm
from selfsup.claims.catalog import catalog
from selfsup.claims.experiment import Claim, arm_key


def run_claims(claims: list[Claim], out: str | Path, data: str = "fashion-mnist", budget: str = "5m",
               seeds: int = 1, device: str = "cpu", progress_bar: bool = True, doc: str | Path | None = None,
               extra_overrides: tuple[str, ...] = ()) -> dict:
    """Train, measure and judge ``claims``; write ``doc`` (markdown); returns {claim: result}.

    The page covers every claim of the catalog whose runs are already measured under ``out``, not only
    ``claims``: `--only` splits the work over several calls and each call rewrites the
    whole page; claims not yet run are listed as such."""
    out = Path(out)
    results = {}
    for c in claims:
        results[c.name] = _judge(c, out, data, budget, seeds, device, progress_bar, extra_overrides, train=True)
        print(f"claim {c.name}: {results[c.name]['verdict']} — {results[c.name]['reason']}")
    if doc:
        page = {c.name: results.get(c.name) or _judge(c, out, data, budget, seeds, device, progress_bar,
                                                       extra_overrides, train=False) for c in catalog()}
        write_doc(page, doc, data, budget, seeds, references(out))
    return results


def references(out: Path) -> dict[str, float]:
    """Linear probes with no pretraining, to read every table against: each data set's raw pixels and a
    random-init copy of each encoder the claims trained (BatchNorm statistics of the data, as the
    transfer protocol's reference row). A 5-minute run can probe near these — then "trains" means
    little, and a collapsed embedding may still sit on features as good as random ones.
    {label: top-1 %}, cached in OUT/references.json (one entry per data set and architecture)."""
    import copy

    path = out / "references.json"
    refs = json.loads(path.read_text()) if path.is_file() else {}
    for run in sorted(out.glob("runs/*/seed0")):
        if not (run / "summary.json").is_file() or not (run / "checkpoints" / "last").is_dir():
            continue
        cfg = load_run_config(run)
        if cfg.method_name == "clip":  # its encoder reads captions too; its own page shows few-shot probes
            continue
        bb = cfg.backbone
        pixels, arch = f"{cfg.data.name}: raw pixels", f"{cfg.data.name}: random-init {bb.name} x{bb.width:g}"
        if pixels in refs and arch in refs:
            continue
        cfg, method, _ = load_run(run)
        train, test = labelled_splits(cfg)
        probe = dict(l2_grid=cfg.eval.linear_l2, val_fraction=cfg.eval.linear_val_fraction)
        if pixels not in refs:
            refs[pixels] = 100 * linear_probe(raw_pixel_features(train.images), train.labels,
                                              raw_pixel_features(test.images), test.labels, **probe)["top1"]
        if arch not in refs:
            size = eval_size(cfg, train.image_size)
            enc = recalibrate_batchnorm(reinitialise(copy.deepcopy(method.evaluated_encoder), 0), train.images, cfg.data.mean,
                                        cfg.data.std, size)
            kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=size, batch_size=cfg.eval.batch_size)
            refs[arch] = 100 * linear_probe(extract_features(enc, train.images, **kw), train.labels,
                                            extract_features(enc, test.images, **kw), test.labels, **probe)["top1"]
        path.write_text(json.dumps(refs, indent=1, sort_keys=True))
    return refs


def _judge(c: Claim, out: Path, data: str, budget: str, seeds: int, device: str, progress_bar: bool,
           extra_overrides: tuple[str, ...], train: bool) -> dict:
    """One claim's result: train (``train``) and measure its arms' runs, then decide. Without ``train``, only
    what is already measured is read, and a claim with a missing measurement comes back as not yet run."""
    per_arm: dict[str, list[dict]] = {}
    commands, missing = [], False
    for arm in c.arms:
        per_arm[arm.name] = []
        key = arm_key(arm, data, budget, extra_overrides)
        for seed in range(seeds):
            run = out / "runs" / key / f"seed{seed}"
            overrides = [*arm.overrides, *extra_overrides, f"train.seed={seed}", f"train.device={device}"]
            commands.append(f"selfsup pretrain --method {arm.method} --data {arm.data or data} --budget {budget}"
                            + (f" --config configs/{arm.method}_{arm.recipe_of}.yaml" if arm.recipe_of else "")
                            + (f" --backbone {arm.backbone}" if arm.backbone else "") + f" --out {run} "
                            + " ".join(o for o in overrides if not o.startswith("train.device")))
            cache = run / f"claim_{c.name}.json"
            if not cache.is_file():
                if not train:
                    missing = True
                    continue
                if (run / "summary.json").is_file() and not _has_weights(run):
                    _retire(run)
                train_or_resume(run, functools.partial(entry_config, arm.entry(), arm.data or data, None,
                                                       arm.backbone, budget, None, overrides),
                                f"claim {c.name}: {arm.name} seed {seed}", progress_bar)
                cache.write_text(json.dumps(c.measure(run), indent=1))
            per_arm[arm.name].append(json.loads(cache.read_text()))
    result = {"statement": c.statement, "arms": per_arm, "columns": c.columns, "commands": commands}
    if missing:
        return {**result, "verdict": "not yet run", "reason": f"`selfsup claims --only {c.name}` has not finished."}
    verdict, reason = c.decide(per_arm)
    return {**result, "verdict": verdict, "reason": reason}


def _has_weights(run: Path) -> bool:
    return any((run / "checkpoints" / d / "model.safetensors").is_file() for d in ("last", "previous"))


def _retire(run: Path) -> None:
    """A finished run whose weights are gone — weights are git-ignored, so a fresh checkout has a run's numbers
    but not its weights — cannot serve a new measurement: move it to ``seed<k>.previous`` (nothing lost) and
    train the arm again. The other claims' measurements of the old run leave with it (they measured another
    sample of the arm), so those claims read "not yet run" until they are run again; say which."""
    import shutil

    old = run.with_name(run.name + ".previous")
    shutil.rmtree(old, ignore_errors=True)
    run.rename(old)
    others = sorted(p.stem.removeprefix("claim_") for p in old.glob("claim_*.json"))
    print(f"== {run}: finished, but its weights are not on this machine; moved to {old.name} and training it again"
          + (f"; run `selfsup claims --only {','.join(others)}` after this to re-measure the new run" if others else ""))


def _commit() -> str:
    """HEAD, with "-dirty" when the code or the recipes (not the docs this page is one of) have uncommitted
    changes."""
    here = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "selfsup", "configs"], capture_output=True,
                               text=True, cwd=here, timeout=10).stdout.strip()
        return (head + ("-dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_doc(results: dict, path: str | Path, data: str, budget: str, seeds: int,
              refs: dict[str, float] | None = None) -> Path:
    """docs/claims.md: per claim the statement, the commands, a table (mean ± std over seeds) and the verdict."""
    import torch

    lines = ["# The seeds' claims, reproduced", "",
             f"Generated by `selfsup claims` on {time.strftime('%Y-%m-%d')}, commit {_commit()}, "
             f"{platform.machine()} with {torch.get_num_threads()} torch threads; data set {data}, "
             f"{budget} of training per run, {seeds} seed(s) per arm"
             + (" — with one seed a difference counts only above each claim's margin, and spreads are unknown."
                if seeds == 1 else ", a difference counts only above twice the larger spread."), ""]
    if refs:
        lines += ["Linear probes with no pretraining, to read the tables against (top-1 %): "
                  + "; ".join(f"{k} {v:.1f}" for k, v in sorted(refs.items())) + ".", ""]
    verdicts = [r["verdict"] for r in results.values()]
    lines += [f"Summary: {verdicts.count('holds')} hold, {verdicts.count('does not hold')} do not hold, "
              f"{sum(v.startswith('inconclusive') for v in verdicts)} inconclusive at this scale"
              + (f", {verdicts.count('not yet run')} not yet run" if "not yet run" in verdicts else "") + ".", ""]
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
