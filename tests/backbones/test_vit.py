"""The ViT trunk: position embeddings, token entry points, attention maps; and the masking of MAE and
SimMIM with their learning on digits."""

from __future__ import annotations

import json
import math

import pytest
import torch

from selfsup.backbones import create_backbone
from selfsup.backbones.vit import patchify, sincos_2d, unpatchify


def vit(**kw):
    torch.manual_seed(0)
    return create_backbone("vit_micro", in_channels=1, image_size=16, **kw).eval()


def test_sincos_position_embeddings():
    pos = sincos_2d(8, 3)  # dim 8: 2 frequencies per axis, sin and cos
    assert pos.shape == (9, 8)
    # patch (row 1, col 2): x = 2 in the first half, y = 1 in the second; frequency 1 / 10000^(i/2)
    omega = torch.tensor([1.0, 1.0 / 100])
    expected = torch.cat([(2 * omega).sin(), (2 * omega).cos(), (1 * omega).sin(), (1 * omega).cos()])
    assert torch.allclose(pos[1 * 3 + 2], expected, atol=1e-6)
    assert torch.allclose(pos[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(6, 3)


def test_vit_shapes_and_token_entry_points():
    m = vit()
    x = torch.randn(2, 1, 16, 16)
    assert m(x).shape == (2, 128) and m.num_features == 128 and m.num_patches == 16
    full = m.tokens(x)
    assert full.shape == (2, 17, 128)
    keep_all = torch.arange(16).expand(2, 16)
    assert torch.allclose(m.tokens(x, keep=keep_all), full, atol=1e-5)  # keeping every patch changes nothing
    assert m.tokens(x, keep=keep_all[:, :4]).shape == (2, 5, 128)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :3] = True
    masked = m.tokens(x, mask=mask, mask_token=torch.zeros(128))
    assert masked.shape == full.shape and not torch.allclose(masked, full)
    assert m.forward_maps(x).shape == (2, 128, 4, 4)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 128)  # a smaller crop: interpolated positions (multi-crop)
    assert not any(p is m.pos_embed for p in m.parameters())  # sincos: fixed
    learned = vit(pos_embed="learned")
    assert any(p is learned.pos_embed for p in learned.parameters())
    with pytest.raises(ValueError, match="image side"):
        create_backbone("vit_micro", image_size=None)
    with pytest.raises(ValueError, match="width"):
        create_backbone("vit_micro", image_size=16, width=0.5)


def test_a_vit_pools_its_cls_token_or_the_mean_of_its_patch_tokens():
    from selfsup.errors import SelfsupError

    torch.manual_seed(0)
    tok = create_backbone("vit_micro", in_channels=1, image_size=8, patch_size=2)
    avg = create_backbone("vit_micro", in_channels=1, image_size=8, patch_size=2, pool="avg")
    avg.load_state_dict(tok.state_dict())  # the same weights: pooling is no parameter
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        t = tok.tokens(x)  # [3, 1 + 16, dim]
        assert torch.equal(tok(x), t[:, 0]) and torch.allclose(avg(x), t[:, 1:].mean(1))
    assert avg.backbone_args["pool"] == "avg"  # a clone, a classifier and an export rebuild it so
    with pytest.raises(SelfsupError, match="applies to ViTs"):
        create_backbone("convnet", in_channels=1, pool="avg")
    with pytest.raises(SelfsupError, match="choose token"):
        create_backbone("vit_micro", in_channels=1, image_size=8, pool="mean")


def test_last_attention_is_what_the_fused_block_computes():
    m = vit()
    x = torch.randn(2, 1, 16, 16)
    attn = m.last_attention(x)  # [B, heads, 17, 17]
    assert attn.shape == (2, 4, 17, 17) and torch.allclose(attn.sum(-1), torch.ones(2, 4, 17))
    # rebuild the last block's attention output from the matrix and compare with timm's fused path
    t = m.embed(x)
    t = torch.cat([m.cls_token.expand(2, -1, -1), t], 1)
    for blk in m.blocks[:-1]:
        t = blk(t)
    blk = m.blocks[-1]
    h = blk.norm1(t)
    v = blk.attn.qkv(h).reshape(2, 17, 3, 4, 32).permute(2, 0, 3, 1, 4)[2]  # [B, heads, N, hd]
    out = blk.attn.proj((attn @ v).transpose(1, 2).reshape(2, 17, 128))
    assert torch.allclose(out, blk.attn(h), atol=1e-5)


