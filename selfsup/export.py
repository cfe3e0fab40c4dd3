"""A run's encoder outside selfsup: weight files other libraries load, and features of a folder of images.

Export writes ``method.evaluated_encoder`` alone (``encoder``; I-JEPA's and MSN's EMA target) — no projection heads, no teacher, no optimiser — of a run's
last checkpoint, in one of three forms:

- ``safetensors``: our own state dict, with the backbone's constructor arguments, the method and
  the input normalisation in the file's metadata; ``load_encoder(path)`` rebuilds it.
- ``torchvision``: ResNets as a state dict whose keys are torchvision's ``resnet18/34/50`` (ours
  already use torchvision's module names); ``torchvision_model(meta)`` builds the matching model,
  whose stem differs from torchvision's default only where the run's did (3x3 small-image stem
  without max-pool, other input channels), with ``fc = nn.Identity()``.
- ``timm``: ViTs as timm's ``VisionTransformer`` state dict ([CLS] pooling, positions on the patch
  tokens only: ``no_embed_class=True``); ResNets as timm's ``ResNet`` (torchvision's key names).
  ``timm_model(meta)`` builds the matching model.

Each torchvision/timm file gets a JSON sidecar (the same ``meta``, plus the few lines of code that
load it), because a plain state dict cannot say how its inputs were normalised.

Embedding (``embed_images``) decodes a folder of image files batch by batch the way the image-folder
dataset does, views them as evaluation does, and writes float32 features [N, F] with the file list.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup import __version__, create_backbone
from selfsup.backbones import VIT_SIZES
from selfsup.backbones.resnet import RESNET_LAYERS
from selfsup.data import DatasetError
from selfsup.config import RunConfig
from selfsup.data.labelled import image_batches
from selfsup.data.decode import warn_skipped
from selfsup.data.folder import IMAGE_EXTENSIONS, list_image_files, list_other_files
from selfsup.engine import Run
from selfsup.nn.features import extract_features

FORMATS = ("torchvision", "timm", "safetensors", "hf")
_MAGIC = ("exported_by", "selfsup.export")  # the safetensors metadata entry that marks an exported encoder


@dataclass
class _Run:
    """What export and embedding need of a run: its config, the trained encoder and the input geometry."""

    cfg: RunConfig
    encoder: nn.Module
    meta: dict  # the checkpoint's meta.json
    channels: int  # of the training images
    stored_size: int  # side the dataset decodes images to (before the view)
    size: int  # side the encoder saw (the evaluation view's)


def _load_run(run_dir: str | Path) -> _Run:
    """The run's encoder and input geometry from its checkpoint alone (selfsup.engine.Run): export and
    embedding never read the training data."""
    run = Run(run_dir)
    return _Run(run.cfg, run.encoder.eval(), run.meta, run.spec.channels, run.spec.stored_size, run.spec.size)


# ------------------------------------------------------------------------------------------ export


def supported_formats(backbone: str) -> tuple[str, ...]:
    """The export formats that can express a backbone (by name)."""
    if backbone in RESNET_LAYERS:
        return FORMATS
    if backbone in VIT_SIZES:
        return ("timm", "safetensors", "hf")
    return ("safetensors",)


def encoder_meta(run: _Run) -> dict:
    """How to rebuild and feed the run's encoder: backbone constructor arguments, method, input
    channels, image side and normalisation, feature size, checkpoint step."""
    args = getattr(run.encoder, "backbone_args", None)
    if args is None:  # CMC's two encoders, Lab encoders, CPC's context network: not one backbone
        raise SelfsupError(
            f"the {run.cfg.method_name} encoder is a {type(run.encoder).__name__} that combines several "
            f"networks, not one backbone built by create_backbone, so no format can rebuild it from "
            f"constructor arguments; load it with selfsup.eval.run.load_run(RUN_DIR) instead"
        )
    mean, std = run.cfg.data.mean, run.cfg.data.std
    if mean is None or std is None:  # a run's config.yaml records them: this one was edited
        raise SelfsupError(
            "the run's config.yaml has no data.mean / data.std: add the normalisation the encoder was trained "
            "with (per-channel lists)"
        )
    return {
        "backbone": dict(args),
        "method": run.cfg.method_name,
        "in_channels": args["in_channels"],
        "image_size": run.size,
        "mean": list(mean),
        "std": list(std),
        "num_features": run.encoder.num_features,
        "step": run.meta.get("step"),
        "selfsup_version": __version__,
    }


def _resnet_stem(m: nn.Module, b: dict) -> None:
    """Make a torchvision/timm ResNet's stem the one ours was built with."""
    assert isinstance(m.conv1, nn.Conv2d)  # torchvision's and timm's default ResNet stem: one convolution
    c, width = b["in_channels"], m.conv1.out_channels
    if b.get("small_stem", True):
        m.conv1 = nn.Conv2d(c, width, 3, b.get("stem_stride", 1), 1, bias=False)
        m.maxpool = nn.Identity()
    elif c != m.conv1.in_channels:
        m.conv1 = nn.Conv2d(c, width, 7, 2, 3, bias=False)


