"""The ``selfsup`` command: list, pretrain, eval, demo. Every error names its fix; no tracebacks
for mistakes a user can make (pass --debug to see one anyway)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
import time
from pathlib import Path

from selfsup.config import ConfigError, RunConfig, compose, config_yaml, recipes_dir
from selfsup.log import console
from selfsup.errors import SelfsupError
from selfsup import dist, list_backbones, list_datasets
from selfsup.experiments.bench import bench, check_protocols, parse_entries
from selfsup.experiments.claims import claims_by_name, run_claims
from selfsup.classify import predict, semi_classifier, train_classifier
from selfsup.config import parse_override
from selfsup.curate import near_duplicates, neighbors, select_images
from selfsup.data import DATASETS
from selfsup.engine import labelled_splits
from selfsup.eval.attention import attention_report
from selfsup.eval.distill import distill_run
from selfsup.eval.protocol import cli_options, comma_list, pct
from selfsup.eval.run import PROTOCOLS, evaluate, evaluate_raw_pixels, pretext_correlation
from selfsup.eval.semi import per_class_fraction
from selfsup.export import embed_images, export_encoder
from selfsup.registry import method_specs
from selfsup.report.html import write_report
from selfsup.train import fit, resume
from selfsup.train.loop import RESUME_CHANGES


def _cmd_list(args) -> None:
    if args.what == "methods":
        specs = method_specs()
        if args.json:
            print(json.dumps([s.name for s in specs]))
        else:
            for s in specs:
                print(s.name + ("  (uses labels)" if s.uses_labels and args.verbose else ""))
        return
    names = {"datasets": list_datasets, "backbones": list_backbones}[args.what]()
    print(json.dumps(names) if args.json else "\n".join(names))


def build_config(args) -> RunConfig:
    """Defaults < recipe for (method, data) < --config < flags < key=value overrides (config.compose)."""
    flags: dict = {}
    if args.method:
        flags["method"] = {"name": args.method}
    data = {}
    if args.data:
        data["name"] = args.data
    if args.data_dir:
        data["dir"] = args.data_dir
    if data:
        flags["data"] = data
    if args.backbone:
        flags["backbone"] = {"name": args.backbone}
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: give a whole number of at least 1")
    train = {}
    if args.epochs is not None:
        train["epochs"] = args.epochs
        train["budget"] = None
    if args.budget is not None:
        train["budget"] = args.budget
    if args.batch_size is not None:
        train["batch_size"] = args.batch_size
    if train:
        flags["train"] = train
    made = compose(flags, args.config, args.overrides, use_recipe=not args.no_recipe)  # a bad key fails here
    cfg = made.cfg
    if os.environ.get("RANK", "0") == "0":  # under torchrun: once, not once per process
        if made.recipe and made.borrowed:
            print(
                f"recipe: {made.recipe} (no {made.method} recipe for {made.data}: the CPU recipe for small images, "
                f"without its image sides)"
            )
        elif made.recipe:
            print(f"recipe: {made.recipe}")
        elif not args.no_recipe and not args.config:
            _warn_no_recipe(made.method, made.data)
    if args.out:
        cfg.out = args.out
    if not cfg.out:
        cfg.out = f"runs/{cfg.method_name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg


def _warn_no_recipe(method: str, data: str) -> None:
    """The generic defaults (a full ResNet-18) run tens of images/s on a CPU: say so before a wasted run,
    naming the method's recipes for other data sets."""
    if data not in DATASETS:  # an unknown name fails when the data loads, with its own message
        return
    others = sorted(p.name for p in recipes_dir().glob(f"{method}_*.yaml"))
    hint = (
        f"; to start from another data set's tuned recipe pass --config {recipes_dir() / others[0]}"
        f" (recipes for {method}: {', '.join(others)})"
        if others
        else ""
    )
    print(
        f"warning: no recipe {method}_{data}.yaml in {recipes_dir()}: training with the generic defaults "
        f"(a full-width ResNet-18, the paper's views and optimiser: slow on a CPU){hint}",
        file=sys.stderr,
    )


