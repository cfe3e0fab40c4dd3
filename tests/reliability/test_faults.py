"""Faults and bad input from issue 27's catalogue that end in a clear message and lose nothing:
zero budgets and batch sizes, a full disk during a checkpoint or a feature-cache write, a damaged
feature cache, orphaned temporary checkpoints, a non-finite loss before the first checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import assert_clean_error, run_cli

OVERRIDES = ["data.limit=128", "train.device=cpu", "train.monitor_train=0"]


@pytest.mark.parametrize(
    "flag, value, needle",
    [
        ("--budget", "0m", "budget must be positive"),
        ("--budget", "0", "budget must be positive"),
        ("--batch-size", "0", "--batch-size 0"),
        ("--batch-size", "-3", "--batch-size -3"),
        ("--epochs", "0", "--epochs 0"),
    ],
)
def test_zero_or_negative_sizes_are_errors_naming_the_flag(tmp_path, flag, value, needle):
    flags = {"--batch-size": "64", flag: value}
    argv = ["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path / "r")]
    rc, _, err = run_cli(argv + [x for kv in flags.items() for x in kv] + OVERRIDES)
    assert_clean_error(rc, err, needle)
    assert not (tmp_path / "r").exists()


def test_a_full_disk_during_a_checkpoint_keeps_the_earlier_one(tiny_config, tmp_path, monkeypatch):
    """safetensors reports a full disk with its own error type, not an OSError: still the message."""
    from safetensors import SafetensorError

    from selfsup import checkpoint
    from selfsup.train import fit
    from selfsup.checkpoint import CheckpointError

    real = checkpoint.save_file
    calls = {"n": 0}

    def full_after_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise SafetensorError("Error while serializing: IoError(No space left on device)")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_after_first)
    with pytest.raises(CheckpointError, match="earlier checkpoint .* is intact"):
        fit(tiny_config("simclr", "train.checkpoint_steps=1", "train.max_steps=3"), tmp_path / "r", progress_bar=False)
    assert (tmp_path / "r" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert not list((tmp_path / "r" / "checkpoints").glob(".last.tmp*"))  # nothing half-written left


def test_orphaned_temporary_checkpoints_of_dead_processes_are_removed(tiny_config, tmp_path):
    from selfsup.train import fit

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()  # a pid that has exited
    orphan = tmp_path / "r" / "checkpoints" / f".last.tmp{dead}"
    orphan.mkdir(parents=True)
    (orphan / "model.safetensors").write_bytes(b"x" * 1000)
    alive = tmp_path / "r" / "checkpoints" / f".last.tmp{os.getppid()}"  # a live process's: kept
    alive.mkdir()
    fit(tiny_config("simclr", "train.max_steps=1"), tmp_path / "r", progress_bar=False)
    assert not orphan.exists() and alive.exists()


def test_a_damaged_feature_cache_is_recomputed_with_a_warning(tiny_config, tmp_path):
    from selfsup.eval.run import evaluate
    from selfsup.train import fit

    fit(tiny_config("simclr", "train.max_steps=2"), tmp_path / "r", progress_bar=False)
    first = evaluate(tmp_path / "r", "knn")["top1"]
    cache = next((tmp_path / "r" / "features").glob("step*.safetensors"))
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="feature cache .* is unreadable"):
        assert evaluate(tmp_path / "r", "knn")["top1"] == first
    assert evaluate(tmp_path / "r", "knn")["top1"] == first  # rewritten whole: read without a warning


def test_a_feature_cache_that_cannot_be_written_only_warns(tiny_config, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from selfsup.eval import run as run_mod
    from selfsup.train import fit

    fit(tiny_config("simclr", "train.max_steps=2"), tmp_path / "r", progress_bar=False)

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(run_mod, "save_file", full)
    with pytest.warns(UserWarning, match="could not write the feature cache"):
        assert 0 <= run_mod.evaluate(tmp_path / "r", "knn")["top1"] <= 1
    assert not list((tmp_path / "r" / "features").glob("*"))


def test_a_non_finite_loss_before_the_first_checkpoint_says_there_is_none(tiny_config, tmp_path):
    from selfsup.train import TrainingError, fit

    with pytest.raises(TrainingError, match="No checkpoint was written before it. Start again with a lower optim.lr"):
        # the weights overflow within a few steps at this rate
        fit(tiny_config("simclr", "optim.lr=1e30", "train.max_steps=5"), tmp_path / "r", progress_bar=False)


def test_a_second_writer_of_the_same_run_fails_at_once_naming_the_holder(tmp_path):
    """Two pretrain processes into one --out: the second stops before writing anything, naming the
    first one's pid (issue 27: both used to exit 0 and leave a mixed run)."""
    run = tmp_path / "r"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom selfsup.checkpoint import RunLock\n"
            f"with RunLock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, _, err = run_cli(["pretrain", "--method", "byol", "--out", str(run), "--data", "digits", *OVERRIDES])
        assert_clean_error(rc, err, f"being written by process {holder.pid}", "choose another --out")
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()
    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--out", str(run), "--data", "digits", *OVERRIDES, "train.max_steps=1"]
    )
    assert rc == 0, err  # a killed holder's lock is gone with it


