"""Tracking triplets: the tracker follows a square moved by known shifts; the ranking loss (random and
hard negatives) against its definition written out triplet by triplet; evaluation reads frame 0 only; the
method has no state outside its weights; it learns to rank the tracked patch above the other videos'."""

from __future__ import annotations

import json

import pytest
import torch
from learning import digits_recipe

import selfsup
from selfsup.config import resolve
from selfsup.data.batch import Batch
from selfsup.data.video import make_videos, split_frames, to_mosaic
from selfsup.methods.tracking import TrackingConfig, ranking_loss, track

MEAN, STD = [0.2, 0.2, 0.2], [0.3, 0.3, 0.3]


def make(**cfg):
    torch.manual_seed(0)
    return selfsup.create_method(
        "tracking",
        backbone="convnet",
        in_channels=3,
        width=0.25,
        normalization=(MEAN, STD),
        **{"dim": 32, "hidden": 32, **cfg},
    )


def test_defaults_are_the_papers():
    c = TrackingConfig()
    assert (c.margin, c.dim, c.hard_negatives) == (0.5, 1024, 4)


def test_the_tracker_follows_a_square_moved_by_known_shifts():
    side, patch = 32, 8
    truth = [(5, 6), (7, 8), (10, 9), (12, 11)]  # top-left corners over the 4 frames: moves of up to 3 px
    video = torch.zeros(2, 4, 1, side, side)
    g = torch.Generator().manual_seed(0)
    texture = torch.rand(patch, patch, generator=g) + 1  # a textured square: one best match per frame
    for t, (y, x) in enumerate(truth):
        video[0, t, 0, y : y + patch, x : x + patch] = texture
        video[1, t, 0, 20:28, 2 + t : 10 + t] = texture  # the second video's square moves right, 1 px a frame
    corners, patches = track(video, patch, search=3)
    # it starts where frame 0 differs most from frame 1 (on the moving square, not necessarily on its corner)
    # and then moves exactly as the square does
    start = corners[:, 0]
    assert corners[0].tolist() == [[start[0, 0] + y - 5, start[0, 1] + x - 6] for y, x in truth]
    assert corners[1].tolist() == [[start[1, 0], start[1, 1] + t] for t in range(4)]
    assert abs(int(start[0, 0]) - 5) < patch and abs(int(start[0, 1]) - 6) < patch  # on the square
    for t in range(1, 4):  # what it follows is what it started with
        torch.testing.assert_close(patches[0, t], patches[0, 0])
    with pytest.raises(ValueError, match="larger than"):
        track(video, 40, 3)


def test_ranking_loss_triplet_by_triplet():
    g = torch.Generator().manual_seed(0)
    f, f_pos = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)

    def d(a, b):  # the paper's distance: 1 - cosine
        return 1 - float(a @ b / (a.norm() * b.norm()))

    per_pair = [[max(0.0, d(f[i], f_pos[i]) - d(f[i], f_pos[j]) + 0.5) for j in range(5) if j != i] for i in range(5)]
    loss, ranked = ranking_loss(f, f_pos, 0.5)
    assert loss.item() == pytest.approx(sum(map(sum, per_pair)) / 20, rel=1e-5)
    right = sum(d(f[i], f_pos[i]) + 0.5 < d(f[i], f_pos[j]) for i in range(5) for j in range(5) if j != i)
    assert ranked.item() == pytest.approx(right / 20)
    hard, _ = ranking_loss(f, f_pos, 0.5, hard=2)  # the 2 highest-loss negatives of each pair
    assert hard.item() == pytest.approx(sum(sum(sorted(r)[-2:]) for r in per_pair) / 10, rel=1e-5)


def test_a_step_embeds_the_tracked_pair_and_evaluation_reads_frame_zero():
    m = make().train()
    b = Batch(to_mosaic(make_videos(6, seed=3)[0]), torch.arange(6))
    torch.manual_seed(1)
    out = m.training_step(b)
    video = (split_frames(b.images).float() / 255 - 0.2) / 0.3
    _, patches = track(video, 16, m.cfg.search)  # half of the 32-px frames
    f = m.head(m.encoder.net(torch.cat([patches[:, 0], patches[:, -1]])))
    want, _ = ranking_loss(f[:6], f[6:], 0.5)  # random negatives before hard_after
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    m.eval()
    x = (b.images.float() / 255 - 0.2) / 0.3
    torch.testing.assert_close(m.encoder(x), m.encoder.net(split_frames(x)[:, 0]))
    assert set(m.state_dict()) == {k for k, _ in m.named_parameters()} | {"mean", "std"} | {
        k for k, _ in m.named_buffers()
    }  # no state besides weights, BN statistics and the normalisation


def test_settings_out_of_range_are_refused():
    with pytest.raises(ValueError, match="method.patch"):
        make(patch=1.5)
    with pytest.raises(ValueError, match="hard_after"):
        make(hard_after=1.5)


def test_tracking_learns_to_rank_the_tracked_patch(tmp_path):
    """8 epochs on 480 moving-shapes videos: the fraction of triplets ranked right (with the margin) rises
    from the first epoch to the last."""
    from selfsup.train import fit

    layers = digits_recipe("tracking", 8, {"dim": 128, "hidden": 256, "hard_after": 0.5})
    layers[0]["data"] = {"name": "moving-shapes", "limit": 480}
    layers[0]["backbone"] = {"name": "convnet", "width": 0.5}
    layers[0]["optim"] = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "scale_lr": False}
    layers[0]["train"].update(log_every=1, batch_size=32, monitor_train=0)
    fit(resolve(layers), tmp_path / "run", progress_bar=False)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ranked = [r["pretext/ranked"] for r in rows if "pretext/ranked" in r]
    per_epoch = len(ranked) // 8
    first, late = sum(ranked[:per_epoch]) / per_epoch, sum(ranked[-per_epoch:]) / per_epoch
    print(f"tracking: triplets ranked right, first epoch {first:.3f}, last {late:.3f}")
    assert late > first + 0.2
