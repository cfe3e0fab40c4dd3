"""--backbone timm:NAME (any timm model, pooled features) and backbone.weights=FILE (weights a user has)."""

from __future__ import annotations

import pytest
import torch

from selfsup import create_backbone
from selfsup.backbones.timm_models import load_backbone_weights
from test_cli import assert_clean_error, run_cli

TINY = [
    "--data",
    "digits",
    "--no-recipe",
    "--batch-size",
    "32",
    "--epochs",
    "1",
    "data.limit=64",
    "train.max_steps=2",
    "train.monitor_train=0",
    "train.device=cpu",
    "method.proj_hidden=32",
    "method.proj_dim=16",
]


def test_a_timm_model_by_name_is_an_encoder():
    enc = create_backbone("timm:test_resnet", in_channels=1)
    assert enc(torch.randn(2, 1, 16, 16)).shape == (2, enc.num_features)
    assert enc.backbone_args == {"name": "timm:test_resnet", "in_channels": 1, "image_size": None}
    vit = create_backbone("timm:test_vit", in_channels=3, image_size=32)  # sized by image_size
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, vit.num_features)
    with pytest.raises(KeyError, match="did you mean"):
        create_backbone("timm:test_resnett")


def test_pretrain_export_and_classify_with_a_timm_backbone(tmp_path):
    from selfsup.export import load_encoder
    from selfsup.eval.run import load_run

    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--backbone", "timm:test_resnet", *TINY, "--out", str(tmp_path / "r")]
    )
    assert rc == 0, err
    rc, _, err = run_cli(["export", str(tmp_path / "r"), "--format", "safetensors", "--out", str(tmp_path / "e.st")])
    assert rc == 0, err
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(load_encoder(tmp_path / "e.st")(x), load_run(tmp_path / "r")[1].encoder.eval()(x))


def test_a_vit_only_method_refuses_a_timm_cnn(tmp_path):
    rc, _, err = run_cli(
        ["pretrain", "--method", "mae", "--backbone", "timm:test_resnet", *TINY[:-2], "--out", str(tmp_path / "r")]
    )
    assert_clean_error(rc, err, "mae needs a ViT backbone")


def test_pretraining_starts_from_the_weights_file(tmp_path):
    """torchvision's resnet18 state dict (its fc left out) loads into selfsup's resnet18 with the 7x7
    stem, and at learning rate 0 the encoder's convolutions are still the file's after training steps."""
    import torchvision
    from safetensors.torch import load_file

    tv = torchvision.models.resnet18()
    tv.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # digits are grey
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    rc, out, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--backbone",
            "resnet18",
            "--out",
            str(tmp_path / "r"),
            *TINY,
            "backbone.small_stem=false",
            "backbone.weights=" + str(tmp_path / "tv.pth"),
            "optim.lr=0",
        ]
    )
    assert rc == 0, err
    assert "2 classifier tensors left out" in out
    got = load_file(tmp_path / "r" / "checkpoints" / "last" / "model.safetensors")
    for k, v in tv.state_dict().items():
        if "conv" in k or "downsample.0" in k:
            assert torch.equal(got[f"encoder.{k}"], v), k
    # a file for another architecture names what does not fit
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--backbone",
            "resnet18",
            "--out",
            str(tmp_path / "r2"),
            *TINY,
            "backbone.weights=" + str(tmp_path / "tv.pth"),
        ]
    )
    assert_clean_error(rc, err, "does not fit", "other shapes", "conv1.weight")
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--out",
            str(tmp_path / "r3"),
            *TINY,
            "backbone.weights=" + str(tmp_path / "nope.pth"),
        ]
    )
    assert_clean_error(rc, err, "no such file")


@pytest.mark.parametrize("method,target", [("byol", "target_encoder"), ("dino", "teacher_encoder")])
def test_ema_targets_start_from_the_weights_file_too(tmp_path, method, target):
    """The file goes into the encoder before the method copies it into its EMA target (teacher): at
    learning rate 0 the target is still the file's after training steps, not a random network."""
    from safetensors.torch import load_file, save_file

    w = {k: v.contiguous() for k, v in create_backbone("convnet", in_channels=1, width=0.25).state_dict().items()}
    save_file(w, tmp_path / "w.safetensors")
    heads = ["method.out_dim=32", "method.hidden_dim=32", "method.bottleneck_dim=8"] if method == "dino" else TINY[-2:]
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            method,
            "--backbone",
            "convnet",
            "--out",
            str(tmp_path / "r"),
            *TINY[:-2],
            *heads,
            "backbone.width=0.25",
            "optim.lr=0",
            "backbone.weights=" + str(tmp_path / "w.safetensors"),
        ]
    )
    assert rc == 0, err
    got = load_file(tmp_path / "r" / "checkpoints" / "last" / "model.safetensors")
    for k, v in w.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(got[f"{target}.{k}"], v, rtol=0, atol=1e-6, msg=lambda m: f"{k}: {m}")


def test_timm_weights_load_into_a_timm_backbone(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_resnet", num_classes=5, in_chans=1)  # with a classifier: left out
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    enc = create_backbone("timm:test_resnet", in_channels=1)
    got = load_backbone_weights(enc, tmp_path / "w.safetensors")
    assert sorted(got["ignored"]) == ["model.fc.bias", "model.fc.weight"]
    src.reset_classifier(0)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(enc.eval()(x), src.eval()(x))
