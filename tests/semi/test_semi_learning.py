"""Semi-supervised methods learn: on scikit-learn's digits with a few labels, FixMatch and MixMatch
beat the same network trained on the labels alone (same loop, views, optimiser, steps), and a seed
repeats a run exactly."""

from __future__ import annotations

import pytest
import torch

from selfsup import create_backbone
from selfsup.config import ConfigError
from selfsup.data import load_dataset
from selfsup.engine import InputSpec
from selfsup.eval.semi import per_class_fraction
from selfsup.semi import create_semi_method, list_semi_methods
from selfsup.semi.train import train_semi


@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    x = train.images.float() / 255
    spec = InputSpec(1, 8, 8, tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist()))
    return train, test, spec


def _top1(name, digits, per_class, steps=300, **over):
    train, test, spec = digits
    lab = train.labelled_subset(per_class_fraction(train.labels, per_class), 0)
    method, cfg = create_semi_method(name, {"steps": steps, "batch_size": 32, "flip_p": 0.0, **over})
    encoder = create_backbone("convnet", in_channels=1, width=0.5)
    return train_semi(method, cfg, encoder, lab, train, spec, 10, test, from_scratch=True)[1]


def test_fixmatch_and_mixmatch_beat_the_labels_alone_with_two_labels_per_class(digits):
    sup = _top1("supervised", digits, 2)["top1"]
    fix = _top1("fixmatch", digits, 2)
    mix = _top1("mixmatch", digits, 2)["top1"]
    assert sup > 0.5  # 20 labels already teach the network something (chance is 0.1)
    assert fix["top1"] > sup + 0.05 and mix > sup + 0.05, (sup, fix["top1"], mix)
    assert fix["final"]["mask"] > 0.5  # most unlabelled images end up above the 0.95 threshold


def test_mixmatch_beats_the_labels_alone_with_ten_labels_per_class(digits):
    sup = _top1("supervised", digits, 10)["top1"]
    mix = _top1("mixmatch", digits, 10)["top1"]
    assert mix > sup + 0.01, (sup, mix)


@pytest.mark.parametrize("name", ["vat", "pseudolabel"])
def test_every_method_trains_above_chance(digits, name):
    res = _top1(name, digits, 5, steps=100)
    assert res["top1"] > 0.5 and res["num_labelled"] == 50


def test_a_seed_repeats_the_run_exactly(digits):
    train, test, spec = digits
    lab = train.labelled_subset(0.05, 0)
    enc = create_backbone("convnet", in_channels=1, width=0.25)
    weights = []
    for _ in range(2):
        m, cfg = create_semi_method("fixmatch", {"steps": 5, "batch_size": 8, "mu": 2})
        model, _ = train_semi(m, cfg, enc, lab, train, spec, 10, from_scratch=True)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_settings_errors_name_the_fix():
    assert list_semi_methods() == ["fixmatch", "mixmatch", "pseudolabel", "supervised", "vat"]
    with pytest.raises(KeyError, match="did you mean 'fixmatch'"):
        create_semi_method("fixmach")
    with pytest.raises(ConfigError, match="did you mean 'threshold'"):
        create_semi_method("fixmatch", {"treshold": 0.9})
    with pytest.raises(ConfigError, match="threshold: expected a number"):
        create_semi_method("fixmatch", {"threshold": "high"})
    with pytest.raises(ValueError, match="steps=0"):
        create_semi_method("fixmatch", {"steps": 0})
    m, cfg = create_semi_method("mixmatch", {"lr": 0.01})
    assert (cfg.optimizer, cfg.lr, cfg.mu, m.cfg.temperature) == ("adamw", 0.01, 1, 0.5)  # paper defaults kept
