"""A run directory, loaded once: its config, its method with the trained weights, and the input
spec that travels with the encoder.

Every consumer of a trained run (evaluation protocols, classify, predict, select, neighbours,
export, embed) starts here. What the encoder needs to be used — its input channels, the side
images are decoded to, the side it encodes, the normalisation — is the ``InputSpec``, written
into every checkpoint's meta.json by training, so a run can be rebuilt and used on new images
without reading its training data again (which may have moved, or lived on another machine).
Runs written before the spec existed fall back to reading their training split once.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.backbones import create_backbone
from selfsup.config import RunConfig, eval_size, load_run_config, view_size
from selfsup.data import DatasetError, ImageDataset
from selfsup.data.dataset import match_channels, resize_images
from selfsup.errors import SelfsupError
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime
from selfsup.methods.base import Method
from selfsup.registry import BuildContext, get_method_spec, instantiate
from selfsup.checkpoint import CheckpointDamaged, CheckpointError, load_checkpoint, read_meta
from selfsup.data import load_dataset
from selfsup.data.stream import load_imagefolder_stream


@dataclass(frozen=True)
class InputSpec:
    """What an encoder's input must look like (timm's pretrained_cfg for selfsup's runs).

    ``stored_size``: the side a data source decodes images to (data.image_size, or the data's own);
    ``size``: the side the encoder is evaluated at (eval.size, else the views'); ``mean``/``std``:
    per-channel normalisation of [0, 1] pixels."""

    channels: int
    stored_size: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_dict(self) -> dict:
        d = asdict(self)
        return {**d, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(
            int(d["channels"]),
            int(d["stored_size"]),
            int(d["size"]),
            tuple(map(float, d["mean"])),
            tuple(map(float, d["std"])),
        )

    @classmethod
    def of(cls, cfg: RunConfig, channels: int, stored_size: int) -> "InputSpec":
        """The spec of a run trained with ``cfg`` on images of ``channels`` x ``stored_size``^2."""
        if cfg.data.mean is None or cfg.data.std is None:
            raise SelfsupError("the normalisation (data.mean, data.std) is not known yet: training computes it first")
        return cls(channels, stored_size, eval_size(cfg, stored_size), tuple(cfg.data.mean), tuple(cfg.data.std))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] of any channels and side -> this encoder's channels at ``stored_size``."""
        images = match_channels(images, self.channels)
        if tuple(images.shape[-2:]) != (self.stored_size, self.stored_size):
            images = resize_images(images, self.stored_size)
        return images


def build_encoder(cfg: RunConfig, in_channels: int, image_size: int | None = None) -> torch.nn.Module:
    """A fresh backbone as ``cfg.backbone`` says, for views of side ``image_size`` (default: views.size or
    data.image_size)."""
    b = cfg.backbone
    size = image_size or cfg.views.size or cfg.data.image_size
    return create_backbone(
        b.name,
        in_channels=in_channels,
        width=b.width,
        small_stem=b.small_stem,
        stem_stride=b.stem_stride,
        image_size=size,
        patch_size=b.patch_size,
        pos_embed=b.pos_embed,
        drop_path=b.drop_path,
        pool=b.pool,
    )


def build_method(
    cfg: RunConfig,
    in_channels: int,
    num_samples: int | None = None,
    image_size: int | None = None,
    encoder: torch.nn.Module | None = None,
) -> Method:
    """The configured method around ``encoder`` (default: a fresh backbone, ``build_encoder``).
    ``num_samples``: the training-set size (memory banks); ``image_size``: the side of the views
    (decoders); default: views.size or data.image_size. Methods copy the encoder they are given into
    their targets and teachers, so weights a run starts from go into ``encoder`` before this."""
    spec = get_method_spec(cfg.method_name)
    size = image_size or cfg.views.size or cfg.data.image_size
    encoder = encoder if encoder is not None else build_encoder(cfg, in_channels, size)
    norm = (cfg.data.mean, cfg.data.std) if cfg.data.mean is not None else None
    ctx = BuildContext(num_samples, (in_channels, size, size) if size else None, norm)
    return instantiate(spec, encoder, cfg.method, ctx)


def checkpoint_meta(cfg: RunConfig, **extra) -> dict:
    """meta.json: the method, every structural backbone field ({"name": "convnet", "width": 0.25, ...}) and
    the data's name, side and limit, which config.load_run_config compares with an edited config.yaml before
    any weights are read, and (``extra``) the input spec, training-set size, step and epoch."""
    fields = ["name", "width", "small_stem", "stem_stride"]
    if cfg.backbone.name.startswith("vit"):  # drop_path is left out: it regularises, the weights fit either way
        fields += ["patch_size", "pos_embed", "pool"]
    backbone = {k: getattr(cfg.backbone, k) for k in fields}
    data = {k: getattr(cfg.data, k) for k in ("name", "image_size", "limit")}  # data.mean/std: in extra's input
    return {"method": cfg.method_name, "backbone": backbone, "data": data, **extra}


@functools.lru_cache(maxsize=4)
def _dataset(name: str, split: str, root, image_size, stream: bool = False):
    """A split, loaded once per process: one evaluation reads the same split several times (building
    the method, its features, the protocol), and the synthetic sets are generated, not just read.
    ``stream`` (a run trained with data.stream=true): the training split stays a listed folder whose
    images are decoded batch by batch where they are used; test splits are read into memory, as
    training reads them."""
    if stream and split == "train":
        return load_imagefolder_stream(split, Path(root).expanduser() if root else None, image_size)

    return load_dataset(name, split, root, image_size)


def dataset_split(cfg: RunConfig, split: str):
    """The run's own ``split`` ("train" or "test") as it trained on it (cached per process)."""
    return _dataset(cfg.data.name, split, cfg.data.dir, cfg.data.image_size, cfg.data.stream and split == "train")


def run_split(cfg: RunConfig, split: str) -> ImageDataset:
    """A run's own ``split``; when its data is gone, an error naming where it was looked for and how
    to evaluate without it (labels of the user's own)."""
    try:
        return dataset_split(cfg, split)
    except DatasetError as e:
        where = f" at {cfg.data.dir}" if cfg.data.dir else ""
        raise DatasetError(
            f"this needs the run's {split} split ({cfg.data.name}{where}), which could not be read: "
            f"{e}. Evaluate with your own labels instead (--labels DIR|FILE.csv [--test DIR|FILE.csv]); "
            f"select and neighbors take the folder as --images DIR"
        ) from None


def labelled_splits(cfg: RunConfig) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of a run's own dataset, both labelled, or an error saying how to bring labels."""
    train = run_split(cfg, "train")
    try:
        test = dataset_split(cfg, "test")
    except DatasetError:
        test = None
    if train.labels is None or test is None or test.labels is None:
        where = f" at {cfg.data.dir}" if cfg.data.dir else ""
        raise DatasetError(
            f"{cfg.data.name}{where} has no labelled train and test splits to evaluate on; give the "
            f"labels you have: --labels DIR (one sub-folder per class) or --labels FILE.csv (path,label "
            f"rows), optionally --test DIR|FILE.csv (without it, cross-validation)"
        )
    return train, test


def _first_meta(run_dir: Path) -> dict | None:
    for ckpt in (run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "previous"):
        try:
            return read_meta(ckpt)
        except CheckpointDamaged:
            continue
    return None


class Run:
    """A trained run: ``cfg``, ``method`` (weights of checkpoints/last, or previous when last is
    damaged), ``meta`` (the checkpoint's meta.json plus ``checkpoint_dir``), ``spec`` (InputSpec)
    and ``num_samples``. Only runs written before the input spec existed read their training data here."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.cfg = load_run_config(self.dir)  # 'not a run directory' and edited configs fail first
        meta = _first_meta(self.dir)
        if meta is None:
            raise CheckpointError(
                f"{self.dir} has no checkpoint (no checkpoints/last/meta.json): the run has not saved "
                f"one yet; let it train (selfsup pretrain --resume {self.dir}) or point at another run"
            )
        if isinstance(meta.get("input"), dict) and meta.get("num_samples"):
            self.spec = InputSpec.from_dict(meta["input"])
            self.num_samples = int(meta["num_samples"])
        else:  # written before checkpoints carried their input spec: the training split tells
            train = self.split("train")
            self.num_samples = min(self.cfg.data.limit, len(train)) if self.cfg.data.limit else len(train)
            if self.cfg.data.mean is None or self.cfg.data.std is None:
                raise SelfsupError(
                    f"{self.dir / 'config.yaml'} has no data.mean / data.std: add the normalisation the "
                    f"encoder was trained with (per-channel lists)"
                )
            self.spec = InputSpec.of(self.cfg, train.channels, train.image_size)
        self.method = build_method(
            self.cfg, self.spec.channels, self.num_samples, view_size(self.cfg, self.spec.stored_size)
        )
        meta, _, used = load_checkpoint(
            self.dir / "checkpoints" / "last", self.method, {"method": self.cfg.method_name}, with_state=False
        )
        self.meta = {**meta, "checkpoint_dir": str(used)}

    @property
    def encoder(self) -> torch.nn.Module:
        return self.method.evaluated_encoder

    def split(self, split: str) -> ImageDataset:
        """The run's own ``split`` (see ``run_split``)."""
        return run_split(self.cfg, split)

    def label_search(self) -> list[Path]:
        """Folders that relative paths of a user's label CSV may be relative to: the pretraining folder."""
        d = self.cfg.data.dir
        return [Path(d).expanduser()] if d and Path(d).expanduser().is_dir() else []

    def features(self, images, device: str | torch.device = "cpu", batch_size: int | None = None) -> torch.Tensor:
        """float32 [N, F] features of uint8 images [N, C, H, W] (prepared to the spec first)."""
        images = self.spec.prepare(images) if isinstance(images, torch.Tensor) else images
        return extract_features(
            self.encoder,
            images,
            self.spec.mean,
            self.spec.std,
            self.spec.size,
            batch_size=batch_size or self.cfg.eval.batch_size,
            runtime=Runtime(device, self.cfg.train.precision),
        )


def load_run(run_dir: str | Path) -> tuple[RunConfig, Method, dict]:
    """(config, method with the last checkpoint's weights, checkpoint meta): ``Run`` as a tuple."""
    run = Run(run_dir)
    return run.cfg, run.method, run.meta


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


def row_seconds(rows: list[dict]) -> list[float] | None:
    """The training time (s) of every metrics row: its own ``train_seconds``, or — monitor rows of
    runs from before they carried one — interpolated from the training rows' steps around it.
    None when the run logged no time at all."""
    timed = sorted((r["step"], r["train_seconds"]) for r in rows if "train_seconds" in r and "step" in r)
    if not timed:
        return None
    steps, secs = zip(*timed)
    return [
        r["train_seconds"] if "train_seconds" in r else float(np.interp(r.get("step", 0), steps, secs)) for r in rows
    ]
