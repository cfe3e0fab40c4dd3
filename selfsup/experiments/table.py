"""One flat table per benchmark folder: a row per run directory under it (``<folder>/runs.csv``), with what made
the row (commit, recipe hash, machine, date, seed) and what it measured (the evaluations' accuracies, the
claims' measures, training time and steps), so that a reader compares runs in one file instead of opening
hundreds. The run directories stay beside it with the small files a row needs (config, logs, evaluations).

The recipe hash is the hash of the run's config.yaml without what does not change the experiment (its seed,
device, threads, data directory, loggers): two runs with the same hash differ only by their seed.

    python -m selfsup.experiments.table benchmarks/results/*/     # (re)write every folder's runs.csv
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path

import yaml

# config keys that do not change what an experiment is (section, key)
NOT_RECIPE = {("train", "seed"), ("train", "device"), ("train", "threads"), ("data", "dir"), ("train", "loggers")}

IDENTITY = ["run", "method", "backbone", "data", "seed", "budget", "recipe", "commit", "machine", "date"]
TRAINING = ["train_seconds", "steps", "epochs"]
# (column, evaluation file, key, scale): accuracies in %
EVALUATIONS = [
    ("linear", "eval_linear.json", "top1", 100),
    ("knn20", "eval_knn.json", "top1_k20", 100),
    ("knn200", "eval_knn.json", "top1_k200", 100),
    ("cluster_nmi", "eval_cluster.json", "nmi", 1),
    ("images_per_s", "eval_efficiency.json", "images_per_s", 1),
]


def recipe_hash(cfg: dict) -> str:
    """10 hex digits of the config without NOT_RECIPE's keys."""
    kept = {
        sec: {k: v for k, v in body.items() if (sec, k) not in NOT_RECIPE} if isinstance(body, dict) else body
        for sec, body in cfg.items()
        if sec != "out"  # the run's own directory: a path, not the recipe
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def run_row(run: Path, folder: Path) -> dict:
    """The table's row of one run directory (one that holds a config.yaml)."""
    cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    prov, summary = _json(run / "provenance.json"), _json(run / "summary.json")
    b, t = cfg.get("backbone", {}), cfg.get("train", {})
    row = {
        "run": run.relative_to(folder).as_posix(),
        "method": (cfg.get("method") or {}).get("name"),
        "backbone": f"{b.get('name')} x{b.get('width')}" if b else None,
        "data": (cfg.get("data") or {}).get("name"),
        "seed": t.get("seed"),
        "budget": t.get("budget") or (f"{t['steps']} steps" if t.get("steps") else f"{t.get('epochs')} epochs"),
        "recipe": recipe_hash(cfg),
        "commit": prov.get("commit", "unknown") if prov else "unrecorded",  # runs before provenance.json (2026-12-07)
        "machine": f"{prov['machine']}, {prov['cpus']} cpus" if prov else None,
        "date": (prov.get("date") or "")[:10] or None,
        "train_seconds": summary.get("train_seconds"),
        "steps": summary.get("steps"),
        "epochs": summary.get("epochs"),
    }
    for col, file, key, scale in EVALUATIONS:
        v = _json(run / file).get(key)
        row[col] = scale * v if isinstance(v, (int, float)) else None
    for claim in sorted(run.glob("claim_*.json")):  # the claims' measures (selfsup.experiments.claims)
        row.update(_json(claim).get("measured", {}))
    return {k: _round(v) for k, v in row.items()}


def runs_of(folder: Path) -> list[Path]:
    """Every run directory under ``folder`` (a config.yaml), retired ones (``*.previous``) left out, sorted."""
    return sorted(
        p.parent for p in folder.rglob("config.yaml") if not any(part.endswith(".previous") for part in p.parts)
    )


def table_csv(folder: Path) -> str:
    """runs.csv's text for ``folder``: IDENTITY, TRAINING and EVALUATIONS columns, then the claims' measures."""
    rows = [run_row(r, folder) for r in runs_of(folder)]
    fixed = IDENTITY + TRAINING + [c for c, *_ in EVALUATIONS]
    extra = sorted({k for r in rows for k in r} - set(fixed))
    columns = [c for c in fixed if any(r.get(c) is not None for r in rows)] + extra
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_table(folder: str | Path) -> Path | None:
    """Write ``folder``/runs.csv (None: no run directories under it)."""
    folder = Path(folder)
    if not runs_of(folder):
        return None
    out = folder / "runs.csv"
    out.write_text(table_csv(folder))
    return out


def main(argv: list[str] | None = None) -> None:
    for folder in argv if argv is not None else sys.argv[1:]:
        out = write_table(folder)
        if out is not None:
            print(out)


if __name__ == "__main__":
    main()