def _cmd_pretrain(args) -> None:
    if args.resume:
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("method", "data", "data_dir", "backbone", "batch_size", "out", "config")
            if getattr(args, k)
        ]
        given += [o for o in args.overrides if o.split("=")[0] not in RESUME_CHANGES]
        given += ["--no-recipe"] if args.no_recipe else []
        if given:  # silently ignoring them would train something else than the user asked for
            raise ConfigError(
                f"--resume continues {args.resume} as its config.yaml says; it cannot change "
                f"{', '.join(given)}. It may change {', '.join(RESUME_CHANGES)} (and --epochs, --budget); "
                f"for anything else start a new run with another --out"
            )
        changes = [o for o in args.overrides if o.split("=")[0] in RESUME_CHANGES]
        changes += [f"train.epochs={args.epochs}"] if args.epochs else []
        changes += [f"train.budget={args.budget}"] if args.budget else []
        summary = resume(args.resume, changes=changes)
        run_dir = args.resume
    else:
        cfg = build_config(args)
        if args.print_config:  # what would train, without training it (the recipe line above names its file)
            print(config_yaml(cfg), end="")
            return
        assert cfg.out is not None  # build_config names a run directory where none was given
        run_dir = args.running = cfg.out  # (named by the Ctrl-C message)
        dist.init_from_env(cfg.train.device)  # under torchrun: join the group before anyone writes
        if dist.is_main():
            print(f"run directory: {run_dir}")
        summary = fit(cfg, run_dir)
    if dist.is_main():
        print(json.dumps({"run": str(run_dir), **{k: v for k, v in summary.items() if not k.startswith("diag/")}}))


def _cmd_eval(args) -> None:
    """Checks the flags against the protocol's options (selfsup.eval.run.PROTOCOLS), runs it on each run, prints
    its summary (or the result as JSON)."""
    protocol = PROTOCOLS[args.protocol]
    flags = cli_options(PROTOCOLS.values())
    given = {k: v for k, v in vars(args).items() if k in flags and v is not None and v is not False}
    for k in given:
        if k not in protocol.keywords:
            owners = " / ".join(f"`selfsup eval {p}`" for p in flags[k][1])
            raise ConfigError(
                f"--{k.replace('_', '-')} does not apply to `selfsup eval {args.protocol}`: it is an option of {owners}"
            )
    if args.test and not args.labels:
        raise ConfigError("--test needs --labels: the labelled images a model is fitted on before it is tested")
    options = {protocol.keywords[k]: v for k, v in given.items()}
    if protocol.progress:
        options["progress"] = not args.json

    if dist.init_from_env(args.device) and not protocol.sharded:
        sharded = " and ".join(p.name for p in PROTOCOLS.values() if p.sharded)
        raise ConfigError(
            f"under torchrun, `selfsup eval` shards the feature extraction of {sharded}; run "
            f"`selfsup eval {args.protocol}` as one process (python -m selfsup / selfsup)"
        )
    if args.protocol == "pretext" and len(args.run_dirs) > 1:
        res = pretext_correlation(args.run_dirs, device=args.device)
        print(json.dumps(res) if args.json else _format_pretext(res))
        return
    for run_dir in args.run_dirs:
        res = evaluate(run_dir, args.protocol, device=args.device, **options)
        if dist.is_main():
            print(json.dumps(res) if args.json else f"{run_dir}: {protocol.describe(res)}")


def _format_pretext(res: dict) -> str:
    def num(x):
        return "—" if x is None else f"{x:.3f}"

    lines = [f"{r['run']}: linear {pct(r['linear_top1'])}" for r in res["runs"]]
    lines += [
        f"{name} vs linear top-1 over {c['n']} runs: Pearson {num(c['pearson'])}, Spearman {num(c['spearman'])}"
        for name, c in res["correlation"].items()
    ]
    return "\n".join(lines)


def _cmd_distill(args) -> None:
    """SimCLR v2's third step: fine-tuned teacher -> student trained on unlabelled images."""
    if not 0.0 < args.fraction <= 1.0:
        raise ConfigError(f"--fraction {args.fraction} is not a fraction of the labels: use e.g. 0.01, 0.1 or 1.0")
    res = distill_run(
        args.run_dir,
        args.fraction,
        out=args.out,
        student=args.student,
        student_width=args.student_width,
        teacher_epochs=args.teacher_epochs,
        device=args.device,
        progress=not args.json,
        epochs=args.epochs,
        steps=args.steps,
        temperature=args.temperature,
    )
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"teacher top-1 {100 * res['teacher_top1']:.2f} % ({100 * args.fraction:g} % of the labels), "
            f"student top-1 {100 * res['student_top1']:.2f} % ({res['student']['name']}, no labels), "
            f"agreement {100 * res['agreement']:.2f} %\nstudent weights: {res['weights']}"
        )