def test_patchify_round_trip():
    x = torch.randn(2, 3, 8, 8)
    t = patchify(x, 4)
    assert t.shape == (2, 4, 48)
    assert torch.equal(t[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).flatten())  # patch (0, 1): pixels then channels
    assert torch.equal(unpatchify(t, 4, 3), x)


def test_mae_masking_and_the_encoder_seeing_visible_patches_only():
    import selfsup
    from selfsup.methods.mae import random_masking

    keep, mask, restore = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (3, 4) and mask.sum(1).tolist() == [12, 12, 12]
    for i in range(3):
        assert not mask[i, keep[i]].any()  # kept patches are the visible ones
    torch.manual_seed(0)
    m = selfsup.create_method(
        "mae", backbone="vit_micro", in_channels=1, image_size=16, decoder_dim=32, decoder_depth=1, decoder_heads=4
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    pred, mask, target = m.reconstruct(x, torch.Generator().manual_seed(1))
    assert pred.shape == target.shape == (2, 16, 16) and mask.sum().item() == 2 * 12
    # hidden patches do not reach the encoder: changing them leaves the visible predictions' input alone
    hidden = unpatchify(mask[..., None].float().expand(-1, -1, 16), 4, 1).bool()
    y = torch.where(hidden, torch.randn_like(x) * 5, x)
    pred2, _, _ = m.reconstruct(y, torch.Generator().manual_seed(1))
    assert torch.allclose(pred, pred2, atol=1e-5)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-5)  # per-patch normalised targets


def test_simmim_block_masks():
    from selfsup.methods.simmim import block_mask

    m = block_mask(4, 8, 2, 0.5, generator=torch.Generator().manual_seed(0)).view(4, 8, 8)
    assert (m.flatten(1).sum(1) == 32).all()  # half of the 16 blocks of 2 x 2 patches
    blocks = m.view(4, 4, 2, 4, 2)
    assert (blocks.all(2).all(3) | (~blocks).all(2).all(3)).all()  # whole blocks, never split


@pytest.mark.parametrize(
    "name,key",
    [
        ("mae", "pretext/recon_mse"),
        # ~31 s on the 2-core machine: run by `make test-slow` (MAE keeps masked modelling in the default suite)
        pytest.param("simmim", "pretext/recon_l1", marks=pytest.mark.slow),
    ],
)
def test_masked_image_modelling_learns_on_digits(tmp_path, name, key):
    from selfsup.config import resolve
    from selfsup.train import fit

    heads = {"decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 4} if name == "mae" else {}
    layers = [
        {
            "method": {"name": name, **heads},
            "data": {"name": "digits"},
            "backbone": {"name": "vit_micro", "patch_size": 2},  # 8-px digits: a 4 x 4 grid of 2-px patches
            "views": {"crop_scale": [0.6, 1.0], "flip_p": 0.0},
            "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "scale_lr": False, "warmup": 0.1},
            "train": {"batch_size": 128, "epochs": 10, "monitor_train": 0, "log_every": 5, "seed": 0, "device": "cpu"},
        }
    ]
    fit(resolve(layers), tmp_path / "run", progress_bar=False)
    loss = [
        json.loads(r)[key]
        for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if key in json.loads(r)
    ]
    print(f"{name}: {key} {loss[0]:.3f} -> {loss[-1]:.3f}")
    assert loss[-1] < 0.7 * loss[0] and math.isfinite(loss[-1])
    png = tmp_path / "run" / "pictures" / f"{name}.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_mocov3_freezes_the_vit_patch_projection():
    import selfsup

    m = selfsup.create_method(
        "mocov3",
        backbone="vit_micro",
        in_channels=1,
        image_size=16,
        freeze_patch_embed=True,
        proj_hidden=32,
        proj_dim=16,
        pred_hidden=32,
    )
    frozen = {id(p) for p in m.encoder.patch_embed.parameters()}
    assert frozen and all(not p.requires_grad for p in m.encoder.patch_embed.parameters())
    trainable = {id(p) for g in m.param_groups() for p in g["params"]}
    assert not frozen & trainable  # no optimiser (nor weight decay) touches the random projection
