"""The offline `signals` source: synthetic labelled waveforms stored as 8-bit mu-law uint8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.data import DatasetError, list_datasets, load_dataset
from selfsup.data.signals import SIGNALS_CLASSES, SIGNALS_LENGTH, mu_law_decode, mu_law_encode, synth_signals


def test_signals_is_listed_deterministic_balanced_and_split():
    assert "signals" in list_datasets()
    train, test = load_dataset("signals", "train"), load_dataset("signals", "test")
    assert train.images.dtype == torch.uint8 and train.images.shape == (5000, 1, 32, 32)
    assert test.images.shape == (1000, 1, 32, 32) and train.image_size == 32
    assert train.classes == SIGNALS_CLASSES and len(SIGNALS_CLASSES) == 10
    assert torch.bincount(train.labels).tolist() == [500] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    again = load_dataset("signals", "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    # different seeds: no test signal is a training signal
    flat_train = {bytes(r) for r in train.images.flatten(1).numpy()}
    assert not any(bytes(r) in flat_train for r in test.images.flatten(1).numpy())


def test_signals_are_row_major_sequences_of_mu_law_samples():
    x, y = synth_signals(20, seed=0)
    ds = load_dataset("signals", "train")
    x_ref, y_ref = synth_signals(5000, seed=0)
    assert np.array_equal(ds.labels.numpy(), y_ref)
    # flatten(2) of the stored [N,1,32,32] image gives the 1024 samples back in time order
    seq = mu_law_decode(ds.images[:5].flatten(1).numpy())
    assert seq.shape == (5, SIGNALS_LENGTH)
    assert np.abs(seq - x_ref[:5]).max() < 0.03  # 8-bit mu-law: steps below 0.03 anywhere in [-1, 1]
    # mu-law spends its codes near zero: small amplitudes are kept far finer than 8-bit linear would
    small = np.linspace(-0.05, 0.05, 101)
    assert np.abs(mu_law_decode(mu_law_encode(small)) - small).max() < 1.5e-3 < 1 / 255  # linear: up to 1/255
    assert x.min() >= -1 and x.max() <= 1 and set(y.tolist()) <= set(range(10))


def test_each_class_has_its_own_structure_that_a_spectrum_reveals():
    # nearest-centroid on magnitude spectra: far above chance, though random phase and per-signal
    # frequencies keep the raw samples from being a template
    x, y = synth_signals(2000, seed=5)
    spec = np.abs(np.fft.rfft(x, axis=1))[:, :64]
    centroids = np.stack([spec[y == c].mean(0) for c in range(10)])
    pred = np.argmin(((spec[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() > 0.6
    same_class = x[y == 0]
    assert np.abs(same_class[0] - same_class[1]).mean() > 0.1  # two sines of a class are not alike


def test_signals_refuse_image_size():
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset("signals", "train", image_size=28)