def torchvision_model(meta: dict) -> nn.Module:
    """torchvision's ResNet matching an exported ResNet encoder (``meta`` from ``export_encoder`` or
    the .json sidecar), classifier replaced by ``nn.Identity()``: images -> pooled features."""
    from torchvision.models.resnet import ResNet

    b = meta["backbone"]
    _check_format(b["name"], "torchvision")
    block, layers = RESNET_LAYERS[b["name"]]  # torchvision's own BasicBlock / Bottleneck classes
    m = ResNet(block, layers)
    _resnet_stem(m, b)
    m.fc = nn.Identity()
    return m.eval()


def timm_model(meta: dict) -> nn.Module:
    """timm's VisionTransformer (for our ViTs) or ResNet (for our ResNets) matching an exported
    encoder, with no classifier (``num_classes=0``): images -> pooled features."""
    b = meta["backbone"]
    _check_format(b["name"], "timm")
    m: nn.Module
    if b["name"] in VIT_SIZES:
        from timm.models.vision_transformer import VisionTransformer

        # no_embed_class: the [CLS] token gets no position (MAE's layout, ours); token pooling = [CLS]
        m = VisionTransformer(**timm_args(b))
    else:
        from timm.models.resnet import ResNet

        m = ResNet(**timm_args(b))
        _resnet_stem(m, b)
    # plain attributes (not parameters or submodules), which nn.Module's __setattr__ is not typed for
    pretrained_cfg = timm_pretrained_cfg(meta)
    setattr(m, "pretrained_cfg", pretrained_cfg)
    setattr(m, "default_cfg", pretrained_cfg)
    return m.eval()


def timm_args(b: dict) -> dict:
    """Keyword arguments of timm's VisionTransformer / ResNet for our backbone ``b`` (JSON-ready for
    the ``model_args`` of a timm config.json, except a ResNet's block class, given by name)."""
    if b["name"] in VIT_SIZES:
        dim, depth, heads = VIT_SIZES[b["name"]]
        return dict(
            img_size=b["image_size"],
            patch_size=b["patch_size"],
            in_chans=b["in_channels"],
            num_classes=0,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            global_pool=b.get("pool", "token"),
            fc_norm=False,
            no_embed_class=True,
        )  # fc_norm off: the norm comes before the pooling, as ours
    from timm.models.resnet import BasicBlock, Bottleneck

    block, layers = RESNET_LAYERS[b["name"]]
    return dict(
        block=BasicBlock if block.__name__ == "BasicBlock" else Bottleneck,
        layers=list(layers),
        num_classes=0,
        in_chans=b["in_channels"],
    )


def timm_pretrained_cfg(meta: dict) -> dict:
    """timm's description of the inputs (what ``timm.data.resolve_data_config`` reads): the run's
    channels, side and normalisation, not ImageNet's 3x224x224 and statistics. Images are resized
    whole (crop_pct 1), bilinearly, as selfsup's evaluation view does."""
    c, s = meta["in_channels"], meta["image_size"]
    return {
        "input_size": (c, s, s),
        "mean": tuple(meta["mean"]),
        "std": tuple(meta["std"]),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": 0,
        "fixed_input_size": meta["backbone"]["name"].startswith("vit"),
        "first_conv": "conv1" if not meta["backbone"]["name"].startswith("vit") else "patch_embed.proj",
        "classifier": "head" if meta["backbone"]["name"].startswith("vit") else "fc",
        "license": "the run's data licence",
    }


