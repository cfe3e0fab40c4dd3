"""Few labels: does pretraining pay, and which way of using the labels should a user pick?

The README's first table. For a trained run on a labelled data set (Fashion-MNIST), a validation split
is carved from the training split (VAL_SIZE images, seeded) and the labelled images are drawn, class-
balanced and seeded, from the rest: 10 per class, 1 % and 10 % of the training split's size, and all of
the rest (100 %; its fine-tuning arms run only with --finetune-up-to 1, hours on a CPU). Every arm
is scored on the validation split and on the test split:

- raw pixels: the linear probe on flattened pixels (the reference every table carries);
- scratch: the run's architecture trained from random weights on the labels (the fine-tuning recipe);
- linear: the linear probe on the frozen features, L2 chosen on a tenth of the labels (selfsup's default);
- linear-wide-l2: the same probe with stronger regularisation allowed (L2 up to 1);
- knn-20 / knn-200: weighted kNN on the labelled features;
- finetune: encoder + linear head trained end to end (selfsup's fine-tuning recipe, a random head);
- finetune-lpft: the same with the head started at the linear probe (LP-FT, Kumar et al. 2022);
- distill: SimCLR v2's third step (Chen et al. 2020b): the finetune arm's classifier teaches a new network of
  the same architecture from random weights on the pool's images without labels (--distill-epochs, default
  DISTILL_EPOCHS); its seconds include the teacher's fine-tuning.

The rule, fixed here before any run: for each label budget, the recommended encoder arm is the one with
the best mean VALIDATION accuracy over the seeds (test accuracy never chooses). Pretraining pays at that
budget when the recommended arm's mean TEST accuracy is above both scratch and raw pixels by more than
MARGIN points. Fine-tuning and scratch run at budgets up to --finetune-up-to (at 10 % they take minutes
each on a CPU). LP-FT becomes the fine-tuning protocol's default head (FinetuneConfig.head_init) if its
mean VALIDATION accuracy is above the random head's by more than MARGIN at every budget both ran at.
``--arms`` runs only some arms, ``--merge`` adds an earlier run's rows of the others (a later pass adding
an arm to an earlier run's results). ``--finetune-grid KEY=V1,V2`` adds one fine-tuning arm per value of
a FinetuneConfig field ("finetune[encoder_lr=0.03]"); such a value becomes the protocol's default only if
its mean VALIDATION accuracy beats the default fine-tune's by more than MARGIN at every budget both ran at.
``--semi fixmatch,mixmatch,...`` adds the semi-supervised methods (selfsup.semi) as arms: from the run's
encoder (arm "fixmatch") and, with ``--semi-scratch``, from random weights of the same architecture
("fixmatch-scratch"), each on the labelled images plus the rest of the pool as unlabelled images, for
``--semi-steps`` steps at the method's paper settings (nothing tuned; another length than SEMI_STEPS is an arm
of its own, "fixmatch[steps=3000]", and the README's FixMatch column shows the length best on VALIDATION).
Issue 30's goal, fixed here: the
arm chosen on validation beats scratch (labels alone) by at least GOAL points of mean test accuracy.
The baseline "from scratch" is whichever labels-alone arm from random weights (``scratch``: the fine-tuning
recipe; ``supervised-scratch``: the semi loop's recipe, ``--semi supervised --semi-scratch``) has the higher
mean VALIDATION accuracy at that budget; pays and the goal are judged against it. The semi loop's labels-only
recipe (``supervised``: weak flip-and-shift views, SGD 0.03 with weight decay 5e-4, EMA 0.999 of the weights,
1,000 steps) becomes the fine-tuning protocol's recipe if, from the encoder, its mean VALIDATION accuracy beats
the ``finetune`` arm's by more than MARGIN at every budget both ran at (rule fixed 2026-12-06, before the
seeds 1 and 2 and the 10-per-class and 10 % runs of that arm; ``semi_loop_recipe_wins`` per budget).
Every row records its arm's training seconds; the results file records the encoder's pretraining seconds
(the run's summary.json), and ``--markdown`` prints below the accuracies each cell's CPU minutes (the arm's
median over its seeds, plus the pretraining for the arms that start from the encoder).
Which encoder the README's table shows (rule fixed 2026-12-06, before the runs of a 40-epoch NNCLR encoder
against the 12-epoch SimCLR one): ``--compare A.json B.json`` — the results file whose chosen arm has the
higher mean VALIDATION accuracy at more of the budgets both ran (a tie in count: the one already shown, A).

    python benchmarks/few_labels.py RUN_DIR [--seeds 0,1,2] [--finetune-up-to 0.01] [--json out.json]
        [--semi fixmatch --semi-scratch --semi-steps 1000] [--png table.png]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from selfsup.data.dataset import balanced_indices, validation_split as carve_validation
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime
from selfsup.eval.features import raw_pixel_features
from selfsup.eval.distill import DistillConfig, distill, student_like
from selfsup.eval.finetune import FinetuneConfig, finetune_classifier, run_finetune_config
from selfsup.eval.knn import knn_predict
from selfsup.eval.linear import fit_probe
from selfsup.eval.run import run_features
from selfsup.eval.semi import per_class_fraction
from selfsup.engine import Run, labelled_splits
from selfsup.provenance import code_commit
from selfsup.semi import create_semi_method
from selfsup.semi.train import train_semi

VAL_SIZE = 10_000


def validation_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, the other rows) of a training split of n images, sorted: VAL_SIZE rows of
    selfsup's one validation permutation (selfsup.data.dataset.validation_split, whose first rows are also
    the training monitor's); benchmarks/selection.py and peers.py carve the same one."""
    val, rest = carve_validation(n, VAL_SIZE)
    return val.sort().values, rest.sort().values


