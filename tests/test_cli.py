"""The `selfsup` command end to end, in-process (selfsup.cli.main) and once as a real process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import selfsup
from selfsup.cli import main
from selfsup.config import load_run_config


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


def assert_clean_error(rc: int, err: str, *needles: str, one_line: bool = True) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    # the no-recipe warning (user data: image folders, arrays) comes before a data error; it is not the error
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("warning: no recipe")]
    assert lines and lines[0].startswith("selfsup: error: "), err
    if one_line:
        assert len(lines) == 1, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    return err


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    rc, out, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
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
        ]
    )
    assert rc == 0, err
    assert "Traceback" not in err
    summary = last_json(out)
    assert summary["steps"] == 5 and summary["run"] == str(run)
    return run


def test_list(capsys):
    assert main(["list", "methods"]) == 0
    assert capsys.readouterr().out.split() == selfsup.list_methods()
    assert main(["list", "methods", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == selfsup.list_methods()
    assert main(["list", "backbones", "--json"]) == 0
    assert "resnet18" in json.loads(capsys.readouterr().out)
    assert main(["list", "datasets", "--json"]) == 0
    assert {"digits", "fashion-mnist"} <= set(json.loads(capsys.readouterr().out))


def test_pretrain_applies_flags_and_overrides(pretrained):
    cfg = load_run_config(pretrained)
    assert cfg.method_name == "simclr" and cfg.data.name == "digits" and cfg.backbone.name == "convnet"
    assert cfg.train.epochs == 1 and cfg.train.batch_size == 64 and cfg.train.max_steps == 5
    assert cfg.train.budget is None  # --epochs replaces any budget of the recipe
    assert (pretrained / "checkpoints" / "last" / "model.safetensors").is_file()


def test_eval_knn_json(pretrained):
    rc, out, err = run_cli(["eval", "knn", str(pretrained), "--json"])
    assert rc == 0, err
    res = last_json(out)
    assert 0.0 <= res["top1"] <= 1.0 and res["top1"] > 0.3  # far above 10 % chance even after 5 steps
    assert res["k"] == load_run_config(pretrained).eval.knn_k[0]
    assert res["method"] == "simclr"
    assert json.loads((pretrained / "eval_knn.json").read_text())["top1"] == res["top1"]
    rc, out, _ = run_cli(["eval", "knn", str(pretrained)])
    assert (
        rc == 0
        and out.strip().splitlines()[-1]
        == f"{pretrained}: kNN k=200 {100 * res['top1_k200']:.2f} %, k=20 {100 * res['top1_k20']:.2f} %"
    )


def test_eval_linear_json(pretrained):
    rc, out, err = run_cli(["eval", "linear", str(pretrained), "--json"])
    assert rc == 0, err
    res = last_json(out)
    assert 0.3 < res["top1"] <= 1.0
    assert res["l2"] in load_run_config(pretrained).eval.linear_l2


def test_resume_and_refusal_to_overwrite(pretrained):
    rc, out, err = run_cli(["pretrain", "--resume", str(pretrained)])
    assert rc == 0, err
    assert last_json(out)["steps"] == 5
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "digits", "--out", str(pretrained)])
    assert_clean_error(rc, err, "--resume")


def test_unknown_method(tmp_path):
    rc, _, err = run_cli(["pretrain", "--method", "simclrr", "--data", "digits", "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "simclrr", "'simclr'", "byol")


def test_config_typo(tmp_path):
    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path / "r"), "train.bath_size=32"]
    )
    assert_clean_error(rc, err, "train.bath_size", "Did you mean 'batch_size'")
    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path / "r"), "train.batch_size=abc"]
    )
    assert_clean_error(rc, err, "train.batch_size")
    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path / "r"), "--budget", "ten minutes"]
    )
    assert_clean_error(rc, err, "15m")
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--config", str(tmp_path / "missing.yaml")])
    assert_clean_error(rc, err, "--config")


def test_missing_fashion_mnist(no_data_env, tmp_path):
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "fashion-mnist", "--out", str(tmp_path / "r")])
    # the message lists where it looked and every way to fix it, so it spans several lines
    assert_clean_error(rc, err, "fashion-mnist", "--data-dir", "SELFSUP_DATA", one_line=False)


def test_unknown_dataset(tmp_path):
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "digitz", "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "digitz", "'digits'")


def image_folder(root: Path, good: int, corrupt: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(good):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(d / f"{i}.png")
    for i in range(corrupt):
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / "a" / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


def test_imagefolder_with_a_corrupt_file(tmp_path):
    folder = image_folder(tmp_path / "imgs", good=3, corrupt=1)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        rc, _, err = run_cli(
            [
                "pretrain",
                "--method",
                "simclr",
                "--data",
                "imagefolder",
                "--data-dir",
                str(folder),
                "--backbone",
                "convnet",
                "--batch-size",
                "64",
                "--out",
                str(tmp_path / "r"),
            ]
        )
    # 3 readable images cannot fill a batch of 64: the error says which batch size works
    assert_clean_error(rc, err, "--batch-size 3")


def test_imagefolder_with_only_corrupt_files(tmp_path):
    folder = image_folder(tmp_path / "imgs", good=0, corrupt=2)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        rc, _, err = run_cli(
            [
                "pretrain",
                "--method",
                "simclr",
                "--data",
                "imagefolder",
                "--data-dir",
                str(folder),
                "--out",
                str(tmp_path / "r"),
            ]
        )
    assert_clean_error(rc, err, "could be decoded")


def test_eval_of_a_directory_that_is_no_run(tmp_path):
    rc, _, err = run_cli(["eval", "knn", str(tmp_path)])
    assert_clean_error(rc, err, "not a run directory")


def test_resume_with_a_damaged_state_file(pretrained, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(pretrained, run)
    for ckpt in ("last", "previous"):
        state = run / "checkpoints" / ckpt / "state.pt"
        state.write_bytes(state.read_bytes()[:64])
    rc, _, err = run_cli(["pretrain", "--resume", str(run)])
    assert_clean_error(rc, err, "state.pt", "no usable checkpoint", "restore")


def test_resume_with_a_damaged_last_checkpoint_uses_the_previous_one(pretrained, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(pretrained, run)
    state = run / "checkpoints" / "last" / "state.pt"
    state.write_bytes(state.read_bytes()[:64])
    with pytest.warns(UserWarning, match="last/state.pt is damaged.*; using the previous checkpoint"):
        rc, out, err = run_cli(["pretrain", "--resume", str(run)])
    assert rc == 0, err
    assert "previous checkpoint" in out and json.loads(out.splitlines()[-1])["steps"] > 0


def test_a_real_process_shows_selfsups_warnings_as_one_line(tmp_path):
    """The library warns through ``warnings`` (filterable, recordable); the CLI prints selfsup's own as
    ``warning: ...`` on stderr, without Python's file:line prefix."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(24):
        Image.fromarray((np.random.default_rng(i).random((8, 8)) * 255).astype("uint8")).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"not a png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfsup",
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "imagefolder",
            "--data-dir",
            str(folder),
            "--backbone",
            "convnet",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
            "backbone.width=0.25",
            "train.max_steps=1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: imagefolder: skipped 1 unreadable file" in proc.stderr
    assert "UserWarning" not in proc.stderr and "warnings.warn" not in proc.stderr