def _check_format(backbone: str, fmt: str) -> None:
    if fmt not in FORMATS:
        raise SelfsupError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
    ok = supported_formats(backbone)
    if fmt not in ok:
        why = (
            " (torchvision's ViT has another module layout; timm's matches ours)"
            if fmt == "torchvision" and "timm" in ok
            else ""
        )
        raise SelfsupError(
            f"--format {fmt} cannot express a {backbone} backbone{why}: export {backbone} with "
            f"--format {' or --format '.join(ok)}"
        )


def _snippet(meta: dict, fmt: str, path: str) -> str:
    """The few lines of code that load an export (printed, in the sidecar, in docs/files.md)."""
    if fmt == "safetensors":
        return f"from selfsup.export import load_encoder\nm = load_encoder({path!r})  # eval mode"
    b = meta["backbone"]
    load = f"load_file({path!r})" if path.endswith(".safetensors") else f"torch.load({path!r}, weights_only=True)"
    head = ["import torch", "from torch import nn"]
    if path.endswith(".safetensors"):
        head.append("from safetensors.torch import load_file")

    if b["name"] in VIT_SIZES:  # timm (torchvision's ViT was refused before)
        dim, depth, heads = VIT_SIZES[b["name"]]
        lines = head + [
            "from timm.models.vision_transformer import VisionTransformer",
            f"m = VisionTransformer(img_size={b['image_size']}, patch_size={b['patch_size']}, "
            f"in_chans={b['in_channels']}, num_classes=0, embed_dim={dim}, depth={depth}, "
            f"num_heads={heads}, global_pool='{b.get('pool', 'token')}', fc_norm=False, no_embed_class=True)",
        ]
    else:
        block, layers = RESNET_LAYERS[b["name"]]
        if fmt == "torchvision":
            head.append("import torchvision")
            build = (
                f"torchvision.models.{b['name']}()"
                if b["name"] != "resnet10"
                else f"torchvision.models.resnet.ResNet(torchvision.models.resnet.{block.__name__}, {layers})"
            )
        else:
            head.append("import timm")
            build = (
                f"timm.create_model({b['name']!r}, num_classes=0, in_chans={b['in_channels']})"
                if b["name"] != "resnet10"
                else f"timm.models.resnet.ResNet(timm.models.resnet.{block.__name__}, {layers}, num_classes=0, "
                f"in_chans={b['in_channels']})"
            )
        lines = head + [f"m = {build}"]
        if b["small_stem"]:
            lines += [
                f"m.conv1 = nn.Conv2d({b['in_channels']}, 64, 3, {b['stem_stride']}, 1, bias=False)  "
                f"# selfsup's small-image stem: 3x3 conv, no max-pool",
                "m.maxpool = nn.Identity()",
            ]
        elif b["in_channels"] != 3 and fmt == "torchvision":
            lines.append(f"m.conv1 = nn.Conv2d({b['in_channels']}, 64, 7, 2, 3, bias=False)")
        if fmt == "torchvision":
            lines.append("m.fc = nn.Identity()  # features, not classes")
    lines += [
        f"m.load_state_dict({load})",
        "m.eval()",
        f"# inputs: [B, {b['in_channels']}, {meta['image_size']}, {meta['image_size']}] in [0, 1], "
        f"normalised with mean {meta['mean']} and std {meta['std']}; outputs [B, {meta['num_features']}]",
    ]
    return "\n".join(lines)


