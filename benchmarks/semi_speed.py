"""CPU time of each few-labels arm, measured in one quiet run: what "at equal CPU time" rests on.

The accuracies of benchmarks/few_labels.py come from step-based runs (their weights do not depend on the
machine's load), but the seconds it records do: they ran beside other work. This script times, one arm
after another on an otherwise idle machine: seconds per step of every semi-supervised method (after
WARMUP steps, over TIMED steps; times the planned steps gives the arm's minutes), and the whole
fine-tuning and from-scratch arms at a label budget. Pretraining time is read from the run's summary.

    python benchmarks/semi_speed.py RUN_DIR [--fraction 0.01] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from dataclasses import replace

import torch

from selfsup.engine import Run
from selfsup.eval.finetune import finetune_classifier, run_finetune_config
from selfsup.semi import create_semi_method, list_semi_methods
from selfsup.semi.train import train_semi

WARMUP, TIMED = 3, 12


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=1000, help="the planned steps of each semi-supervised arm")
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(2)
    run = Run(a.run_dir)
    cfg, spec = run.cfg, run.spec
    train = run.split("train")
    lab = train.labelled_subset(a.fraction, 0)
    encoder = getattr(run.method, "finetune_encoder", run.encoder)
    common = {"flip_p": cfg.views.flip_p, "precision": cfg.train.precision, "channels_last": cfg.train.channels_last}
    rows = {}
    for name in list_semi_methods():
        per = []
        for steps in (WARMUP, WARMUP + TIMED):  # the difference is TIMED steps, without set-up and evaluation
            m, scfg = create_semi_method(name, {"steps": steps, **common})
            per.append(train_semi(m, scfg, encoder, lab, train, spec, 10)[1]["train_seconds"])
        s = (per[1] - per[0]) / TIMED
        rows[name] = {"seconds_per_step": s, "minutes_at_planned_steps": s * a.steps / 60}
        print(f"{name}: {s:.3f} s/step -> {s * a.steps / 60:.1f} min for {a.steps} steps", flush=True)
    ft = run_finetune_config(cfg, fraction=1.0, seed=0, epochs=60 if a.fraction <= 0.01 else 30)
    for arm, change in (("finetune", {}), ("scratch", {"from_scratch": True})):
        t0 = time.time()
        _, res = finetune_classifier(encoder, lab, lab, spec.mean, spec.std, spec.size, replace(ft, **change), "cpu")
        rows[arm] = {"minutes": (time.time() - t0) / 60, "steps": res["steps"]}
        print(f"{arm}: {rows[arm]['minutes']:.1f} min ({res['steps']} steps)", flush=True)
    summary = json.loads((run.dir / "summary.json").read_text())
    rows["pretraining"] = {"minutes": summary["train_seconds"] / 60}
    print(f"pretraining ({cfg.method_name}): {rows['pretraining']['minutes']:.1f} min")
    if a.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        with open(a.json, "w") as f:
            json.dump(
                {
                    "run": a.run_dir,
                    "fraction": a.fraction,
                    "labelled": len(lab),
                    "rows": rows,
                    "commit": commit,
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(),
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
