"""Views for 1-D signals must not destroy them: configs/cpc_signals.yaml's views are the identity.

random_resized_crop keeps a 1-D signal's layout, so it is the identity (scale [1, 1], ratio [1, 1], no
flip) on the natural layout [B, 1, 1, T] too (it used to return a square [B, 1, T, T]).
The loop needs square images (ImageDataset.image_size, eval_view), so the signals dataset stores
T = 1024 samples row-major as [N, 1, 32, 32], on which the crop is exactly the identity.
"""

from __future__ import annotations

import torch

from selfsup.config import load_yaml, recipe_path, resolve
from selfsup.transforms.views import view_config
from selfsup.data import load_dataset
from selfsup.transforms import Views, ops


def _identity_args():
    return dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)


def test_identity_crop_is_exact_on_the_stored_signal_layout():
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = ops.random_resized_crop(x, 32, gen=torch.Generator().manual_seed(1), **_identity_args())
    assert torch.equal(out, x)


def test_identity_crop_on_1xT_signals():
    """A signal in its natural layout [B, 1, 1, T] keeps it."""
    x = torch.rand(3, 1, 1, 256, generator=torch.Generator().manual_seed(0))
    out = ops.random_resized_crop(x, 256, **_identity_args())
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


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
