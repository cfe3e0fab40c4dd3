"""Semi-supervised losses against explicit computations (loops and the papers' formulas)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.semi import (
    confidence_mask,
    entropy,
    fixmatch_unlabelled,
    kl_divergence,
    mixmatch_unlabelled,
    mixup,
    pseudo_label_weight,
    sharpen,
    soft_cross_entropy,
    vat_direction,
    vat_loss,
)


def test_fixmatch_masks_by_confidence_and_averages_over_every_unlabelled_image():
    g = torch.Generator().manual_seed(0)
    weak = torch.randn(12, 5, generator=g) * 3
    strong = torch.randn(12, 5, generator=g)
    tau = 0.8
    loss, mask = fixmatch_unlabelled(weak, strong, tau)
    total = 0.0
    for w, s in zip(weak.tolist(), strong.tolist()):  # eq. 2, one image at a time
        q = [math.exp(v) / sum(math.exp(u) for u in w) for v in w]
        if max(q) >= tau:
            k = q.index(max(q))
            total += -math.log(math.exp(s[k]) / sum(math.exp(u) for u in s))
    assert loss.item() == pytest.approx(total / 12, rel=1e-5)  # 1/(mu B): the masked ones count as 0
    conf = F.softmax(weak, -1).max(-1).values
    assert mask.tolist() == (conf >= tau).float().tolist()
    assert 0 < mask.sum() < 12  # the draw has confident and unconfident images


def test_fixmatch_sends_no_gradient_through_the_pseudo_label():
    weak = torch.randn(6, 4, requires_grad=True)
    strong = torch.randn(6, 4, requires_grad=True)
    fixmatch_unlabelled(weak * 5, strong, 0.0)[0].backward()
    assert weak.grad is None or weak.grad.abs().sum() == 0
    assert strong.grad.abs().sum() > 0


def test_confidence_mask_threshold_is_inclusive():
    logits = torch.log(torch.tensor([[0.95, 0.05], [0.94, 0.06], [0.3, 0.7]]))
    labels, mask = confidence_mask(logits, 0.95)
    assert labels.tolist() == [0, 0, 1]
    assert mask.tolist() == [1.0, 0.0, 0.0]


def test_sharpen_is_the_papers_formula():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    t = 0.5
    expect = [v**2 / (0.25 + 0.09 + 0.04) for v in (0.5, 0.3, 0.2)]
    assert sharpen(p, t)[0].tolist() == pytest.approx(expect)
    assert sharpen(p, 1.0)[0].tolist() == pytest.approx(p[0].tolist())


def test_mixup_keeps_the_mix_nearer_its_first_argument():
    x, x2 = torch.zeros(2, 3), torch.ones(2, 3)
    y, y2 = torch.tensor([[1.0, 0.0]] * 2), torch.tensor([[0.0, 1.0]] * 2)
    mx, my = mixup(x, y, x2, y2, 0.3)  # lambda' = max(0.3, 0.7) = 0.7 of the first
    assert mx.flatten().tolist() == pytest.approx([0.3] * 6)
    assert my.flatten().tolist() == pytest.approx([0.7, 0.3] * 2)
    mx, _ = mixup(x, y, x2, y2, torch.tensor([0.9, 0.2]))  # one lambda per row
    assert mx[:, 0].tolist() == pytest.approx([0.1, 0.2])


def test_mixmatch_unlabelled_loss_is_the_squared_error_over_classes():
    logits, targets = torch.randn(4, 5), F.softmax(torch.randn(4, 5), -1)
    p = F.softmax(logits, -1)
    expect = sum(((p[i] - targets[i]) ** 2).sum().item() for i in range(4)) / (4 * 5)  # 1/(L |U'|)
    assert mixmatch_unlabelled(logits, targets).item() == pytest.approx(expect, rel=1e-5)
    hard = F.one_hot(torch.tensor([1, 0, 3, 2]), 5).float()
    assert soft_cross_entropy(logits, hard).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([1, 0, 3, 2])).item(), rel=1e-6
    )


def test_kl_and_entropy_against_torch():
    a, b = torch.randn(7, 4), torch.randn(7, 4)
    ref = F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="batchmean")
    assert kl_divergence(a, b).item() == pytest.approx(ref.item(), rel=1e-5)
    assert kl_divergence(a, a).item() == pytest.approx(0.0, abs=1e-7)
    uniform = torch.zeros(3, 4)
    assert entropy(uniform).item() == pytest.approx(math.log(4))


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))


def test_vat_direction_raises_the_divergence_more_than_random_directions():
    model = _model()
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(1))
    logits = model(x)
    eps = 0.5
    d = vat_direction(model, x, logits, xi=1e-3, power_iterations=2, gen=torch.Generator().manual_seed(2))
    assert d.norm(dim=1).tolist() == pytest.approx([1.0] * 8, rel=1e-5)
    with torch.no_grad():

        def kl_rows(r):
            lp, lq = F.log_softmax(logits, -1), F.log_softmax(model(x + r), -1)
            return (lp.exp() * (lp - lq)).sum(-1)  # [8]

        adv = kl_rows(eps * d)
        g = torch.Generator().manual_seed(3)
        rand = torch.stack([kl_rows(eps * F.normalize(torch.randn(8, 10, generator=g), dim=1)) for _ in range(50)])
    # per image: the adversarial direction beats every one of 50 random unit directions
    assert bool((adv > rand.max(0).values).all())


def test_vat_loss_is_the_divergence_at_the_adversarial_point_and_trains_the_perturbed_branch():
    model = _model()
    x = torch.randn(5, 10)
    logits = model(x)
    loss = vat_loss(model, x, logits, epsilon=0.3, gen=torch.Generator().manual_seed(0))
    d = vat_direction(model, x, logits, gen=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(kl_divergence(logits, model(x + 0.3 * d)).item(), rel=1e-4)
    loss.backward()
    assert model[0].weight.grad.abs().sum() > 0


def test_pseudo_label_weight_ramps_as_lee_2013():
    assert [pseudo_label_weight(t, 100, 600, 3.0) for t in (0, 99, 100, 350, 600, 900)] == pytest.approx(
        [0, 0, 0, 1.5, 3.0, 3.0]
    )