MARGIN = 1.0  # points of test accuracy
LABELS_ALONE = ("scratch", "supervised-scratch")  # random weights, the labels and nothing else
GOAL = 5.0  # issue 30: the best pipeline over scratch, points of mean test accuracy
DISTILL_EPOCHS = 10  # the distill arm: SimCLR v2's step 3 over the unlabelled pool (DistillConfig's default)
SEMI_STEPS = 1000  # a semi-supervised arm's default length; another --semi-steps names its arm "fixmatch[steps=N]"


def base_arm(arm: str) -> str:
    """ "fixmatch[steps=3000]" -> "fixmatch": the arm without its non-default settings."""
    return arm.split("[", 1)[0]


def from_scratch(arm: str) -> bool:
    return arm == "scratch" or base_arm(arm).endswith("-scratch")


L2 = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
L2_WIDE = L2 + (1e-1, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", nargs="?", help="a trained run on a labelled data set (not needed with --markdown)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--finetune-up-to", type=float, default=0.01)
    p.add_argument("--arms", help="comma-separated arms to run (default all)")
    p.add_argument("--finetune-grid", help="KEY=V1,V2: one more fine-tuning arm per value of a FinetuneConfig field")
    p.add_argument("--budgets", help="comma-separated budgets to run: 10pc (10 per class), 1, 10, 100 (default all)")
    p.add_argument("--merge", help="an earlier run's --json: its rows of the other arms and budgets join this run's")
    p.add_argument("--semi", help="comma-separated semi-supervised methods to add as arms (fixmatch, mixmatch, ...)")
    p.add_argument("--semi-scratch", action="store_true", help="also each --semi method from random weights")
    p.add_argument("--semi-steps", type=int, default=SEMI_STEPS)
    p.add_argument(
        "--distill-epochs",
        type=int,
        default=DISTILL_EPOCHS,
        help="the distill arm's epochs over the unlabelled pool (another value is not a new arm: the row records it)",
    )
    p.add_argument("--json")
    p.add_argument("--png", help="a bar chart of the mean test accuracy per arm and budget")
    p.add_argument("--plot-only", metavar="JSON", help="draw --png from an earlier run's --json and stop")
    p.add_argument("--markdown", metavar="JSON", help="print the README's table from an earlier run's --json and stop")
    p.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="several passes' results files into one (--json OUT): a later file's row replaces an earlier "
        "one's of the same budget, arm and seed; the summary is computed again, then stop",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("SHOWN", "NEW"),
        help="two results files: which one the README's table shows, by the rule above, and stop",
    )
    a = p.parse_args()
    if a.markdown:
        print(readme_tables(json.load(open(a.markdown))))
        return
    if a.combine:
        if not a.json:
            p.error("--combine writes --json OUT")
        rows: dict = {}
        files = [json.load(open(f)) for f in a.combine]
        for d in files:
            rows.update({(r["budget"], r["arm"], r["seed"]): r for r in d["rows"]})
        first = next((d for d in files if "run" in d), files[0])
        out = {k: first[k] for k in ("run", "method", "val_size", "margin", "machine") if k in first}
        out["pretraining_seconds"] = next(
            (d["pretraining_seconds"] for d in files if d.get("pretraining_seconds")), None
        )
        out.update(
            {
                "rows": list(rows.values()),
                "summary": summarise(list(rows.values())),
                "seeds": sorted({r["seed"] for r in rows.values()}),
                "passes": [
                    {"file": f, "commit": d.get("commit"), "date": d.get("date")} for f, d in zip(a.combine, files)
                ],
            }
        )
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        return
    if a.compare:
        shown, new = (summarise(json.load(open(f))["rows"]) for f in a.compare)
        wins = readme_encoder_wins(shown, new)
        print(f"the README shows {a.compare[1] if wins else a.compare[0]}")
        return
    if a.plot_only:
        d = json.load(open(a.plot_only))
        plot(
            d["summary"],
            list(dict.fromkeys(r["arm"] for r in d["rows"])),
            a.png,
            f"{d['method']} encoder: test top-1 by label budget",
        )
        return
    if not a.run_dir:
        p.error("RUN_DIR is needed to measure (only --markdown and --plot-only read a results file alone)")
    torch.set_num_threads(2)
    # the code this pass runs: HEAD when it starts (a pass lasts up to an hour; later commits are not in it)
    commit = code_commit()
    seeds = [int(s) for s in a.seeds.split(",")]
    extra_arms = []
    if a.finetune_grid:
        key, _, values = a.finetune_grid.partition("=")
        extra_arms = [
            (f"finetune[{key}={v}]", {key: type(getattr(FinetuneConfig(), key))(v)}) for v in values.split(",")
        ]
    semi = [m for m in (a.semi or "").split(",") if m]
    steps_tag = "" if a.semi_steps == SEMI_STEPS else f"[steps={a.semi_steps}]"  # another length: another arm
    semi_arms = [(m + steps_tag, False) for m in semi] + (
        [(f"{m}-scratch{steps_tag}", True) for m in semi] if a.semi_scratch else []
    )
    wanted = set(a.arms.split(",")) | {name for name, _ in extra_arms} if a.arms else None

    def want(arm: str) -> bool:
        return wanted is None or arm in wanted

    run = Run(a.run_dir)
    ftr, ytr, fte, yte, cfg = run_features(a.run_dir)
    train, test = labelled_splits(cfg)
    spec = run.spec
    val, pool = validation_split(len(ytr))
    raw_tr, raw_te = raw_pixel_features(train.images), raw_pixel_features(test.images)
    # 100 %: every labelled image of the training split but the validation split's
    budgets = [("10 per class", per_class_fraction(ytr, 10)), ("1 %", 0.01), ("10 %", 0.1), ("100 %", 1.0)]
    keys = {"10pc": "10 per class", "1": "1 %", "10": "10 %", "100": "100 %"}
    run_budgets = {keys[b] for b in a.budgets.split(",")} if a.budgets else {b for b, _ in budgets}
    encoder = getattr(run.method, "finetune_encoder", run.encoder)
    rows = []
    for name, fraction in budgets:
        if name not in run_budgets:
            continue
        n_want = round(fraction * len(ytr))
        for seed in seeds:
            lab = pool[balanced_indices(ytr[pool], n_want / len(pool), seed)]
            y = ytr[lab]

            def score(pred_val, pred_test):
                return (
                    100 * (pred_val == ytr[val]).float().mean().item(),
                    100 * (pred_test == yte).float().mean().item(),
                )

            arms, seconds = {}, {}
            for arm, f_lab, f_val, f_te, grid in (
                ("raw pixels", raw_tr[lab], raw_tr[val], raw_te, L2),
                ("linear", ftr[lab], ftr[val], fte, L2),
                ("linear-wide-l2", ftr[lab], ftr[val], fte, L2_WIDE),
            ):
                if want(arm):
                    probe = fit_probe(f_lab, y, 10, grid, 0.1, seed)
                    arms[arm] = score(probe.predict(f_val), probe.predict(f_te))
            for k in (20, 200):
                if want(f"knn-{k}"):
                    arms[f"knn-{k}"] = score(
                        knn_predict(ftr[lab], y, ftr[val], k, 0.07, 10).argmax(1),
                        knn_predict(ftr[lab], y, fte, k, 0.07, 10).argmax(1),
                    )
            teacher = None  # the "finetune" arm's classifier and its seconds, for the distillation arm
            if fraction <= a.finetune_up_to:
                # all of the labelled images, on the protocol's schedule for their share of the training split
                ft = run_finetune_config(cfg, fraction=1.0, seed=seed, epochs=60 if fraction <= 0.01 else 30)
                labelled = train.subset(lab)
                for arm, change in (
                    ("finetune", {}),
                    ("finetune-lpft", {"head_init": "probe"}),
                    ("scratch", {"from_scratch": True}),
                    *extra_arms,
                ):
                    if not want(arm):
                        continue
                    t0 = time.time()
                    model, _ = finetune_classifier(
                        encoder, labelled, labelled, spec.mean, spec.std, spec.size, replace(ft, **change), "cpu"
                    )
                    kw = dict(mean=spec.mean, std=spec.std, size=spec.size, runtime=Runtime("cpu", ft.precision))
                    arms[arm] = score(
                        extract_features(model, train.images[val], **kw).argmax(1),
                        extract_features(model, test.images, **kw).argmax(1),
                    )
                    seconds[arm] = time.time() - t0
                    if arm == "finetune":
                        teacher = (model, seconds[arm])
                    print(f"  {arm} in {time.time() - t0:.0f} s", flush=True)
                if want("distill"):  # SimCLR v2's third step: the fine-tuned classifier teaches a new network
                    t0 = time.time()
                    if teacher is None:
                        teacher = (
                            finetune_classifier(encoder, labelled, labelled, spec.mean, spec.std, spec.size, ft, "cpu")[
                                0
                            ],
                            time.time() - t0,
                        )
                    dcfg = DistillConfig(
                        epochs=a.distill_epochs,
                        seed=seed,
                        flip_p=cfg.views.flip_p,
                        precision=ft.precision,
                        channels_last=cfg.train.channels_last,
                    )
                    t1 = time.time()
                    student = student_like(encoder, 10, seed)
                    # on the pool's images without their labels (the validation images stay unseen)
                    distill(teacher[0], student, train.images[pool], test, spec.mean, spec.std, spec.size, dcfg, "cpu")
                    kw = dict(mean=spec.mean, std=spec.std, size=spec.size, runtime=Runtime("cpu", ft.precision))
                    arms["distill"] = score(
                        extract_features(student, train.images[val], **kw).argmax(1),
                        extract_features(student, test.images, **kw).argmax(1),
                    )
                    seconds["distill"] = teacher[1] + time.time() - t1  # the teacher's fine-tuning counts too
                    print(f"  distill in {seconds['distill']:.0f} s (teacher included)", flush=True)
            for arm, scratch in semi_arms:
                if not want(arm):
                    continue
                m, scfg = create_semi_method(
                    base_arm(arm).removesuffix("-scratch"),
                    {
                        "steps": a.semi_steps,
                        "seed": seed,
                        "flip_p": cfg.views.flip_p,
                        "precision": cfg.train.precision,
                        "channels_last": cfg.train.channels_last,
                    },
                )
                model, res = train_semi(
                    m, scfg, encoder, train.subset(lab), train.subset(pool), spec, 10, from_scratch=scratch
                )
                kw = dict(mean=spec.mean, std=spec.std, size=spec.size, runtime=Runtime("cpu", scfg.precision))
                arms[arm] = score(
                    extract_features(model, train.images[val], **kw).argmax(1),
                    extract_features(model, test.images, **kw).argmax(1),
                )
                seconds[arm] = res["train_seconds"]
                print(f"  {arm} in {res['train_seconds']:.0f} s ({res['final']})", flush=True)
            for arm, (v, t) in arms.items():
                rows.append(
                    {
                        "budget": name,
                        "labels": len(lab),
                        "seed": seed,
                        "arm": arm,
                        "val": v,
                        "test": t,
                        **({"seconds": seconds[arm]} if arm in seconds else {}),
                        **({"distill_epochs": a.distill_epochs} if arm == "distill" else {}),
                    }
                )
            print(
                f"{name} ({len(lab)} labels) seed {seed}: "
                + ", ".join(f"{k} {v:.1f}/{t:.1f}" for k, (v, t) in arms.items()),
                flush=True,
            )
    if a.merge:
        rows = [
            r for r in json.load(open(a.merge))["rows"] if not (want(r["arm"]) and r["budget"] in run_budgets)
        ] + rows
    summary = summarise(rows)
    arms_all = list(dict.fromkeys(r["arm"] for r in rows))
    print("\n| labels | " + " | ".join(arms_all) + " | chosen on validation | pays? | best of all | goal (+5) |")
    print("|---" * (len(arms_all) + 5) + "|")
    for s in summary:
        cells = [
            (
                f"{s['arms'][x]['test']:.1f} ± {s['arms'][x]['test_std']:.1f}"
                if s["seeds"][x] > 1
                else f"{s['arms'][x]['test']:.1f} (1 seed)"
            )
            if x in s["arms"]
            else "—"
            for x in arms_all
        ]
        print(
            f"| {s['budget']} ({s['labels']}) | " + " | ".join(cells) + f" | {s['chosen']} | "
            f"{'—' if s['pays'] is None else 'yes' if s['pays'] else 'no'} | {s['best']} | {'—' if s['goal'] is None else 'yes' if s['goal'] else 'no'} |"
        )
    if a.png:
        plot(summary, arms_all, a.png, f"{cfg.method_name} encoder: test top-1 by label budget")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "run": a.run_dir,
                    "method": cfg.method_name,
                    "rows": rows,
                    "summary": summary,
                    "seeds": seeds,
                    "pretraining_seconds": pretraining_seconds(a.run_dir),
                    "val_size": VAL_SIZE,
                    "margin": MARGIN,
                    "commit": commit,
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": platform.processor() or platform.machine(),
                },
                f,
                indent=1,
            )


