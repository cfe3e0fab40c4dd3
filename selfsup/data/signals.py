"""``signals``: synthetic labelled 1-D waveforms, generated offline from a seed (nothing is read).

Stored as 8-bit mu-law samples folded into square single-channel images; see
:func:`load_signals` for the layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from selfsup.data.dataset import DatasetError, ImageDataset

SIGNALS_CLASSES = [
    "sine-low", "sine-high", "two-tone", "chirp-up", "chirp-down",
    "am", "square", "sawtooth", "bursts", "fm",
]  # fmt: skip
SIGNALS_LENGTH = 1024  # T, samples per signal
SIGNALS_SIDE = 32  # stored as a SIDE x SIDE single-channel image, SIDE**2 == T (see load_signals)
SIGNALS_SIZES = {"train": 5000, "test": 1000}
SIGNALS_SEEDS = {"train": 0, "test": 1}  # different seeds: no test signal is a training signal
SIGNALS_NOISE = 0.1  # std of the additive Gaussian noise (signal amplitudes are 0.4-0.8)
MU_LAW_MU = 255.0  # 8-bit mu-law, as in G.711 / WaveNet's 8-bit audio


def mu_law_encode(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> uint8 by 8-bit mu-law companding (finer steps near zero)."""
    y = np.sign(x) * np.log1p(MU_LAW_MU * np.abs(x)) / np.log1p(MU_LAW_MU)
    return np.rint((y + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def mu_law_decode(u: np.ndarray) -> np.ndarray:
    """Inverse of :func:`mu_law_encode` (up to quantisation): uint8 -> float in [-1, 1]."""
    y = u.astype(np.float64) / 127.5 - 1.0
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU_LAW_MU)) / MU_LAW_MU


def synth_signals(n: int, seed: int, length: int = SIGNALS_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """``n`` waveforms float64 ``[n, length]`` in [-1, 1] and their labels ``int64 [n]``.

    The class fixes the generative structure (which frequencies, envelope, chirp direction,
    wave shape); frequency, phase, amplitude and the noise are drawn per signal, so no two
    signals of a class are alike and neither a fixed template nor the raw samples give the
    class away. Frequencies are in cycles per signal. Deterministic given ``seed``.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SIGNALS_CLASSES))
    t = np.arange(length) / length  # [T] in [0, 1)
    out = np.empty((n, length))

    def u(lo: float, hi: float, m: int) -> np.ndarray:  # one draw per signal, as a column [m, 1]
        return rng.uniform(lo, hi, (m, 1))

    two_pi = 2 * np.pi
    for c, name in enumerate(SIGNALS_CLASSES):
        idx = np.flatnonzero(labels == c)
        m = len(idx)
        phase = u(0, two_pi, m)
        if name == "sine-low":
            x = np.sin(two_pi * u(3, 7, m) * t + phase)
        elif name == "sine-high":
            x = np.sin(two_pi * u(18, 30, m) * t + phase)
        elif name == "two-tone":  # the sum of a low and a high tone: neither sine class alone
            x = 0.5 * (np.sin(two_pi * u(3, 7, m) * t + phase) + np.sin(two_pi * u(18, 30, m) * t + u(0, two_pi, m)))
        elif name in ("chirp-up", "chirp-down"):  # linear chirp: phase is the integral of f(t)
            f0, f1 = u(2, 6, m), u(24, 36, m)
            if name == "chirp-down":
                f0, f1 = f1, f0
            x = np.sin(two_pi * (f0 * t + (f1 - f0) * t**2 / 2) + phase)
        elif name == "am":  # high carrier under a slow sinusoidal envelope
            depth = u(0.6, 1.0, m)
            env = (1 + depth * np.sin(two_pi * u(1.5, 4, m) * t + u(0, two_pi, m))) / (1 + depth)
            x = env * np.sin(two_pi * u(18, 30, m) * t + phase)
        elif name == "square":
            x = np.sign(np.sin(two_pi * u(4, 12, m) * t + phase))
        elif name == "sawtooth":
            x = 2 * np.mod(u(4, 12, m) * t + phase / two_pi, 1.0) - 1
        elif name == "bursts":  # decaying bursts of a high carrier, repeated at a random rate
            env = np.exp(-u(4, 8, m) * np.mod(u(3, 6, m) * t + u(0, 1, m), 1.0))
            x = env * np.sin(two_pi * u(18, 30, m) * t + phase)
        else:  # "fm": a mid carrier whose frequency swings slowly
            mod = u(2, 5, m) * np.sin(two_pi * u(1.5, 4, m) * t + u(0, two_pi, m))
            x = np.sin(two_pi * u(10, 18, m) * t + mod + phase)
        out[idx] = u(0.4, 0.8, m) * x
    out += SIGNALS_NOISE * rng.standard_normal(out.shape)
    return np.clip(out, -1.0, 1.0), labels.astype(np.int64)


def load_signals(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """Synthetic labelled waveforms (10 classes), generated in memory: nothing to download.

    Each signal is T = 1024 samples of 8-bit mu-law audio (uint8). Layout: a 1-D signal would
    naturally be ``[N, 1, 1, T]``, but the training loop's views (``random_resized_crop``), its
    evaluation view and ``ImageDataset.image_size`` all assume square images, so the samples
    are stored row-major as a ``[N, 1, 32, 32]`` image instead. ``x.flatten(2)`` gives back
    ``[N, 1, T]`` in time order; the ``conv1d`` backbone and CPC's sequence mode do exactly
    that, and accept ``[N, 1, 1, T]`` too. Use identity views (``configs/cpc_signals.yaml``):
    crops, flips and blur of the folded image would cut the signal apart. ``root`` is ignored.
    """
    if image_size is not None and image_size != SIGNALS_SIDE:
        raise DatasetError(
            f"signals: image_size={image_size} would resample the folded {SIGNALS_SIDE}x{SIGNALS_SIDE} "
            "signal as if it were a picture and scramble it; leave data.image_size unset"
        )
    x, labels = synth_signals(SIGNALS_SIZES[split], SIGNALS_SEEDS[split])
    images = mu_law_encode(x).reshape(-1, 1, SIGNALS_SIDE, SIGNALS_SIDE)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), list(SIGNALS_CLASSES), "signals")
