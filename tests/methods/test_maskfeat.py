"""MaskFeat: the HOG target of each patch, the loss on masked patches only against an explicit
computation, the block masks and the cell choice, and learning on digits."""

from __future__ import annotations

import pytest
import torch

import selfsup
from selfsup.data.batch import Batch
from selfsup.methods.maskfeat import hog_cell
from selfsup.transforms.hog import hog


def make(image_size=16, patch_size=4, channels=3, **cfg):
    torch.manual_seed(0)
    encoder = selfsup.create_backbone("vit_micro", in_channels=channels, image_size=image_size, patch_size=patch_size)
    return selfsup.create_method("maskfeat", backbone=encoder, in_channels=channels, image_size=image_size, **cfg)


def batch(x):
    out = Batch((x * 0).to(torch.uint8), torch.arange(len(x)))
    out.views = [x]
    return out


def test_target_is_the_hog_of_the_cells_in_each_patch():
    """16-px images, 8-px patches: a 2 x 2 grid, each patch 2 x 2 cells of 4 px, 3 channels x 9 bins."""
    m = make(patch_size=8)
    assert m.cell == 4 and m.head.out_features == 3 * 4 * 9
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    _, _, target = m.predict(x)
    assert target.shape == (2, 4, 108)
    h = hog(x, cell=4)  # [2, 3, 9, 4, 4]: checked pixel by pixel in tests/transforms/test_hog.py
    for p, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        cells = h[:, :, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]  # this patch's cells
        torch.testing.assert_close(target[:, p], cells.permute(0, 1, 3, 4, 2).reshape(2, -1))
        assert torch.allclose(cells.norm(dim=2), torch.ones(2, 3, 2, 2), atol=1e-5)  # each cell L2-normalised


def test_loss_is_the_mse_on_masked_patches_only():
    m = make().eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    pred, mask, target = m.predict(x)
    assert mask.any(1).all() and (~mask).any(1).all()
    explicit = torch.stack(
        [((pred[n, i] - target[n, i]) ** 2).mean() for n in range(4) for i in range(16) if mask[n, i]]
    ).mean()
    torch.manual_seed(5)  # the same mask again
    out = m.training_step(batch(x))
    torch.testing.assert_close(out.loss, explicit)
    assert out.logs["pretext/hog_mse"] == pytest.approx(float(explicit.detach()))
    # predictions at visible patches do not count: perturb them through a hook on the head
    hook = m.head.register_forward_hook(lambda mod, inp, o: o + 10.0 * (~mask)[..., None])
    torch.manual_seed(5)
    torch.testing.assert_close(m.training_step(batch(x)).loss, explicit)
    hook.remove()
    hook = m.head.register_forward_hook(lambda mod, inp, o: o + 10.0 * mask[..., None])
    torch.manual_seed(5)
    assert m.training_step(batch(x)).loss > explicit + 50  # ... and at masked patches they do
    hook.remove()


def test_masked_patches_enter_the_encoder_as_the_mask_token():
    m = make().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(7)
    pred, mask, _ = m.predict(x)
    hidden = mask.view(2, 1, 4, 1, 4, 1).expand(2, 3, 4, 4, 4, 4).reshape(2, 3, 16, 16)
    y = torch.where(hidden, torch.randn_like(x) * 5, x)  # change only the masked pixels
    torch.manual_seed(7)
    pred2, mask2, target2 = m.predict(y)
    assert torch.equal(mask, mask2)
    torch.testing.assert_close(pred, pred2)  # the encoder never saw them
    assert mask.sum(1).tolist() == [6, 6]  # round(0.4 * 16), in blocks of at least 6 // 5 = 1


def test_hog_cell_follows_the_patch():
    assert hog_cell(16, 0) == 8  # the paper: 8-px cells in 16-px patches
    assert hog_cell(8, 0) == 4 and hog_cell(4, 0) == 4 and hog_cell(2, 0) == 2  # small patches: one cell
    assert hog_cell(4, 2) == 2
    with pytest.raises(ValueError, match="cell_size"):
        hog_cell(4, 3)


def test_maskfeat_learns_on_digits(tmp_path):
    """~25 s on a loaded 2-core machine: 4 epochs of vit_micro on 8-px digits (2-px patches, each one
    2 x 2-px HOG cell). A random vit_micro's [CLS] is a poor kNN feature on digits (~34 % with k=200,
    ~50 % with k=20; chance 10 %); seen on this machine: trained 49.9 % / 66.9 %."""
    from learning import trained_vs_random, vit_digits_recipe

    layers = vit_digits_recipe("maskfeat", 4)
    trained, random = trained_vs_random(tmp_path, layers)
    print(
        f"maskfeat kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.08
    assert trained["top1_k20"] >= random["top1_k20"] + 0.08
