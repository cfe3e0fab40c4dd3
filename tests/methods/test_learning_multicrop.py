"""SwAV and DINO learn on digits with multi-crop: 2 global crops of 8 px and 2 local crops of 6 px
(the settings of configs/swav_digits.yaml and configs/dino_digits.yaml).

Seen on this (shared, loaded) machine, kNN-200 trained vs the same encoder at random init:
- SwAV, 20 epochs (~13 s): seed 0 0.950 vs 0.880 (+7.0), seed 1 0.933 vs 0.844 (+8.9),
  seed 2 0.928 vs 0.827 (+10.0).
- DINO, 15 epochs, AdamW (~11-14 s): seed 0 0.930 vs 0.880 (+5.0), seed 1 0.916 vs 0.844 (+7.2),
  seed 2 0.922 vs 0.827 (+9.5). With LARS at lr 1, DINO collapsed to a uniform teacher output
  (teacher entropy = log K) and learned little.
Multi-crop does not help at 8 px: SwAV with 2 views reached 0.950 / 0.947 / 0.953. 4 locals of 5 px
(crops of 2-3 px of digit, temperature 0.1) made it worse than random (-0.6 points, seed 0).
"""

from __future__ import annotations

from learning import digits_recipe, trained_vs_random

from selfsup.config import deep_merge

MULTICROP = {"num_local": 2, "local_size": 6, "local_scale": [0.3, 0.7], "local_blur_p": 0.0}


def test_swav_learns_digits_with_multicrop(tmp_path):
    layers = digits_recipe(
        "swav",
        20,
        {
            "proj_hidden": 256,
            "proj_dim": 64,
            "num_prototypes": 100,
            "temperature": 0.2,
            "epsilon": 0.03,
            "freeze_prototypes_iters": 10,
        },
    )
    layers[0] = deep_merge(layers[0], {"views": MULTICROP})
    trained, random = trained_vs_random(tmp_path, layers)
    print(
        f"swav kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.04
    assert trained["top1"] >= 0.91


def test_dino_learns_digits_with_multicrop(tmp_path):
    layers = digits_recipe("dino", 15, {"out_dim": 256, "hidden_dim": 256, "bottleneck_dim": 64})
    layers[0] = deep_merge(
        layers[0], {"views": MULTICROP, "optim": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 0.04}}
    )
    trained, random = trained_vs_random(tmp_path, layers)
    print(
        f"dino kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.025
    assert trained["top1"] >= 0.89
