"""selfsup against a peer library on the same model, views, loss and optimiser, in one run; and the step's
achieved FLOP/s against the machine's measured bf16 matmul peak.

Arms (SimCLR with selfsup's Fashion-MNIST recipe: ResNet-10 x1.0, 16-px views, batch 256, bf16 autocast,
channels_last, temperature 0.1, LARS lr 1.2 and weight decay 1e-6):
  selfsup        selfsup's training step fed by its batched views from the uint8 images in memory (what
                 `selfsup pretrain` runs, without the loop's logging and checkpoints)
  lightly        the same backbone (selfsup's ResNet-10, with plain nn.Conv2d as a peer's torchvision-style
                 network has: selfsup's tap-wise weight gradient is selfsup's) with lightly's SimCLRProjectionHead (3 layers,
                 1024 -> 256), NTXentLoss and LARS, fed by lightly's SimCLRTransform over PIL images in a
                 torch DataLoader (0 and 2 workers; the better counts)
  compute-only   selfsup's step on random tensors already in memory: the ceiling of any data path
The arms run interleaved, ``--rounds`` times each, so the machine's noise falls on all alike; the median
images/s (pairs of views per second) of each arm is reported with the ratio selfsup / lightly.

FLOP/s: torch.utils.flop_counter counts one training step (forward + backward) of the selfsup arm with
plain nn.Conv2d: the model's FLOPs as every count of a CNN states them (padding taps included; the tap-wise
weight gradient skips those, so it executes fewer, printed beside). The step's model FLOP per image x the
compute-only and selfsup images/s is the achieved rate, set against the
median FLOP/s of a bf16 [n x n] @ [n x n] matmul (``--matmul-n``) timed in the same run. Issue 31's goals:
selfsup >= 2.5x the peer's images/s, and the step >= 70 % of the matmul peak.

``--minutes N`` then trains each of selfsup and lightly for N wall-clock minutes from the same seed (one
after the other, nothing else running) on a cosine schedule of the steps the first --rounds measured (so
neither arm's schedule is cut off), and scores both backbones with selfsup's one evaluation: kNN-200 and
the linear probe on the validation split carved from train (benchmarks/few_labels.validation_split) every
``--eval-every`` minutes of training, and on the test split at the end; the minutes each arm needed to reach
kNN-200 80 % and linear 88 % on validation is the time to accuracy.

    pip install 'selfsup[bench]'   # the peers (lightly) from PyPI
    python benchmarks/peers.py [--rounds 3] [--steps 20] [--minutes 0 [--eval-every M]] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from selfsup.backbones.tap_conv import use_tap_convs
from selfsup.nn.runtime import Runtime
from selfsup.config import load_yaml, recipe_path, resolve, eval_size
from selfsup.data.batch import Batch
from selfsup.data.loader import InMemoryLoader
from selfsup.engine import build_encoder, build_method
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import fit_probe
from selfsup.nn.features import extract_features
from selfsup.train.loop import load_data
from selfsup.train.optim import build_optimizer, lr_factor
from selfsup.transforms import Views
from selfsup.transforms.views import view_config

sys.path.insert(0, str(Path(__file__).parent))
from few_labels import VAL_SIZE, validation_split  # noqa: E402  (the one validation split every benchmark carves)
from throughput import PILPairs  # noqa: E402  (PIL images, a per-image transform applied for each view)

try:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from lightly.utils.lars import LARS
except ImportError:  # the peer is an optional extra
    NTXentLoss = None


class LightlySimCLR(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, hidden: int, dim: int, layers: int):
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(backbone.num_features, hidden, dim, num_layers=layers)

    def forward(self, x):
        return self.head(self.backbone(x))


TARGETS = {"knn200_val": 0.80, "linear_val": 0.88}  # issue 31's time to accuracy, on the validation split


def median_rate(step, batches, steps: int, warmup: int = 2) -> float:
    """Images per second over ``steps`` steps after ``warmup`` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        v1, v2 = next(it)
        step(v1, v2)
        n += v1.shape[0]
    return n / (time.perf_counter() - t0)


def matmul_peak(n: int, reps: int = 20) -> float:
    """FLOP/s of a bf16 n x n matmul on this CPU (the median of ``reps`` timings)."""
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_flops(step, v1, v2) -> float:
    """FLOP of one training step (forward and backward), counted by torch.utils.flop_counter."""
    with FlopCounterMode(display=False) as counter:
        step(v1, v2)
    return float(counter.get_total_flops())


def model_and_executed_flops(step, model, v1, v2) -> tuple[float, float]:
    """A step's FLOP with plain nn.Conv2d (the model's count) and as selfsup executes it (tap-wise)."""
    use_tap_convs(model, on=False)
    nominal = step_flops(step, v1, v2)
    use_tap_convs(model)
    return nominal, step_flops(step, v1, v2)


