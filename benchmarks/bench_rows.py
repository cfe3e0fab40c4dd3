"""Markdown rows for docs/benchmarks.md from a `selfsup bench` directory: one row per finished run.

python benchmarks/bench_rows.py runs/bench-methods [DATE]      # DATE: the last column, e.g. 2026-12-05
python benchmarks/bench_rows.py runs/bench-methods --pretext   # runs with eval_pretext.json: their
                                                                 # pretext metrics (held-out, and the last
                                                                 # training batch) next to kNN / linear
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path, date: str) -> str | None:
    files = {n: run / f"{n}.json" for n in ("summary", "eval_knn", "eval_linear", "eval_cluster", "eval_efficiency")}
    if not all(p.is_file() for p in files.values()):
        return None
    s, k, lin, c, e = (json.loads(p.read_text()) for p in files.values())
    name = run.parent.name if run.name.startswith("seed") else run.name
    return (
        f"| {name} | {s['epochs']:.1f} | {100 * k['top1_k200']:.2f} % | {100 * k['top1_k20']:.2f} % | "
        f"{100 * lin['top1']:.2f} % | {s.get('diag/embedding_rank', float('nan')):.1f} / "
        f"{s.get('diag/embedding_dim', '?')} | {s.get('diag/feature_rank', float('nan')):.1f} | {c['nmi']:.3f} | "
        f"{e['images_per_s']:.0f} | {date} |"
    )


def pretext_row(run: Path) -> str | None:
    files = {n: run / f"{n}.json" for n in ("eval_pretext", "eval_knn", "eval_linear")}
    if not all(p.is_file() for p in files.values()):
        return None
    p, k, lin = (json.loads(f.read_text()) for f in files.values())
    held = set(p.get("heldout", ()))
    metrics = ", ".join(f"{name} {v:.3f}" + ("" if name in held else " (logged)") for name, v in p["pretext"].items())
    last = ", ".join(f"{name} {p['train_last'][name]:.3f}" for name in sorted(held))
    return (
        f"| {run.parent.name} | {metrics} | {last or '—'} | {100 * k['top1_k200']:.2f} % | {100 * lin['top1']:.2f} % |"
    )


if __name__ == "__main__":
    root, date = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "—"
    if date == "--pretext":
        print(
            "| method | pretext metric (held-out test images) | last training batch | kNN-200 | linear |\n"
            "|---|---|---|---|---|"
        )
        print("\n".join(r for r in map(pretext_row, sorted(root.glob("*/seed*"))) if r))
        sys.exit()
    print(
        "| method | epochs | kNN-200 | kNN-20 | linear | embedding rank | feature rank | cluster NMI | img/s | date |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in sorted(root.glob("*/seed*")):
        r = row(run, date)
        if r:
            print(r)
