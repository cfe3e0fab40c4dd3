"""CPC: patches/segments, causal contexts, the wrapper evaluation sees, and learning on digits and signals.

Learning, measured on this machine, seeds 0-2 (trained vs the same random initialisation):
- digits (configs/cpc_digits.yaml, 6 epochs, ~5 s): kNN-200 0.811-0.813 vs 0.616-0.657
  (+15.6/+19.8/+19.5 points), kNN-20 +9.5/+8.1/+10.9.
- signals (configs/cpc_signals.yaml scaled down: conv1d width 1/16, K 4, GRU 64, 1024 signals,
  2 epochs; ~14 s with the kNN over 6000 signals): kNN-200 0.808-0.820 vs 0.625-0.709
  (+18.3/+12.6/+11.1), kNN-20 +23.5/+16.2/+15.4.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mi_learning import recipe_layers, trained_vs_random_on

import selfsup
from selfsup.backbones import create_backbone
from selfsup.cli import main
from selfsup.data.batch import Batch
from selfsup.methods.cpc import CPC, CPCConfig, CPCEncoder, MaskedRowContext


class _Flatten(torch.nn.Module):
    """A 'backbone' that returns its input piece flattened, to see exactly what CPC feeds it."""

    num_features = 16

    def forward(self, x):
        return x.flatten(1)


def test_masked_row_context_sees_only_rows_at_or_above():
    torch.manual_seed(0)
    ctx = MaskedRowContext(dim=8, hidden=16, layers=3)
    z = torch.randn(2, 8, 6, 4)
    c = ctx(z)
    z2 = z.clone()
    z2[:, :, 3, 0] += 5.0  # change one position of row 3
    c2 = ctx(z2)
    assert torch.equal(c[:, :, :3], c2[:, :, :3])  # rows above cannot see it
    assert not torch.allclose(c[:, :, 3, 1], c2[:, :, 3, 1])  # its row can (other columns too)
    assert not torch.allclose(c[:, :, 5], c2[:, :, 5])  # and every row below


def test_gru_context_is_causal_in_time():
    torch.manual_seed(0)
    enc = CPCEncoder(create_backbone("conv1d", in_channels=1, width=0.0625), CPCConfig(context_hidden=8))
    assert enc.sequence and enc.num_features == 8
    z = torch.randn(2, 7, 1, enc.backbone.num_features)
    z2 = z.clone()
    z2[:, 4] += 3.0
    c, c2 = enc.context(z), enc.context(z2)
    assert c.shape == (2, 7, 1, 8)
    assert torch.equal(c[:, :4], c2[:, :4]) and not torch.allclose(c[:, 4:], c2[:, 4:])


def test_image_pieces_are_half_overlapping_patches_in_row_major_order():
    enc = CPCEncoder(_Flatten(), CPCConfig(grid=3, patch=4, mode="image"))
    x = torch.randn(2, 1, 8, 8)  # (3 - 1) * 2 + 4 = 8: no resize
    pieces, (h, w) = enc.pieces(x)
    assert (h, w) == (3, 3) and pieces.shape == (2 * 9, 1, 4, 4)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                assert torch.equal(pieces[b * 9 + i * 3 + j], x[b, :, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4])
    # another side is resized so the grid covers the whole image
    x28 = torch.randn(2, 1, 28, 28)
    resized = F.interpolate(x28, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(enc.pieces(x28)[0], enc.pieces(resized)[0])
    z = enc.encode(x)
    assert z.shape == (2, 3, 3, 16) and torch.equal(z[1, 2, 0], x[1, 0, 4:8, 0:4].flatten())


def test_sequence_segments_follow_time_in_both_layouts():
    enc = CPCEncoder(_Flatten(), CPCConfig(segment=64, mode="sequence", context_hidden=4))
    seq = torch.randn(2, 1, 1, 256)  # [B, 1, 1, T]
    pieces, (n, w) = enc.pieces(seq)
    assert (n, w) == (7, 1) and pieces.shape == (14, 1, 1, 64)  # hop 32: (256 - 64) / 32 + 1
    for b in range(2):
        for t in range(7):
            assert torch.equal(pieces[b * 7 + t, 0, 0], seq[b, 0, 0, 32 * t : 32 * t + 64])
    folded = seq.view(2, 1, 16, 16)  # the signals dataset's row-major storage
    assert torch.equal(enc.pieces(folded)[0], pieces)
    with pytest.raises(ValueError, match="segment"):
        enc.pieces(torch.randn(1, 1, 1, 32))


def test_mode_auto_follows_the_backbone_and_the_wrapper_returns_the_pooled_context():
    torch.manual_seed(0)
    image = selfsup.create_method("cpc", backbone="convnet", in_channels=1, width=0.25)
    seq = selfsup.create_method("cpc", backbone="conv1d", in_channels=1, width=0.0625, context_hidden=32)
    assert not image.encoder.sequence and image.steps == 5  # papers: 5 rows (images), 12 steps (audio)
    assert seq.encoder.sequence and seq.steps == 12 and seq.encoder.num_features == 32
    image.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        c = image.encoder.context(image.encoder.encode(x))
        assert c.shape == (3, 7, 7, image.encoder.num_features)  # default 7x7 grid (8 px resized to 32)
        torch.testing.assert_close(image.encoder(x), c.mean((1, 2)))
    with pytest.raises(ValueError, match="mode"):
        CPC(create_backbone("convnet", in_channels=1, width=0.25), CPCConfig(mode="video"))


@pytest.mark.parametrize("backbone,shape", [("convnet", (8, 1, 8, 8)), ("conv1d", (8, 1, 1, 512))])
def test_training_step_logs_the_bound_and_trains_encoder_context_and_predictor(backbone, shape):
    torch.manual_seed(0)
    m = selfsup.create_method(
        "cpc",
        backbone=backbone,
        in_channels=1,
        width=0.125,
        grid=3,
        patch=4,
        steps=2,
        context_hidden=16,
        context_layers=2,
    )
    x = torch.randn(shape)
    batch = Batch(torch.zeros(shape, dtype=torch.uint8), torch.arange(8))
    batch.views = [x, torch.randn(shape)]  # the second view is ignored
    out = m.training_step(batch)
    positions = 9 if backbone == "convnet" else 15  # 3x3 patches; 512 samples -> 15 segments of 64
    assert float(out.logs["infonce_bound"]) == pytest.approx(math.log(8 * positions) - out.loss.item(), abs=1e-4)
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    batch.views = [x, torch.randn(shape)]
    torch.testing.assert_close(m.training_step(batch).loss, out.loss)  # only views[0] matters


def test_cpc_learns_digits(tmp_path):
    trained, random = trained_vs_random_on(tmp_path, recipe_layers("cpc", "digits", {"train": {"epochs": 6}}))
    print(
        f"cpc digits kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.08
    assert trained["top1_k20"] >= random["top1_k20"] + 0.04
    assert trained["top1"] >= 0.75


def test_cpc_learns_signals(tmp_path):
    small = {
        "backbone": {"width": 0.0625},
        "method": {"steps": 4, "context_hidden": 64},
        "data": {"limit": 1024},
        "train": {"batch_size": 32, "epochs": 2},
    }
    trained, random = trained_vs_random_on(tmp_path, recipe_layers("cpc", "signals", small))
    print(
        f"cpc signals kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.06
    assert trained["top1_k20"] >= random["top1_k20"] + 0.08
    assert trained["top1_k20"] >= 0.85


def test_pretrain_cpc_on_signals_with_conv1d_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(
        [
            "pretrain",
            "--method",
            "cpc",
            "--data",
            "signals",
            "--backbone",
            "conv1d",
            "--out",
            str(out),
            "train.max_steps=3",
            "train.batch_size=16",
            "train.monitor_train=0",
            "train.device=cpu",
            "backbone.width=0.0625",
        ]
    ) in (0, None)
    assert "cpc_signals.yaml" in capsys.readouterr().out  # the recipe (identity views) was used
    rows = [r for r in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert rows and "infonce_bound" in rows[-1]
    assert (out / "checkpoints" / "last" / "model.safetensors").is_file()