def scores(encoder, cfg, train, test, val: torch.Tensor, rest: torch.Tensor, final: bool) -> dict:
    """kNN-200 and the linear probe on the validation split (training on the rest of train); on test too if
    ``final`` (training on all of train). selfsup's one evaluation, for either arm's backbone."""
    was_training = encoder.training
    encoder.eval()
    kw = dict(
        mean=cfg.data.mean,
        std=cfg.data.std,
        size=eval_size(cfg, train.image_size),
        runtime=Runtime("cpu", cfg.train.precision),
    )
    ftr = extract_features(encoder, train.images, **kw)
    out = {"knn200_val": knn_accuracy(ftr[rest], train.labels[rest], ftr[val], train.labels[val], ks=(200,))["top1"]}
    probe = fit_probe(ftr[rest], train.labels[rest], 10, cfg.eval.linear_l2, 0.1, 0)
    out["linear_val"] = (probe.predict(ftr[val]) == train.labels[val]).float().mean().item()
    if final:
        fte = extract_features(encoder, test.images, **kw)
        out["knn200_test"] = knn_accuracy(ftr, train.labels, fte, test.labels, ks=(200,))["top1"]
        probe = fit_probe(ftr, train.labels, 10, cfg.eval.linear_l2, 0.1, 0)
        out["linear_test"] = (probe.predict(fte) == test.labels).float().mean().item()
    encoder.train(was_training)
    return out


