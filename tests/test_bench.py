"""`selfsup bench`: trains each entry and seed, evaluates them alike, aggregates mean +- std, resumes
without retraining, and records a failing entry without stopping the others."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from selfsup.experiments.bench import Entry, bench, parse_entries
from selfsup.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ("backbone.width=0.25", "train.max_steps=3", "train.monitor_train=256", "train.batch_size=64")


def test_parse_entries_checks_names_and_files(tmp_path):
    cfg = tmp_path / "v.yaml"
    cfg.write_text("method:\n  head_bn: false\n")
    assert parse_entries(f"simclr, byol_nobn=byol:{cfg}") == [
        Entry("simclr", "simclr"),
        Entry("byol_nobn", "byol", str(cfg)),
    ]
    with pytest.raises(KeyError, match="simclrr"):
        parse_entries("simclrr")
    with pytest.raises(ValueError, match="not found"):
        parse_entries("x=byol:missing.yaml")
    with pytest.raises(ValueError, match="twice"):
        parse_entries("simclr,simclr")


def test_bench_trains_evaluates_aggregates_and_resumes(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  no_such_field: 1\n")
    out = tmp_path / "bench"
    entries = [Entry("simclr", "simclr"), Entry("broken", "simclr", str(bad))]
    board = bench(
        entries,
        "digits",
        None,
        seeds=2,
        out=out,
        protocols=("knn", "linear"),
        backbone="convnet",
        overrides=TINY,
        epochs=1,
        progress_bar=False,
    )
    rows = {r["name"]: r for r in board["rows"]}
    assert rows["simclr"]["seeds_done"] == 2 and rows["broken"]["failed"] == 2
    assert "no_such_field" in (out / "broken" / "seed0" / "failed.txt").read_text()
    lin = [json.loads((out / "simclr" / f"seed{s}" / "eval_linear.json").read_text())["top1"] * 100 for s in (0, 1)]
    assert rows["simclr"]["linear"] == pytest.approx(statistics.fmean(lin))
    assert rows["simclr"]["linear std"] == pytest.approx(statistics.stdev(lin))
    assert lin[0] != lin[1]  # the seeds really differ
    commit = json.loads((out / "simclr" / "seed0" / "provenance.json").read_text())["commit"]
    assert rows["simclr"]["commits"] == [commit, commit] and rows["broken"]["commits"] == []  # what trained each seed
    assert board["raw_pixels"]["linear"] > 80  # raw digits pixels are linearly separable
    md = (out / "leaderboard.md").read_text()
    assert "| simclr |" in md and " ± " in md and "raw pixels" in md and "2 failed" in md
    with open(out / "leaderboard.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == [r["name"] for r in board["rows"]]
    # a second call trains nothing: summaries and evaluations stay as they were
    stamp = (out / "simclr" / "seed1" / "summary.json").stat().st_mtime_ns
    (out / "simclr" / "seed1" / "eval_knn.json").unlink()  # a missing evaluation is redone
    rc = main(
        [
            "bench",
            "--methods",
            "simclr",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--backbone",
            "convnet",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 0
    assert (out / "simclr" / "seed1" / "summary.json").stat().st_mtime_ns == stamp
    assert (out / "simclr" / "seed1" / "eval_knn.json").is_file()
    assert "| broken" in (out / "leaderboard.md").read_text()  # rows of an earlier call with other methods stay
    # an earlier call's two seeds keep their spread, and the heading says so, after a one-seed call
    main(
        [
            "bench",
            "--methods",
            "byol",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--backbone",
            "convnet",
            "--out",
            str(out),
            *TINY,
        ]
    )
    md = (out / "leaderboard.md").read_text()
    assert "mean ± std where a row has several seeds" in md and "| simclr | convnet x0.25 | 2/2 |" in md
    assert "leaderboard" in capsys.readouterr().out
    # and the runs render into one report page from the CLI
    page = tmp_path / "report.html"
    assert main(["report", str(out / "simclr" / "seed0"), str(out / "simclr" / "seed1"), "--out", str(page)]) == 0
    html = page.read_text()
    assert html.count("data:image/png;base64,") >= 3 and "seed1" in html


def test_archived_run_without_weights_keeps_its_row(tmp_path, capsys):
    """benchmarks/results keeps a run's small files, not its weights: a later call with a protocol the run
    lacks leaves that protocol out and does not mark the run failed."""
    import shutil

    out = tmp_path / "bench"
    kw = dict(protocols=("knn", "linear"), backbone="convnet", overrides=TINY, epochs=1, progress_bar=False)
    bench([Entry("simclr", "simclr")], "digits", None, out=out, **kw)
    run = out / "simclr" / "seed0"
    shutil.rmtree(run / "checkpoints")
    (run / "eval_linear.json").unlink()
    knn = json.loads((run / "eval_knn.json").read_text())["top1_k200"]
    board = bench([Entry("simclr", "simclr")], "digits", None, out=out, **kw)
    assert not (run / "failed.txt").exists() and not (run / "eval_linear.json").exists()
    row = board["rows"][0]
    assert row["seeds_done"] == 1 and row["failed"] == 0 and row["linear"] is None
    assert row["kNN-200"] == pytest.approx(100 * knn)
    assert "archived run" in capsys.readouterr().out


def test_a_seed_the_machine_slowed_is_trained_again(tmp_path, capsys):
    """A wall-clock budget gives a seed that other load slowed far fewer steps than its siblings (another
    experiment): the next `selfsup bench` moves it aside and trains it again; the others stay as they were."""
    from selfsup.experiments.bench import disturbed

    out = tmp_path / "bench"
    # a budget's run (train.steps fixes its plan here, as a budget run's planned steps repeat it)
    kw = dict(protocols=("knn",), backbone="convnet", overrides=(*TINY, "train.steps=3"), seeds=3, progress_bar=False)
    bench([Entry("simclr", "simclr")], "digits", "3s", out=out, **kw)
    runs = [out / "simclr" / f"seed{s}" for s in range(3)]
    steps = json.loads((runs[0] / "summary.json").read_text())["steps"]
    assert steps >= 2 and disturbed(runs) == []
    slowed = runs[2] / "summary.json"  # as if the machine had stalled: 1 step where its siblings took more
    slowed.write_text(json.dumps({**json.loads(slowed.read_text()), "steps": 1}))
    assert disturbed(runs) == [(runs[2], 1, steps)]
    stamp = (runs[0] / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    bench([Entry("simclr", "simclr")], "digits", None, out=out, epochs=1, **kw)  # epochs: the machine is no cause
    assert not runs[2].with_name("seed2.previous").exists()
    board = bench([Entry("simclr", "simclr")], "digits", "3s", out=out, **kw)
    assert f"the machine slowed it: 1 steps against its seeds' median {steps}" in capsys.readouterr().out
    assert json.loads((runs[2].with_name("seed2.previous") / "summary.json").read_text())["steps"] == 1
    assert json.loads(slowed.read_text())["steps"] == steps and (runs[2] / "eval_knn.json").is_file()
    assert (runs[0] / "summary.json").stat().st_mtime_ns == stamp and board["rows"][0]["seeds_done"] == 3
    assert disturbed(runs) == [] and disturbed(runs[:1]) == []  # one seed: nothing to compare with


def test_protocols_that_apply_only_to_some_methods(tmp_path, capsys):
    """`--protocols pretext` on a mixed list: the pretext-task run gets its pretext metrics next to its
    linear accuracy, the contrastive run leaves the protocol out and is not marked failed."""
    out = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                "--methods",
                "rotation,simclr",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--backbone",
                "convnet",
                "--protocols",
                "knn,pretext",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    rot = json.loads((out / "rotation" / "seed0" / "eval_pretext.json").read_text())
    assert 0 <= rot["pretext"]["rotation_acc"] <= 1 and 0 < rot["linear_top1"] <= 1
    assert not (out / "simclr" / "seed0" / "eval_pretext.json").exists()
    assert not list(out.glob("*/seed0/failed.txt"))
    assert "simclr seed 0: pretext does not apply" in capsys.readouterr().out
    assert main(["bench", "--methods", "simclr", "--data", "digits", "--protocols", "finetune", "--out", str(out)]) == 2
    assert "own options" in capsys.readouterr().err


def test_the_like_for_like_tables_compose_every_row():
    """benchmarks/like_for_like.py: every method of each table composes its config with the table's common
    encoder and side (a recipe key that no longer exists fails here, not hours into the runs)."""
    import importlib.util

    from selfsup.experiments.bench import entry_config

    spec = importlib.util.spec_from_file_location("like_for_like", ROOT / "benchmarks" / "like_for_like.py")
    lfl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lfl)
    cnn, vit = lfl.family_methods("cnn"), lfl.family_methods("vit")
    assert {"simclr", "byol", "supcon"} <= set(cnn) and {"mae", "ijepa"} <= set(vit) and not set(cnn) & set(vit)
    for family, methods in (("cnn", cnn), ("vit", vit)):
        for m in methods:
            cfg = entry_config(Entry(m, m), "fashion-mnist", None, None, "5m", None, list(lfl.COMMON[family]))
            assert cfg.backbone.name == ("resnet10" if family == "cnn" else "vit_micro"), m
            assert cfg.views.size is None and cfg.eval.size is None and cfg.train.budget == "5m", m