def test_bad_device_and_an_out_that_is_a_file_are_one_line_errors(tmp_path):
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "digits",
            "--out",
            str(tmp_path / "r"),
            *OVERRIDES,
            "train.device=banana",
        ]
    )
    assert_clean_error(rc, err, "train.device=banana", "cuda:N")
    (tmp_path / "f").write_text("a file")
    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path / "f"), *OVERRIDES]
    )
    assert_clean_error(rc, err, "is a file, not a directory")
    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path / "f" / "sub"), *OVERRIDES]
    )  # cannot be created (as a read-only mount, which root cannot simulate)
    assert_clean_error(rc, err, "cannot create the run directory", "choose a writable --out")


def test_eval_with_a_bad_device_is_a_one_line_error(tmp_path):
    rc, _, err = run_cli(["eval", "knn", str(tmp_path), "--device", "banana"])
    assert_clean_error(rc, err, "--device banana", "cuda:N")


def test_embed_rows_stay_aligned_with_a_newline_in_a_file_name(tiny_config, tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from selfsup.export import embed_images
    from test_export_embed import make_run

    run = make_run(tiny_config, tmp_path / "run", {"name": "convnet", "width": 0.25})
    (tmp_path / "imgs").mkdir()
    names = ["a.png", "b\nc.png", "d.png"]
    for i, name in enumerate(names):
        Image.new("L", (8, 8), 60 * i).save(tmp_path / "imgs" / name, format="PNG")
    embed_images(run, tmp_path / "imgs", tmp_path / "f.npy", progress=False)
    listed = [json.loads(line) for line in (tmp_path / "f.files.jsonl").read_text().splitlines()]
    assert listed == sorted(names) and len(listed) == len(np.load(tmp_path / "f.npy"))


def test_resume_refuses_settings_it_cannot_change(tmp_path):
    rc, _, err = run_cli(
        [
            "pretrain",
            "--resume",
            str(tmp_path),
            "--epochs",
            "5",
            "--method",
            "byol",
            "optim.lr=0.01",
            "views.crop_scale=[0.2,1]",
        ]
    )
    assert_clean_error(rc, err, "cannot change --method, views.crop_scale=[0.2,1]", "It may change train.epochs")


def test_resume_extends_the_schedule_and_lowers_the_rate_recording_the_change(tmp_path):
    """--resume --epochs N trains on to N epochs; optim.lr=... takes effect from the resumed step (the
    fix a non-finite loss names); both are written into config.yaml and logged in metrics.jsonl."""
    import json

    import yaml

    run = tmp_path / "r"
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--out",
            str(run),
            *OVERRIDES,
            "train.log_every=1",
        ]
    )
    assert rc == 0, err
    before = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lr0 = yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"]
    rc, out, err = run_cli(["pretrain", "--resume", str(run), "--epochs", "2", f"optim.lr={lr0 / 4}"])
    assert rc == 0, err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["optim"]["lr"] == lr0 / 4
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    event = [r for r in rows if r.get("event") == "resumed with changes"]
    assert len(event) == 1 and event[0]["changes"] == {"optim.lr": [lr0, lr0 / 4], "train.epochs": [1, 2]}
    last_before = max(r["step"] for r in before)
    assert max(r["step"] for r in rows) == 2 * last_before  # 128 images, batch 128: one step per epoch
    after = [r for r in rows if r["step"] > event[0]["step"] and "lr" in r]
    assert after and all(r["lr"] <= lr0 / 4 + 1e-12 for r in after)


