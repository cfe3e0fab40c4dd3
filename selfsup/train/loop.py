"""The one training loop: it knows the method contract and nothing about any method.

fit(): data -> batched views on the device -> method.training_step -> one step of the shared
selfsup.nn.stepper.Stepper (bf16 autocast, gradient accumulation, clipping, the schedule) -> the clock
(selfsup.train.budget) -> method.on_step_end. The monitor, the pictures and the curves are callbacks
(selfsup.train.callbacks). Writes metrics.jsonl, TensorBoard events and atomic checkpoints; resumes exactly
(weights, optimiser, RNG streams, data order, position in the epoch).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from selfsup import dist
from selfsup.config import RunConfig, eval_size, load_run_config, parse_duration, save_config
from selfsup.transforms.views import view_config
from selfsup.backbones.timm_models import load_backbone_weights
from selfsup.data.loader import InMemoryLoader
from selfsup.engine import InputSpec, build_encoder, build_method, checkpoint_meta
from selfsup.errors import SelfsupError
from selfsup.log import console, logger as log  # `logger` in _fit is the run's metrics logger
from selfsup.provenance import provenance
from selfsup.methods.base import EpochContext, Method
from selfsup.data.batch import Batch
from selfsup.nn.runtime import Runtime
from selfsup.nn.stepper import Stepper
from selfsup.checkpoint import RunLock, load_checkpoint, read_meta, save_checkpoint
from selfsup.train.loggers import RunLogger, check_loggers
from selfsup.train.budget import Clock
from selfsup.train.callbacks import Callback, Curves, Fit, Monitor, Pictures, call
from selfsup.train.optim import build_optimizer, lr_factor
from selfsup.transforms import Views
from selfsup.config import parse_override, resolve, to_dict
from selfsup.data import DatasetError, ImageDataset, load_dataset
from selfsup.data.folder import choose_image_size
from selfsup.data.stream import StreamedImageFolder, StreamLoader, load_imagefolder_stream, sample_images
from selfsup.data.text import tokenize
from selfsup.nn.sync_bn import convert_sync_batchnorm


class TrainingError(SelfsupError, RuntimeError):
    """Training cannot go on; the message says why and what to change."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"train.device={name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device={name} but no CUDA device is visible; use train.device=cpu")
    if dev.type == "cuda" and dev.index is None and dist.is_dist():
        dev = torch.device("cuda", dist.local_rank())  # one GPU per process, as torchrun assigns them
    return dev


def distribute(method: Method, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """What the loop calls for a step: the method itself in one process; in a process group, the
    method (BatchNorm synchronised if train.sync_bn) inside DistributedDataParallel, which averages
    the gradients over processes while the backward pass runs.

    No buffer broadcast before each forward: queues and memory banks are filled with keys gathered from every
    process, so they are already equal everywhere, and broadcasting a 65536-key queue every step
    would cost more than the step; BatchNorm running statistics stay per process (rank 0's are
    saved), or global with sync_bn. ``find_unused_parameters`` (an extra graph traversal a step) only
    for methods whose steps can leave parameters out (``Needs.skips_parameters``)."""
    if not dist.is_dist():
        return method
    if sync_bn:
        convert_sync_batchnorm(method, device)
    from torch.nn.parallel import DistributedDataParallel

    # torch >= 2.14 names it forward_sync_buffers (and deprecates broadcast_buffers)
    no_sync = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else "broadcast_buffers"
    )
    return DistributedDataParallel(
        method,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=method.needs.skips_parameters,
        gradient_as_bucket_view=True,
        **{no_sync: False},  # type: ignore[arg-type]  # one keyword, named by the torch version
    )


def load_data(cfg: RunConfig, choose_size: bool = True, with_test: bool = True):
    """Train and (if any, and ``with_test``) test split, normalisation statistics written back into the
    config; an image folder's side too (``choose_size``; a resumed run keeps the one its config
    recorded, or the old default 32 of a run from before the choice was recorded). Training reads no
    test split (``with_test=False``)."""
    if cfg.data.name == "imagefolder" and cfg.data.image_size is None and cfg.data.dir and choose_size:
        cfg.data.image_size, why = choose_image_size(Path(cfg.data.dir))  # config.yaml records the choice
        if dist.is_main():
            log.info(f"imagefolder: training at {cfg.data.image_size} px ({why}); data.image_size=N chooses another")
    if cfg.data.stream:
        if cfg.data.name != "imagefolder":
            raise TrainingError(
                f"data.stream=true streams an image folder from disk; {cfg.data.name} is loaded into "
                f"memory (it fits): drop data.stream, or use --data imagefolder --data-dir DIR"
            )
        train: ImageDataset | StreamedImageFolder = load_imagefolder_stream(
            "train", Path(cfg.data.dir).expanduser() if cfg.data.dir else None, cfg.data.image_size
        )
    else:
        train = load_dataset(cfg.data.name, "train", cfg.data.dir, cfg.data.image_size)
    if cfg.data.limit:
        train = train.subset(torch.arange(min(cfg.data.limit, len(train))))
    test = None
    try:  # unlabelled folders have no test split
        test = load_dataset(cfg.data.name, "test", cfg.data.dir, cfg.data.image_size) if with_test else None
    except DatasetError:
        pass
    if cfg.data.mean is None or cfg.data.std is None:
        x = sample_images(train, 10000 if not cfg.data.stream else 2000).float() / 255
        cfg.data.mean = [round(v, 4) for v in x.mean((0, 2, 3)).tolist()]
        cfg.data.std = [round(max(v, 1e-3), 4) for v in x.std((0, 2, 3)).tolist()]
    return train, test


def _rng_state(gen: torch.Generator) -> dict:
    s: dict[str, Any] = {"torch": torch.get_rng_state(), "views": gen.get_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(s["torch"])
    gen.set_state(s["views"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def fit(
    cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress_bar: bool = True, changes: dict | None = None
) -> dict:
    """Pretrain ``cfg.method`` and return a summary (steps, epochs, last monitor values). The run
    directory is locked while training (RUN_DIR/.lock): a second writer fails at once."""
    run_dir = Path(run_dir)
    t_cfg = cfg.train
    dist.init_from_env(t_cfg.device)  # a no-op unless torchrun started this process
    check_loggers(t_cfg.loggers)  # a tracker that is not installed fails before anything is written
    if not resume and (run_dir / "checkpoints" / "last").exists():  # as the CLI: never mix two runs in one place
        raise TrainingError(
            f"{run_dir} already holds a run: continue it with `selfsup pretrain --resume {run_dir}` "
            f"(Python: selfsup.train.resume) or choose another output directory"
        )
    dist.barrier()  # every process has checked before rank 0 writes into the run directory
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"--out {run_dir} is a file, not a directory: choose another --out")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainingError(
            f"cannot create the run directory {run_dir} ({e.strerror or e}): choose a writable --out"
        ) from None
    lock = RunLock(run_dir) if dist.is_main() else contextlib.nullcontext()  # one writer per run directory
    try:
        with lock, console():  # selfsup's messages on stdout unless the caller configured logging
            return _fit(cfg, run_dir, resume, progress_bar, changes or {})
    except BaseException:
        # a start that failed before writing anything (unreadable data, a bad setting) leaves no empty run behind
        if created and dist.is_main() and run_dir.is_dir() and set(os.listdir(run_dir)) <= {RunLock.NAME}:
            (run_dir / RunLock.NAME).unlink(missing_ok=True)
            run_dir.rmdir()
        raise


def _fit(cfg: RunConfig, run_dir: Path, resume: bool, progress_bar: bool, changes: dict) -> dict:
    t_cfg = cfg.train
    torch.manual_seed(t_cfg.seed)
    if t_cfg.threads:
        torch.set_num_threads(t_cfg.threads)
    device = pick_device(t_cfg.device)

    if cfg.data.dir:  # stored absolute: the run works from any working directory
        cfg.data.dir = str(Path(cfg.data.dir).expanduser().resolve())
    train, _ = load_data(cfg, choose_size=not resume, with_test=False)
    if dist.is_main():
        save_config(cfg, run_dir / "config.yaml")
        _record_provenance(run_dir, resume)
    spec = InputSpec.of(cfg, train.channels, train.image_size)  # travels with every checkpoint
    side = cfg.views.size or train.image_size
    encoder = build_encoder(cfg, train.channels, side)
    if cfg.backbone.weights and not resume:  # a start from weights the user has (a resume has its own)
        try:  # before the method is built: its EMA targets and teachers start as copies of these weights
            got = load_backbone_weights(encoder, cfg.backbone.weights)
        except (OSError, ValueError) as e:
            raise TrainingError(str(e)) from None
        if dist.is_main():
            log.info(
                f"backbone: {got['loaded']} tensors from {cfg.backbone.weights}"
                + (f" ({len(got['ignored'])} classifier tensors left out)" if got["ignored"] else "")
            )
    rt = Runtime.of(t_cfg, device)  # where and how every forward pass runs: the model, views, steps, monitor
    method = rt.module(build_method(cfg, train.channels, len(train), side, encoder=encoder))
    model = distribute(method, device, t_cfg.sync_bn)  # before the optimiser: SyncBatchNorm keeps the same parameters
    if dist.world_size() > 1:  # other augmentations, masks and shuffles on every process (the weights stay equal)
        torch.manual_seed(t_cfg.seed + 1_000_003 * dist.rank())
    views = Views(view_config(cfg), cfg.data.mean, cfg.data.std, train.image_size, method.needs.views)
    texts = None
    if method.needs.text:  # image-text methods (CLIP) get the captions as tokens
        if train.captions is None:
            raise TrainingError(
                f"{cfg.method_name} trains on image-caption pairs, and {cfg.data.name} has no captions: "
                f"use --data captioned-fashion-mnist (or captioned-digits), or an image folder with "
                f"a captions.tsv (file name, a tab, the caption)"
            )
        texts = tokenize(train.captions, method.cfg.context)  # type: ignore[union-attr,arg-type]  # CLIP's config
    loader: StreamLoader | InMemoryLoader
    if cfg.data.stream:  # batches decoded from disk by worker processes (selfsup.data.stream)
        loader = StreamLoader(
            train.images,
            train.labels,
            t_cfg.batch_size,
            t_cfg.seed,
            dist.rank(),
            dist.world_size(),
            order_fn=method.epoch_order,
            texts=texts,
            workers=cfg.data.workers,
        )
    else:
        loader = InMemoryLoader(
            train.images,
            train.labels,
            t_cfg.batch_size,
            t_cfg.seed,
            dist.rank(),
            dist.world_size(),
            order_fn=method.epoch_order,
            texts=texts,
        )
    if len(loader) < t_cfg.accumulate:
        raise TrainingError(f"one epoch has {len(loader)} batches, fewer than train.accumulate={t_cfg.accumulate}")
    optimizer = build_optimizer(
        method.param_groups(), cfg.optim, t_cfg.batch_size * t_cfg.accumulate * dist.world_size()
    )
    assert cfg.data.mean is not None and cfg.data.std is not None  # load_data measured them where unset
    epoch_ctx = EpochContext(train, cfg.data.mean, cfg.data.std, views.size, rt)
    gen = torch.Generator().manual_seed(t_cfg.seed + 1 + 1_000_003 * dist.rank())

    budget = parse_duration(t_cfg.budget) if t_cfg.budget and not t_cfg.steps else None
    steps_per_epoch = len(loader) // t_cfg.accumulate
    fixed_steps = t_cfg.steps or (None if budget else t_cfg.epochs * steps_per_epoch)  # a budget plans its own
    st: dict[str, Any] = {  # the loop's state: every checkpoint saves it
        "epoch": 0,
        "batch_in_epoch": 0,
        "step": 0,
        "train_seconds": 0.0,
        "images_seen": 0,
        "planned_steps": fixed_steps,
    }
    ckpt_dir = run_dir / "checkpoints"
    if resume:
        meta, saved, used = load_checkpoint(ckpt_dir / "last", method, expect={"method": cfg.method_name})
        assert saved is not None  # with_state (the default) returns the state
        optimizer.load_state_dict(saved["optimizer"])
        st = saved["state"]["loop"]
        if "planned_steps" not in st or {"train.budget", "train.epochs", "train.steps"} & set(changes):
            st["planned_steps"] = fixed_steps  # another length (a budget: planned again at the current speed)
            for k in ("plan", "replans_done"):  # the old plan's clock goes with it
                st.pop(k, None)
        ranks = saved["state"].get("rng_ranks")  # one RNG state per process of a distributed run
        if ranks and len(ranks) == dist.world_size():
            _set_rng_state(ranks[dist.rank()], gen)
        elif dist.world_size() == 1:
            _set_rng_state(saved["state"]["rng"], gen)
        elif dist.is_main():  # another world size: the data split changes anyway, so no exact resume
            warnings.warn(
                f"{used} was written by {len(ranks or [0])} process(es), this run has "
                f"{dist.world_size()}: resuming the weights and schedule, not the exact random streams",
                stacklevel=3,
            )
        if "optim.lr" in changes:  # the saved groups carry their base rates; scale them all alike
            old_lr, new_lr = changes["optim.lr"]
            for g in optimizer.param_groups:
                g["base_lr"] *= new_lr / old_lr
        if dist.is_main():
            log.info(
                f"resumed {run_dir} at epoch {st['epoch']}, step {st['step']} ({used.name} checkpoint)"
                + (", changing " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()) if changes else "")
            )
    clock = Clock(st, budget, t_cfg.budget, t_cfg.max_steps, t_cfg.replan)

    def make_views(batch: Batch, g: torch.Generator) -> Batch:
        """The batch's views (and crop boxes, for methods that need them) on the device, drawn from ``g``."""
        batch = batch.to(device)
        if method.needs.boxes:
            batch.views, batch.boxes = views(batch.images, g, boxes=True)
        else:
            batch.views = views(batch.images, g)
        if rt.channels_last:  # the views are made on the device; only the memory format may change
            batch.views = [rt.inputs(v) for v in batch.views]
        return batch

    def stepper(opt: torch.optim.Optimizer, params, start: int, scheduled: bool = True) -> Stepper:
        return Stepper(
            opt,
            None,
            (lambda step, total: lr_factor(clock.progress(), cfg.optim)) if scheduled else None,  # the clock's
            rt,
            "training",
            "",
            start=start,
            accumulate=t_cfg.accumulate,
            clip_grad=cfg.optim.clip_grad or 0.0,
            clip_params=list(params),
            deferred=True,
        )

    def seconds_per_step() -> float:
        """Time PLAN_STEPS optimiser steps (after PLAN_SKIP) of a throwaway copy of the method, on this epoch's
        first batches with its own view generator and the global RNG restored after: the run itself (its
        weights, statistics, random streams) is untouched. The slowest process's time, so all plan alike."""
        probe = copy.deepcopy(method).train()
        popt = build_optimizer(probe.param_groups(), cfg.optim, t_cfg.batch_size * t_cfg.accumulate * dist.world_size())
        psteps = stepper(popt, probe.parameters(), 0, scheduled=False)  # timed at the base rates
        pgen = torch.Generator().manual_seed(t_cfg.seed + 7)
        batches, times = loader.iterate(st["epoch"]), []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for k in range(PLAN_SKIP + PLAN_STEPS):
                t = time.perf_counter()
                stepped = False
                while not stepped:  # the micro-batches of one step
                    batch = next(batches, None)
                    if batch is None:
                        batches = loader.iterate(st["epoch"])
                        batch = next(batches)
                    with psteps.autocast():
                        loss = probe(make_views(batch, pgen)).loss
                    stepped = psteps.backward(loss)
                probe.on_step_end(0.0)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if k >= PLAN_SKIP:
                    times.append(time.perf_counter() - t)
        del probe, popt, psteps
        return dist.all_reduce_max(sum(times) / len(times))

    def check_finite() -> None:
        """Read the deferred finite flag (one host sync): before a metrics row, before a checkpoint (a
        checkpoint is never written after a non-finite loss) and at the end."""
        bad = steps.first_bad()
        if dist.all_true(bad < 0):
            return
        saved = (ckpt_dir / "last" / "meta.json").is_file()
        where = (
            f"The last good checkpoint is {ckpt_dir / 'last'} (step {read_meta(ckpt_dir / 'last').get('step')})"
            if saved
            else "No checkpoint was written before it"
        )
        at = f"at step {bad}" if bad >= 0 else "on another process"
        raise TrainingError(
            f"non-finite loss {at}, epoch {st['epoch']}. {where}. "
            + (
                f"Continue from it with a lower learning rate, fp32 or clipping: `selfsup pretrain --resume "
                f"{run_dir} optim.lr={cfg.optim.lr / 10:g}` (or train.precision=fp32, optim.clip_grad=1.0)"
                if saved
                else f"Start again with a lower optim.lr (now {cfg.optim.lr}), train.precision=fp32 or "
                f"optim.clip_grad=1.0, into another --out (or delete {run_dir})"
            )
        )

    def checkpoint() -> None:
        check_finite()
        rng = dist.all_gather_object(_rng_state(gen))  # every process's streams, for an exact resume
        if dist.is_main():
            state = {"loop": dict(st), "rng": rng[0], **({"rng_ranks": rng} if len(rng) > 1 else {})}
            save_checkpoint(
                ckpt_dir / "last",
                method,
                optimizer,
                state,
                checkpoint_meta(cfg, input=spec.as_dict(), num_samples=len(train), step=st["step"], epoch=st["epoch"]),
            )

    logger = RunLogger(run_dir, cfg, resume_step=st["step"] if resume else None)
    if changes:  # a row of its own, at the step the new settings start
        logger.log({"step": st["step"], "epoch": st["epoch"], "event": "resumed with changes", "changes": changes})
    monitor = Monitor.build(train, cfg)
    shown = monitor.val_images[:16] if monitor is not None else train.images[:16]  # validation images
    callbacks: list[Callback] = [cb for cb in (monitor, Pictures(shown), Curves()) if cb is not None]
    fit = Fit(cfg, method, rt, run_dir, logger, epoch_ctx, eval_size(cfg, views.size), st, resume, clock.done)
    bar = None
    if progress_bar and dist.is_main():
        from tqdm.auto import tqdm

        bar = tqdm(
            total=1000 if budget else st["planned_steps"],
            initial=int(clock.progress() * 1000) if budget else st["step"],
            unit="" if budget else "step",
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}" if budget else None,
            desc=f"{cfg.method_name}",
        )
    steps = stepper(optimizer, method.parameters(), st["step"])
    method.train()
    # checkpoint timing reads the training seconds, which are equal on every process (see below)
    last_ckpt, rate_t, rate_n = st["train_seconds"], time.perf_counter(), 0
    call(callbacks, "start", fit)
    method.progress_now = clock.progress()  # a resumed run's schedules start where it stopped
    try:
        while not clock.done():
            t0 = time.perf_counter()  # before on_epoch_start: its work (k-means, ...) counts as training time
            epoch_start_seconds = 0.0
            if st["batch_in_epoch"] == 0:
                epoch_logs = method.on_epoch_start(st["epoch"], epoch_ctx)
                epoch_start_seconds = time.perf_counter() - t0
                if epoch_logs:
                    # logged at the epoch's first step (step + 1): a resume from this epoch's start then
                    # drops the row with the steps after the checkpoint and logs it again, never twice
                    logger.log(
                        {"step": st["step"] + 1, "epoch": st["epoch"], **{k: float(v) for k, v in epoch_logs.items()}}
                    )
            if clock.unplanned:  # a budget turns into a number of steps, once: per step, its own time and its
                # share of the per-epoch work (DeepCluster's k-means, bank refreshes), after what is spent
                rate = seconds_per_step() + epoch_start_seconds / max(1, steps_per_epoch)
                clock.plan(rate, dist.all_reduce_max(st["train_seconds"] + (time.perf_counter() - t0)))
                if clock.done():
                    break
            for batch in loader.iterate(st["epoch"], st["batch_in_epoch"]):
                batch = make_views(batch, gen)
                with steps.autocast(), steps.no_sync(model):
                    out = model(batch)  # Method.forward is training_step
                loss = out.loss
                stepped = steps.backward(loss, model)
                st["batch_in_epoch"] += 1
                st["images_seen"] += batch.images.shape[0] * dist.world_size()
                rate_n += batch.images.shape[0] * dist.world_size()  # the global rate
                if not stepped:
                    continue
                now = time.perf_counter()
                st["train_seconds"] += now - t0
                t0 = now
                # the slowest process's clock: progress, learning rate and the end of a budget must
                # be the same on every process, or the replicas drift apart and the last step hangs
                st["train_seconds"] = dist.all_reduce_max(st["train_seconds"])
                st["step"] = steps.step
                clock.replan()
                method.progress_now = clock.progress()
                method.on_step_end(method.progress_now)
                if st["step"] % t_cfg.log_every == 0 or clock.done():
                    check_finite()
                    ips = rate_n / max(1e-9, now - rate_t)
                    rate_t, rate_n = now, 0
                    row = {
                        "step": st["step"],
                        "epoch": st["epoch"],
                        "loss": loss.item(),
                        "lr": optimizer.param_groups[0]["lr"],
                        "images_per_s": ips,
                        "train_seconds": st["train_seconds"],
                        "progress": clock.progress(),
                    }
                    row.update({k: float(v) for k, v in out.logs.items()})
                    logger.log(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{ips:.0f}", ep=st["epoch"])
                if bar is not None:
                    bar.n = int(clock.progress() * 1000) if budget else st["step"]
                    bar.refresh() if st["step"] % 5 == 0 else None
                if st["train_seconds"] - last_ckpt > 60 * t_cfg.checkpoint_minutes or (
                    t_cfg.checkpoint_steps and st["step"] % t_cfg.checkpoint_steps == 0
                ):
                    checkpoint()
                    last_ckpt = st["train_seconds"]
                if clock.done():
                    break
            check_finite()  # once an epoch at least, before a callback reads the weights
            if st["batch_in_epoch"] >= len(loader):  # the epoch ran to its end (also when it ended the run)
                st["epoch"] += 1
                st["batch_in_epoch"] = 0
                call(callbacks, "epoch_end", fit)
                if t_cfg.checkpoint_every and st["epoch"] % t_cfg.checkpoint_every == 0:
                    checkpoint()
                    last_ckpt = st["train_seconds"]
        check_finite()
        call(callbacks, "end", fit)
        checkpoint()
    except BaseException:
        logger.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = fit.summary
    summary.update(
        {
            "steps": st["step"],
            "planned_steps": st["planned_steps"],
            **({"budget_plan": st["plan"]} if "plan" in st else {}),
            "epochs": st["epoch"] + st["batch_in_epoch"] / max(1, len(loader)),
            "train_seconds": st["train_seconds"],
            "images_seen": st["images_seen"],
            **_peak_memory(device),
        }
    )
    summary.update({f"diag/{k}": st[k] for k in ("initial_embedding_std", "initial_embedding_rank") if k in st})
    logger.close(summary)
    if dist.is_main():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    call(callbacks, "close", fit)
    return summary


def _record_provenance(run_dir: Path, resume: bool) -> None:
    """RUN_DIR/provenance.json: the commit, command, versions and machine that trained the run; a resume
    appends its own under "resumed" (a run continued by other code says so)."""
    path, record = run_dir / "provenance.json", provenance()
    if resume and path.is_file():
        first = json.loads(path.read_text())
        first.setdefault("resumed", []).append(record)
        record = first
    path.write_text(json.dumps(record, indent=1))


def _peak_memory(device: torch.device) -> dict:
    """Peak resident memory of this process (MiB; since it started, so a resumed run reports its last
    part) and, on CUDA, the peak memory allocated by tensors."""
    try:
        import resource  # Unix only
    except ImportError:
        return {}
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux reports KiB
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# what a resumed run may change: its length, and what a non-finite loss asks to change
RESUME_CHANGES = (
    "train.epochs",
    "train.budget",
    "train.steps",
    "train.max_steps",
    "optim.lr",
    "optim.clip_grad",
    "train.precision",
)
PLAN_SKIP, PLAN_STEPS = 2, 8  # a budget's plan: probe steps left out (allocation, first-call costs), then timed


def resume(run_dir: str | Path, progress_bar: bool = True, changes=()) -> dict:
    """Continue a run from its last checkpoint exactly as its config.yaml says, with ``changes``
    ("key=value" strings or nested dicts) to the keys in RESUME_CHANGES only: a longer schedule
    (epochs, budget, max_steps; the learning-rate schedule is stretched to the new length from the
    current step), or after a non-finite loss a lower optim.lr, optim.clip_grad or train.precision.
    Changes are written into config.yaml and recorded in metrics.jsonl at the step they start."""
    cfg = load_run_config(run_dir)
    layers = [parse_override(c) if isinstance(c, str) else c for c in changes]
    if not layers:
        return fit(cfg, run_dir, resume=True, progress_bar=progress_bar)
    flat = {
        f"{sec}.{k}" for layer in layers for sec, v in layer.items() for k in (v if isinstance(v, dict) else {None: v})
    }
    refused = sorted(flat - set(RESUME_CHANGES))
    if refused:
        raise TrainingError(
            f"--resume cannot change {', '.join(refused)}: a resumed run keeps its method, backbone, "
            f"data and views. It may change {', '.join(RESUME_CHANGES)} (and --epochs, --budget); for "
            f"anything else start a new run with another --out"
        )
    new = resolve([to_dict(cfg), *layers])
    old_d, new_d = to_dict(cfg), to_dict(new)
    diff = {k: [old_d[k.split(".")[0]][k.split(".")[1]], new_d[k.split(".")[0]][k.split(".")[1]]] for k in sorted(flat)}
    diff = {k: v for k, v in diff.items() if v[0] != v[1]}
    return fit(new, run_dir, resume=True, progress_bar=progress_bar, changes=diff)