def summarise(rows: list[dict]) -> list[dict]:
    """Per label budget: each arm's mean validation and test accuracy over its seeds, and the rule's
    verdicts (the arm chosen on validation, the labels-alone baseline, pays, the goal, the recipe)."""
    summary = []
    for name in README_LABELS:
        here = [r for r in rows if r["budget"] == name]
        if not here:
            continue
        arms = sorted({r["arm"] for r in here}, key=lambda x: [r["arm"] for r in here].index(x))
        mean = {
            arm: (
                np.mean([r["val"] for r in here if r["arm"] == arm]),
                np.mean([r["test"] for r in here if r["arm"] == arm]),
                np.std([r["test"] for r in here if r["arm"] == arm]),
            )
            for arm in arms
        }
        encoder_arms = [x for x in arms if x != "raw pixels" and not from_scratch(x)]
        chosen = max(encoder_arms, key=lambda x: mean[x][0])
        # the labels alone from random weights: the better recipe on validation (a weak baseline flatters)
        alone = [x for x in LABELS_ALONE if x in mean]
        baseline = max(alone, key=lambda x: mean[x][0]) if alone else None
        # pays needs both references: without a labels-alone arm (100 %, fine-tuning not run) it is not judged
        pays = (
            bool(all(mean[chosen][1] - mean[x][1] > MARGIN for x in ("raw pixels", baseline)))
            if baseline and "raw pixels" in mean
            else None
        )
        # issue 30's goal is about the pipelines selfsup offers from its encoder (fine-tune, or a
        # semi-supervised method from it): the arm chosen on validation, never one from random weights
        best = chosen
        goal = bool(mean[best][1] - mean[baseline][1] >= GOAL) if baseline else None
        recipe = (
            bool(mean["supervised"][0] - mean["finetune"][0] > MARGIN)
            if {"supervised", "finetune"} <= set(mean)
            else None
        )
        summary.append(
            {
                "budget": name,
                "labels": here[0]["labels"],
                "chosen": chosen,
                "pays": pays,
                "best": best,
                "baseline": baseline,
                "goal": goal,
                "semi_loop_recipe_wins": recipe,
                "seeds": {x: len([r for r in here if r["arm"] == x]) for x in arms},
                # the median: one seed's time on a busy shared machine must not speak for the arm
                "seconds": {
                    x: float(np.median([r["seconds"] for r in here if r["arm"] == x and "seconds" in r] or [0]))
                    for x in arms
                },
                "arms": {x: {"val": m[0], "test": m[1], "test_std": m[2]} for x, m in mean.items()},
            }
        )
    return summary


