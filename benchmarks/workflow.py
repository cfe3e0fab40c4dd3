"""The user's story at full size, as a user runs it: the `selfsup` command on folders of PNG files.

Fashion-MNIST stands in for a user's images: N unlabelled training images written flat (no labels),
10 of them per class copied into labelled/<class>/, 1,000 test images in test/<class>/, 200 more
in new/ (with one corrupt file) to predict. Then, each step timed:

  pretrain (imagefolder, --budget) -> eval knn and linear on the labels (cross-validated) ->
  eval linear with --test -> classify (linear head) -> predict new/ (accuracy against the truth) ->
  select 100 to label next -> neighbors of 4 queries -> report.

    python benchmarks/workflow.py [--out runs/workflow] [--images 6000] [--budget 5m] [--method simclr]

Writes OUT/workflow.json (numbers, timings, machine, commit) and prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from selfsup.data import load_dataset


def write_folders(root: Path, n: int) -> dict:
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    names = [c.replace("/", "-") for c in train.classes]
    seen: dict[int, int] = {}
    for i in range(n):
        img = Image.fromarray(train.images[i, 0].numpy())
        img.save(root / "flat" / f"img{i:05d}.png")
        c = int(train.labels[i])
        if seen.get(c, 0) < 10:
            seen[c] = seen.get(c, 0) + 1
            (root / "labelled" / names[c]).mkdir(parents=True, exist_ok=True)
            img.save(root / "labelled" / names[c] / f"img{i:05d}.png")
    for i in range(1000):
        (root / "test" / names[int(test.labels[i])]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i, 0].numpy()).save(root / "test" / names[int(test.labels[i])] / f"t{i:05d}.png")
    truth = {}
    for i in range(1000, 1200):
        Image.fromarray(test.images[i, 0].numpy()).save(root / "new" / f"n{i:05d}.png")
        truth[f"n{i:05d}.png"] = names[int(test.labels[i])]
    (root / "new" / "corrupt.png").write_bytes(b"\x89PNG truncated")
    return truth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/workflow")
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--budget", default="5m")
    p.add_argument("--method", default="simclr")
    a = p.parse_args()
    out = Path(a.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    data = out / "data"
    for d in ("flat", "new"):
        (data / d).mkdir(parents=True)
    t0 = time.time()
    truth = write_folders(data, a.images)
    steps = {"write PNG folders": time.time() - t0}
    selfsup = [sys.executable, "-m", "selfsup"]
    run = out / "run"

    def step(name: str, *args: str) -> dict | None:
        t = time.time()
        proc = subprocess.run([*selfsup, *args], capture_output=True, text=True)
        steps[name] = time.time() - t
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stderr}")
        print(f"{name}: {steps[name]:.1f} s", flush=True)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        return json.loads(last) if last.startswith("{") else None

    step(
        "pretrain",
        "pretrain",
        "--method",
        a.method,
        "--data",
        "imagefolder",
        "--data-dir",
        str(data / "flat"),
        "--budget",
        a.budget,
        "--out",
        str(run),
    )
    knn = step("eval knn --labels (cv)", "eval", "knn", str(run), "--labels", str(data / "labelled"), "--json")
    lin = step("eval linear --labels (cv)", "eval", "linear", str(run), "--labels", str(data / "labelled"), "--json")
    lin_test = step(
        "eval linear --labels --test",
        "eval",
        "linear",
        str(run),
        "--labels",
        str(data / "labelled"),
        "--test",
        str(data / "test"),
        "--json",
    )
    clf = step(
        "classify", "classify", str(run), "--labels", str(data / "labelled"), "--out", str(out / "clf"), "--json"
    )
    pred = step(
        "predict", "predict", str(out / "clf"), str(data / "new"), "--out", str(out / "predictions.csv"), "--json"
    )
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    predict_acc = sum(truth[r["path"]] == r["label"] for r in rows) / len(rows)
    step("select", "select", str(run), "--n", "100", "--out", str(out / "to_label.csv"), "--json")
    queries = [str(data / "new" / f"n{i:05d}.png") for i in (1000, 1001, 1002, 1003)]
    step("neighbors", "neighbors", str(run), "--query", *queries, "--out", str(out / "neighbors.png"), "--json")
    step("report", "report", str(run), "--out", str(out / "report.html"))
    cfg = (run / "config.yaml").read_text()
    side = next(line.split(":")[1].strip() for line in cfg.splitlines() if line.strip().startswith("image_size"))
    result = {
        "images": a.images,
        "budget": a.budget,
        "method": a.method,
        "image_size": side,
        "knn_cv": {k: knn[k] for k in knn if k.startswith("top1")},
        "linear_cv": {"top1": lin["top1"], "top1_std": lin["top1_std"], "folds": lin["folds"]},
        "linear_test": {"top1": lin_test["top1"], "num_test": lin_test["num_test"]},
        "classifier_estimate": clf["estimate"]["top1"],
        "predict": {"rows": pred["rows"], "skipped": pred["skipped"], "accuracy": predict_acc},
        "seconds": steps,
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    (out / "workflow.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
