"""Every `selfsup eval` protocol from the CLI and from Python on one tiny SimCLR run (digits), and the
pieces they are made of against explicit computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_run_config
from selfsup.engine import labelled_splits
from selfsup.cli import main
from selfsup.eval.diagnostics import infonce_bound_curve, per_dimension_std
from selfsup.eval.efficiency import time_to_accuracy
from selfsup.eval.pretext import correlation
from selfsup.eval.robustness import CORRUPTIONS, SEVERITIES, corrupt
from selfsup.eval.run import PROTOCOLS, evaluate, pretext_correlation
from selfsup.data.dataset import match_channels
from selfsup.nn.runtime import Runtime


def cli(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("protocols") / "run"
    rc = main(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "digits",
            "--backbone",
            "convnet",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--out",
            str(run),
            "backbone.width=0.25",
            "method.proj_hidden=64",
            "method.proj_dim=32",
            "method.temperature=0.5",
            "train.monitor_train=512",
            "train.monitor_val=256",
            "train.log_every=2",
        ]
    )
    assert rc == 0
    return run


# --- the pieces --------------------------------------------------------------------------------


def test_corruptions_change_the_input_as_specified():
    g = torch.Generator().manual_seed(0)
    grey = torch.full((64, 1, 28, 28), 128, dtype=torch.uint8)  # mid-grey: no clipping of the noise
    for s, sigma in enumerate(SEVERITIES["noise"], 1):
        d = corrupt(grey, "noise", s).float() / 255 - 128 / 255
        assert d.std().item() == pytest.approx(sigma, rel=0.05)
    imgs = torch.randint(0, 256, (16, 1, 28, 28), generator=g, dtype=torch.uint8)
    for kind in CORRUPTIONS:
        assert torch.equal(corrupt(imgs, kind, 0), imgs)  # severity 0 is the clean image
        assert torch.equal(corrupt(imgs, kind, 3, seed=1), corrupt(imgs, kind, 3, seed=1))  # deterministic
        assert corrupt(imgs, kind, 3).shape == imgs.shape and corrupt(imgs, kind, 3).dtype == torch.uint8
    x = imgs.float() / 255
    for s, c in enumerate(SEVERITIES["contrast"], 1):  # distances to the image mean shrink by c
        y = corrupt(imgs, "contrast", s).float() / 255
        ratio = (y - y.mean((1, 2, 3), keepdim=True)).std() / (x - x.mean((1, 2, 3), keepdim=True)).std()
        assert ratio.item() == pytest.approx(c, abs=0.01)
    for s, area in enumerate(SEVERITIES["occlusion"], 1):  # a grey square of the given area
        side = round(math.sqrt(area * 28 * 28))
        y = corrupt(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), "occlusion", s)
        assert ((y == 128).flatten(1).sum(1) == side * side).all()
    # 90 degrees on a square grid is an exact permutation of pixels: the image rotated either way
    y = corrupt(imgs, "rotation", 5)
    for i in range(len(imgs)):
        assert torch.equal(y[i], imgs[i].rot90(1, (1, 2))) or torch.equal(y[i], imgs[i].rot90(-1, (1, 2)))
    # blur: a point spreads into a Gaussian of the specified sigma, the total intensity is kept
    point = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    point[..., 14, 14] = 255
    blurred = corrupt(point, "blur", 5).float()[0, 0] / 255
    assert blurred.sum().item() == pytest.approx(1.0, abs=0.1)
    r2 = (torch.arange(28) - 14.0) ** 2
    var = (blurred.sum(0) * r2).sum() / blurred.sum()
    assert var.sqrt().item() == pytest.approx(SEVERITIES["blur"][4], rel=0.15)
    with pytest.raises(ValueError, match="choose from"):
        corrupt(imgs, "fog", 1)


def test_infonce_bound_curve_matches_an_explicit_computation_and_rises_with_n():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(64, 8, generator=g)
    z2 = z1 + 0.3 * torch.randn(64, 8, generator=g)
    curve = infonce_bound_curve(z1, z2, 0.5, ns=(2, 8, 32, 128))
    assert set(curve) == {2, 8, 32}  # 128 > 64 pairs: left out
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    for n, bound in curve.items():
        losses = []
        for s in range(0, 64 - 64 % n, n):
            for i in range(s, s + n):
                logits = torch.stack([a[i] @ b[j] / 0.5 for j in range(s, s + n)])
                losses.append(-(logits[i - s] - torch.logsumexp(logits, 0)))
        assert bound == pytest.approx(math.log(n) - torch.stack(losses).mean().item(), abs=1e-5)
        assert bound <= math.log(n)
    assert curve[2] < curve[8] < curve[32]  # informative pairs: the bound grows with N
    # independent views carry no information: the bound is about 0 (or below) at every N
    noise = infonce_bound_curve(z1, torch.randn(64, 8, generator=g), 0.5, ns=(32,))
    assert noise[32] < 0.3


def test_per_dimension_std_flags_dead_dimensions():
    z = torch.randn(500, 8)
    z[:, :2] = 1.0  # two constant dimensions
    s = per_dimension_std(z)
    assert s["dead_fraction"] == pytest.approx(0.25) and s["ideal"] == pytest.approx(8**-0.5)


def test_time_to_accuracy_reads_the_monitor_clock():
    rows = [
        {"step": 10, "loss": 1.0, "train_seconds": 5.0},
        {"step": 20, "loss": 1.0, "train_seconds": 9.0},
        {"step": 20, "epoch": 1, "monitor/knn20_top1": 0.62},  # an older run: no clock on the monitor row
        {"step": 30, "loss": 1.0, "train_seconds": 14.0},
        {"step": 40, "epoch": 2, "train_seconds": 20.0, "monitor/knn20_top1": 0.81},
    ]
    t = time_to_accuracy(rows, levels=(0.5, 0.6, 0.7, 0.8, 0.9))
    assert t == {"0.5": 9.0, "0.6": 9.0, "0.7": 20.0, "0.8": 20.0, "0.9": None}


def test_correlation_against_numpy():
    import numpy as np

    x, y = [0.1, 0.4, 0.35, 0.8], [0.5, 0.7, 0.72, 0.9]
    c = correlation(x, y)
    assert c["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert c["spearman"] == pytest.approx(0.8)  # ranks (1,3,2,4) vs (1,2,3,4)
    assert correlation([1, 2], [3, 4])["pearson"] is None  # two points define no correlation


def test_match_channels():
    grey = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (2, 3, 4, 4) and torch.equal(rgb[:, 2:], grey)
    assert torch.equal(match_channels(rgb, 1), grey)  # luminance of a grey pixel is itself
    # colour to grey gives PIL's own values, as the image folders' decoding (Image.convert('L')) does
    import numpy as np
    from PIL import Image

    colour = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    pil = np.asarray(Image.fromarray(colour.permute(1, 2, 0).numpy(), "RGB").convert("L"))
    assert torch.equal(match_channels(colour[None], 1)[0, 0], torch.from_numpy(pil.copy()))
    with pytest.raises(ValueError, match="channels"):
        match_channels(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), 3)


# --- the protocols on a run --------------------------------------------------------------------


def test_cluster_and_embed2d_from_the_cli(run, capsys):
    rc, out, err = cli(["eval", "cluster", str(run), "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["k"] == 10 and 0 < res["nmi"] <= 1 and res["accuracy"] > 0.2  # chance is 0.1
    assert json.loads((run / "eval_cluster.json").read_text())["nmi"] == res["nmi"]
    rc, out, err = cli(["eval", "embed2d", str(run), "--max-points", "300", "--embed", "tsne"], capsys)
    assert rc == 0, err
    png = run / "embed2d_tsne.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and str(png) in out


def test_dense_probe_from_the_cli(run, capsys):
    rc, out, _ = cli(["eval", "dense", str(run), "--train-images", "300"], capsys)
    assert rc == 0 and "trained mIoU" in out and "raw pixels mIoU" in out
    res = json.loads((run / "eval_dense.json").read_text())
    _, test = labelled_splits(load_run_config(run))
    assert res["train_images"] == 300 and res["test_images"] == len(test)
    # raw pixels find the object by its brightness, but one pixel's grey level cannot name the class
    assert res["raw_pixels"]["foreground_iou"] > 0.8
    assert res["trained"]["miou"] > res["raw_pixels"]["miou"] + 0.05
    assert Path(res["picture"]).is_file()


def test_diagnostics(run, capsys):
    rc, out, err = cli(["eval", "diagnostics", str(run)], capsys)
    assert rc == 0, err
    res = json.loads((run / "eval_diagnostics.json").read_text())
    f, z = res["features"], res["embedding"]
    assert 1 < f["effective_rank"] <= f["dim"] and 1 < z["effective_rank"] <= z["dim"] == 32
    assert 0 <= z["alignment"] <= 4 and z["uniformity"] < 0  # distances on the unit sphere
    bound = res["infonce_bound"]  # SimCLR is an InfoNCE method
    assert bound["temperature"] == 0.5
    for n, b in bound["nats"].items():
        assert b <= math.log(int(n)) + 1e-6
    assert "InfoNCE bound" in out


def test_robustness(run, capsys):
    rc, out, err = cli(["eval", "robustness", str(run), "--corruptions", "noise,occlusion"], capsys)
    assert rc == 0, err
    res = json.loads((run / "eval_robustness.json").read_text())
    for rows in (res["encoder"], res["raw_pixels"]):
        assert set(rows) == {"clean", "noise", "occlusion", "mean_corrupted"} and len(rows["noise"]) == 5
        assert rows["occlusion"][4] < rows["clean"]  # 40 % of an 8-px digit hidden costs accuracy
    linear = evaluate(run, "linear")
    assert res["encoder"]["clean"] == pytest.approx(linear["top1"])  # the same probe on clean features
    assert (run / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_semi_from_python(run):
    res = evaluate(run, "semi", fractions=(0.1, 1.0), steps=3)
    rows = res["rows"]
    assert [r["fraction"] for r in rows] == [0.1, 1.0] and rows[0]["num_labelled"] == 144  # 10 % of 1438
    assert all(r["finetune_steps"] == 3 for r in rows)
    assert rows[1]["linear"] > rows[0]["linear"] - 0.05 and rows[1]["linear"] > 0.5
    assert (run / "semi.png").read_bytes()[:4] == b"\x89PNG"
    # 10 labels per class first, a probe on raw pixels beside every row, fine-tuning only up to 10 %
    res = evaluate(run, "semi", fractions=(0.1, 1.0), steps=2, per_class=10, finetune_up_to=0.1)
    rows = res["rows"]
    assert [r["num_labelled"] for r in rows] == [100, 144, 1438]
    assert rows[1]["finetune"] is not None and rows[2]["finetune"] is None and rows[2]["scratch"] is None
    from selfsup.eval.features import raw_pixel_features
    from selfsup.eval.linear import linear_probe
    from selfsup.eval.run import load_run_config

    train, test = labelled_splits(load_run_config(run))
    want = linear_probe(raw_pixel_features(train.images), train.labels, raw_pixel_features(test.images), test.labels)
    assert rows[2]["raw_pixels"] == pytest.approx(want["top1"])


def test_semi_with_simclr_v2_distillation(run):
    """`eval semi --distill-epochs`: the fine-tuned teacher taught a new network on every training image
    without labels; the student learned the teacher's function (agreement far above the 10 % of chance)."""
    res = evaluate(run, "semi", fractions=(0.1,), steps=40, distill_epochs=3)
    row = res["rows"][0]
    assert res["distill_epochs"] == 3
    assert 0.3 < row["distill"] <= 1.0 and row["distill_agreement"] > 0.5, row
    assert "distill" not in evaluate(run, "semi", fractions=(0.1,), steps=1)["rows"][0]  # off by default