# The README's few-labels table: (column title, arm); "baseline" is the summary's labels-alone arm.
README_COLUMNS = (
    ("raw pixels (linear)", "raw pixels"),
    ("same network, from scratch", "baseline"),
    ("selfsup: linear probe", "linear"),
    ("selfsup: fine-tuned", "finetune"),
    ("selfsup + FixMatch (`selfsup semi`)", "fixmatch"),
)
README_LABELS = {
    "10 per class": "100 (10 per class)",
    "1 %": "600 (1 %)",
    "10 %": "6,000 (10 %)",
    "100 %": "50,000 (100 %, less the validation split)",
}


def semi_loop_recipe_adopted(summary: list[dict]) -> bool:
    """The rule in the module docstring: the semi loop's labels-only recipe beat the fine-tuning recipe
    on validation by more than MARGIN at every budget where both ran (and they ran at one at least)."""
    verdicts = [s["semi_loop_recipe_wins"] for s in summary if s["semi_loop_recipe_wins"] is not None]
    return bool(verdicts) and all(verdicts)


def readme_encoder_wins(shown: list[dict], new: list[dict]) -> bool:
    """The rule in the module docstring: does ``new`` replace ``shown`` in the README? Per budget both ran,
    the chosen arms' mean validation accuracies are compared; new must be higher at more budgets."""
    a, b = ({s["budget"]: s["arms"][s["chosen"]]["val"] for s in x} for x in (shown, new))
    both = set(a) & set(b)
    return sum(b[k] > a[k] for k in both) > sum(a[k] > b[k] for k in both)


