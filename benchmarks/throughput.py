"""Training throughput: selfsup's batched data path against a per-image torchvision/PIL
DataLoader pipeline, with the same model and step, measured side by side in one run.

Three pipelines feed the same SimCLR training step (model, precision and batch from the
Fashion-MNIST recipe):
  compute-only  random tensors already in memory: the ceiling
  selfsup       uint8 batch in memory -> batched per-sample augmentation (selfsup.transforms)
  torchvision   PIL images -> per-image torchvision transforms in a DataLoader (the usual way)

    python benchmarks/throughput.py [--steps 30] [--workers 0,2] [--json out.json] [key=value ...]
    python benchmarks/throughput.py --device cuda --batch-size 1024 --workers 0,8   # a GPU

On a GPU the selfsup path moves the uint8 batch to the device and augments it there, as the
training loop does; the PIL pipeline decodes and augments on the host workers, then copies the
float views (pinned memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from PIL import Image
from torchvision import transforms as T

from selfsup.config import load_yaml, parse_override, recipe_path, resolve
from selfsup.transforms.views import view_config
from selfsup.data.batch import Batch
from selfsup.data.loader import InMemoryLoader
from selfsup.train.loop import build_method, load_data, pick_device
from selfsup.train.optim import build_optimizer
from selfsup.transforms import Views


class PILPairs(torch.utils.data.Dataset):
    """The standard per-image pipeline: a PIL image through torchvision transforms, twice."""

    def __init__(self, images: torch.Tensor, transform):
        self.images = [Image.fromarray(im[0].numpy(), mode="L") for im in images]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.images[i]
        return self.transform(im), self.transform(im)


def torchvision_transform(vc, size, mean, std):
    """The same augmentation as the selfsup preset, per image with torchvision (PIL)."""
    b, c, s, h = vc.jitter
    ops = [
        T.RandomResizedCrop(size, scale=tuple(vc.crop_scale), ratio=tuple(vc.crop_ratio)),
        T.RandomHorizontalFlip(vc.flip_p),
        T.RandomApply([T.ColorJitter(b, c, s, h)], p=vc.jitter_p),
        T.RandomGrayscale(vc.gray_p),
    ]
    if vc.blur_p[0] > 0:
        ops.append(T.RandomApply([T.GaussianBlur(max(3, int(0.1 * size) | 1), (0.1, 2.0))], p=vc.blur_p[0]))
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def time_steps(step, batches, steps: int, warmup: int = 3, sync=lambda: None) -> float:
    """Images per second over ``steps`` steps after ``warmup`` untimed ones. ``sync`` waits for
    queued device work (CUDA runs asynchronously), so the clock reads finished steps."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    sync()
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        v1, v2 = next(it)
        step(v1, v2)
        n += v1.shape[0]
    sync()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", default="0,2", help="DataLoader worker counts to try for the PIL pipeline")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--batch-size", type=int, help="default: the recipe's")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="changes to the recipe, e.g. views.size=20")
    args = ap.parse_args()

    over = {"data": {"name": args.data}, "train": {"device": args.device}}
    if args.batch_size:
        over["train"]["batch_size"] = args.batch_size
    cfg = resolve(
        [
            {"method": {"name": args.method}},
            load_yaml(recipe_path(args.method, args.data)),
            over,
            *(parse_override(o) for o in args.overrides),
        ]
    )
    train, _ = load_data(cfg)
    torch.manual_seed(0)
    dev = pick_device(cfg.train.device)
    method = build_method(cfg, train.channels).to(dev)
    cl, bs = cfg.train.channels_last, cfg.train.batch_size
    if cl:
        method = method.to(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    opt = build_optimizer(method.param_groups(), cfg.optim, bs)
    vc = view_config(cfg)
    views = Views(vc, cfg.data.mean, cfg.data.std, train.image_size)
    n_batches = args.steps + 3

    def step(v1, v2):
        v1, v2 = (v.to(dev, non_blocking=True) for v in (v1, v2))  # no-op for views made on the device
        if cl:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        b = Batch(torch.empty(0), torch.empty(0), views=[v1, v2])
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
            loss = method.training_step(b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def selfsup_batches():
        gen = torch.Generator().manual_seed(0)  # parameters are drawn on the CPU (selfsup.transforms.ops)
        loader = InMemoryLoader(train.images, None, bs, seed=0)
        epoch = 0
        while True:
            for batch in loader.iterate(epoch):  # as the loop: uint8 to the device, views made there
                yield tuple(views(batch.images.to(dev, non_blocking=True), gen))
            epoch += 1

    def random_batches():
        x = [torch.randn(bs, train.channels, views.size, views.size, device=dev) for _ in range(2)]
        while True:
            yield x[0], x[1]

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if dev.type == "cuda":
        machine += f", {torch.cuda.get_device_name(dev)}"
    results = {
        "machine": machine,
        "device": str(dev),
        "torch": torch.__version__,
        "model": f"{cfg.backbone.name} width {cfg.backbone.width}",
        "precision": cfg.train.precision,
        "channels_last": cl,
        "batch_size": bs,
        "steps": args.steps,
    }
    print(f"{results['model']}, batch {bs}, {cfg.train.precision}, channels_last={cl}, {args.steps} timed steps each")
    results["compute_only"] = time_steps(step, random_batches(), args.steps, sync=sync)
    print(f"compute-only (random tensors):     {results['compute_only']:8.1f} img/s")
    results["selfsup"] = time_steps(step, selfsup_batches(), args.steps, sync=sync)
    print(f"selfsup batched views:             {results['selfsup']:8.1f} img/s")
    ds = PILPairs(train.images[: bs * n_batches], torchvision_transform(vc, views.size, cfg.data.mean, cfg.data.std))
    for w in [int(x) for x in args.workers.split(",")]:
        dl = torch.utils.data.DataLoader(
            ds,
            batch_size=bs,
            shuffle=True,
            num_workers=w,
            drop_last=True,
            persistent_workers=False,
            pin_memory=dev.type == "cuda",
        )
        results[f"torchvision_w{w}"] = time_steps(step, iter(dl), args.steps, sync=sync)
        print(f"torchvision/PIL DataLoader, {w} workers: {results[f'torchvision_w{w}']:8.1f} img/s")
    best_tv = max(v for k, v in results.items() if k.startswith("torchvision_w"))
    results["ratio_vs_torchvision"] = results["selfsup"] / best_tv
    results["ratio_vs_compute_only"] = results["selfsup"] / results["compute_only"]
    print(f"selfsup / best torchvision pipeline: {results['ratio_vs_torchvision']:.2f}x")
    print(f"selfsup / compute-only:              {results['ratio_vs_compute_only']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