def _cmd_bench(args) -> None:
    """Train and evaluate each method (and seed) not done yet; print and write the leaderboard."""
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: give at least 1")
    check_protocols(args.protocols)
    budget = args.budget or (None if args.epochs else "15m")
    entries = parse_entries(args.methods)
    board = bench(
        entries,
        args.data,
        budget,
        args.seeds,
        args.out,
        args.protocols,
        args.backbone,
        args.data_dir,
        tuple(args.overrides),
        args.epochs,
        args.device,
    )
    out = Path(board["out"])
    print((out / "leaderboard.md").read_text())
    print(f"leaderboard: {out}/leaderboard.md, .json, .csv")


def _cmd_claims(args) -> None:
    claims = claims_by_name(args.only)
    if args.list:
        print("\n".join(f"{c.name}: {c.statement}" for c in claims))
        return
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: give at least 1")
    res = run_claims(
        claims,
        args.out,
        args.data,
        args.budget_per_run,
        args.seeds,
        args.device,
        doc=args.doc,
        extra_overrides=tuple(args.overrides),
        fresh=args.fresh,
    )
    print(f"\n{args.doc}: " + ", ".join(f"{k} {v['verdict']}" for k, v in res.items()))


def _cmd_viz(args) -> None:
    res = attention_report(args.run_dir, args.images, args.show, device=args.device)
    if args.json:
        print(json.dumps(res))
        return
    t, r = res["trained"], res["random_init"]
    print(
        f"[CLS] attention vs foreground, IoU over {res['images']} test images ({100 * res['mass']:g} % mass):\n"
        f"  trained     best head {t['best_head']:.3f}, mean head {t['mean_head']:.3f}, union {t['union_of_heads']:.3f}\n"
        f"  random init best head {r['best_head']:.3f}, mean head {r['mean_head']:.3f}, union {r['union_of_heads']:.3f}\n"
        f"  whole image {res['whole_image']:.3f} (the foreground's area fraction: the floor)\n"
        f"picture: {res['picture']}"
    )


def _cmd_report(args) -> None:
    print(f"report: {write_report(args.run_dirs, args.out, args.title)}")


def _cmd_export(args) -> None:
    path, meta = export_encoder(args.run_dir, args.format, args.out)
    side = {"safetensors": "", "hf": " (input spec in its config.json)"}.get(
        args.format, f" (normalisation and this code in {path.with_suffix('.json')})"
    )
    print(
        f"wrote {meta['backbone']['name']} encoder of {args.run_dir} ({meta['num_features']} features) to {path}"
        f"{side}\nload it with:\n\n{meta['snippet']}"
    )


def _cmd_embed(args) -> None:
    res = embed_images(args.run_dir, args.images, args.out, args.batch_size, args.device)
    listing = f", file list in {res['files']}" if res["files"] else ""
    print(
        f"wrote {res['rows']} x {res['features']} float32 features to {res['out']}{listing}"
        + (f" ({res['skipped']} unreadable files skipped)" if res["skipped"] else "")
    )


def _cmd_classify(args) -> None:
    """A linear head (or a fine-tune) on the user's labels, saved with its classes and input spec."""
    out = args.out or str(Path(args.run_dir) / f"classifier_{'finetune' if args.finetune else 'linear'}")
    res = train_classifier(
        args.run_dir,
        args.labels,
        out,
        finetune=args.finetune,
        test=args.test,
        folds=args.folds or 5,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(res))
        return
    e = res["estimate"]
    spread = f" ± {100 * e['top1_std']:.2f}" if e.get("top1_std") is not None else ""
    print(
        f"{res['kind']} classifier of {res['num_classes']} classes on {res['num_labelled']} labelled images: "
        f"expected top-1 {pct(e['top1'])}{spread} ({e['evaluation']})\nsaved to {res['out']}; use it with "
        f"`selfsup predict {res['out']} IMAGES --out predictions.csv`"
    )


