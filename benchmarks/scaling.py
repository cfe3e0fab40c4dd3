"""How time per epoch and peak memory grow with the dataset size, in memory and streamed.

Writes image folders of N colour images (Fashion-MNIST items tinted by class and enlarged to
--size px, PNG) for each N, then trains one epoch of a small SimCLR on each in a fresh process,
three ways:
  array        the same images as an in-memory .npy array (no files at all)
  folder       the image folder decoded into memory at start-up (data.stream=false)
  stream       the image folder streamed: decoded per batch by --workers DataLoader processes

and prints, per N and way: start-up seconds (listing or decoding), epoch seconds, seconds per
1000 images, and peak resident memory of the training process and of its largest worker.
Expected: epoch time linear in N for all three; memory growing with N in memory, flat streamed.

    python benchmarks/scaling.py [--sizes 2500,5000,10000,20000] [--size 64] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

# child-process code (prepended to a child's script; benchmarks/decode.py uses it too): a thread recording in
# worker_peak[0] the largest VmHWM (peak RSS, MiB) of any child process seen, sampled from /proc (Linux)
WATCH_WORKERS = textwrap.dedent("""
    import glob, threading, time
    worker_peak = [0.0]
    def watch():
        while True:
            for f in glob.glob("/proc/self/task/*/children"):
                for pid in open(f).read().split():
                    try:
                        for line in open(f"/proc/{pid}/status"):
                            if line.startswith("VmHWM:"):
                                worker_peak[0] = max(worker_peak[0], int(line.split()[1]) / 1024)
                    except OSError:
                        pass
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
""")

# one epoch of SimCLR on a small convnet; bf16 off so the numbers do not depend on the CPU's bf16 support
CHILD = textwrap.dedent("""
    import json, sys, time
    import torch

    torch.set_num_threads({threads})
    from selfsup.config import resolve
    from selfsup.train import fit
    t0 = time.perf_counter()
    import selfsup.train.loop as loop
    real = loop.load_data
    stamp = {{}}
    def timed(cfg, **kw):  # fit passes load_data's keyword options
        out = real(cfg, **kw)
        stamp["startup"] = time.perf_counter() - t0
        return out
    loop.load_data = timed
    layers = [{{"method": {{"name": "simclr", "proj_hidden": 128, "proj_dim": 64}},
               "data": json.loads(sys.argv[2]), "backbone": {{"name": "convnet", "width": 0.5}},
               "optim": {{"name": "lars", "lr": 0.5}},
               "train": {{"batch_size": 256, "epochs": 1, "monitor_train": 0, "device": "cpu",
                         "threads": {threads}, "checkpoint_every": 0, "checkpoint_minutes": 1e9}}}}]
    s = fit(resolve(layers), sys.argv[1], progress_bar=False)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
    hwm = next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({{"startup_s": stamp["startup"], "epoch_s": s["train_seconds"], "images": s["images_seen"],
                      "peak_rss_mb": hwm, "worker_peak_rss_mb": worker_peak[0]}}))
""")


def make_images(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, size, size, 3] colour images and their labels from Fashion-MNIST (cycled)."""
    import torch

    from selfsup.data import load_dataset
    from selfsup.data.dataset import resize_images

    ds = load_dataset("fashion-mnist", "train")
    idx = torch.arange(n) % len(ds)
    grey = resize_images(ds.images[idx], size).float() / 255  # [n, 1, S, S]
    hue = torch.tensor(
        [
            [1.0, 0.3, 0.3],
            [0.3, 1.0, 0.3],
            [0.3, 0.3, 1.0],
            [1.0, 1.0, 0.3],
            [0.3, 1.0, 1.0],
            [1.0, 0.3, 1.0],
            [1.0, 0.6, 0.2],
            [0.6, 0.2, 1.0],
            [0.5, 0.5, 0.5],
            [1.0, 1.0, 1.0],
        ]
    )
    rgb = (grey * hue[ds.labels[idx]].view(n, 3, 1, 1) * 255).round().to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).numpy(), ds.labels[idx].numpy()


def write_folder(root: Path, x: np.ndarray, y: np.ndarray) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y)):
        d = root / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.png", compress_level=1)


def run(data: dict, out: Path, threads: int) -> dict:
    """One epoch in a fresh process (its peak memory is its own): the child's JSON line."""
    p = subprocess.run(
        [sys.executable, "-c", WATCH_WORKERS + CHILD.format(threads=threads), str(out), json.dumps(data)],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2500,5000,10000,20000", help="dataset sizes N")
    ap.add_argument("--size", type=int, default=64, help="image side in px")
    ap.add_argument("--workers", type=int, default=2, help="decoding processes of the streamed folder")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    ap.add_argument("--ways", default="array,folder,stream")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x_all, y_all = make_images(max(sizes), args.size)
        for n in sizes:
            folder, array = tmp / f"folder{n}", tmp / f"array{n}.npz"
            write_folder(folder, x_all[:n], y_all[:n])
            np.savez(array, x=x_all[:n], y=y_all[:n])
            ways = {
                "array": {"name": "array", "dir": str(array)},
                "folder": {"name": "imagefolder", "dir": str(folder), "image_size": args.size},
                "stream": {
                    "name": "imagefolder",
                    "dir": str(folder),
                    "image_size": args.size,
                    "stream": True,
                    "workers": args.workers,
                },
            }
            for way in args.ways.split(","):
                r = run(ways[way], tmp / f"run-{way}-{n}", args.threads)
                r.update(way=way, n=n, s_per_1k=1000 * r["epoch_s"] / r["images"])
                rows.append(r)
                print(
                    f"N={n:6d} {way:7s} start-up {r['startup_s']:6.1f} s  epoch {r['epoch_s']:6.1f} s  "
                    f"{r['s_per_1k']:5.2f} s/1k img  peak RSS {r['peak_rss_mb']:6.0f} MiB  "
                    f"(largest worker process {r['worker_peak_rss_mb']:4.0f} MiB)",
                    flush=True,
                )
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; image {args.size} px RGB")
    print("| N | way | start-up s | epoch s | s / 1k images | peak RSS MiB | largest worker MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['way']} | {r['startup_s']:.1f} | {r['epoch_s']:.1f} | {r['s_per_1k']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['worker_peak_rss_mb']:.0f} |"
        )
    for way in {r["way"] for r in rows}:
        w = sorted((r for r in rows if r["way"] == way), key=lambda r: r["n"])
        if len(w) > 1:
            print(
                f"{way}: N x{w[-1]['n'] / w[0]['n']:.0f} -> epoch time x{w[-1]['epoch_s'] / w[0]['epoch_s']:.2f}, "
                f"peak RSS {w[0]['peak_rss_mb']:.0f} -> {w[-1]['peak_rss_mb']:.0f} MiB"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
