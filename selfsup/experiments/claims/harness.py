"""The harness behind `selfsup claims`: train each claim's arms (seeded runs under one budget),
measure them, judge them by the claim's pre-registered rule, and write docs/claims.md.

A claim (selfsup.experiments.claims.catalog; its types in selfsup.experiments.claims.experiment, its rules in
selfsup.experiments.claims.rules) is a statement, the arms of its experiment (a method with overrides, e.g. SimSiam
with and without stop-gradient), a ``measure`` (run directory -> named numbers) and a rule with its
direction, margin and seeds. Runs live in OUT/runs/<method>-<hash of the arm's settings>/seed<k>/,
ordinary run directories shared by every claim with the same arm (SimCLR's default run serves several
claims); a finished run and a claim's measurement of it (``claim_<name>.json``) are never redone, so an
interrupted `selfsup claims` resumes.

Pre-registration: before a run trains, it records the fingerprint of every claim of the catalog as it
stands (``registered.json``: the rules fixed before the run). A claim whose fingerprint is not the one its
runs recorded — its rule, margin, seeds, arms or measure changed after they were trained — refuses them:
they cannot judge a rule written after they were seen. ``fresh=True`` (`--fresh`) moves such runs aside
(``seed<k>.previous``, nothing lost) and trains new ones.

Verdicts: "holds", "does not hold", or "inconclusive" (selfsup.experiments.claims.rules: a difference counts only
above the margin and twice the seeds' larger std; fewer seeds than registered give at most inconclusive).
A run that the machine slowed (``disturbed``: far fewer steps in its budget than its arm's other seeds) is not
judged with: the page says so, and the next `selfsup claims` of that claim moves it aside and trains it again.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Iterable
from pathlib import Path

from selfsup.engine import labelled_splits
from selfsup.experiments.bench import DISTURBED, disturbed, entry_config, mean_std, set_aside, train_or_resume
from selfsup.experiments.table import write_table
from selfsup.config import eval_size, load_run_config
from selfsup.eval.features import raw_pixel_features
from selfsup.nn.classifier import reinitialise
from selfsup.eval.linear import linear_probe
from selfsup.eval.run import load_run
from selfsup.nn.features import extract_features, recalibrate_batchnorm
from selfsup.experiments.claims.catalog import catalog
from selfsup.experiments.claims.experiment import Arm, Claim, arm_key
from selfsup.errors import SelfsupError
from selfsup.provenance import code_commit


def run_claims(
    claims: list[Claim],
    out: str | Path,
    data: str = "fashion-mnist",
    budget: str = "3m",
    seeds: int | None = None,
    device: str = "cpu",
    progress_bar: bool = True,
    doc: str | Path | None = None,
    extra_overrides: tuple[str, ...] = (),
    fresh: bool = False,
) -> dict:
    """Train, measure and judge ``claims`` (``seeds`` per arm; None: each claim's registered number);
    write ``doc`` (markdown); returns {claim: result}.

    The page covers every claim of the catalog whose runs are already measured under ``out``, not only
    ``claims``: `--only` splits the work over several calls and each call rewrites the
    whole page; claims not yet run are listed as such."""
    out = Path(out)
    results = {}
    for c in claims:
        results[c.name] = _judge(
            c, out, data, budget, seeds or c.seeds, device, progress_bar, extra_overrides, train=True, fresh=fresh
        )
        print(f"claim {c.name}: {results[c.name]['verdict']} — {results[c.name]['reason']}")
    if doc:
        page = {
            c.name: results.get(c.name)
            or _judge(c, out, data, budget, seeds or c.seeds, device, progress_bar, extra_overrides, train=False)
            for c in catalog()
        }
        runs = {Path(r) for res in page.values() for r in res.get("runs", [])}  # a run two claims share: once
        write_doc(page, doc, data, budget, references(out), cpu_minutes(runs))
    write_table(out)  # OUT/runs.csv: every run's commit, recipe hash, seed and measures in one table
    return results


class RuleChanged(SelfsupError):
    """A claim's runs were trained under another version of its rule."""


def register(run: Path, claim: Claim) -> None:
    """Record in ``run`` the fingerprint of every claim as it stands now (the catalog's, and ``claim``'s,
    the one it trains for), before the run trains."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "registered.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "commit": code_commit(),
                "claims": {**{c.name: c.fingerprint() for c in catalog()}, claim.name: claim.fingerprint()},
            },
            indent=1,
        )
    )


def registered(run: Path, c: Claim) -> str | None:
    """The fingerprint ``run`` recorded for ``c`` before it trained (None: none recorded)."""
    p = run / "registered.json"
    return json.loads(p.read_text())["claims"].get(c.name) if p.is_file() else None


def cpu_minutes(runs: Iterable[Path]) -> dict[str, float]:
    """Training and measuring time of ``runs`` (the page's: summary.json's train_seconds, and the seconds each
    claim's measurement took), in minutes. Runs of earlier rules, retired or under other keys, are not counted."""
    train = measure = 0.0
    for run in runs:
        if (run / "summary.json").is_file():
            train += json.loads((run / "summary.json").read_text()).get("train_seconds", 0.0)
        for m in run.glob("claim_*.json"):
            measure += json.loads(m.read_text()).get("seconds", 0.0)
    return {"training": train / 60, "measuring": measure / 60}


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
        assert train.labels is not None and test.labels is not None  # labelled_splits refuses unlabelled splits
        probe = functools.partial(linear_probe, l2_grid=cfg.eval.linear_l2, val_fraction=cfg.eval.linear_val_fraction)
        if pixels not in refs:
            refs[pixels] = (
                100
                * probe(
                    raw_pixel_features(train.images),
                    train.labels,
                    raw_pixel_features(test.images),
                    test.labels,
                )["top1"]
            )
        if arch not in refs:
            size = eval_size(cfg, train.image_size)
            enc = recalibrate_batchnorm(
                reinitialise(copy.deepcopy(method.evaluated_encoder), 0),
                train.images,
                cfg.data.mean,
                cfg.data.std,
                size,
            )
            features = functools.partial(
                extract_features, enc, mean=cfg.data.mean, std=cfg.data.std, size=size, batch_size=cfg.eval.batch_size
            )
            refs[arch] = (
                100
                * probe(
                    features(train.images),
                    train.labels,
                    features(test.images),
                    test.labels,
                )["top1"]
            )
        path.write_text(json.dumps(refs, indent=1, sort_keys=True))
    return refs


def _judge(
    c: Claim,
    out: Path,
    data: str,
    budget: str,
    seeds: int,
    device: str,
    progress_bar: bool,
    extra_overrides: tuple[str, ...],
    train: bool,
    fresh: bool = False,
) -> dict:
    """One claim's result: train (``train``) and measure its arms' runs, then decide. Without ``train``, only
    what is already measured under this claim's fingerprint is read, and a claim with a missing measurement
    comes back as not yet run."""
    per_arm: dict[str, list[dict]] = {}
    commands, missing, stale = [], False, []
    fingerprint = c.fingerprint()
    keys = {arm.name: arm_key(arm, data, budget, extra_overrides) for arm in c.arms}  # each arm composed once
    runs = [out / "runs" / keys[arm.name] / f"seed{seed}" for arm in c.arms for seed in range(seeds)]
    before = [r for r in runs if r.exists() and registered(r, c) != fingerprint]
    if before and train and not fresh:  # refused before anything trains
        raise RuleChanged(
            f"claim {c.name}: {len(before)} run(s), e.g. {before[0]}, were trained before its rule "
            f"took its present form (fingerprint {fingerprint}; the run recorded "
            f"{registered(before[0], c) or 'none'}): they cannot judge a rule written after they were "
            f"seen. Train new ones with `selfsup claims --only {c.name} --fresh` (the old runs are "
            f"kept as seed<k>.previous)"
        )

    def train_and_measure(arm: Arm, seed: int, run: Path, overrides: list[str]) -> None:
        if (run / "summary.json").is_file() and not _has_weights(run):
            _retire(run, "finished, but its weights are not on this machine", c.name)
        if not (run / "registered.json").is_file():
            register(run, c)  # the rules as they stand, before the run is seen
        train_or_resume(
            run,
            functools.partial(entry_config, arm.entry(), arm.data or data, None, arm.backbone, budget, None, overrides),
            f"claim {c.name}: {arm.name} seed {seed}",
            progress_bar,
        )
        t0 = time.time()
        measured = c.measure(run)
        (run / f"claim_{c.name}.json").write_text(
            json.dumps({"fingerprint": fingerprint, "measured": measured, "seconds": time.time() - t0}, indent=1)
        )

    slowed: list[str] = []
    for arm in c.arms:
        key = keys[arm.name]
        arm_runs: dict[Path, tuple[int, list[str]]] = {}
        for seed in range(seeds):
            run = out / "runs" / key / f"seed{seed}"
            overrides = [*arm.overrides, *extra_overrides, f"train.seed={seed}", f"train.device={device}"]
            arm_runs[run] = (seed, overrides)
            commands.append(
                f"selfsup pretrain --method {arm.method} --data {arm.data or data} --budget {budget}"
                + (f" --config configs/{arm.method}_{arm.recipe_of}.yaml" if arm.recipe_of else "")
                + (f" --backbone {arm.backbone}" if arm.backbone else "")
                + f" --out {run} "
                + " ".join(o for o in overrides if not o.startswith("train.device"))
            )
            if run in before:
                if not train:
                    stale.append(run)
                    continue
                _retire(run, f"it was trained under another version of claim {c.name}'s rule", c.name)
            if not (run / f"claim_{c.name}.json").is_file():
                if not train:
                    missing = True
                    continue
                train_and_measure(arm, seed, run, overrides)
        for run, steps, median in disturbed(list(arm_runs)):
            if not train:
                slowed.append(f"{run} ({steps} steps against its arm's median {median:.0f})")
                continue
            _retire(run, f"the machine slowed it: {steps} steps against its arm's median {median:.0f}", c.name)
            seed, overrides = arm_runs[run]
            train_and_measure(arm, seed, run, overrides)
        per_arm[arm.name] = [
            json.loads(cache.read_text())["measured"]
            for run in arm_runs
            if (cache := run / f"claim_{c.name}.json").is_file() and run not in stale
        ]
    result = {
        "statement": c.statement,
        "rule": c.describe(),
        "fingerprint": fingerprint,
        "history": c.history,
        "arms": per_arm,
        "columns": c.columns,
        "commands": commands,
        "runs": [str(out / "runs" / keys[arm.name] / f"seed{seed}") for arm in c.arms for seed in range(seeds)],
    }
    if stale:
        return {
            **result,
            "verdict": "not yet run",
            "reason": f"its runs under {out} were trained under an earlier "
            f"rule; `selfsup claims --only {c.name} --fresh` runs it under this one.",
        }
    if missing:
        return {**result, "verdict": "not yet run", "reason": f"`selfsup claims --only {c.name}` has not finished."}
    if slowed:
        return {
            **result,
            "verdict": "not yet run",
            "reason": f"the machine slowed {len(slowed)} run(s), so they trained another experiment than the "
            f"registered one: {'; '.join(slowed)}. `selfsup claims --only {c.name}` trains them again.",
        }
    verdict, reason = c.decide(per_arm)
    return {**result, "verdict": verdict, "reason": reason}


def _has_weights(run: Path) -> bool:
    return any((run / "checkpoints" / d / "model.safetensors").is_file() for d in ("last", "previous"))


def _retire(run: Path, why: str, claim: str) -> None:
    """Move ``run`` aside to ``seed<k>.previous`` (nothing lost) so that its arm trains again for ``claim``: its
    weights are gone (weights are git-ignored, so a fresh checkout has a run's numbers but not its weights),
    it was trained under another version of the claim's rule, or the machine slowed it. The other claims'
    measurements of the old run leave with it (they measured another sample of the arm), so those claims
    read "not yet run" until they are run again; say which."""
    old = set_aside(run, why)
    others = sorted(n for p in old.glob("claim_*.json") if (n := p.stem.removeprefix("claim_")) != claim)
    if others:
        print(f"   run `selfsup claims --only {','.join(others)}` after this to re-measure the new run")


def write_doc(
    results: dict,
    path: str | Path,
    data: str,
    budget: str,
    refs: dict[str, float] | None = None,
    minutes: dict[str, float] | None = None,
) -> Path:
    """docs/claims.md: per claim the statement, its pre-registered rule (and the rule's history), the
    verdict with the rule's reading, a table of every seed's value and mean ± std per arm, the commands."""
    import torch

    lines = [
        "# The field's claims, tested",
        "",
        f"Generated by `selfsup claims` on {time.strftime('%Y-%m-%d')}, commit {code_commit()}, "
        f"{platform.machine()} with {torch.get_num_threads()} torch threads; data set {data}, "
        f"{budget} of training per run. Each claim's rule (arms, measure, direction, margin, seeds) was fixed "
        "in selfsup/experiments/claims/catalog.py before its runs, which record it (a rule changed later cannot reuse "
        "them). A difference counts only above the margin and twice the larger std over the seeds; fewer "
        'seeds than registered, or a difference inside them, is "inconclusive". A run that the machine slowed '
        f"to fewer than {DISTURBED:g} x its arm's median steps is trained again before the claim is judged.",
        "",
    ]
    if minutes:
        lines += [
            f"CPU time of the runs on this page: {minutes['training']:.0f} minutes of training and "
            f"{minutes['measuring']:.0f} of measuring.",
            "",
        ]
    if refs:
        lines += [
            "Linear probes with no pretraining, to read the tables against (top-1 %): "
            + "; ".join(f"{k} {v:.1f}" for k, v in sorted(refs.items()))
            + ".",
            "",
        ]
    verdicts = [r["verdict"] for r in results.values()]
    lines += [
        f"Summary: {verdicts.count('holds')} hold, {verdicts.count('does not hold')} do not hold, "
        f"{sum(v.startswith('inconclusive') for v in verdicts)} inconclusive"
        + (f", {verdicts.count('not yet run')} not yet run" if "not yet run" in verdicts else "")
        + ".",
        "",
    ]
    for name, r in results.items():
        lines += [
            f"## {name}: {r['verdict']}",
            "",
            f"**Claim.** {r['statement']}",
            "",
            f"**Rule** (fingerprint {r['fingerprint']}). Holds when {r['rule']}.",
            "",
            f"**Verdict.** {r['reason']}",
            "",
        ]
        if r["history"]:
            lines += ["**The rule's history.** " + " ".join(r["history"]), ""]
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
                seeds = f" ({', '.join(f'{v:.3g}' for v in vals)})" if len(vals) > 1 else ""
                cells.append(f"{mu:.3g}" + (f" ± {sd:.2g}" if sd is not None else "") + seeds)
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "<details><summary>commands</summary>",
            "",
            "```bash",
            *r["commands"],
            "```",
            "",
            "</details>",
            "",
        ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