def _cmd_semi(args) -> None:
    """A classifier from few labels and many unlabelled images (FixMatch, MixMatch, VAT, pseudo-labels)."""
    overrides: dict = {}
    for o in args.overrides:
        overrides.update(parse_override(o))
    for flag in ("steps", "seed"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    res = semi_classifier(
        args.method,
        args.out,
        labels=args.labels,
        test=args.test,
        init=args.init,
        from_scratch=args.from_scratch,
        data=args.data,
        data_dir=args.data_dir,
        per_class=args.per_class,
        fraction=args.fraction,
        backbone=args.backbone,
        overrides=overrides,
        device=args.device,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(res))
        return
    e = res["estimate"]
    where = (
        f"test top-1 {pct(e['top1'])} on {e['num_test']} images"
        if e["top1"] is not None
        else "no test set (--test DIR|FILE.csv measures it)"
    )
    print(
        f"{res['kind']} classifier of {res['num_classes']} classes from {res['num_labelled']} labelled and "
        f"{res['num_unlabelled']} unlabelled images ({res['train_seconds'] / 60:.1f} min): {where}\nsaved to "
        f"{res['out']}; use it with `selfsup predict {res['out']} IMAGES --out predictions.csv`"
    )


def _cmd_predict(args) -> None:
    res = predict(args.clf_dir, args.images, args.out, args.top_k, args.batch_size, args.device, progress=not args.json)
    if args.json:
        print(json.dumps(res))
        return
    print(
        f"wrote {res['rows']} predictions to {res['out']}"
        + (f" ({res['skipped']} unreadable files skipped)" if res["skipped"] else "")
    )


def _cmd_select(args) -> None:
    res = select_images(args.run_dir, args.n, args.out, args.strategy, args.images, args.seed, args.device)
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "indices"}))
        return
    print(
        f"{res['n']} of {res['pool']} images to label next ({res['strategy']}) in {res['out']}: fill in the label "
        f"column and pass it to --labels; contact sheet {res['picture']}"
    )


def _cmd_neighbors(args) -> None:
    if args.duplicates:
        res = near_duplicates(args.run_dir, args.threshold, args.out, args.images, args.device)
        print(
            json.dumps(res)
            if args.json
            else f"{res['pairs']} near-duplicate pairs (cosine >= {res['threshold']}) "
            f"among {res['pool']} images: {res['out']}"
        )
        return
    if not args.query:
        raise ConfigError("neighbors: give --query IMAGE... (or --duplicates to list near-duplicate pairs)")
    res = neighbors(args.run_dir, args.query, args.k, args.out, args.images, args.device)
    if args.json:
        print(json.dumps(res))
        return
    for q, row in zip(res["queries"], res["neighbors"]):
        print(f"{q}: " + ", ".join(f"{r['image']} ({r['similarity']:.2f})" for r in row))
    print(f"picture: {res['picture']}")


