"""Run by tests/distributed/test_ddp.py (slow) under ``torchrun --nproc_per_node=2``: the real
training loop (``fit``) of every registered method for a few steps in one process group, with a
checkpoint and a resume. Rank 0 writes OUT/results.json: {method: "ok" | the error}.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
import yaml

from selfsup import dist
from selfsup.config import recipe_path, resolve
from selfsup.registry import get_method_spec, list_methods
from selfsup.train import fit, resume


def layers(name: str) -> list[dict]:
    needs = get_method_spec(name).needs
    data = (
        "moving-shapes"
        if needs.video
        else "color-digits"
        if needs.color
        else "captioned-digits"
        if needs.text
        else "digits"
    )
    backbone = {"name": "vit_micro", "patch_size": 4} if needs.backbone == "vit" else {"name": "convnet", "width": 0.25}
    # the method's settings of its digits recipe where it has one (sized for a small set: DeepCluster's
    # default k is 10000 and DeepCluster-v2's 3 x 3000, more than the 256 images here), else its defaults
    path = recipe_path(name, "digits")
    method = (
        {k: v for k, v in yaml.safe_load(path.read_text()).get("method", {}).items() if k != "name"} if path else {}
    )
    return [
        {
            "method": {"name": name, **method},
            "data": {"name": data, "limit": 256},
            "backbone": backbone,
            "train": {
                "batch_size": 16,
                "epochs": 1,
                "max_steps": 3,
                "device": "cpu",
                "threads": 1,
                "monitor_train": 200,
                "monitor_val": 100,
                "log_every": 1,
                "sync_bn": True,
            },
        }
    ]


def main(out: Path, names: list[str]) -> None:
    dist.init_from_env("cpu")
    results = {}
    for name in names or list_methods():
        run = out / name
        try:
            fit(resolve(layers(name)), run, progress_bar=False)
            # two more steps from the checkpoint, as `selfsup pretrain --resume RUN train.max_steps=5` (the run's
            # config.yaml keeps what training resolved: a ViT's data.mean/std, the chosen image side)
            summary = resume(run, progress_bar=False, changes=[{"train": {"max_steps": 5}}])
            assert summary["steps"] == 5, summary
            results[name] = "ok"
        except Exception as e:  # recorded, and the next method runs (both processes fail alike)
            results[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"
        dist.barrier()
    if dist.is_main():
        (out / "results.json").write_text(json.dumps(results, indent=1))
    dist.destroy()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), sys.argv[2:])
