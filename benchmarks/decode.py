"""Decoding a large image folder: files per second of selfsup's streamed loader against a plain PIL loop
and torchvision.io's decoders, and each one's peak memory (issue 31, item 4).

Writes N files (Fashion-MNIST items tinted by class and enlarged to --size px; half PNG, half JPEG) once into
--dir (kept for reuse), then runs each reader over all of them in a fresh process, one after the other:
  pil           a plain loop: Image.open, convert to RGB, np.asarray (no resize: the files are at --size)
  tvio          torchvision.io.decode_image(torchvision.io.read_file(path)), one file at a time
  selfsup_wK    selfsup's StreamLoader (data.stream=true) over the folder at --size px, batch 256, K decoding
                worker processes (0: in the training process), one epoch of batches
and prints files/s and the peak resident memory (VmHWM) of the process and of its largest worker.
Streaming is not the bottleneck of training when its files/s exceed the training step's images/s
(SimCLR's CPU recipe: ~1,400-1,600 img/s on this 2-core machine, docs/benchmarks.md "How fast").

    python benchmarks/decode.py [--n 100000] [--size 32] [--dir /tmp/selfsup-decode] [--workers 0,1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from scaling import WATCH_WORKERS  # benchmarks/ is on sys.path when this file runs as a script

CHILD = WATCH_WORKERS + textwrap.dedent("""
    import json, sys, time
    from pathlib import Path

    arm, folder, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
    import numpy as np
    from PIL import Image
    from torchvision.io import decode_image, read_file
    from selfsup.data.stream import LazyImages, StreamLoader
    t0 = time.perf_counter()  # imports done: what is timed is reading and decoding (and, streamed, the workers' start)
    if arm == "pil":
        for p in files:
            with Image.open(p) as img:
                np.asarray(img.convert("RGB"))
        n = len(files)
    elif arm == "tvio":
        for p in files:
            decode_image(read_file(str(p)))
        n = len(files)
    else:
        loader = StreamLoader(LazyImages(files, size, 3), None, 256, workers=int(arm.split("_w")[1]))
        n = sum(b.images.shape[0] for b in loader.iterate(0))
    seconds = time.perf_counter() - t0
    peak = max(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
    print(json.dumps({"arm": arm, "files": n, "seconds": seconds, "files_per_s": n / seconds,
                      "peak_rss_mb": peak, "largest_worker_mb": worker_peak[0]}))
""")


def write_folder(folder: Path, n: int, size: int) -> None:
    """N tinted, enlarged Fashion-MNIST items in class folders, alternately PNG and JPEG."""
    from PIL import Image

    from selfsup.data.sources import load_dataset

    done = folder / f"done-{n}-{size}"
    if done.exists():
        return
    train = load_dataset("fashion-mnist", "train")
    tint = np.random.default_rng(0).uniform(0.4, 1.0, (10, 3))
    for i in range(n):
        x, y = train.images[i % len(train)][0].numpy(), int(train.labels[i % len(train)])
        rgb = (x[..., None] * tint[y]).astype(np.uint8)
        d = folder / str(y)
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
        img.save(d / f"{i:06d}.{'png' if i % 2 == 0 else 'jpg'}")
    done.touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--dir", default="/tmp/selfsup-decode")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--json")
    args = ap.parse_args()
    folder = Path(args.dir) / f"n{args.n}-s{args.size}"
    write_folder(folder, args.n, args.size)
    arms = ["pil", "tvio"] + [f"selfsup_w{w}" for w in args.workers.split(",")]
    rows = []
    for arm in arms:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, arm, str(folder), str(args.size)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{arm:12s} {r['files_per_s']:8.0f} files/s  ({r['files']} files in {r['seconds']:.1f} s)  peak RSS "
            f"{r['peak_rss_mb']:.0f} MiB, largest worker {r['largest_worker_mb']:.0f} MiB",
            flush=True,
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "commit": commit,
                    "machine": platform.processor() or platform.machine(),
                    "n": args.n,
                    "size": args.size,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
