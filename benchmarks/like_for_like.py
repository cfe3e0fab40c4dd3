"""The like-for-like leaderboard: every method on the same encoder, the same image side and the same
budget, several seeds — the table that compares methods, apart from the best-recipe one
(benchmarks/results/fashion-mnist-15m/, where SimCLR's and NNCLR's recipes run a wider encoder on 16-px
views and every other row one seed).

The protocol, fixed here (2026-12-07) before any of its runs:

- Data: Fashion-MNIST; test split for the table's numbers only (each method's recipe was chosen before).
- Two tables by encoder family. CNN: every method that trains on plain images with any backbone gets the
  common encoder of the recipes, ResNet-10 x0.75 with the small stem (stride 2), on whole 28-px images
  (views.size and eval.size unset). ViT: the ViT-only methods get vit_micro with 4-px patches on 28 px.
- Each method keeps its own recipe's method settings, views (augmentations) and optimiser: only what is
  the method's. Nothing else is tuned for this table.
- Budget: BUDGET of training per run (default 5m, wall-clock planned into steps), SEEDS seeds (default 2:
  seed 0 and 1), protocols kNN, linear, cluster and the efficiency log.
- Reported: mean ± std over the seeds (selfsup bench's leaderboard.md); a difference between two rows is
  read as one only when it exceeds 1 point and twice the larger std (the claims' rule).

A seed that the shared machine slowed to fewer than half its seeds' median steps (a wall-clock budget
planned into steps) is another experiment: the next pass moves it aside and trains it again
(selfsup.experiments.bench.disturbed, the claims' rule).

Resumable (finished runs are skipped): run it in pieces, `--only a,b,c`, whenever the CPU is free.

    python benchmarks/like_for_like.py --family cnn [--budget 5m] [--seeds 2] [--only simclr,byol]
    python benchmarks/like_for_like.py --family vit
    python benchmarks/like_for_like.py --list
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selfsup.experiments.bench import Entry, bench
from selfsup.provenance import code_commit
from selfsup.registry import get_method_spec, list_methods

ROOT = Path(__file__).resolve().parent.parent
COMMON = {  # the encoder and side every row of a table shares
    "cnn": (
        "backbone.name=resnet10",
        "backbone.width=0.75",
        "backbone.small_stem=true",
        "backbone.stem_stride=2",
        "views.size=null",
        "eval.size=null",
    ),
    "vit": (
        "backbone.name=vit_micro",
        "backbone.width=1.0",
        "backbone.patch_size=4",
        "views.size=null",
        "eval.size=null",
    ),
}


def family_methods(family: str) -> list[str]:
    """The methods of a table: those that train on plain images (no colour-only, caption or video
    methods; SupCon, which uses the labels, is the supervised reference row), by the backbone family they
    accept."""
    out = []
    for m in list_methods():
        needs = get_method_spec(m).needs
        if needs.color or needs.text or needs.video:  # SupCon (labels) stays: the supervised reference row
            continue
        if (needs.backbone == "vit") == (family == "vit"):
            out.append(m)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=sorted(COMMON), default="cnn")
    p.add_argument("--budget", default="5m")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--only", help="comma-separated methods of the family (default: all of them)")
    p.add_argument("--out", help="default benchmarks/results/like-for-like-<family>-<budget>")
    p.add_argument("--list", action="store_true", help="print each family's methods and stop")
    a = p.parse_args()
    if a.list:
        for family in sorted(COMMON):
            print(f"{family}: {', '.join(family_methods(family))}")
        return
    methods = family_methods(a.family)
    if a.only:
        wanted = [m.strip() for m in a.only.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in methods]
        if unknown:
            raise SystemExit(f"not in the {a.family} table: {', '.join(unknown)} (its methods: {', '.join(methods)})")
        methods = wanted
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"like-for-like-{a.family}-{a.budget}")
    out.mkdir(parents=True, exist_ok=True)
    commit = code_commit()
    with open(out / "passes.jsonl", "a") as f:  # which commit and date each pass of the table ran at
        f.write(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "commit": commit,
                    "methods": methods,
                    "budget": a.budget,
                    "seeds": a.seeds,
                    "common": COMMON[a.family],
                }
            )
            + "\n"
        )
    bench(
        [Entry(m, m) for m in methods],
        "fashion-mnist",
        a.budget,
        a.seeds,
        out,
        protocols=("knn", "linear", "cluster"),
        overrides=COMMON[a.family],
    )


if __name__ == "__main__":
    main()
