"""Speed levers of one training step, measured side by side in one run: precision (fp32 or bf16
autocast), memory format (NCHW or channels_last), batch size, the ResNet's tap-wise weight gradient
(selfsup.backbones.tap_conv; a "plain convs" row runs nn.Conv2d throughout) and, optionally, torch.compile.

The model and step are a method's Fashion-MNIST recipe (default SimCLR); the inputs are random
tensors already in memory, so only the step itself is timed (the data path is
benchmarks/throughput.py's subject). Each lever is a row, with its images/s and its ratio to the
fp32 / NCHW row of the same batch size; the rows run interleaved in two rounds and the better round
counts, since this machine is shared and noisy.

    python benchmarks/levers.py [--method simclr] [--steps 15] [--batch-sizes 256,512] [--compile] [--sizes 24,20]
                                [--json out.json]
    python benchmarks/levers.py --profile   # where a step's time goes: torch.profiler's top operators, and
                                            # each convolution of the encoder alone, in GFLOP/s, with
                                            # the tap-wise weight gradient and without ("plain")
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from selfsup.backbones.tap_conv import use_tap_convs
from selfsup.config import load_yaml, recipe_path, resolve
from selfsup.data.batch import Batch
from selfsup.train.loop import build_method
from selfsup.train.optim import build_optimizer
from throughput import time_steps  # benchmarks/ is on sys.path when this file runs as a script


def make_step(cfg, channels: int, size: int, bf16: bool, channels_last: bool, compile_: bool, taps: bool = True):
    """A fresh model (same seed for every lever) and its training step on two views."""
    torch.manual_seed(0)
    method = use_tap_convs(build_method(cfg, channels, image_size=size), on=taps)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    opt = build_optimizer(method.param_groups(), cfg.optim, cfg.train.batch_size)
    forward = torch.compile(method.training_step) if compile_ else method.training_step

    def step(v1, v2):
        b = Batch(torch.empty(0), torch.empty(0), views=[v1, v2])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def profile(cfg, channels: int, size: int, steps: int) -> None:
    """The recipe's step (bf16, channels_last) under torch.profiler, then every convolution of the
    encoder timed alone at its own input shape (forward, and forward + backward as training runs it:
    weight gradient always, input gradient except for the stem), fp32 and bf16."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    bs = cfg.train.batch_size
    step = make_step(cfg, channels, size, True, True, False)
    x = [torch.randn(bs, channels, size, size).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    for _ in range(2):
        step(*x)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(*x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    torch.manual_seed(0)
    encoder = build_method(cfg, channels, image_size=size).encoder
    shapes = {}  # conv module -> its input shape for the two views of a batch

    def record(module, inputs, output) -> None:  # a hook returning a value would replace the output
        shapes[module] = (2 * bs, *inputs[0].shape[1:])

    hooks = [m.register_forward_hook(record) for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    encoder(torch.randn(bs, channels, size, size))
    for h in hooks:
        h.remove()
    print("| convolution | input | fp32 fwd GFLOP/s | fp32 fwd+bwd | plain | bf16 fwd | bf16 fwd+bwd | plain |")
    print("|---|---|---|---|---|---|---|---|")
    for n, (conv, shape) in enumerate(shapes.items()):
        conv = conv.to(memory_format=torch.channels_last)
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(n > 0)
        ho, wo = conv(x[:1]).shape[-2:]
        flops = (
            2 * shape[0] * ho * wo * conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        )
        cells = []
        for bf16 in (False, True):
            for train, taps in ((False, True), (True, True), (True, False)):
                use_tap_convs(conv, on=taps)

                def run():
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(train):
                        y = conv(x)
                    if train:
                        y.backward(torch.ones_like(y))

                run()
                t0 = time.perf_counter()
                for _ in range(3):
                    run()
                dt = (time.perf_counter() - t0) / 3
                # backward: weight gradient (1x the forward's FLOPs) plus the input gradient (1x) past the stem
                cells.append(f"{flops * ((2 + (n > 0)) if train else 1) / dt / 1e9:.0f}")
            use_tap_convs(conv)
        name = f"{conv.in_channels}->{conv.out_channels} k{conv.kernel_size[0]} s{conv.stride[0]}"
        print(f"| {name} | {list(shape[1:])} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch-sizes", default="256", help="comma-separated; each gets the four precision/format rows")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row (bf16, channels_last)")
    ap.add_argument(
        "--sizes",
        default="",
        help="comma-separated view sides for extra rows of the recipe's step "
        "(bf16, channels_last) at a lower training resolution, e.g. 24,20",
    )
    ap.add_argument("--profile", action="store_true", help="profile the recipe's step and its convolutions instead")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    # the recipe's model; mean/std given so that no data set has to be read
    cfg = resolve(
        [
            {"method": {"name": args.method}},
            load_yaml(recipe_path(args.method, args.data)),
            {"data": {"name": args.data, "mean": [0.5], "std": [0.25]}},
        ]
    )
    channels, size = 1, 28  # Fashion-MNIST
    if args.profile:
        return profile(cfg, channels, size, min(args.steps, 3))
    levers = [(False, False, False), (False, True, False), (True, False, False), (True, True, False)]
    if args.compile:
        levers.append((True, True, True))
    levers = [(size, *lever, True) for lever in levers]
    levers += [(int(s), True, True, False, True) for s in args.sizes.split(",") if s]
    # each bf16 / channels_last side once more with plain nn.Conv2d: what the tap-wise weight gradient buys
    levers += [(side, True, True, False, False) for side, bf16, cl, comp, _ in list(levers) if bf16 and cl and not comp]
    rows = []
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        cfg.train.batch_size = bs
        for side, bf16, cl, comp, taps in levers:
            fmt = torch.channels_last if cl else torch.contiguous_format
            x = [torch.randn(bs, channels, side, side).contiguous(memory_format=fmt) for _ in range(2)]
            rows.append(
                {
                    "batch_size": bs,
                    "size": side,
                    "precision": "bf16" if bf16 else "fp32",
                    "channels_last": cl,
                    "compile": comp,
                    "tap_convs": taps,
                    "step": make_step(cfg, channels, side, bf16, cl, comp, taps),
                    "x": x,
                }
            )
    for _ in range(2):  # two interleaved rounds; the better one counts
        for r in rows:
            batches = iter(lambda r=r: tuple(r["x"]), None)
            ips = time_steps(r["step"], batches, args.steps, warmup=5 if r["compile"] else 2)
            r["images_per_s"] = max(r.get("images_per_s", 0.0), ips)
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "method": args.method,
        "model": f"{cfg.backbone.name} width {cfg.backbone.width}",
        "steps": args.steps,
        "rows": [],
    }
    print(f"{out['model']} ({args.method} step, two views), {args.steps} timed steps, best of 2 rounds")
    print("| batch | px | precision | channels_last | compile | tap convs | img/s | vs fp32 NCHW |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(
            b
            for b in rows
            if b["batch_size"] == r["batch_size"]
            and b["precision"] == "fp32"
            and not b["channels_last"]
            and not b["compile"]
            and b["tap_convs"]
        )
        ratio = r["images_per_s"] / base["images_per_s"]
        print(
            f"| {r['batch_size']} | {r['size']} | {r['precision']} | {r['channels_last']} | {r['compile']} | {r['tap_convs']} | "
            f"{r['images_per_s']:.0f} | {ratio:.2f}x |"
        )
        out["rows"].append({k: v for k, v in r.items() if k not in ("step", "x")} | {"ratio_vs_fp32_nchw": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
