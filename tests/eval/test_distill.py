"""SimCLR v2's distillation step (selfsup.eval.distill): the loss against an explicit computation,
a student that learns the teacher's predictions without labels, and its checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup import create_backbone
from selfsup.data import load_dataset
from selfsup.eval.distill import DistillConfig, build_student, distill, distillation_loss, load_student, save_student
from selfsup.nn.features import extract_features
from selfsup.eval.finetune import FinetuneConfig, finetune_classifier

MEAN, STD = [0.3], [0.35]


def test_distillation_loss_matches_an_explicit_sum():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    for tau in (1.0, 0.5, 2.0):
        expected = 0.0
        for i in range(4):  # -sum_y p_T(y|x;tau) log p_S(y|x;tau), averaged over x
            zt = sum(math.exp(t[i, y].item() / tau) for y in range(5))
            zs = sum(math.exp(s[i, y].item() / tau) for y in range(5))
            expected -= sum(
                math.exp(t[i, y].item() / tau) / zt * (s[i, y].item() / tau - math.log(zs)) for y in range(5)
            )
        assert distillation_loss(s, t, tau).item() == pytest.approx(expected / 4, rel=1e-5)


def test_distillation_loss_is_minimal_at_the_teacher_and_gives_the_teacher_no_gradient():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(6, 10, generator=g, requires_grad=True)
    s = torch.randn(6, 10, generator=g, requires_grad=True)
    loss = distillation_loss(s, t, 2.0)
    loss.backward()
    assert t.grad is None and s.grad is not None
    # cross-entropy >= entropy of the teacher, with equality when the student copies it
    p = torch.softmax(t.detach() / 2.0, 1)
    entropy = -(p * p.log()).sum(1).mean()
    assert loss.item() > entropy.item()
    assert distillation_loss(t.detach(), t, 2.0).item() == pytest.approx(entropy.item(), rel=1e-5)
    # the gradient w.r.t. student logits is (p_S - p_T) / (tau * B)
    expected = (torch.softmax(s.detach() / 2.0, 1) - p) / (2.0 * 6)
    torch.testing.assert_close(s.grad, expected)


def test_student_learns_the_teachers_predictions_without_labels(tmp_path):
    """Seen with seeds 0-2: teacher (a random-init convnet fine-tuned on 10 % of the labels) 0.81-0.82
    test top-1; the student (a fresh convnet, 10 epochs on the ~1400 training images, no labels)
    agrees with it on 0.93 / 0.93 / 0.96 of the test images and scores 0.82-0.83 itself (chance: 0.1)."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    teacher_encoder = create_backbone("convnet", in_channels=1, width=0.25)
    teacher, t_res = finetune_classifier(
        teacher_encoder, train, test, MEAN, STD, 8, FinetuneConfig(fraction=0.1, epochs=10, flip_p=0.0)
    )
    args = dict(name="convnet", in_channels=1, width=0.25, small_stem=True, stem_stride=1)
    student = build_student(args, 10, seed=0)
    unlabelled = train.images  # the student never gets labels: distill takes images only
    res = distill(
        teacher, student, unlabelled, test, MEAN, STD, 8, DistillConfig(epochs=10, batch_size=128, flip_p=0.0)
    )
    print(f"teacher {res['teacher_top1']:.3f}, student {res['student_top1']:.3f}, agreement {res['agreement']:.3f}")
    assert res["teacher_top1"] == pytest.approx(t_res["top1"])
    assert res["agreement"] > 0.75
    assert res["student_top1"] > 0.6
    assert (
        res["steps"] == 10 * (len(train) // 128) and res["num_unlabelled"] == len(train) and res["temperature"] == 1.0
    )

    spec = {"backbone": args, "num_classes": 10, "mean": MEAN, "std": STD, "size": 8}
    path = save_student(student, spec, tmp_path / "out" / "student.safetensors")
    loaded, loaded_spec = load_student(tmp_path / "out")
    assert loaded_spec == spec
    kw = dict(mean=MEAN, std=STD, size=8)
    torch.testing.assert_close(
        extract_features(loaded, test.images, **kw), extract_features(student, test.images, **kw)
    )
    assert path.is_file()


def test_load_student_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="selfsup distill"):
        load_student(tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        load_student(tmp_path / "missing")
