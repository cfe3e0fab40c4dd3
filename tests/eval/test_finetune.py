"""The fine-tuning protocol on its own (selfsup.eval.finetune), with a small random-init convnet on
digits; fine-tuning a pretrained encoder is tested in tests/methods/test_simclrv2.py."""

from __future__ import annotations

import pytest
import torch

from selfsup import create_backbone
from selfsup.data import load_dataset
from selfsup.eval.finetune import Classifier, FinetuneConfig, finetune, finetune_classifier, light_augment, reinitialise

MEAN, STD = [0.3], [0.35]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def encoder(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone("convnet", in_channels=1, width=0.25)


def test_subset_is_class_balanced_and_seeded(digits):
    train, _ = digits
    sub = train.labelled_subset(0.1, seed=0)
    counts = torch.bincount(sub.labels, minlength=10)
    assert len(sub) == round(0.1 * len(train)) == 144
    assert counts.max() - counts.min() <= 1 and counts.min() >= 14
    assert torch.equal(sub.images, train.labelled_subset(0.1, seed=0).images)
    assert not torch.equal(sub.images, train.labelled_subset(0.1, seed=1).images)


def test_finetune_learns_reports_settings_and_only_touches_a_copy(digits):
    train, test = digits
    enc = encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = FinetuneConfig(fraction=0.1, epochs=10, flip_p=0.0)
    model, res = finetune_classifier(enc, train, test, MEAN, STD, 8, cfg)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # incl. BN running stats
    assert model.encoder is not enc
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())  # the copy moved
    print(f"random-init convnet fine-tuned on 144 labels for 30 steps: {res['top1']:.3f}")
    assert res["top1"] > 0.5  # seen ~0.8; chance is 0.1
    assert res["protocol"] == "finetune" and res["fraction"] == 0.1 and res["num_labelled"] == 144
    assert res["labelled_per_class"] == torch.bincount(train.labelled_subset(0.1, 0).labels).tolist()
    assert res["steps"] == 10 * 3 and res["batch_size"] == 64  # 144 images in 3 batches of 48
    assert res["encoder_lr"] < res["lr"] and not res["from_scratch"]
    assert res["num_features"] == enc.num_features and 0 <= res["train_top1"] <= 1


def test_the_semi_loop_recipe_is_the_semi_loops_labels_alone(digits):
    """recipe=semi-loop trains exactly what selfsup.semi's "supervised" method trains on the same labelled
    subset (same seed: the same weights), reports the protocol's keys, and learns."""
    from selfsup.engine import InputSpec
    from selfsup.semi import create_semi_method
    from selfsup.semi.train import train_semi

    train, test = digits
    cfg = FinetuneConfig(fraction=0.1, recipe="semi-loop", semi_steps=60, flip_p=0.0)
    model, res = finetune_classifier(encoder(), train, test, MEAN, STD, 8, cfg)
    method, scfg = create_semi_method("supervised", {"steps": 60, "seed": 0, "flip_p": 0.0})
    lab = train.labelled_subset(0.1, 0)
    direct, ref = train_semi(
        method, scfg, encoder(), lab, lab, InputSpec(1, 8, 8, tuple(MEAN), tuple(STD)), 10, test=test
    )
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), direct.state_dict().values()))
    assert res["top1"] == ref["top1"] > 0.5 and res["steps"] == 60 and res["protocol"] == "finetune"
    assert res["num_labelled"] == 144 and res["recipe"] == "semi-loop"


def test_fixed_steps_small_fraction_and_bf16(digits):
    train, test = digits
    res = finetune(encoder(), train, test, MEAN, STD, 8, FinetuneConfig(fraction=0.01, steps=4, precision="bf16"))
    assert res["steps"] == 4 and res["num_labelled"] == 14 and res["batch_size"] == 14
    assert 0.0 <= res["top1"] <= 1.0 and res["precision"] == "bf16"
    assert FinetuneConfig(fraction=0.01).num_epochs() == 60 and FinetuneConfig(fraction=0.1).num_epochs() == 30
    with pytest.raises(ValueError, match="fraction"):
        finetune(encoder(), train, test, MEAN, STD, 8, FinetuneConfig(fraction=1.5))


def test_same_seed_same_result(digits):
    train, test = digits
    cfg = FinetuneConfig(fraction=0.05, steps=5, flip_p=0.0)
    a = finetune(encoder(), train, test, MEAN, STD, 8, cfg)
    b = finetune(encoder(), train, test, MEAN, STD, 8, cfg)
    assert a["top1"] == b["top1"] and a["final_loss"] == b["final_loss"]


def test_from_scratch_reinitialises_the_same_architecture(digits):
    train, test = digits
    enc = encoder(seed=0)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)  # stands in for pretrained weights
    shifted = {k: v.clone() for k, v in enc.state_dict().items()}
    fresh = reinitialise(encoder(seed=3), seed=7)
    # every layer back to the backbone's own initialisation, deterministically per seed
    expected = create_backbone("convnet", in_channels=1, width=0.25)
    again = reinitialise(encoder(seed=5), seed=7)
    assert all(torch.equal(fresh.state_dict()[k], again.state_dict()[k]) for k in fresh.state_dict())
    assert fresh.state_dict().keys() == expected.state_dict().keys()
    bn_w = [k for k in fresh.state_dict() if k.endswith("1.weight")]  # BN gammas: 1 at initialisation
    assert bn_w and all(torch.equal(fresh.state_dict()[k], torch.ones_like(fresh.state_dict()[k])) for k in bn_w)
    untrained, _ = finetune_classifier(
        enc, train, test, MEAN, STD, 8, FinetuneConfig(steps=0, from_scratch=True, seed=7)
    )
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in untrained.encoder.state_dict().items())
    res = finetune(
        enc, train, test, MEAN, STD, 8, FinetuneConfig(fraction=0.1, steps=20, flip_p=0.0, from_scratch=True)
    )
    assert res["from_scratch"] and res["encoder_lr"] == res["lr"]  # nothing to protect in a random encoder
    assert res["top1"] > 0.3
    assert all(torch.equal(shifted[k], v) for k, v in enc.state_dict().items())  # the caller's weights are intact


