"""Does choosing which images to label pay? `selfsup select`'s strategies against random picks.

For a trained run on a labelled data set (Fashion-MNIST), a validation split is carved from the
training split (few_labels.validation_split: 10,000 seeded images, the same split); each strategy
picks n images of the rest from the run's features; those n images get their true labels, a linear probe is fitted on their features (the
same probe as `selfsup eval linear`, L2 chosen on a tenth of the n), and scored on the validation
split and on the test split. Random picks are repeated over seeds; k-center greedy is deterministic
(one pick per n); k-means representatives vary with the seed.

The rule, fixed here before any run: a strategy pays at a size n when its mean VALIDATION accuracy
over the seeds is above random's mean by more than MARGIN points; "hurts" below by more than MARGIN;
otherwise "no difference" (test accuracy is reported beside it, and chooses nothing). The default
strategy of `selfsup select` is the one that pays at the most sizes. Class coverage (classes present
among the picks) is reported too.

    python benchmarks/selection.py RUN_DIR [--sizes 100,500] [--seeds 0,1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import numpy as np
import torch

from selfsup.curate import STRATEGIES, select_indices
from selfsup.eval.linear import fit_probe
from selfsup.eval.run import run_features
from few_labels import validation_split  # benchmarks/ is on sys.path when this file runs as a script

MARGIN = 1.0  # points of validation accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--sizes", default="100,500")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(2)
    sizes = [int(s) for s in a.sizes.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    ftr, ytr, fte, yte, cfg = run_features(a.run_dir)
    num_classes = int(ytr.max()) + 1
    val, pool = validation_split(len(ytr))
    rows = []
    for n in sizes:
        for strategy in STRATEGIES:
            for seed in seeds if strategy != "kcenter" else seeds[:1]:
                t0 = time.time()
                idx = pool[select_indices(ftr[pool], n, strategy, seed)]
                pick_s = time.time() - t0
                probe = fit_probe(
                    ftr[idx], ytr[idx], num_classes, cfg.eval.linear_l2, cfg.eval.linear_val_fraction, seed
                )
                acc, val_acc = 100 * probe.accuracy(fte, yte), 100 * probe.accuracy(ftr[val], ytr[val])
                classes = len(set(ytr[idx].tolist()))
                rows.append(
                    {
                        "n": n,
                        "strategy": strategy,
                        "seed": seed,
                        "val": val_acc,
                        "linear": acc,
                        "classes": classes,
                        "pick_seconds": pick_s,
                    }
                )
                print(
                    f"n={n:4d} {strategy:8s} seed {seed}: validation {val_acc:.2f} %, test {acc:.2f} %, {classes} "
                    f"classes, picked in {pick_s:.1f} s",
                    flush=True,
                )
    table = []
    for n in sizes:

        def of(strategy, key):
            return [r[key] for r in rows if r["n"] == n and r["strategy"] == strategy]

        base = np.mean(of("random", "val"))
        for strategy in STRATEGIES:
            diff = float(np.mean(of(strategy, "val")) - base)
            verdict = (
                "-"
                if strategy == "random"
                else "pays"
                if diff > MARGIN
                else "hurts"
                if diff < -MARGIN
                else "no difference"
            )
            table.append(
                {
                    "n": n,
                    "strategy": strategy,
                    "val": float(np.mean(of(strategy, "val"))),
                    "mean": float(np.mean(of(strategy, "linear"))),
                    "std": float(np.std(of(strategy, "linear"))),
                    "runs": len(of(strategy, "val")),
                    "val_minus_random": diff,
                    "verdict": verdict,
                    "classes": of(strategy, "classes"),
                }
            )
    print(
        f"\n| labels | strategy | validation | test (mean ± std) | runs | validation vs random | verdict "
        f"(margin {MARGIN:g}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in table:
        print(
            f"| {t['n']} | {t['strategy']} | {t['val']:.2f} | {t['mean']:.2f} ± {t['std']:.2f} | {t['runs']} | "
            f"{t['val_minus_random']:+.2f} | {t['verdict']} |"
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "run": a.run_dir,
                    "method": cfg.method_name,
                    "data": cfg.data.name,
                    "rows": rows,
                    "table": table,
                    "margin": MARGIN,
                    "commit": commit,
                    "machine": platform.processor() or platform.machine(),
                    "date": time.strftime("%Y-%m-%d"),
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
