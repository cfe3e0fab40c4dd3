"""DINO attention maps: the mass thresholding, the IoU, and `selfsup viz attention` on a tiny ViT run."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli import main
from selfsup.eval.attention import foreground, iou, mass_mask


def test_mass_mask_keeps_the_fewest_patches_holding_the_mass():
    attn = torch.tensor([[0.5, 0.2], [0.2, 0.1]])
    assert mass_mask(attn, 0.6).tolist() == [[True, True], [False, False]] or mass_mask(attn, 0.6).tolist() == [
        [True, False],
        [True, False],
    ]  # 0.5 + one of the 0.2s reaches 0.6
    assert mass_mask(attn, 0.5).sum() == 1  # 0.5 alone holds half
    assert mass_mask(attn, 0.95).sum() == 4
    uniform = torch.full((3, 4, 4), 1 / 16)
    assert (mass_mask(uniform, 0.6).flatten(1).sum(1) == 10).all()  # ceil(0.6 * 16)


def test_iou_and_foreground():
    a = torch.tensor([[[True, True], [False, False]]])
    b = torch.tensor([[[True, False], [True, False]]])
    assert iou(a, b).item() == pytest.approx(1 / 3) and iou(a, a).item() == 1.0
    img = torch.tensor([[[[0, 30], [200, 10]]]], dtype=torch.uint8)
    assert foreground(img).tolist() == [[[False, True], [True, False]]]


def test_viz_attention_on_a_tiny_vit_run(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "pretrain",
            "--method",
            "dino",
            "--data",
            "digits",
            "--backbone",
            "vit_micro",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--out",
            str(run),
            "backbone.patch_size=2",
            "views.num_local=0",
            "backbone.width=1.0",
            "train.max_steps=3",
            "train.monitor_train=0",
            "method.out_dim=256",
            "method.hidden_dim=64",
            "method.bottleneck_dim=32",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["viz", "attention", str(run), "--images", "50", "--show", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for which in ("trained", "random_init"):
        assert len(res[which]["per_head"]) == 4 and 0 <= res[which]["union_of_heads"] <= 1
    assert 0 < res["whole_image"] < 1  # the foreground's area fraction: some of the image, not all
    assert (run / "attention.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "eval_attention.json").read_text())["images"] == 50
    assert main(["viz", "attention", str(tmp_path / "nope")]) == 2  # a missing run: a clear error, not a traceback