def test_light_augment_is_batched_with_per_image_crops():
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(16, 1, 1, 1) * 3
    g = torch.Generator().manual_seed(0)
    out = light_augment(x, MEAN, STD, 8, (0.5, 1.0), 0.5, g)
    assert out.shape == (16, 1, 8, 8) and out.dtype == torch.float32
    assert len({tuple(o.flatten().tolist()) for o in out}) > 8  # crops differ across the batch


def test_classifier_head_init():
    c = Classifier(encoder(), 10)
    assert c.head.in_features == 64 and c.head.out_features == 10
    assert c.head.weight.std() < 0.05 and torch.all(c.head.bias == 0)
    assert c(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def vit(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone("vit_micro", in_channels=1, image_size=8, patch_size=4)


def test_a_vit_is_fine_tuned_with_adamw_and_layer_wise_decay():
    from selfsup.eval.finetune import optimizer_for

    model = Classifier(vit(), 10)
    depth = len(model.encoder.blocks)  # 6
    opt, what = optimizer_for(model, FinetuneConfig())
    assert isinstance(opt, torch.optim.AdamW) and "layer decay 0.75" in what
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in model.parameters())  # every parameter in exactly one group
    base = FinetuneConfig().adamw_lr
    assert lr_of[id(model.head.weight)] == pytest.approx(base)
    assert lr_of[id(model.encoder.norm.weight)] == pytest.approx(base)  # the final norm feeds the head
    for i, blk in enumerate(model.encoder.blocks):  # block i: base * 0.75 ** (depth - i)
        assert lr_of[id(blk.mlp.fc1.weight)] == pytest.approx(base * 0.75 ** (depth - i))
    assert lr_of[id(model.encoder.patch_embed.proj.weight)] == pytest.approx(base * 0.75 ** (depth + 1))
    assert lr_of[id(model.encoder.cls_token)] == lr_of[id(model.encoder.patch_embed.proj.weight)]
    # weight decay on matrices only: not on biases, norms or the [CLS] token
    assert wd_of[id(model.encoder.blocks[0].mlp.fc1.weight)] == 0.05
    assert wd_of[id(model.encoder.blocks[0].mlp.fc1.bias)] == wd_of[id(model.encoder.cls_token)] == 0.0
    # from scratch there is nothing to protect: one rate for every layer
    opt, what = optimizer_for(model, FinetuneConfig(from_scratch=True))
    assert {g["lr"] for g in opt.param_groups} == {base} and "layer decay 1" in what
    # a CNN keeps SimCLR's SGD, and "sgd" forces it for a ViT too
    assert isinstance(optimizer_for(Classifier(encoder(), 10), FinetuneConfig())[0], torch.optim.SGD)
    assert isinstance(optimizer_for(model, FinetuneConfig(optimizer="sgd"))[0], torch.optim.SGD)
    with pytest.raises(ValueError, match="auto, sgd or adamw"):
        optimizer_for(model, FinetuneConfig(optimizer="adam"))


def test_vit_fine_tuning_learns(digits):
    train, test = digits
    res = finetune(
        vit(),
        train,
        test,
        MEAN,
        STD,
        8,
        FinetuneConfig(fraction=0.1, steps=40, flip_p=0.0, from_scratch=True, adamw_lr=2e-3),
    )
    print(f"random-init vit_micro fine-tuned on 144 digits for 40 steps: {res['top1']:.3f}")
    assert res["top1"] > 0.3 and res["optimizer"].startswith("adamw")  # chance is 0.1


def test_lpft_starts_from_the_linear_probe(digits):
    """head_init="probe" (LP-FT): before any step the classifier is the linear probe on the frozen
    features of the labelled images; a random head is not."""
    from selfsup.nn.features import extract_features
    from selfsup.eval.linear import fit_probe

    train, test = digits
    enc = encoder()
    cfg = FinetuneConfig(fraction=0.1, steps=0, flip_p=0.0, head_init="probe")
    model, res = finetune_classifier(enc, train, test, MEAN, STD, 8, cfg)
    labelled = train.labelled_subset(0.1, 0)
    probe = fit_probe(extract_features(enc, labelled.images, MEAN, STD, 8), labelled.labels, 10, seed=0)
    want = probe.accuracy(extract_features(enc, test.images, MEAN, STD, 8), test.labels)
    assert res["top1"] == pytest.approx(want, abs=1e-3) and res["top1"] > 0.3  # chance is 0.1
    _, rnd = finetune_classifier(enc, train, test, MEAN, STD, 8, FinetuneConfig(fraction=0.1, steps=0, flip_p=0.0))
    assert rnd["top1"] < res["top1"] - 0.1
    with pytest.raises(ValueError, match="head_init"):
        finetune_classifier(enc, train, test, MEAN, STD, 8, FinetuneConfig(steps=0, head_init="zeros"))