def _cmd_demo(args) -> None:
    """Pretrain SimCLR on Fashion-MNIST, evaluate, print learned features next to raw pixels."""
    ns = argparse.Namespace(
        config=None,
        method=args.method,
        data=args.data,
        data_dir=args.data_dir,
        backbone=None,
        epochs=None,
        budget=args.budget,
        batch_size=None,
        overrides=[],
        out=args.out,
        no_recipe=False,
    )
    cfg = build_config(ns)
    run_dir = cfg.out
    assert run_dir is not None  # build_config names a run directory where none was given
    print(
        f"run directory: {cfg.out}\npretraining {cfg.method_name} on {cfg.data.name} for {cfg.train.budget or cfg.train.epochs}"
    )
    t0 = time.time()
    summary = fit(cfg, run_dir)
    rows = []
    for name, get in (
        ("raw pixels", lambda p: evaluate_raw_pixels(cfg, p)),
        (f"{cfg.method_name} ({cfg.backbone.name})", lambda p: evaluate(run_dir, p)),
    ):
        knn, lin = get("knn"), get("linear")
        rows.append((name, 100 * knn["top1_k200"], 100 * knn["top1_k20"], 100 * lin["top1"]))
    print(
        f"\n{cfg.data.name}, test split — {summary['epochs']:.1f} epochs in {summary['train_seconds'] / 60:.1f} min "
        f"of training ({(time.time() - t0) / 60:.1f} min in all)"
    )
    print(f"{'features':<28}{'kNN-200':>9}{'kNN-20':>9}{'linear':>9}")
    for r in rows:
        print(f"{r[0]:<28}{r[1]:>8.2f}%{r[2]:>8.2f}%{r[3]:>8.2f}%")
    # few labels, the README's table for this run: raw pixels, the same network from scratch, the linear probe
    # and fine-tuning, on 10 per class, 1 %, 10 % and 100 % of the labels. Fine-tuning and scratch only where
    # they take a minute or two on a CPU (up to 1 %); the rest with `selfsup eval semi RUN_DIR --per-class 10`.
    # 100 %: the table above's linear probes, the same protocol, not fitted twice.
    train_labels = labelled_splits(cfg)[0].labels
    assert train_labels is not None  # labelled_splits refuses unlabelled splits
    small = max(0.01, per_class_fraction(train_labels, 10))  # 10 per class and 1 %, on any data set's size
    semi = evaluate(run_dir, "semi", fractions=(0.01, 0.1), per_class=10, finetune_up_to=small)
    few = [
        (r["num_labelled"], r["fraction"], 100 * r["raw_pixels"], r["scratch"], 100 * r["linear"], r["finetune"])
        for r in sorted(semi["rows"], key=lambda r: r["num_labelled"])
    ]
    few.append((len(train_labels), 1.0, rows[0][3], None, rows[1][3], None))

    def cell(v):
        return f"{'—':>12}" if v is None else f"{100 * v:>11.2f}%"

    print(
        f"\nfew labels: test top-1 ({cfg.method_name}'s encoder; — : `selfsup eval semi {cfg.out}` measures it, "
        f"minutes to hours)\n{'labels':<20}{'raw pixels':>12}{'scratch':>12}{'linear':>12}{'fine-tuned':>12}"
    )
    for n, fraction, raw, scratch, lin, tuned in few:
        labels = f"{n} ({100 * fraction:.3g} %)"
        print(f"{labels:<20}{raw:>11.2f}%{cell(scratch)}{lin:>11.2f}%{cell(tuned)}")
    print(f"\nrun directory: {cfg.out}  (curves.png, metrics.jsonl, tb/, checkpoints/)")
    Path(run_dir, "demo_table.json").write_text(
        json.dumps(
            [{"features": r[0], "knn200": r[1], "knn20": r[2], "linear": r[3]} for r in rows]
            + [
                {
                    "labels": n,
                    "raw_pixels_linear": raw,
                    "scratch": None if s is None else 100 * s,
                    "linear": lin,
                    "finetune": None if t is None else 100 * t,
                }
                for n, _, raw, s, lin, t in few
            ],
            indent=1,
        )
    )


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfsup", description="Self-supervised representation learning.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)

    ls = sub.add_parser("list", help="list methods, datasets or backbones")
    ls.add_argument("what", choices=["methods", "datasets", "backbones"])
    ls.add_argument("--json", action="store_true")
    ls.add_argument("-v", "--verbose", action="store_true")
    ls.set_defaults(func=_cmd_list)

    pt = sub.add_parser("pretrain", help="pretrain a method on a dataset")
    pt.add_argument("--method")
    pt.add_argument("--data")
    pt.add_argument("--data-dir")
    pt.add_argument("--backbone")
    g = pt.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int)
    g.add_argument(
        "--budget",
        help="wall-clock training budget, e.g. 15m: timed before the first step, it becomes a "
        "number of steps (planned_steps in summary.json) that every schedule follows, "
        "re-planned on the way if the machine's speed drifts",
    )
    pt.add_argument("--batch-size", type=int)
    pt.add_argument("--out", help="run directory (default runs/METHOD-DATA-TIME)")
    pt.add_argument("--config", help="YAML file of overrides")
    pt.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    pt.add_argument("--no-recipe", action="store_true", help="ignore configs/METHOD_DATA.yaml")
    pt.add_argument(
        "--print-config",
        action="store_true",
        help="print the composed config (paper defaults < recipe < --config < overrides) as YAML and stop",
    )
    pt.add_argument("overrides", nargs="*", help="key=value, e.g. optim.lr=0.5 train.precision=bf16")
    pt.set_defaults(func=_cmd_pretrain)

    ev = sub.add_parser("eval", help="evaluate a run's encoder")

    ev.add_argument("protocol", choices=list(PROTOCOLS))
    ev.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="one or more run directories (pretext: several runs also give the correlation across them)",
    )
    ev.add_argument("--json", action="store_true", help="print each result as one JSON object (one line per run)")
    ev.add_argument("--device", default="cpu")
    for name, (opt, owners) in cli_options(PROTOCOLS.values()).items():  # declared by the protocols
        kind = {"action": "store_true"} if opt.switch else {"type": opt.type, "metavar": opt.metavar}
        ev.add_argument(opt.flag, dest=name, help=f"{', '.join(owners)}: {opt.help}".replace("%", "%%"), **kind)
    ev.set_defaults(func=_cmd_eval)

    ds = sub.add_parser(
        "distill",
        help="SimCLR v2 distillation: fine-tune a teacher on a fraction of the labels, "
        "train a student on all images without labels",
    )
    ds.add_argument("run_dir")
    ds.add_argument("--fraction", type=float, default=0.1, help="labels the teacher is fine-tuned on (default 0.1)")
    ds.add_argument("--out", help="where the student goes (default RUN_DIR/distill_<pct>pct)")
    g = ds.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help="student epochs over all training images (default 10)")
    g.add_argument("--steps", type=int, help="student steps instead of epochs")
    ds.add_argument("--temperature", type=float, help="tau of the softened predictions (default 1)")
    ds.add_argument("--student", default="same", help="'same' (the run's backbone) or a backbone name, e.g. resnet10")
    ds.add_argument("--student-width", type=float, help="the student's width multiplier (default: the run's)")
    ds.add_argument("--teacher-epochs", type=int, help="teacher fine-tuning epochs (default 60 at 1 %%, else 30)")
    ds.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    ds.add_argument("--device", default="cpu")
    ds.set_defaults(func=_cmd_distill)

    bn = sub.add_parser(
        "bench", help="train several methods under one budget, evaluate them alike, write a leaderboard"
    )
    bn.add_argument(
        "--methods",
        default="all",
        help="comma-separated method names, or NAME=METHOD:CONFIG for a "
        "variant (e.g. byol_no_bn=byol:configs/ablations/byol_no_bn.yaml); "
        "default: all registered methods",
    )
    bn.add_argument("--data", default="fashion-mnist")
    bn.add_argument("--data-dir")
    bn.add_argument("--backbone", help="force one backbone on every method (default: each recipe's)")
    g = bn.add_mutually_exclusive_group()
    g.add_argument("--budget", default=None, help="wall-clock training budget per run (default 15m)")
    g.add_argument("--epochs", type=int, help="epochs per run instead of a budget")
    bn.add_argument("--seeds", type=int, default=1, help="runs per method; the leaderboard shows mean +- std")
    bn.add_argument(
        "--protocols",
        type=comma_list(),
        default=["knn", "linear"],
        help="evaluations per run (default knn,linear; efficiency is always read)",
    )
    bn.add_argument("--out", help="bench directory (default runs/bench-DATA-BUDGET); re-run to resume")
    bn.add_argument("--device", default="cpu")
    bn.add_argument("overrides", nargs="*", help="key=value for every run, e.g. train.batch_size=128")
    bn.set_defaults(func=_cmd_bench)

    cl = sub.add_parser("claims", help="run the experiments behind the field's claims; write docs/claims.md")
    cl.add_argument("--only", type=comma_list(), help="claim names, comma-separated (default: all fifteen)")
    cl.add_argument("--list", action="store_true", help="list the claims and exit")
    cl.add_argument("--budget-per-run", default="3m", help="wall-clock training budget of each run (default 3m)")
    cl.add_argument(
        "--seeds",
        type=int,
        help="seeds per arm (default: each claim's registered number, 3; fewer give at most 'inconclusive')",
    )
    cl.add_argument(
        "--fresh",
        action="store_true",
        help="runs trained under an earlier version of a claim's rule: "
        "move them aside and train new ones (else: refused)",
    )
    cl.add_argument("--data", default="fashion-mnist")
    cl.add_argument("--out", default="runs/claims", help="where the runs go (re-run to resume)")
    cl.add_argument("--doc", default="docs/claims.md", help="the page written from the results")
    cl.add_argument("--device", default="cpu")
    cl.add_argument("overrides", nargs="*", help="key=value for every run (e.g. train.epochs on tiny tests)")
    cl.set_defaults(func=_cmd_claims)

    vz = sub.add_parser("viz", help="pictures of a trained encoder")
    vz.add_argument(
        "what",
        choices=["attention"],
        help="attention: a ViT's last-block [CLS] attention per head "
        "(DINO's emergent segmentation), with its IoU vs the foreground",
    )
    vz.add_argument("run_dir")
    vz.add_argument("--images", type=int, default=500, help="test images the IoU is averaged over")
    vz.add_argument("--show", type=int, default=6, help="images drawn in attention.png")
    vz.add_argument("--json", action="store_true")
    vz.add_argument("--device", default="cpu")
    vz.set_defaults(func=_cmd_viz)

    rp = sub.add_parser("report", help="one self-contained HTML page of one or more runs")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default="report.html")
    rp.add_argument("--title")
    rp.set_defaults(func=_cmd_report)

    ex = sub.add_parser("export", help="write a run's encoder alone, loadable by torchvision, timm or selfsup")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument(
        "--format",
        required=True,
        choices=["torchvision", "timm", "safetensors", "hf"],
        help="torchvision (ResNets), timm (ViTs, ResNets), safetensors (any backbone; "
        "selfsup.export.load_encoder), hf (a timm model directory, config.json + model.safetensors: "
        "timm.create_model('local-dir:DIR'); ViTs, ResNets with the 7x7 stem)",
    )
    ex.add_argument("--out", help="file to write (default RUN_DIR/export/encoder_FORMAT.pth or .safetensors)")
    ex.set_defaults(func=_cmd_export)

    em = sub.add_parser("embed", help="features of a folder of images (or one image) from a run's encoder")
    em.add_argument("run_dir", metavar="RUN_DIR")
    em.add_argument("images", metavar="IMAGES", help="a folder (searched recursively) or one image file")
    em.add_argument(
        "--out", required=True, help="features.npy (+ features.files.jsonl, one JSON path per row) or features.parquet"
    )
    em.add_argument("--batch-size", type=int, default=256)
    em.add_argument("--device", default="cpu")
    em.set_defaults(func=_cmd_embed)

    cf = sub.add_parser("classify", help="train a classifier on your labels from a run's encoder and save it")
    cf.add_argument("run_dir", metavar="RUN_DIR")
    cf.add_argument(
        "--labels",
        required=True,
        metavar="DIR|FILE.csv",
        help="a folder with one sub-folder per class, or a CSV of path,label rows",
    )
    cf.add_argument(
        "--test",
        metavar="DIR|FILE.csv",
        help="labelled images the expected accuracy is measured on (default: cross-validation over --labels)",
    )
    cf.add_argument(
        "--finetune",
        action="store_true",
        help="fine-tune the encoder with the head (default: a linear head on frozen features)",
    )
    cf.add_argument("--epochs", type=int, help="--finetune: epochs over the labels (default 30)")
    cf.add_argument("--folds", type=int, help="cross-validation folds for the estimate (default 5)")
    cf.add_argument("--seed", type=int, default=0)
    cf.add_argument("--out", help="classifier directory (default RUN_DIR/classifier_linear or _finetune)")
    cf.add_argument("--json", action="store_true")
    cf.add_argument("--device", default="cpu")
    cf.set_defaults(func=_cmd_classify)

    sm = sub.add_parser(
        "semi",
        help="train a classifier on few labels and many unlabelled images at once "
        "(FixMatch, MixMatch, VAT, pseudo-labels), from scratch or from a run",
    )
    sm.add_argument(
        "--method", required=True, help="fixmatch | mixmatch | vat | pseudolabel | supervised (labels only)"
    )
    sm.add_argument(
        "--init",
        metavar="RUN_DIR",
        help="start from this run's encoder (and, without --data, train on the images it pretrained on)",
    )
    sm.add_argument(
        "--from-scratch",
        action="store_true",
        help="with --init: its architecture and input spec, random weights (the baseline)",
    )
    sm.add_argument("--data", help="the unlabelled images: a dataset name (imagefolder with --data-dir)")
    sm.add_argument("--data-dir")
    sm.add_argument("--backbone", help="without --init: the encoder (default: the supervised reference recipe's)")
    sm.add_argument(
        "--labels", metavar="DIR|FILE.csv", help="a folder with one sub-folder per class, or a CSV of path,label rows"
    )
    sm.add_argument(
        "--per-class", type=int, help="instead of --labels: this many of the dataset's own labels per class"
    )
    sm.add_argument("--fraction", type=float, help="instead of --labels: this fraction of the dataset's own labels")
    sm.add_argument(
        "--test",
        metavar="DIR|FILE.csv",
        help="labelled images the result is measured on (default: the "
        "dataset's test split with --per-class/--fraction)",
    )
    sm.add_argument("--steps", type=int, help="optimiser steps (default 1000)")
    sm.add_argument("--seed", type=int)
    sm.add_argument("--out", required=True, help="classifier directory, read by `selfsup predict`")
    sm.add_argument("--json", action="store_true")
    sm.add_argument("--device", default="cpu")
    sm.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="the method's and training's settings, e.g. threshold=0.9 mu=3 lr=0.01 encoder_lr=0.003",
    )
    sm.set_defaults(func=_cmd_semi)

    pr = sub.add_parser("predict", help="classify a folder of images with a saved classifier; write a CSV")
    pr.add_argument("clf_dir", metavar="CLF_DIR", help="from `selfsup classify` (or `selfsup distill`)")
    pr.add_argument("images", metavar="IMAGES", help="a folder (searched recursively) or one image file")
    pr.add_argument("--out", required=True, help="predictions.csv: path,label,probability per image")
    pr.add_argument("--top-k", type=int, default=1, help="also the next k-1 labels and their probabilities")
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--device", default="cpu")
    pr.set_defaults(func=_cmd_predict)

    se = sub.add_parser(
        "select", help="which images to label next: diverse or representative picks from the embeddings"
    )
    se.add_argument("run_dir", metavar="RUN_DIR")
    se.add_argument("--n", type=int, required=True, help="how many images to pick")
    se.add_argument(
        "--strategy",
        default="kmeans",
        choices=["kmeans", "kcenter", "random"],
        help="kmeans (default): representative, the image nearest each of n centroids; kcenter: diverse, a "
        "core-set cover (picks outliers: below random at 100 and 500 labels, docs/benchmarks.md)",
    )
    se.add_argument("--images", metavar="DIR", help="pick from this folder (default: the run's training images)")
    se.add_argument("--out", default="to_label.csv", help="CSV of path,label (label empty) + a contact-sheet PNG")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--json", action="store_true")
    se.add_argument("--device", default="cpu")
    se.set_defaults(func=_cmd_select)

    nb = sub.add_parser("neighbors", help="nearest training images of query images (a PNG grid), or near-duplicates")
    nb.add_argument("run_dir", metavar="RUN_DIR")
    nb.add_argument("--query", nargs="+", metavar="IMAGE", help="image files whose neighbours to show")
    nb.add_argument("--k", type=int, default=8, help="neighbours per query (default 8)")
    nb.add_argument("--duplicates", action="store_true", help="list pairs of near-duplicate images instead")
    nb.add_argument("--threshold", type=float, default=0.98, help="--duplicates: cosine similarity (default 0.98)")
    nb.add_argument("--images", metavar="DIR", help="search this folder (default: the run's training images)")
    nb.add_argument("--out", help="the PNG (default RUN_DIR/neighbors.png) or, with --duplicates, the CSV")
    nb.add_argument("--json", action="store_true")
    nb.add_argument("--device", default="cpu")
    nb.set_defaults(func=_cmd_neighbors)

    dm = sub.add_parser("demo", help="pretrain SimCLR on Fashion-MNIST and compare with raw pixels")
    dm.add_argument("--method", default="simclr")
    dm.add_argument("--data", default="fashion-mnist")
    dm.add_argument("--data-dir")
    dm.add_argument("--budget", default="15m")
    dm.add_argument("--out")
    dm.set_defaults(func=_cmd_demo)
    return p


