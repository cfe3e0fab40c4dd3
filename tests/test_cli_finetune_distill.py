"""`selfsup eval finetune` and `selfsup distill` end to end on a tiny SimCLR v2 run (5 steps on digits)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.data import load_dataset
from selfsup.eval.distill import load_student
from selfsup.nn.features import extract_features


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli-v2") / "run"
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclrv2",
            "--data",
            "digits",
            "--backbone",
            "convnet",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--out",
            str(run),
            "train.max_steps=5",
            "train.monitor_train=0",
            "method.proj_hidden=64",
            "backbone.width=0.25",
        ]
    )
    assert rc == 0, err
    return run


def test_eval_finetune_json(tiny_run):
    rc, out, err = run_cli(["eval", "finetune", str(tiny_run), "--fraction", "0.1", "--epochs", "5", "--json"])
    assert rc == 0, err
    res = last_json(out)
    assert 0.0 <= res["top1"] <= 1.0 and res["top1"] > 0.3  # chance is 0.1
    assert res["fraction"] == 0.1 and res["num_labelled"] == 144 and res["epochs"] == 5 and res["steps"] == 15
    assert res["encoder"] == "finetune_encoder" and res["num_features"] == 64  # the head's middle layer
    assert res["method"] == "simclrv2" and res["flip_p"] == 0.0 and not res["from_scratch"]
    assert json.loads((tiny_run / "eval_finetune_10pct.json").read_text())["top1"] == res["top1"]

    rc, out, err = run_cli(["eval", "finetune", str(tiny_run), "--fraction", "0.01", "--steps", "3", "--from-scratch"])
    assert rc == 0, err
    assert out.strip().splitlines()[-1].startswith(f"{tiny_run}: finetune top-1 ") and "from scratch" in out
    assert json.loads((tiny_run / "eval_scratch_1pct.json").read_text())["steps"] == 3


def test_distill_json_and_the_saved_student(tiny_run, tmp_path):
    out_dir = tmp_path / "student"
    rc, out, err = run_cli(
        [
            "distill",
            str(tiny_run),
            "--fraction",
            "0.1",
            "--out",
            str(out_dir),
            "--steps",
            "3",
            "--teacher-epochs",
            "5",
            "--temperature",
            "2",
            "--student",
            "convnet",
            "--student-width",
            "0.125",
            "--json",
        ]
    )
    assert rc == 0, err
    res = last_json(out)
    for k in ("top1", "teacher_top1", "student_top1", "agreement"):
        assert 0.0 <= res[k] <= 1.0, k
    assert res["teacher_top1"] > 0.3 and res["top1"] == res["student_top1"]
    assert res["temperature"] == 2.0 and res["steps"] == 3 and res["fraction"] == 0.1
    assert res["teacher"]["num_labelled"] == 144 and res["teacher_encoder"] == "finetune_encoder"
    assert res["student"]["name"] == "convnet" and res["student"]["width"] == 0.125
    student, spec = load_student(out_dir)
    assert spec["num_classes"] == 10 and spec["size"] == 8
    test = load_dataset("digits", "test")
    pred = extract_features(student, test.images, spec["mean"], spec["std"], spec["size"]).argmax(1)
    assert (pred == test.labels).float().mean().item() == pytest.approx(res["student_top1"])
    assert json.loads((out_dir / "result.json").read_text())["agreement"] == res["agreement"]


def test_distill_default_out_and_same_student(tiny_run):
    rc, out, err = run_cli(["distill", str(tiny_run), "--steps", "1", "--teacher-epochs", "1"])
    assert rc == 0, err
    assert "student weights:" in out and "agreement" in out
    weights = tiny_run / "distill_10pct" / "student.safetensors"
    student, spec = load_student(weights)
    assert spec["backbone"]["name"] == "convnet" and spec["backbone"]["width"] == 0.25  # the run's backbone
    assert student(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["eval", "finetune", "{run}", "--fraction", "1.5"], "--fraction"),
        (["eval", "knn", "{run}", "--fraction", "0.1"], "eval finetune"),
        (["distill", "{run}", "--fraction", "0"], "--fraction"),
        (["distill", "{run}", "--student", "resnet99"], "resnet"),
        (["distill", "{run}", "--temperature", "0"], "temperature"),
    ],
)
def test_bad_input_is_one_clean_line(tiny_run, argv, needle):
    rc, _, err = run_cli([a.format(run=tiny_run) for a in argv])
    assert rc == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("selfsup: error: ") and needle in err, err