def test_a_new_run_in_a_directory_without_a_checkpoint_starts_its_logs_anew(tiny_config, tmp_path):
    """A run killed before its first checkpoint leaves metrics and events; the next run into that
    directory (allowed: there is nothing to resume) must not carry them (issue 27 item 7)."""
    import json

    from selfsup.train import fit

    run = tmp_path / "r"
    (run / "tb").mkdir(parents=True)
    (run / "tb" / "events.out.tfevents.0.old").write_bytes(b"stale")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 99, "loss": 1.0, "method": "byol"}) + "\n")
    fit(tiny_config("simclr", "train.max_steps=2"), run, progress_bar=False)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["step"] <= 2 for r in rows) and not (run / "tb" / "events.out.tfevents.0.old").exists()


def test_a_key_given_twice_in_a_config_file_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.5\n  lr: 0.05\n")
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "digits",
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert_clean_error(rc, err, "'lr' appears twice")


def test_a_truncated_npz_and_an_export_into_a_directory_are_one_line_errors(tiny_config, tmp_path):
    import numpy as np

    from test_export_embed import make_run

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4))
    (tmp_path / "t.npz").write_bytes((tmp_path / "d.npz").read_bytes()[:60])
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "array",
            "--data-dir",
            str(tmp_path / "t.npz"),
            "--out",
            str(tmp_path / "r"),
            *OVERRIDES,
        ]
    )
    assert_clean_error(rc, err, "cannot read array file", "numpy.savez")
    run = make_run(tiny_config, tmp_path / "run", {"name": "convnet", "width": 0.25})
    (tmp_path / "outdir").mkdir()
    rc, _, err = run_cli(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "outdir")])
    assert_clean_error(rc, err, "is a directory: give a file name")


def _pngs(folder, n, start=0):
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(np.full((8, 8), 20 * i % 255, np.uint8)).save(folder / f"{i}.png")


def test_a_symlinked_class_folder_is_followed_and_a_link_loop_is_not(tmp_path):
    from selfsup.data import load_dataset

    _pngs(tmp_path / "elsewhere" / "cats", 3)
    _pngs(tmp_path / "data" / "dogs", 2)
    (tmp_path / "data" / "cats").symlink_to(tmp_path / "elsewhere" / "cats", target_is_directory=True)
    (tmp_path / "data" / "dogs" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)  # a cycle
    ds = load_dataset("imagefolder", "train", str(tmp_path / "data"), 8)
    assert len(ds) == 5 and ds.classes == ["cats", "dogs"] and sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1]