def pretraining_seconds(run_dir: str) -> float | None:
    """The run's own training seconds (summary.json), which every encoder arm's CPU time includes."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()).get("train_seconds") if path.is_file() else None


def column_arm(s: dict, arm: str) -> str | None:
    """The summary's arm for a README column at one budget: "baseline" is the labels-alone arm; a
    semi-supervised column the variant of that method (its lengths) with the best mean VALIDATION accuracy."""
    if arm == "baseline":
        return s.get("baseline")
    variants = [x for x in s["arms"] if base_arm(x) == arm]
    return max(variants, key=lambda x: s["arms"][x]["val"]) if variants else None


def readme_tables(results: dict) -> str:
    """The README's few-labels table and, below it, each cell's CPU minutes (pretraining included)."""
    summary = summarise(results["rows"])
    return markdown_table(summary) + "\n\n" + minutes_table(summary, results.get("pretraining_seconds"))


def minutes_table(summary: list[dict], pretraining: float | None) -> str:
    """CPU minutes behind each cell of markdown_table: the arm's own training (median over its seeds; a
    probe's and a kNN's seconds are not recorded: "< 1"), plus the encoder's pretraining for encoder arms."""
    fine = "supervised" if semi_loop_recipe_adopted(summary) else "finetune"
    pre = f"{pretraining / 60:.0f} + " if pretraining else "pretraining + "
    lines = [
        "| CPU minutes (2 cores) | " + " | ".join(t for t, _ in README_COLUMNS) + " |",
        "|---" * (len(README_COLUMNS) + 1) + "|",
    ]
    for s in summary:
        cells = []
        for _, col in README_COLUMNS:
            arm = column_arm(s, fine if col == "finetune" else col)
            if arm is None or arm not in s["arms"]:
                cells.append("—")
                continue
            own = s["seconds"].get(arm, 0.0) / 60
            text = f"{own:.0f}" if own >= 1 else "< 1"
            cells.append(text if arm == "raw pixels" or from_scratch(arm) else pre + text)
        lines.append(f"| {README_LABELS.get(s['budget'], s['budget'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(summary: list[dict]) -> str:
    """The README's table from a results file's summary: mean ± std of test top-1 over the seeds (the
    count said where it is not 3), the best of each row in bold, "—" where an arm did not run. The
    fine-tuned column is the fine-tuning protocol's recipe: the semi loop's when the rule adopted it."""
    fine = "supervised" if semi_loop_recipe_adopted(summary) else "finetune"
    lines = ["| labels | " + " | ".join(t for t, _ in README_COLUMNS) + " |", "|---" * (len(README_COLUMNS) + 1) + "|"]
    for s in summary:
        arms = [column_arm(s, fine if a == "finetune" else a) for _, a in README_COLUMNS]
        best = max((s["arms"][a]["test"] for a in arms if a in s["arms"]), default=None)
        cells = []
        for a in arms:
            if a not in s["arms"]:
                cells.append("—")
                continue
            m, sd, n = s["arms"][a]["test"], s["arms"][a]["test_std"], s["seeds"][a]
            text = f"{m:.1f} ± {sd:.1f} %" if n > 1 else f"{m:.1f} %"
            said = [a.split("[", 1)[1].rstrip("]").replace("steps=", "") + " steps"] if "[steps=" in a else []
            said += [] if n == 3 else [f"{n} seed{'s' if n > 1 else ''}"]
            text += f" ({', '.join(said)})" if said else ""
            cells.append(f"**{text}**" if m == best else text)
        lines.append(f"| {README_LABELS.get(s['budget'], s['budget'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: list[dict], arms: list[str], path: str, title: str) -> None:
    """Grouped bars: one group per label budget, one bar per arm (mean test top-1; error bar: std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(arms)
    colours = plt.get_cmap("tab20").colors
    for i, arm in enumerate(arms):
        xs = [j + (i - (len(arms) - 1) / 2) * width for j, s in enumerate(summary) if arm in s["arms"]]
        ys = [s["arms"][arm]["test"] for s in summary if arm in s["arms"]]
        es = [s["arms"][arm]["test_std"] for s in summary if arm in s["arms"]]
        ax.bar(xs, ys, width, yerr=es, label=arm, capsize=2, color=colours[i % len(colours)])
    ax.set_xticks(range(len(summary)), [f"{s['budget']} ({s['labels']})" for s in summary])
    lo = min(s["arms"][x]["test"] for s in summary for x in s["arms"])
    ax.set(ylabel="test top-1 (%)", title=title, ylim=(max(0, lo - 5), 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