def export_encoder(run_dir: str | Path, fmt: str = "safetensors", out: str | Path | None = None) -> tuple[Path, dict]:
    """Write the encoder of a run's last checkpoint in format ``fmt`` (one of ``FORMATS``) to ``out``
    (default RUN_DIR/export/encoder_<fmt>.pth, .safetensors for the safetensors format; a
    torchvision/timm ``out`` ending in .safetensors is written as safetensors). Returns (path, meta);
    ``meta['snippet']`` is the code that loads the file."""
    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise SelfsupError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
    run = _load_run(run_dir)
    meta = encoder_meta(run)
    _check_format(meta["backbone"]["name"], fmt)
    sd = {k: v.detach().contiguous().cpu() for k, v in run.encoder.state_dict().items()}
    suffix = {"safetensors": ".safetensors", "hf": ""}.get(fmt, ".pth")  # .pth: what torchvision/timm users torch.load
    out = Path(out) if out else Path(run_dir) / "export" / f"encoder_{fmt}{suffix}"
    if fmt != "hf" and out.is_dir():
        raise SelfsupError(f"--out {out} is a directory: give a file name, e.g. {out / f'encoder_{fmt}{suffix}'}")
    if fmt == "hf" and out.is_file():
        raise SelfsupError(f"--out {out} is a file: --format hf writes a directory (config.json + model.safetensors)")
    if fmt != "safetensors":
        target = (torchvision_model if fmt == "torchvision" else timm_model)(meta)
        _check_fits(sd, target.state_dict(), meta, fmt)
    if fmt == "hf":
        return _write_hf(sd, meta, out)
    meta = {**meta, "format": fmt, "snippet": _snippet(meta, fmt, str(out))}
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        save_file(sd, out, metadata={**{k: json.dumps(v) for k, v in meta.items()}, _MAGIC[0]: _MAGIC[1]})
        return out, meta
    if out.suffix == ".safetensors":
        save_file(sd, out)
    else:
        torch.save(sd, out)  # a plain dict of tensors: torch.load(..., weights_only=True) reads it
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return out, meta


def _write_hf(sd: dict, meta: dict, out: Path) -> tuple[Path, dict]:
    """A timm model directory: config.json (architecture, model_args, pretrained_cfg with the run's
    input spec) + model.safetensors, which ``timm.create_model("local-dir:OUT", pretrained=True)``
    builds and loads (and a Hugging Face Hub repository holds as it is)."""
    from safetensors.torch import save_file

    b = meta["backbone"]
    args = timm_args(b)
    if b["name"] in VIT_SIZES:
        architecture = "vit_tiny_patch16_224"  # any timm ViT entry point: model_args give every dimension
    elif b.get("small_stem", True):
        raise SelfsupError(
            f"--format hf: timm's ResNet has no 3x3 small-image stem (this run's {b['name']} has one), "
            f"so timm.create_model cannot rebuild it from a config; use --format timm (a state dict and the "
            f"code that builds the model) or --format safetensors"
        )
    else:
        architecture = {"resnet50": "resnet50", "resnet34": "resnet34"}.get(b["name"], "resnet18")
        args = {k: v for k, v in args.items() if k != "block"}  # the entry point's block; layers set the depth
    cfg = {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": meta["num_features"],
        "model_args": args,
        "pretrained_cfg": {**timm_pretrained_cfg(meta), "input_size": list(timm_pretrained_cfg(meta)["input_size"])},
        "selfsup": {k: v for k, v in meta.items() if k != "snippet"},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, out / "model.safetensors")
    snippet = (
        f"import timm\nm = timm.create_model('local-dir:{out}', pretrained=True)  # eval() for features\n"
        f"cfg = timm.data.resolve_data_config({{}}, model=m)  # the run's input size, mean and std"
    )
    meta = {**meta, "format": "hf", "snippet": snippet}
    cfg["selfsup"]["snippet"] = snippet
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return out, meta


def _check_fits(sd: dict, want: dict, meta: dict, fmt: str) -> None:
    """Our keys and shapes must be the target's exactly (the promise is a strict load)."""
    name = meta["backbone"]["name"]
    if set(sd) != set(want):
        diff = sorted(set(sd) ^ set(want))[:4]
        raise RuntimeError(f"{name}: selfsup's keys no longer match {fmt}'s ({diff}); this is a bug in selfsup.export")
    if any(sd[k].shape != want[k].shape for k in sd):
        # the only structural freedom left is the channel widths: a width multiplier
        raise SelfsupError(
            f"this run's {name} has width={meta['backbone'].get('width')} "
            f"({sd['conv1.weight'].shape[0]} stem channels instead of 64); {fmt}'s ResNet has fixed "
            f"channel widths and cannot express it: export with --format safetensors "
            f"(selfsup.export.load_encoder rebuilds it)"
        )