def test_a_file_without_read_permission_is_said_so_not_called_corrupt(tmp_path, monkeypatch):
    """As root every file is readable, so the refusal is simulated where PIL opens the file."""
    import PIL.Image

    from selfsup.data import load_dataset

    _pngs(tmp_path / "flat", 4)
    (tmp_path / "flat" / "9.png").write_bytes(b"not a png")
    real = PIL.Image.open

    def guarded(fp, *a, **k):
        if str(fp).endswith("2.png"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real(fp, *a, **k)

    monkeypatch.setattr(PIL.Image, "open", guarded)
    with pytest.warns(UserWarning) as rec:
        ds = load_dataset("imagefolder", "train", str(tmp_path / "flat"), 8)
    msgs = [str(w.message) for w in rec]
    assert len(ds) == 3
    assert any("2.png" in m and "permission denied" in m and "chmod" in m for m in msgs), msgs
    assert any("9.png" in m and "corrupt" in m and "2.png" not in m for m in msgs), msgs


def test_the_label_remapping_warning_is_said_once_for_both_splits(tmp_path):
    import warnings

    import numpy as np

    from selfsup.data import load_dataset

    np.savez(
        tmp_path / "d.npz",
        x_train=np.zeros((6, 8, 8), np.uint8),
        y_train=np.array([3, 17, 250] * 2),
        x_test=np.zeros((3, 8, 8), np.uint8),
        y_test=np.array([3, 17, 250]),
    )
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        train = load_dataset("array", "train", str(tmp_path / "d.npz"), None)
        test = load_dataset("array", "test", str(tmp_path / "d.npz"), None)
    said = [w for w in rec if "remapped" in str(w.message)]
    assert len(said) == 1
    assert train.labels.tolist() == [0, 1, 2] * 2 and test.labels.tolist() == [0, 1, 2]  # both remapped alike


def test_edited_data_settings_are_refused_like_an_edited_method(tiny_config, tmp_path):
    import yaml

    from selfsup.config import ConfigError, load_run_config
    from selfsup.train import fit

    run = tmp_path / "r"
    fit(tiny_config("simclr", "train.max_steps=2"), run, progress_bar=False)
    original = (run / "config.yaml").read_text()
    for key, value in (("image_size", 16), ("mean", [0.5]), ("limit", 7), ("name", "fashion-mnist")):
        cfg = yaml.safe_load(original)
        cfg["data"][key] = value
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(ConfigError, match=f"data.{key}=.*edited after training"):
            load_run_config(run)
    cfg = yaml.safe_load(original)
    cfg["data"]["dir"] = str(tmp_path / "moved")  # the data may move: allowed
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert load_run_config(run).data.dir == str(tmp_path / "moved")


def test_a_run_directory_inside_the_data_folder_is_left_out_of_its_images(tmp_path):
    from selfsup.data import load_dataset

    _pngs(tmp_path / "photos", 5)
    run = tmp_path / "photos" / "runs" / "mine"  # a run written inside the folder it trains on
    _pngs(run, 2)  # its pictures (curves.png, ...)
    (run / "config.yaml").write_text("method: simclr\n")
    (run / "metrics.jsonl").write_text("")
    with pytest.warns(UserWarning, match="left out 1 selfsup run directory inside the data folder: runs/mine"):
        ds = load_dataset("imagefolder", "train", str(tmp_path / "photos"), 8)
    assert len(ds) == 5


def test_cmyk_animated_and_bomb_images(tmp_path):
    """A CMYK JPEG and an animated GIF (its first frame) load as RGB; a PNG whose header claims a
    decompression bomb is skipped and named, never decoded."""
    import struct
    import zlib

    from PIL import Image

    from selfsup.data import load_dataset

    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(d / "cmyk.jpg")  # pure red in CMYK
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 255), (0, 255, 0))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 200_000, 200_000, 8, 0, 0, 0, 0)  # 4e10 gray pixels claimed
    (d / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file: .*bomb\.png"):
        ds = load_dataset("imagefolder", "train", str(d), 8)
    assert len(ds) == 2 and ds.channels == 3
    by_name = dict(zip([Path(p).name for p in ds.files], ds.images))
    red = by_name["cmyk.jpg"].float().mean((1, 2))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    blue = by_name["anim.gif"].float().mean((1, 2))  # the first frame
    assert blue[2] > 200 and blue[1] < 60


def test_object_arrays_and_yaml_tags_run_no_code(tmp_path):
    import numpy as np

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    arr = np.empty(2, dtype=object)
    arr[0] = Evil()
    np.savez(tmp_path / "evil.npz", x=arr, y=np.arange(2))
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "array",
            "--data-dir",
            str(tmp_path / "evil.npz"),
            "--out",
            str(tmp_path / "r"),
            *OVERRIDES,
        ]
    )
    assert_clean_error(rc, err, "cannot read array file")
    (tmp_path / "c.yaml").write_text(f"optim: !!python/object/apply:os.system ['touch {marker}']\n")
    rc, _, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "digits",
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "r2"),
        ]
    )
    assert rc == 2 and "selfsup: error:" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