def test_semi_with_semi_supervised_methods_from_the_cli(run):
    """`eval semi --semi-methods`: each method from the encoder and from scratch, where fine-tuning runs."""
    from test_cli import last_json, run_cli

    rc, out, err = run_cli(
        [
            "eval",
            "semi",
            str(run),
            "--fractions",
            "0.1",
            "--steps",
            "2",
            "--semi-methods",
            "supervised,fixmatch",
            "--semi-steps",
            "40",
            "--json",
        ]
    )
    assert rc == 0, err
    row = last_json(out)["rows"][0]
    for key in ("supervised", "supervised_scratch", "fixmatch", "fixmatch_scratch"):
        assert 0.3 < row[key] <= 1.0, (key, row[key])  # 144 labels, 40 steps: well above chance (0.1)
    rc, out, err = run_cli(
        [
            "eval",
            "semi",
            str(run),
            "--fractions",
            "0.1",
            "--steps",
            "2",
            "--semi-methods",
            "fixmatch",
            "--semi-steps",
            "1",
        ]
    )
    assert rc == 0 and "fixmatch" in out and "(from scratch" in out, err


def test_transfer_to_another_dataset(run, tmp_path):
    import numpy as np

    from selfsup.data import load_dataset
    from selfsup.eval.features import raw_pixel_features
    from selfsup.eval.knn import knn_accuracy

    # a colour target (RGB, 16 px, HWC as users save arrays): the class is which quadrant is bright
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 60, (n, 16, 16, 3)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, (c // 2) * 8 : (c // 2) * 8 + 8, (c % 2) * 8 : (c % 2) * 8 + 8] += 150
        return x, y

    (xtr, ytr), (xte, yte) = make(200), make(100)
    target = tmp_path / "quadrants.npz"
    np.savez(target, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    res = evaluate(run, "transfer", target="array", target_dir=str(target))
    assert res["source"] == "digits" and res["target"] == "array"
    assert (run / "eval_transfer_array.json").is_file()
    tr, te = load_dataset("array", "train", target, 8), load_dataset("array", "test", target, 8)
    raw = knn_accuracy(raw_pixel_features(tr.images), tr.labels, raw_pixel_features(te.images), te.labels)
    assert res["raw_pixels"]["knn"]["top1_k200"] == pytest.approx(raw["top1_k200"])
    # the grey encoder sees the colour images through their luminance; the task is easy for any features
    for row in ("pretrained", "random_init", "raw_pixels"):
        assert res[row]["linear"] > 0.8, row


def test_efficiency_reads_the_run(run, capsys):
    rc, out, err = cli(["eval", "efficiency", str(run), "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert res["images_per_s"] > 0 and res["train_seconds"] == summary["train_seconds"]
    assert res["peak_rss_mb"] > 50 and res["final_knn20"] == summary["monitor/knn20_top1"]
    reached = [v for v in res["time_to_knn20"].values() if v is not None]
    assert reached == sorted(reached)  # higher levels are reached later


def test_heldout_pretext_metric_is_reproducible_and_leaves_the_global_rng_alone():
    """The DAE draws its masking noise from the global RNG: the held-out measurement seeds it, gives
    the caller its state back, and leaves the network in training mode."""
    import selfsup
    from selfsup.data import load_dataset
    from selfsup.eval.pretext import heldout_metrics
    from selfsup.transforms import Views
    from selfsup.transforms.views import view_preset

    images = load_dataset("digits", "test").images[:100]
    m = selfsup.create_method("dae", backbone="convnet", in_channels=1, width=0.5, image_size=8)
    views = Views(view_preset("pretext"), (0.3,), (0.3,), 8, m.needs.views)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = heldout_metrics(m, images, views, batch_size=32)
    assert torch.equal(torch.get_rng_state(), state) and m.training
    b = heldout_metrics(m, images, views, batch_size=32)
    assert a == b and set(a) == {"recon_mse"} and a["recon_mse"] > 0
    c = heldout_metrics(m, images, views, batch_size=32, seed=1)  # another seed: other views and noise
    assert c["recon_mse"] != a["recon_mse"]


def test_pretext_needs_a_pretext_method_and_correlates_across_runs(run, tmp_path, capsys):
    rc, _, err = cli(["eval", "pretext", str(run)], capsys)
    assert rc == 2 and "no pretext metric" in err
    runs = []
    for i, (acc, lin) in enumerate([(0.5, 0.6), (0.7, 0.75), (0.9, 0.8)]):  # copies with a logged pretext metric
        d = tmp_path / f"r{i}"
        d.mkdir()
        (d / "config.yaml").write_text((run / "config.yaml").read_text())
        (d / "checkpoints").symlink_to(run / "checkpoints")  # its weights (a SimCLR step reports no pretext/*)
        (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "pretext/rotation_acc": acc}) + "\n")
        (d / "eval_linear.json").write_text(json.dumps({"top1": lin}))
        runs.append(str(d))
    res = pretext_correlation(runs)
    assert res["correlation"]["rotation_acc"]["spearman"] == pytest.approx(1.0)
    rc, out, err = cli(["eval", "pretext", *runs], capsys)
    assert rc == 0 and "Spearman 1.000" in out


def test_protocol_options_are_checked(run, capsys):
    rc, _, err = cli(["eval", "knn", str(run), "--fractions", "0.1"], capsys)
    assert rc == 2 and "eval semi" in err
    with pytest.raises(ValueError, match="choose from"):
        evaluate(run, "nope")
    assert {
        "knn",
        "linear",
        "finetune",
        "semi",
        "cluster",
        "embed2d",
        "diagnostics",
        "robustness",
        "dense",
        "transfer",
        "pretext",
        "efficiency",
        "zeroshot",
        "retrieval",
    } == set(PROTOCOLS)


def test_a_protocol_declares_its_flags_and_the_cli_is_built_from_them(capsys):
    """Each option once, with its type and help, in the protocol; `selfsup eval --help` names the protocols
    that take it; a keyword the protocol's function lacks, or one flag declared twice differently, fails."""
    import argparse

    from selfsup.eval.protocol import Option, Protocol, cli_options
    from selfsup.eval.run import protocol

    opts = cli_options(PROTOCOLS.values())
    assert opts["clusters"][0].keyword == "num_clusters" and opts["clusters"][1] == ["cluster"]
    assert opts["fractions"][0].type("0.01,0.1") == [0.01, 0.1]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated float"):
        opts["fractions"][0].type("0.1,x")
    rc, out, _ = cli(["eval", "--help"], capsys)
    assert rc == 0 and "cluster: k of k-means" in out and "finetune, semi: fine-tuning epochs" in out
    with pytest.raises(TypeError, match="takes no colour"):
        protocol("bad", str, (Option("colour", "a flag the function lacks"),))(lambda run_dir, device="cpu": {})
    assert "bad" not in PROTOCOLS
    twice = [Protocol("a", dict, str, (Option("k", "one"),)), Protocol("b", dict, str, (Option("k", "other"),))]
    with pytest.raises(ValueError, match="declared twice"):
        cli_options(twice)


def test_feature_cache_follows_the_checkpoint(run):
    from selfsup.eval.run import run_features

    run_features(run)
    caches = list((run / "features").glob("*.safetensors"))
    assert len(caches) == 1
    ckpt = run / "checkpoints" / "last" / "model.safetensors"
    ckpt.touch()  # a continued run rewrites the checkpoint: the old features must not be reused
    run_features(run)
    assert [p.name for p in (run / "features").glob("*.safetensors")] != [p.name for p in caches]


def test_eval_size_encodes_test_images_at_its_own_side(run, tmp_path):
    """eval.size (FixRes: train at a low side, evaluate at a higher one) changes what the encoder sees,
    and an edited eval.size never reuses features cached at the old side."""
    import shutil

    import yaml

    from selfsup.nn.features import extract_features
    from selfsup.eval.run import load_run, run_features

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ftr8, _, fte8, _, cfg = run_features(copy)
    assert cfg.eval.size is None  # digits: views and evaluation at the native 8 px
    raw = yaml.safe_load((copy / "config.yaml").read_text())
    raw["eval"]["size"] = 16
    (copy / "config.yaml").write_text(yaml.safe_dump(raw))
    ftr16, _, fte16, _, cfg = run_features(copy)
    assert cfg.eval.size == 16 and [p.name.endswith("-16px.safetensors") for p in (copy / "features").iterdir()] == [
        True
    ]
    _, method, _ = load_run(copy)
    _, test = labelled_splits(cfg)
    want = extract_features(
        method.encoder, test.images, cfg.data.mean, cfg.data.std, 16, runtime=Runtime("cpu", cfg.train.precision)
    )
    torch.testing.assert_close(fte16, want)
    assert not torch.allclose(fte16, fte8, atol=1e-3)
