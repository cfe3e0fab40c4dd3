"""Few labels: does pretraining pay, and which way of using the labels should a user pick?

The README's first table. For a trained run on a labelled data set (Fashion-MNIST), a validation split
is carved from the training split (VAL_SIZE images, seeded) and the labelled images are drawn, class-
balanced and seeded, from the rest: 10 per class, 1 % and 10 % of the training split's size. Every arm
is scored on the validation split and on the test split:

- raw pixels: the linear probe on flattened pixels (the reference every table carries);
- scratch: the run's architecture trained from random weights on the labels (the fine-tuning recipe);
- linear: the linear probe on the frozen features, L2 chosen on a tenth of the labels (selfsup's default);
- linear-wide-l2: the same probe with stronger regularisation allowed (L2 up to 1);
- knn-20 / knn-200: weighted kNN on the labelled features;
- finetune: encoder + linear head trained end to end (selfsup's fine-tuning recipe, a random head);
- finetune-lpft: the same with the head started at the linear probe (LP-FT, Kumar et al. 2022).

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

    python benchmarks/few_labels.py RUN_DIR [--seeds 0,1,2] [--finetune-up-to 0.01] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from dataclasses import replace

import numpy as np
import torch

from selfsup.data.sources import balanced_indices
from selfsup.eval.features import extract_features, raw_pixel_features
from selfsup.eval.finetune import FinetuneConfig, finetune_classifier, run_finetune_config
from selfsup.eval.knn import knn_predict
from selfsup.eval.linear import fit_probe
from selfsup.eval.run import _splits, run_features
from selfsup.eval.semi import per_class_fraction
from selfsup.engine import Run

VAL_SIZE, VAL_SEED = 10_000, 12345


def validation_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, the other rows) of a training split of n images: VAL_SIZE seeded rows, sorted;
    benchmarks/selection.py carves the same one."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    return perm[:VAL_SIZE].sort().values, perm[VAL_SIZE:].sort().values
MARGIN = 1.0  # points of test accuracy
L2 = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
L2_WIDE = L2 + (1e-1, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--finetune-up-to", type=float, default=0.01)
    p.add_argument("--arms", help="comma-separated arms to run (default all)")
    p.add_argument("--finetune-grid", help="KEY=V1,V2: one more fine-tuning arm per value of a FinetuneConfig field")
    p.add_argument("--budgets", help="comma-separated budgets to run: 10pc (10 per class), 1, 10 (default all)")
    p.add_argument("--merge", help="an earlier run's --json: its rows of the other arms and budgets join this run's")
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in a.seeds.split(",")]
    extra_arms = []
    if a.finetune_grid:
        key, _, values = a.finetune_grid.partition("=")
        extra_arms = [(f"finetune[{key}={v}]", {key: type(getattr(FinetuneConfig(), key))(v)})
                      for v in values.split(",")]
    wanted = set(a.arms.split(",")) | {name for name, _ in extra_arms} if a.arms else None

    def want(arm: str) -> bool:
        return wanted is None or arm in wanted

    run = Run(a.run_dir)
    ftr, ytr, fte, yte, cfg = run_features(a.run_dir)
    train, test = _splits(cfg)
    spec = run.spec
    val, pool = validation_split(len(ytr))
    raw_tr, raw_te = raw_pixel_features(train.images), raw_pixel_features(test.images)
    budgets = [("10 per class", per_class_fraction(ytr, 10)), ("1 %", 0.01), ("10 %", 0.1)]
    keys = {"10pc": "10 per class", "1": "1 %", "10": "10 %"}
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
                return (100 * (pred_val == ytr[val]).float().mean().item(),
                        100 * (pred_test == yte).float().mean().item())

            arms = {}
            for arm, f_lab, f_val, f_te, grid in (("raw pixels", raw_tr[lab], raw_tr[val], raw_te, L2),
                                                   ("linear", ftr[lab], ftr[val], fte, L2),
                                                   ("linear-wide-l2", ftr[lab], ftr[val], fte, L2_WIDE)):
                if want(arm):
                    probe = fit_probe(f_lab, y, 10, grid, 0.1, seed)
                    arms[arm] = score(probe.predict(f_val), probe.predict(f_te))
            for k in (20, 200):
                if want(f"knn-{k}"):
                    arms[f"knn-{k}"] = score(knn_predict(ftr[lab], y, ftr[val], k, 0.07, 10).argmax(1),
                                             knn_predict(ftr[lab], y, fte, k, 0.07, 10).argmax(1))
            if fraction <= a.finetune_up_to:
                # all of the labelled images, on the protocol's schedule for their share of the training split
                ft = run_finetune_config(cfg, fraction=1.0, seed=seed, epochs=60 if fraction <= 0.01 else 30)
                labelled = train.subset(lab)
                for arm, change in (("finetune", {}), ("finetune-lpft", {"head_init": "probe"}),
                                    ("scratch", {"from_scratch": True}), *extra_arms):
                    if not want(arm):
                        continue
                    t0 = time.time()
                    model, _ = finetune_classifier(encoder, labelled, labelled, spec.mean, spec.std, spec.size,
                                                   replace(ft, **change), "cpu")
                    kw = dict(mean=spec.mean, std=spec.std, size=spec.size, precision=ft.precision)
                    arms[arm] = score(extract_features(model, train.images[val], **kw).argmax(1),
                                      extract_features(model, test.images, **kw).argmax(1))
                    print(f"  {arm} in {time.time() - t0:.0f} s", flush=True)
            for arm, (v, t) in arms.items():
                rows.append({"budget": name, "labels": len(lab), "seed": seed, "arm": arm, "val": v, "test": t})
            print(f"{name} ({len(lab)} labels) seed {seed}: " + ", ".join(f"{k} {v:.1f}/{t:.1f}" for k, (v, t)
                                                                           in arms.items()), flush=True)
    if a.merge:
        rows = [r for r in json.load(open(a.merge))["rows"]
                if not (want(r["arm"]) and r["budget"] in run_budgets)] + rows
    summary = []
    for name, _ in budgets:
        here = [r for r in rows if r["budget"] == name]
        arms = sorted({r["arm"] for r in here}, key=lambda x: [r["arm"] for r in here].index(x))
        mean = {arm: (np.mean([r["val"] for r in here if r["arm"] == arm]),
                      np.mean([r["test"] for r in here if r["arm"] == arm]),
                      np.std([r["test"] for r in here if r["arm"] == arm])) for arm in arms}
        encoder_arms = [x for x in arms if x not in ("raw pixels", "scratch")]
        chosen = max(encoder_arms, key=lambda x: mean[x][0])
        refs = [mean[x][1] for x in ("raw pixels", "scratch") if x in mean]
        pays = all(mean[chosen][1] - r > MARGIN for r in refs)
        summary.append({"budget": name, "labels": here[0]["labels"], "chosen": chosen, "pays": pays,
                        "arms": {x: {"val": m[0], "test": m[1], "test_std": m[2]} for x, m in mean.items()}})
    arms_all = list(dict.fromkeys(r["arm"] for r in rows))
    print("\n| labels | " + " | ".join(arms_all) + " | chosen on validation | pays? |")
    print("|---" * (len(arms_all) + 3) + "|")
    for s in summary:
        cells = [f"{s['arms'][x]['test']:.1f} ± {s['arms'][x]['test_std']:.1f}" if x in s["arms"] else "—"
                 for x in arms_all]
        print(f"| {s['budget']} ({s['labels']}) | " + " | ".join(cells) + f" | {s['chosen']} | "
              f"{'yes' if s['pays'] else 'no'} |")
    if a.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        with open(a.json, "w") as f:
            json.dump({"run": a.run_dir, "method": cfg.method_name, "rows": rows, "summary": summary, "seeds": seeds,
                       "val_size": VAL_SIZE, "margin": MARGIN, "commit": commit, "date": time.strftime("%Y-%m-%d"),
                       "machine": platform.processor() or platform.machine()}, f, indent=1)


if __name__ == "__main__":
    main()