def _check_device(name: str | None) -> None:
    """--device of eval, classify, predict, ...: a name torch knows, before any work."""
    if name is None:
        return
    import torch

    try:
        torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None


_PACKAGE = Path(__file__).resolve().parent


def _warning_format(fallback):
    """The library warns with ``warnings`` (a Python user can filter or record them); the CLI formats
    selfsup's own as one line, ``warning: ...``, and anything else (torch's, a plugin's) as ``fallback``."""

    def format(message, category, filename, lineno, line=None) -> str:
        try:
            ours = Path(filename).resolve().is_relative_to(_PACKAGE)
        except (OSError, ValueError):
            ours = False
        if ours and issubclass(category, UserWarning):
            return f"warning: {message}\n"
        return fallback(message, category, filename, lineno, line)

    return format


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        # selfsup's own warnings read "warning: ..." on stderr, as its errors "selfsup: error: ..."; each
        # command shows a repeated warning again (a fresh filter state), and the format is put back after
        with warnings.catch_warnings(), console():  # and selfsup's messages (selfsup.log) on stdout
            warnings.formatwarning = _warning_format(fallback := warnings.formatwarning)
            try:
                _check_device(getattr(args, "device", None))
                args.func(args)
            finally:
                warnings.formatwarning = fallback
    except SelfsupError as e:  # a user error; anything else is a bug in selfsup and keeps its traceback
        if args.debug:
            raise
        print(f"selfsup: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        run_dir = getattr(args, "resume", None) or getattr(args, "running", None) or "RUN_DIR"
        print(
            f"\ninterrupted; the last checkpoint is kept — continue with `selfsup pretrain --resume {run_dir}`",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # `selfsup list methods | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    finally:
        dist.destroy()  # a process group that torchrun's run joined
    return 0


if __name__ == "__main__":
    sys.exit(main())