def read_export_meta(path: str | Path) -> dict:
    """The metadata ``export_encoder`` put in an exported .safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        raw = f.metadata() or {}
    if raw.get(_MAGIC[0]) != _MAGIC[1]:
        raise SelfsupError(
            f"{path} is not an encoder written by `selfsup export --format safetensors` "
            f"(its metadata has no {_MAGIC[0]}={_MAGIC[1]}); a checkpoint's model.safetensors holds "
            f"the whole method: use selfsup.eval.run.load_run(RUN_DIR)"
        )
    return {k: json.loads(v) for k, v in raw.items() if k != _MAGIC[0]}


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild an encoder exported with ``--format safetensors``: ``create_backbone(**meta['backbone'])``
    and a strict load of its weights; returned in eval mode, with the metadata as ``.export_meta``."""
    from safetensors.torch import load_file

    meta = read_export_meta(path)
    encoder = create_backbone(**meta["backbone"])
    encoder.load_state_dict(load_file(str(path)), strict=True)
    setattr(encoder, "export_meta", meta)  # a plain attribute, which nn.Module's __setattr__ is not typed for
    return encoder.eval()


# ------------------------------------------------------------------------------------------ embed


def image_files(images: str | Path) -> tuple[Path, list[Path], list[Path]]:
    """(root the listed paths are relative to, image files, other files): every image-extension
    file below a folder (sorted, hidden ones left out, as the image-folder dataset lists them) and
    the files that are not images by extension; or one file."""
    p = Path(images)
    if p.is_file():
        return p.parent, [p], []
    if not p.is_dir():
        raise DatasetError(f"{p} does not exist: pass a folder of images or one image file")
    files, others = list_image_files(p), [f for f in list_other_files(p) if not f.name.startswith(".")]
    if not files:
        raise DatasetError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) below {p}"
            + (f"; it holds {len(others)} other files" if others else "")
        )
    return p, files, others


def embed_images(
    run_dir: str | Path,
    images: str | Path,
    out: str | Path,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Features of image files from the run's encoder: float32 [N, F] to ``out`` (.npy, with the
    file list, one path relative to ``images`` per row as a JSON string per line (a file name may hold a
    newline), in OUT.files.jsonl; or .parquet with columns
    path and features). Images are decoded per batch (never all at once), resized and centre-cropped
    like the image-folder dataset, converted to the run's channels and viewed as evaluation does.
    Unreadable files are skipped with one warning that counts them."""
    out = Path(out)
    if out.suffix not in (".npy", ".parquet"):
        raise SelfsupError(f"--out {out}: write features to a .npy file (with a .files.jsonl list) or a .parquet table")
    if out.suffix == ".parquet":
        try:  # checked before the work, not after it
            import pyarrow  # noqa: F401
        except ImportError:
            raise SelfsupError("writing .parquet needs pyarrow: pip install pyarrow, or use --out FILE.npy") from None
    if batch_size < 1:
        raise SelfsupError(f"--batch-size {batch_size}: give at least 1")
    run = _load_run(run_dir)
    root, files, others = image_files(images)
    if others:
        warnings.warn(
            f"embed: ignored {len(others)} non-image file{'s' * (len(others) != 1)} (by extension): "
            + ", ".join(f.relative_to(root).as_posix() for f in others[:5])
            + (", ..." if len(others) > 5 else ""),
            stacklevel=2,
        )
    cfg = run.cfg
    run.encoder.to(device)
    feats, kept, skipped = [], [], []
    for done, batch, bad in image_batches(files, run.channels, run.stored_size, batch_size, "embedding", progress):
        skipped += bad
        if done:
            feats.append(
                extract_features(
                    run.encoder, batch, cfg.data.mean, cfg.data.std, run.size, batch_size=len(batch), runtime=device
                ).numpy()
            )
            kept += done
    warn_skipped(skipped)
    if not kept:
        raise DatasetError(f"none of the {len(files)} image files in {images} could be decoded")
    x = np.concatenate(feats).astype(np.float32)
    names = [f.relative_to(root).as_posix() for f in kept]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"path": names, "features": pa.array(list(x), type=pa.list_(pa.float32()))})
        pq.write_table(table, out)
        listing = None
    else:
        np.save(out, x)
        listing = out.with_suffix(".files.jsonl")  # JSON strings: a newline in a file name stays in its line
        listing.write_text("".join(json.dumps(n) + "\n" for n in names))
    return {
        "out": str(out),
        "files": str(listing) if listing else None,
        "rows": len(x),
        "features": x.shape[1],
        "skipped": len(skipped),
    }
