"""Training from a streamed folder against training from memory, at the same side (issue 31, item 4).

The same N-file folder as benchmarks/decode.py (Fashion-MNIST items tinted by class, enlarged to --size px,
half PNG, half JPEG), trained with SimCLR's CPU recipe (the image-folder default: the fashion-mnist recipe
without its image sides) for --steps optimiser steps, once per arm, each in a fresh process, one after the
other and alone on the machine:
  memory        the folder decoded once into memory, then the in-memory loader (data.stream=false)
  stream_wK     data.stream=true with K decoding worker processes (0: in the training process)
The measure, fixed before the runs: each arm's images/s over the logged rows after the first --skip steps
(metrics.jsonl), and its ratio to the memory arm's. The goal (issue 31): a streamed arm within 10 % of the
in-memory rate (ratio >= 0.9). On this 2-core machine the decoding workers share the two cores with the
training step, which is the cost this measures.

    python benchmarks/stream_training.py [--n 20000] [--size 32] [--steps 300] [--workers 0,1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from decode import write_folder  # benchmarks/ is on sys.path when this file runs as a script


def rate(run: Path, skip: int) -> float:
    """Images/s over the logged rows after step ``skip``, weighted by each row's span of steps."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "images_per_s" in r]
    spans = [(b["step"] - a["step"], b["images_per_s"]) for a, b in zip(rows, rows[1:]) if a["step"] >= skip]
    # all images over all time: sum(s B) / sum(s B / r), the batch size B cancels
    return sum(s for s, _ in spans) / sum(s / r for s, r in spans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--skip", type=int, default=40, help="steps left out of the rate (warm-up, first epoch's start)")
    ap.add_argument("--dir", default="/tmp/selfsup-decode")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--json")
    args = ap.parse_args()
    folder = Path(args.dir) / f"n{args.n}-s{args.size}"
    write_folder(folder, args.n, args.size)
    arms = ["memory"] + [f"stream_w{w}" for w in args.workers.split(",")]
    rows = []
    for arm in arms:
        run = Path(args.dir) / f"run-{arm}"
        shutil.rmtree(run, ignore_errors=True)
        stream = [] if arm == "memory" else ["data.stream=true", f"data.workers={arm.split('_w')[1]}"]
        cmd = [
            sys.executable,
            "-m",
            "selfsup",
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "imagefolder",
            "--data-dir",
            str(folder),
            "--out",
            str(run),
            f"train.steps={args.steps}",
            "train.monitor_every=0",
            "train.log_every=10",
            f"data.image_size={args.size}",
            *stream,
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append({"arm": arm, "images_per_s": rate(run, args.skip), "wall_seconds": time.perf_counter() - t0})
        print(
            f"{arm:10s} {rows[-1]['images_per_s']:7.0f} img/s  (whole run {rows[-1]['wall_seconds']:.0f} s)", flush=True
        )
    base = rows[0]["images_per_s"]
    for r in rows:
        r["ratio_to_memory"] = r["images_per_s"] / base
    print("ratios to memory: " + ", ".join(f"{r['arm']} {r['ratio_to_memory']:.2f}" for r in rows[1:]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "commit": commit,
                    "machine": platform.processor() or platform.machine(),
                    "n": args.n,
                    "size": args.size,
                    "steps": args.steps,
                    "skip": args.skip,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
