"""The dense (linear segmentation) probe: its labels and scores against hand computations, the
commutation its speed rests on, and that it learns what a feature map carries and nothing it lacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError
from selfsup.eval.dense import (
    DenseProbe,
    dense_scores,
    feature_maps,
    has_dense_truth,
    pixel_labels,
    segmentation_scores,
)
from selfsup.nn.runtime import Runtime


def test_pixel_labels_mark_the_object_with_its_class_plus_one():
    img = torch.tensor([[[[0, 30], [200, 25]]], [[[26, 0], [0, 0]]]], dtype=torch.uint8)  # [2, 1, 2, 2]
    assert pixel_labels(img, torch.tensor([3, 0])).tolist() == [[[0, 4], [4, 0]], [[1, 0], [0, 0]]]


def test_segmentation_scores_by_hand():
    true = torch.tensor([[[0, 1], [1, 2]]])
    pred = torch.tensor([[[0, 1], [2, 2]]])
    s = segmentation_scores(pred, true, 3)
    # label 0: 1/1; label 1: inter 1, union 2; label 2: inter 1, union 2
    assert s["per_label_iou"] == pytest.approx([1.0, 0.5, 0.5])
    assert s["miou"] == pytest.approx(2 / 3)
    assert s["foreground_iou"] == pytest.approx(1.0)  # the same three pixels are "object" in both
    assert s["pixel_accuracy"] == pytest.approx(0.75)
    s4 = segmentation_scores(pred, true, 4)  # a label absent from truth and prediction is left out
    assert s4["per_label_iou"][3] is None and s4["miou"] == pytest.approx(2 / 3)


def test_scores_at_map_resolution_equal_a_linear_layer_on_upsampled_features():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, 4, 4, generator=g)
    lin = torch.nn.Conv2d(5, 7, 1)
    probe = DenseProbe(torch.zeros(5), torch.ones(5), lin, side=28)
    up = F.interpolate(maps, size=(28, 28), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(probe.scores(maps), lin(up), atol=1e-5)


def _synthetic(n: int, seed: int, informative: bool):
    """n 28-px images of one bright 12-px square at a random place, of class y in 0..2, and 4x4 "feature maps":
    the object's coverage of each cell, then that coverage times the class one-hot (informative) or times
    random numbers unrelated to the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    corner = torch.randint(0, 16, (n, 2), generator=g)
    for i in range(n):
        r, c = corner[i].tolist()
        images[i, 0, r : r + 12, c : c + 12] = 200
    fg = F.adaptive_avg_pool2d(images.float() / 255, 4)  # [n, 1, 4, 4] object coverage per cell
    onehot = F.one_hot(y, 3).float().view(n, 3, 1, 1) if informative else torch.rand(n, 3, 1, 1, generator=g)
    return images, y, torch.cat([fg, fg * onehot], 1)  # [n, 4, 4, 4]


def test_the_probe_learns_the_class_where_the_map_carries_it_and_not_where_it_does_not():
    tr_img, tr_y, tr_maps = _synthetic(300, 0, informative=True)
    te_img, te_y, te_maps = _synthetic(200, 1, informative=True)
    maps = {id(tr_img): tr_maps, id(te_img): te_maps}
    good, probe = dense_scores(lambda x: maps[id(x)], tr_img, tr_y, te_img, te_y, num_classes=3)
    assert probe.l2 in (1e-5, 1e-4, 1e-3) and set(good["val_miou"]) == {"1e-05", "0.0001", "0.001"}
    tr_img2, tr_y2, tr_maps2 = _synthetic(300, 0, informative=False)
    te_img2, te_y2, te_maps2 = _synthetic(200, 1, informative=False)
    maps2 = {id(tr_img2): tr_maps2, id(te_img2): te_maps2}
    blind, _ = dense_scores(lambda x: maps2[id(x)], tr_img2, tr_y2, te_img2, te_y2, num_classes=3)
    # both find the object (coverage is in both maps; a 4x4 map places its 28-px edges only roughly: 0.76 and
    # 0.68 measured); only the informative map names its class (mIoU 0.80 against 0.33 measured)
    assert good["foreground_iou"] > 0.7 and blind["foreground_iou"] > 0.6
    assert good["miou"] > 0.75
    assert blind["miou"] < good["miou"] - 0.3


def test_feature_maps_need_forward_maps_and_the_truth_needs_a_dark_background():
    class Pooled(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    with pytest.raises(SelfsupError, match="forward_maps"):
        feature_maps(Pooled(), torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [0.5], [0.5], 8, Runtime("cpu"), 2)
    assert has_dense_truth("fashion-mnist") and has_dense_truth("color-digits") and has_dense_truth("digits")
    assert not has_dense_truth("cifar10") and not has_dense_truth("imagefolder")