def equal_minutes(args, cfg, train, test, workers, med, peer, selfsup_arm, lightly_arm) -> dict:
    """Each arm trains ``args.minutes`` wall-clock minutes from seed 0 (one after the other) on a cosine
    schedule of the steps its measured rate affords, scored on validation every ``args.eval_every`` minutes
    of training (the evaluations' own time is not counted) and on test at the end; the minutes each needed
    to reach TARGETS on validation (time to accuracy, at the checkpoints' resolution; None if never)."""
    val, _ = validation_split(len(train))
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[val] = False
    every = args.eval_every or args.minutes / 6
    best_w = max(workers, key=lambda w: med[f"lightly_w{w}"])
    result = {"minutes": args.minutes, "eval_every_minutes": every, "targets": TARGETS}
    for name, make, rate in (
        ("selfsup", lambda: selfsup_arm(0), med["selfsup"]),
        ("lightly", lambda: lightly_arm(0, best_w), peer),
    ):
        encoder, opt, step, batches = make()
        bs = cfg.train.batch_size
        planned = max(1, int(args.minutes * 60 * rate / bs))
        for g in opt.param_groups:
            g.setdefault("base_lr", g["lr"])
        it, trained, steps, curve = batches(), 0.0, 0, []
        checkpoints = [every * (k + 1) for k in range(int(args.minutes / every + 1e-9))]
        for c in checkpoints:
            t0 = time.perf_counter()
            while trained + time.perf_counter() - t0 < c * 60 and steps < planned:
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * lr_factor(steps / planned, cfg.optim)
                step(*next(it))
                steps += 1
            trained += time.perf_counter() - t0
            final = c == checkpoints[-1]
            point = {"minutes": trained / 60, "steps": steps, **scores(encoder, cfg, train, test, val, rest, final)}
            curve.append(point)
            print(
                f"{name} {point['minutes']:.1f} min, {steps}/{planned} steps: kNN-200 val "
                f"{100 * point['knn200_val']:.2f} %, linear val {100 * point['linear_val']:.2f} %"
                + (f"; test {100 * point['knn200_test']:.2f} / {100 * point['linear_test']:.2f} %" if final else ""),
                flush=True,
            )
        reached = {k: next((p["minutes"] for p in curve if p[k] >= v), None) for k, v in TARGETS.items()}
        result[name] = {"planned_steps": planned, "curve": curve, "minutes_to": reached, **curve[-1]}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per arm and round")
    ap.add_argument("--workers", default="0,2", help="DataLoader workers for the peer's PIL pipeline")
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--minutes", type=float, default=0.0, help="then train each arm this long and evaluate")
    ap.add_argument("--eval-every", type=float, help="minutes of training between validation scores (--minutes / 6)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--limit", type=int, help="the first N training images only (a quick check of the script)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.minutes and args.limit and args.limit <= VAL_SIZE:
        sys.exit(f"--minutes scores on a {VAL_SIZE}-image validation split: --limit must exceed it")
    if NTXentLoss is None:
        sys.exit("the peer library is not installed: pip install 'selfsup[bench]' (lightly)")

    over = {"data": {"name": "fashion-mnist"}, "train": {"device": "cpu"}}
    if args.batch_size:
        over["train"]["batch_size"] = args.batch_size
    if args.limit:
        over["data"]["limit"] = args.limit
    cfg = resolve([{"method": {"name": "simclr"}}, load_yaml(recipe_path("simclr", "fashion-mnist")), over])
    train, test = load_data(cfg)
    bs, m = cfg.train.batch_size, cfg.method
    vc = view_config(cfg)
    views = Views(vc, cfg.data.mean, cfg.data.std, train.image_size)
    size = views.size
    bf16 = cfg.train.precision == "bf16"

    def selfsup_arm(seed: int):
        torch.manual_seed(seed)
        method = build_method(cfg, train.channels, len(train), size).to(memory_format=torch.channels_last)
        opt = build_optimizer(method.param_groups(), cfg.optim, bs)

        def step(v1, v2):
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = method.training_step(Batch(torch.empty(0), torch.empty(0), views=[v1, v2])).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def batches():
            gen = torch.Generator().manual_seed(seed)
            loader, epoch = InMemoryLoader(train.images, None, bs, seed=seed), 0
            while True:
                for batch in loader.iterate(epoch):
                    yield tuple(views(batch.images, gen))
                epoch += 1

        return method.encoder, opt, step, batches

    def lightly_arm(seed: int, workers: int):
        torch.manual_seed(seed)
        # the same network and initialisation, with plain convolutions (the tap-wise gradient is selfsup's own)
        backbone = use_tap_convs(build_encoder(cfg, train.channels, size), on=False)
        model = LightlySimCLR(backbone, m.proj_hidden, m.proj_dim, m.proj_layers)
        model = model.to(memory_format=torch.channels_last)
        # LARS at the recipe's rate and decay; lightly's LARS adapts every parameter (selfsup's leaves
        # norms and biases out, as the paper): the peer's own optimiser, as a user of it would write it
        opt = LARS(model.parameters(), lr=cfg.optim.lr, momentum=0.9, weight_decay=cfg.optim.weight_decay)
        criterion = NTXentLoss(temperature=m.temperature)
        jitter = vc.jitter
        transform = SimCLRTransform(
            input_size=size,
            cj_prob=vc.jitter_p,
            cj_strength=1.0,
            cj_bright=jitter[0],
            cj_contrast=jitter[1],
            cj_sat=jitter[2],
            cj_hue=jitter[3],
            min_scale=vc.crop_scale[0],
            random_gray_scale=vc.gray_p,
            gaussian_blur=vc.blur_p[0],
            hf_prob=vc.flip_p,
            normalize={"mean": list(cfg.data.mean), "std": list(cfg.data.std)},
        )
        dl = torch.utils.data.DataLoader(
            PILPairs(train.images, transform.transforms[0]),
            batch_size=bs,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            persistent_workers=workers > 0,
        )

        def step(v1, v2):
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = criterion(model(v1), model(v2))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def batches():
            while True:
                yield from dl

        return backbone, opt, step, batches

    rates: dict[str, list[float]] = {"compute-only": [], "selfsup": []}
    workers = [int(w) for w in args.workers.split(",")]
    rates.update({f"lightly_w{w}": [] for w in workers})
    s_encoder, _, s_step, _ = selfsup_arm(0)
    rand = [torch.randn(bs, train.channels, size, size) for _ in range(2)]
    for r in range(args.rounds):
        rates["compute-only"].append(median_rate(s_step, iter(lambda: tuple(rand), None), args.steps))
        _, _, step, batches = selfsup_arm(r)
        rates["selfsup"].append(median_rate(step, batches(), args.steps))
        for w in workers:
            _, _, step, batches = lightly_arm(r, w)
            rates[f"lightly_w{w}"].append(median_rate(step, batches(), args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()) + " img/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    peer = max(med[f"lightly_w{w}"] for w in workers)
    flop, executed = (f / bs for f in model_and_executed_flops(s_step, s_encoder, *rand))
    peak = statistics.median(matmul_peak(args.matmul_n) for _ in range(3))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": bs,
        "view_size": size,
        "rates": rates,
        "median": med,
        "selfsup_over_lightly": med["selfsup"] / peer,
        "step_mflop_per_image": flop / 1e6,
        "executed_mflop_per_image": executed / 1e6,
        "matmul_peak_gflops": peak / 1e9,
        "selfsup_gflops": med["selfsup"] * flop / 1e9,
        "compute_only_gflops": med["compute-only"] * flop / 1e9,
    }
    out["selfsup_fraction_of_peak"] = out["selfsup_gflops"] / out["matmul_peak_gflops"]
    out["compute_only_fraction_of_peak"] = out["compute_only_gflops"] / out["matmul_peak_gflops"]
    print("\nmedian img/s: " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()))
    print(f"selfsup / lightly (best workers): {out['selfsup_over_lightly']:.2f}x   (goal >= 2.5x)")
    print(
        f"step: {out['step_mflop_per_image']:.1f} MFLOP per image ({out['executed_mflop_per_image']:.1f} executed); selfsup {out['selfsup_gflops']:.0f} GFLOP/s, "
        f"compute-only {out['compute_only_gflops']:.0f} GFLOP/s, bf16 matmul peak ({args.matmul_n}^3) "
        f"{out['matmul_peak_gflops']:.0f} GFLOP/s: {100 * out['selfsup_fraction_of_peak']:.0f} % / "
        f"{100 * out['compute_only_fraction_of_peak']:.0f} % of it   (goal >= 70 %)"
    )

    if args.minutes > 0:
        out["equal_minutes"] = equal_minutes(args, cfg, train, test, workers, med, peer, selfsup_arm, lightly_arm)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
