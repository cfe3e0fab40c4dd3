"""Views for 1-D signals must not destroy them: configs/cpc_signals.yaml's views are the identity.

Finding (reported, views.py left alone): random_resized_crop is NOT the identity on the natural
1-D layout [B, 1, 1, T]. It always returns a square [B, 1, size, size] (every output row samples the
single input row), and the loop also needs square images (ImageDataset.image_size, eval_view). So
the signals dataset stores T = 1024 samples row-major as [N, 1, 32, 32], on which the crop with
scale [1, 1], ratio [1, 1], no flip is exactly the identity.
"""
from __future__ import annotations

import pytest
import torch

from selfsup.config import load_yaml, recipe_path, resolve, view_config
from selfsup.data import load_dataset
from selfsup.transforms import Views, ops


def _identity_args():
    return dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)


def test_identity_crop_is_exact_on_the_stored_signal_layout():
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = ops.random_resized_crop(x, 32, gen=torch.Generator().manual_seed(1), **_identity_args())
    assert torch.equal(out, x)


@pytest.mark.xfail(strict=True, reason="random_resized_crop always returns square [B,C,size,size] crops: "
                                       "[B,1,1,T] comes back as [B,1,T,T] (reported; views.py not edited)")
def test_identity_crop_on_1xT_signals():
    x = torch.rand(3, 1, 1, 256, generator=torch.Generator().manual_seed(0))
    out = ops.random_resized_crop(x, 256, **_identity_args())
    assert out.shape == x.shape


def test_what_the_crop_does_to_1xT_signals_today():
    x = torch.rand(3, 1, 1, 256, generator=torch.Generator().manual_seed(0))
    out = ops.random_resized_crop(x, 256, **_identity_args())
    assert out.shape == (3, 1, 256, 256)
    torch.testing.assert_close(out, x.expand(3, 1, 256, 256), atol=1e-4, rtol=0)  # T copies of the signal


def test_cpc_signals_recipe_views_leave_every_signal_untouched():
    cfg = resolve([load_yaml(recipe_path("cpc", "signals")), {"method": {"name": "cpc"}}])
    ds = load_dataset("signals", "test")
    images = ds.images[:64]
    mean, std = [0.5], [0.25]
    views = Views(view_config(cfg), mean, std, ds.image_size)
    expected = ops.normalize(ops.to_float(images), mean, std)
    out = views(images, torch.Generator().manual_seed(0))
    assert len(out) >= 1
    for v in out:
        assert torch.equal(v, expected)
    torch.testing.assert_close(views.eval(images), expected)
