"""selfsup: self-supervised visual representation learning — every method, one loop, one evaluation.

>>> import selfsup
>>> method = selfsup.create_method("simclr", backbone="resnet18", in_channels=1, width=0.25)
>>> method.encoder.num_features
128
"""

from __future__ import annotations

__version__ = "0.1.0"

from selfsup.backbones import create_backbone, list_backbones
from selfsup.config import compose, from_dict, load_run_config
from selfsup.data import list_datasets as _list_datasets
from selfsup.errors import SelfsupError
from selfsup.registry import BuildContext, get_method_spec, instantiate, list_methods
import selfsup.methods  # noqa: E402,F401  registers every method: importing any selfsup module fills the registry


def create_method(
    name: str,
    backbone="resnet18",
    in_channels: int = 3,
    width: float = 1.0,
    small_stem: bool = True,
    num_samples: int | None = None,
    image_size: int | None = None,
    normalization: tuple | None = None,
    **config,
):
    """Build a registered method around a backbone (a name or an ``nn.Module`` with ``num_features``).

    ``config`` overrides fields of the method's config dataclass, e.g. ``temperature=0.5``.
    ``num_samples`` is the training-set size, for methods with a memory bank (InstDisc, CMC);
    ``image_size`` the side of the training views, for methods with a decoder (autoencoders);
    ``normalization`` the views' (mean, std), for methods that need absolute colours (colorization).
    """
    spec = get_method_spec(name)
    cfg = from_dict(spec.config, config, "method")
    if isinstance(backbone, str):
        backbone = create_backbone(
            backbone, in_channels=in_channels, width=width, small_stem=small_stem, image_size=image_size
        )
    return instantiate(
        spec,
        backbone,
        cfg,
        BuildContext(num_samples, (in_channels, image_size, image_size) if image_size else None, normalization),
    )


def pretrain(
    method: str = "simclr",
    data: str = "fashion-mnist",
    data_dir: str | None = None,
    budget: str | None = None,
    epochs: int | None = None,
    out: str | None = None,
    config: str | None = None,
    overrides=(),
    recipe: bool = True,
    resume: bool = False,
    progress_bar: bool = True,
) -> dict:
    """Pretrain as ``selfsup pretrain`` does, with the same configuration (selfsup.config.compose:
    paper defaults < recipe < ``config`` file < these arguments < ``overrides`` such as
    "optim.lr=0.5"), into ``out``. Refuses a directory that holds another run unless ``resume``.
    Returns the run's summary (steps, epochs, last monitor values) with "run" = the directory."""
    from selfsup.train import fit  # the API is above every layer: `import selfsup.data` must not load the loop

    if resume:
        if out is None:
            raise SelfsupError("resume=True continues the run in out=RUN_DIR: name it")
        return {"run": str(out), **fit(load_run_config(out), out, resume=True, progress_bar=progress_bar)}
    flags: dict = {"method": {"name": method}, "data": {"name": data, **({"dir": data_dir} if data_dir else {})}}
    if epochs is not None:
        flags["train"] = {"epochs": epochs, "budget": None}
    if budget is not None:
        flags.setdefault("train", {})["budget"] = budget
    cfg = compose(flags, config, overrides, use_recipe=recipe).cfg
    cfg.out = str(out or cfg.out or f"runs/{cfg.method_name}-{cfg.data.name}")
    return {"run": cfg.out, **fit(cfg, cfg.out, progress_bar=progress_bar)}


def evaluate(run_dir: str, protocol: str = "knn", device: str = "cpu", **options) -> dict:
    """``selfsup eval PROTOCOL RUN_DIR``: e.g. ``evaluate(run, "linear", labels="labelled/")`` on a
    user's labels (cross-validated unless ``test=``), ``evaluate(run, "semi", fractions=(0.01,))``."""
    from selfsup.eval.run import evaluate as _evaluate  # as fit above: loaded when called

    return _evaluate(run_dir, protocol, device=device, **options)


def list_datasets() -> list[str]:
    return _list_datasets()


__all__ = [
    "SelfsupError",
    "__version__",
    "create_backbone",
    "create_method",
    "evaluate",
    "list_backbones",
    "list_datasets",
    "list_methods",
    "pretrain",
]