def test_real_process_exit_code_and_stderr(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfsup",
            "pretrain",
            "--method",
            "byoll",
            "--data",
            "digits",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert_clean_error(proc.returncode, proc.stderr, "byoll", "'byol'")
    assert proc.stdout == ""
    assert not (tmp_path / "r").exists()


def test_demo_on_digits_prints_the_comparison_table(tmp_path):
    out_dir = tmp_path / "demo"
    rc, out, err = run_cli(["demo", "--data", "digits", "--budget", "2s", "--out", str(out_dir)])
    assert rc == 0, err
    table = json.loads((out_dir / "demo_table.json").read_text())
    assert table[0]["features"] == "raw pixels"
    for row in table[:2]:
        for key in ("knn200", "knn20", "linear"):
            assert 10.0 < row[key] <= 100.0  # percentages, above chance on 10 classes
    few = table[2:]  # the few-labels rows: 10 per class, 1 %, 10 %, 100 % of digits' 1438 training images
    assert [r["labels"] for r in few] == [14, 100, 144, 1438]
    assert all(10.0 < r["linear"] <= 100.0 and 10.0 < r["raw_pixels_linear"] <= 100.0 for r in few)
    # fine-tuning and scratch where they are cheap (10 per class, 1 %), "—" where they are not
    assert all(10.0 < r["finetune"] <= 100.0 and 10.0 < r["scratch"] <= 100.0 for r in few[:2])
    assert all(r["finetune"] is None and r["scratch"] is None for r in few[2:])
    assert "raw pixels" in out and "simclr" in out and "few labels" in out


def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, monkeypatch):
    import selfsup.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(selfsup.cli, "fit", interrupted)
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path / "r")])
    assert rc == 130
    assert f"--resume {tmp_path / 'r'}" in err and "Traceback" not in err  # the run's own directory, named


def test_a_data_set_without_a_recipe_is_warned_about_before_training(tmp_path):
    # (a batch larger than the 3 images stops each call when the data loads: nothing trains)
    common = ["--batch-size", "64", "data.limit=3", "--out", str(tmp_path / "r")]
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "tinted-digits", *common])
    assert rc == 2 and "warning: no recipe simclr_tinted-digits.yaml" in err
    assert "recipes/simclr_digits.yaml" in err and "simclr_fashion-mnist.yaml" in err
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "digits", *common])
    assert rc == 2 and "no recipe" not in err
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "tinted-digits", "--no-recipe", *common])
    assert rc == 2 and "no recipe" not in err  # asked for: no warning
    rc, _, err = run_cli(["pretrain", "--method", "simclr", "--data", "tinted-digits", *common, "train.bath_size=3"])
    assert rc == 2 and "no recipe" not in err and "bath_size" in err  # a config error comes alone


def test_output_piped_into_a_reader_that_leaves_is_not_an_error():
    # `selfsup list methods | head -0`: the reader has gone before selfsup writes (it is still importing)
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfsup", "list", "methods", "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err
