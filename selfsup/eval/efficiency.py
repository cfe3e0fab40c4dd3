"""Training efficiency, read from a run's own records (metrics.jsonl, summary.json): nothing is re-run.

What a user with one CPU wants to know besides the final accuracy: how fast it trained (images/s),
how long and how much memory it took, and how soon it became useful — the training time at which
the online kNN monitor first reached each accuracy level.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from selfsup.errors import SelfsupError
from selfsup.engine import read_metrics, row_seconds

LEVELS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def time_to_accuracy(rows: list[dict], levels=LEVELS, key: str = "monitor/knn20_top1") -> dict[str, float | None]:
    """{"0.7": training seconds when ``key`` first reached 0.7, or None if it never did}; each row's
    time from selfsup.engine.row_seconds."""
    seconds = row_seconds(rows) or [0.0] * len(rows)
    points = [(t, r[key]) for t, r in zip(seconds, rows) if key in r]
    return {f"{lvl:g}": next((t for t, acc in points if acc >= lvl), None) for lvl in levels}


def efficiency(run_dir: str | Path) -> dict:
    """{"images_per_s" (median over logged intervals), "train_seconds", "epochs", "peak_rss_mb",
    "peak_cuda_mb", "time_to_knn20": {level: seconds}, "final_knn20"}."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise SelfsupError(f"{run_dir} has no metrics.jsonl: train it first (selfsup pretrain --out {run_dir})")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    ips = [r["images_per_s"] for r in rows if "images_per_s" in r]
    train_rows = [r for r in rows if "train_seconds" in r and "loss" in r]
    monitor = [r["monitor/knn20_top1"] for r in rows if "monitor/knn20_top1" in r]
    return {
        "protocol": "efficiency",
        "finished": summary_path.is_file(),
        "images_per_s": statistics.median(ips) if ips else None,
        "train_seconds": summary.get("train_seconds", train_rows[-1]["train_seconds"] if train_rows else None),
        "epochs": summary.get("epochs"),
        "steps": summary.get("steps", rows[-1].get("step")),
        "peak_rss_mb": summary.get("peak_rss_mb"),
        "peak_cuda_mb": summary.get("peak_cuda_mb"),
        "time_to_knn20": time_to_accuracy(rows),
        "final_knn20": monitor[-1] if monitor else None,
    }
