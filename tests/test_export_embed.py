"""`selfsup export` and `selfsup embed`: strict loads into torchvision / timm with equal features,
the safetensors round trip, clear errors, and features of a folder of image files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.config import save_config
from selfsup.nn.features import extract_features
from selfsup.eval.run import load_run
from selfsup.export import embed_images, export_encoder, load_encoder, timm_model, torchvision_model
from selfsup.checkpoint import save_checkpoint
from selfsup.train.loop import build_method, checkpoint_meta
from test_cli import assert_clean_error, run_cli

DIGITS_MEAN, DIGITS_STD = [0.3], [0.4]


def make_run(tiny_config, root: Path, backbone: dict, method: str = "simclr", checkpoint: bool = True) -> Path:
    """A run directory without training: the config, and a checkpoint of a method whose weights and
    BatchNorm statistics are randomised (so a wrongly mapped tensor would change the features)."""
    cfg = tiny_config(method, backbone=backbone, data={"mean": DIGITS_MEAN, "std": DIGITS_STD})
    root.mkdir(parents=True)
    save_config(cfg, root / "config.yaml")
    if checkpoint:
        torch.manual_seed(0)
        method = build_method(cfg, in_channels=1, num_samples=256, image_size=8)  # digits: 8 px, grey
        with torch.no_grad():
            for name, t in method.state_dict().items():
                if t.is_floating_point():
                    t.copy_(t.abs() + 0.5 if "running_var" in name else t + 0.1 * torch.randn_like(t))
        save_checkpoint(root / "checkpoints" / "last", method, None, {}, checkpoint_meta(cfg, step=0, epoch=0))
    return root


def encoder_of(run_dir: Path) -> torch.nn.Module:
    return load_run(run_dir)[1].encoder.eval()


@pytest.mark.parametrize("small_stem", [True, False])
def test_torchvision_export_loads_strictly_and_gives_the_same_features(tiny_config, tmp_path, small_stem):
    run = make_run(tiny_config, tmp_path / "run", {"name": "resnet18", "width": 1.0, "small_stem": small_stem})
    path, meta = export_encoder(run, "torchvision")
    assert path.suffix == ".pth" and json.loads(path.with_suffix(".json").read_text())["mean"] == DIGITS_MEAN
    sd = torch.load(path, weights_only=True)
    assert not any(k.startswith(("fc.", "projector", "head")) for k in sd)  # the encoder alone
    m = torchvision_model(meta)
    m.load_state_dict(sd, strict=True)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        want = encoder_of(run)(x)
        assert torch.allclose(m(x), want, atol=1e-5)
        ns = {}  # the printed snippet, run as a user would
        exec(meta["snippet"], ns)
        assert torch.allclose(ns["m"](x), want, atol=1e-5)
    assert ("maxpool = nn.Identity()" in meta["snippet"]) == small_stem


def test_resnet_exports_to_timm_too(tiny_config, tmp_path):
    run = make_run(tiny_config, tmp_path / "run", {"name": "resnet18", "width": 1.0})
    path, meta = export_encoder(run, "timm", tmp_path / "r18.safetensors")
    from safetensors.torch import load_file

    m = timm_model(meta)
    m.load_state_dict(load_file(path), strict=True)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m(x), encoder_of(run)(x), atol=1e-5)


@pytest.mark.parametrize("pos_embed,pool", [("sincos", "token"), ("learned", "token"), ("sincos", "avg")])
def test_timm_export_of_a_vit(tiny_config, tmp_path, pos_embed, pool):
    backbone = {"name": "vit_micro", "width": 1.0, "patch_size": 4, "pos_embed": pos_embed, "pool": pool}  # 2x2 grid
    run = make_run(tiny_config, tmp_path / "run", backbone)
    path, meta = export_encoder(run, "timm")
    sd = torch.load(path, weights_only=True)
    m = timm_model(meta)
    m.load_state_dict(sd, strict=True)  # a sincos table becomes timm's pos_embed parameter
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        want = encoder_of(run)(x)
        assert torch.allclose(m(x), want, atol=1e-5)
        ns = {}
        exec(meta["snippet"], ns)
        assert torch.allclose(ns["m"](x), want, atol=1e-5)


def test_safetensors_round_trip_through_the_cli(tiny_config, tmp_path):
    run = make_run(tiny_config, tmp_path / "run", {"name": "convnet", "width": 0.25})
    out = tmp_path / "enc.safetensors"
    rc, stdout, err = run_cli(["export", str(run), "--format", "safetensors", "--out", str(out)])
    assert rc == 0, err
    assert "load_encoder" in stdout
    enc = load_encoder(out)
    assert enc.export_meta["method"] == "simclr" and enc.export_meta["std"] == DIGITS_STD
    assert enc.export_meta["image_size"] == 8 and enc.export_meta["backbone"]["name"] == "convnet"
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(enc(x), encoder_of(run)(x))


def test_unsupported_combinations_are_clear_errors(tiny_config, tmp_path):
    run = make_run(tiny_config, tmp_path / "conv", {"name": "convnet", "width": 0.25})
    rc, _, err = run_cli(["export", str(run), "--format", "torchvision"])
    assert_clean_error(rc, err, "convnet", "--format safetensors")
    narrow = make_run(tiny_config, tmp_path / "narrow", {"name": "resnet18", "width": 0.25})
    rc, _, err = run_cli(["export", str(narrow), "--format", "torchvision"])
    assert_clean_error(rc, err, "width=0.25", "cannot express", "--format safetensors")
    empty = make_run(tiny_config, tmp_path / "empty", {"name": "convnet", "width": 0.25}, checkpoint=False)
    rc, _, err = run_cli(["export", str(empty), "--format", "safetensors"])
    assert_clean_error(rc, err, "no checkpoint")
    vit_meta = {"backbone": {"name": "vit_micro"}}
    with pytest.raises(ValueError, match="timm"):
        torchvision_model(vit_meta)
    with pytest.raises(ValueError, match="safetensors"):
        timm_model({"backbone": {"name": "convnet"}})


def write_images(folder: Path, n: int) -> list[str]:
    """n readable PNGs (grey and RGB, several sizes, one in a sub-folder), a corrupt PNG, a text file."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"sub/{i}.png" if i == 0 else f"{i}.png"
        shape = (12, 10, 3) if i % 2 else (8, 8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
        names.append(name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    return names


def test_embed_a_folder(tiny_config, tmp_path):
    run = make_run(tiny_config, tmp_path / "run", {"name": "convnet", "width": 0.25})
    names = write_images(tmp_path / "imgs", 5)
    out = tmp_path / "features.npy"
    with pytest.warns(UserWarning) as caught:
        res = embed_images(run, tmp_path / "imgs", out, batch_size=2, progress=False)
    said = " | ".join(str(w.message) for w in caught)
    assert "skipped 1 unreadable" in said and "ignored 1 non-image file" in said and "notes.txt" in said
    x = np.load(out)
    assert x.dtype == np.float32 and x.shape == (5, res["features"]) and res["rows"] == 5 and res["skipped"] == 1
    listed = [json.loads(line) for line in (tmp_path / "features.files.jsonl").read_text().splitlines()]
    assert sorted(listed) == sorted(names) and listed == sorted(listed)
    # the same images prepared by hand, the image-folder way, and run through the encoder at once
    imgs = torch.stack([torch.from_numpy(np.array(prepared(tmp_path / "imgs" / n, 8)))[None] for n in listed])
    want = extract_features(encoder_of(run), imgs, DIGITS_MEAN, DIGITS_STD, 8)
    assert torch.allclose(torch.from_numpy(x), want, atol=1e-5)


def prepared(path: Path, size: int) -> Image.Image:
    """Shorter side resized to ``size`` (bilinear), centre crop, then PIL's grey (the run is grey)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size)).convert("L")


def test_embed_cli_one_file_and_parquet(tiny_config, tmp_path):
    run = make_run(tiny_config, tmp_path / "run", {"name": "convnet", "width": 0.25})
    write_images(tmp_path / "imgs", 2)
    rc, stdout, err = run_cli(["embed", str(run), str(tmp_path / "imgs" / "1.png"), "--out", str(tmp_path / "one.npy")])
    assert rc == 0, err
    assert np.load(tmp_path / "one.npy").shape == (1, 64)
    assert (tmp_path / "one.files.jsonl").read_text() == '"1.png"\n'
    try:
        import pyarrow.parquet as pq
    except ImportError:
        rc, _, err = run_cli(["embed", str(run), str(tmp_path / "imgs"), "--out", str(tmp_path / "f.parquet")])
        assert_clean_error(rc, err, "pip install pyarrow", ".npy")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, _, err = run_cli(["embed", str(run), str(tmp_path / "imgs"), "--out", str(tmp_path / "f.parquet")])
    assert rc == 0, err
    table = pq.read_table(tmp_path / "f.parquet").to_pydict()
    assert table["path"] == ["1.png", "sub/0.png"] and len(table["features"][0]) == 64


def test_timm_exports_carry_the_runs_input_spec(tiny_config, tmp_path):
    """timm's own data config of an export is the run's: 1 channel, 8 px, the run's mean/std."""
    from timm.data import resolve_data_config

    run = make_run(tiny_config, tmp_path / "run", {"name": "resnet18", "width": 1.0, "small_stem": False})
    _, meta = export_encoder(run, "timm")
    cfg = resolve_data_config({}, model=timm_model(meta))
    assert cfg["input_size"] == (1, 8, 8) and cfg["mean"] == tuple(DIGITS_MEAN) and cfg["std"] == tuple(DIGITS_STD)
    assert cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"


@pytest.mark.parametrize(
    "backbone",
    [{"name": "vit_micro", "width": 1.0, "patch_size": 4}, {"name": "resnet18", "width": 1.0, "small_stem": False}],
)
def test_hf_directory_loads_with_timm_from_a_local_path(tiny_config, tmp_path, backbone):
    import timm
    from timm.data import resolve_data_config

    run = make_run(tiny_config, tmp_path / "run", backbone)
    rc, out, err = run_cli(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert rc == 0, err
    assert {p.name for p in (tmp_path / "hf").iterdir()} == {"config.json", "model.safetensors"}
    m = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True).eval()
    cfg = resolve_data_config({}, model=m)
    assert tuple(cfg["input_size"]) == (1, 8, 8) and tuple(cfg["mean"]) == tuple(DIGITS_MEAN)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m(x), encoder_of(run)(x), atol=1e-5)


def test_hf_refuses_the_small_stem_resnet_with_the_formats_that_work(tiny_config, tmp_path):
    run = make_run(tiny_config, tmp_path / "run", {"name": "resnet18", "width": 1.0, "small_stem": True})
    rc, _, err = run_cli(["export", str(run), "--format", "hf"])
    assert_clean_error(rc, err, "small-image stem", "--format timm")
