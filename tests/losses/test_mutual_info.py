"""CPC's InfoNCE and Deep InfoMax's JSD / InfoNCE estimators against explicit loop-by-loop sums."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.mutual_info import cpc_info_nce, dim_infonce, dim_jsd


def _cpc_loop(pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One softmax per (k, image, row, column): the true z_{i+k,j} among all B*H*W encodings."""
    b, h, w, k_max, _ = pred.shape
    cands = [(bb, ii, jj) for bb in range(b) for ii in range(h) for jj in range(w)]
    per_k = []
    for k in range(1, k_max + 1):
        terms = []
        for bb in range(b):
            for i in range(h - k):
                for j in range(w):
                    p = pred[bb, i, j, k - 1]
                    scores = torch.stack([p @ z[c] for c in cands])  # log f_k = z^T W_k c
                    pos = cands.index((bb, i + k, j))
                    terms.append(-(scores[pos] - torch.logsumexp(scores, 0)))
        per_k.append(torch.stack(terms).mean())
    return torch.stack(per_k).mean()


@pytest.mark.parametrize("shape", [(3, 4, 3, 2), (2, 5, 1, 3)])  # an image grid; a sequence (W = 1)
def test_cpc_info_nce_matches_the_explicit_loop(shape):
    b, h, w, k = shape
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(b, h, w, k, 6, generator=g, dtype=torch.float64)
    z = torch.randn(b, h, w, 6, generator=g, dtype=torch.float64)
    loss, candidates = cpc_info_nce(pred, z)
    assert candidates == b * h * w
    torch.testing.assert_close(loss.double(), _cpc_loop(pred, z), rtol=1e-5, atol=1e-6)


def test_cpc_info_nce_gradients_reach_predictions_and_every_encoding_and_k_must_fit():
    pred = torch.randn(2, 3, 2, 2, 4, requires_grad=True)
    z = torch.randn(2, 3, 2, 4, requires_grad=True)
    loss, _ = cpc_info_nce(pred, z)
    loss.backward()
    assert pred.grad[:, :2, :, 0].abs().sum() > 0 and pred.grad[:, :1, :, 1].abs().sum() > 0
    # predictions with no target below them (k rows past the bottom) get none
    assert pred.grad[:, 2:, :, 0].abs().sum() == 0 and pred.grad[:, 1:, :, 1].abs().sum() == 0
    assert (z.grad.abs().sum(-1) > 0).all()  # every encoding is a positive or a negative somewhere
    with pytest.raises(ValueError, match="steps"):
        cpc_info_nce(torch.randn(2, 3, 1, 3, 4), torch.randn(2, 3, 1, 4))


def test_cpc_info_nce_is_low_when_predictions_are_right():
    z = F.normalize(torch.randn(4, 5, 3, 8), dim=-1) * 10
    right = torch.stack([torch.roll(z, -k, dims=1) for k in (1, 2)], dim=3)  # pred[i, k] = z[i + k]
    wrong = torch.randn_like(right) * 10
    assert cpc_info_nce(right, z)[0] < 0.05 < cpc_info_nce(wrong, z)[0]


def _scores(local, glob):
    b, p, _ = local.shape
    return [[[float(local[c, q] @ glob[bb]) for q in range(p)] for c in range(b)] for bb in range(b)]


def test_dim_jsd_matches_the_explicit_average_over_positive_and_negative_pairs():
    g = torch.Generator().manual_seed(1)
    local = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    glob = torch.randn(4, 5, generator=g, dtype=torch.float64)
    t = _scores(local, glob)
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    pos = [-sp(-t[b][b][q]) for b in range(4) for q in range(3)]
    neg = [sp(t[b][c][q]) for b in range(4) for c in range(4) if c != b for q in range(3)]
    expected = sum(pos) / len(pos) - sum(neg) / len(neg)  # E_P[-sp(-T)] - E_N[sp(T)]
    loss, mi = dim_jsd(local, glob)
    assert loss.item() == pytest.approx(-expected, rel=1e-6)
    assert mi.item() == pytest.approx(expected, rel=1e-6) and not mi.requires_grad


def test_dim_infonce_locals_matches_the_explicit_softmax_per_local_position():
    g = torch.Generator().manual_seed(2)
    local = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    glob = torch.randn(3, 5, generator=g, dtype=torch.float64)
    t = _scores(local, glob)
    terms = []
    for b in range(3):
        for i in range(4):
            # positive (l_{b,i}, g_b); negatives: g_b with every local of every other image
            logits = [t[b][b][i]] + [t[b][c][j] for c in range(3) if c != b for j in range(4)]
            terms.append(-(logits[0] - math.log(sum(math.exp(v) for v in logits))))
    loss, candidates = dim_infonce(local, glob, "locals")
    assert candidates == 1 + 2 * 4
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_dim_infonce_globals_matches_the_explicit_softmax_over_images():
    g = torch.Generator().manual_seed(3)
    local = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    glob = torch.randn(3, 5, generator=g, dtype=torch.float64)
    t = _scores(local, glob)
    terms = []
    for b in range(3):
        for i in range(4):
            logits = [t[c][b][i] for c in range(3)]  # l_{b,i} against every image's global
            terms.append(-(logits[b] - math.log(sum(math.exp(v) for v in logits))))
    loss, candidates = dim_infonce(local, glob, "globals")
    assert candidates == 3
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    with pytest.raises(ValueError, match="negatives"):
        dim_infonce(local, glob, "patches")


@pytest.mark.parametrize("estimator", ["jsd", "locals", "globals"])
def test_dim_estimators_give_gradients_to_both_sides_and_prefer_matched_pairs(estimator):
    local = torch.randn(4, 3, 6, requires_grad=True)
    glob = torch.randn(4, 6, requires_grad=True)
    fn = (lambda l, g: dim_jsd(l, g)[0]) if estimator == "jsd" else (lambda l, g: dim_infonce(l, g, estimator)[0])
    fn(local, glob).backward()
    assert local.grad.abs().sum() > 0 and glob.grad.abs().sum() > 0
    # locals that all point at their own image's global: a much lower loss than random ones
    g = F.normalize(torch.randn(4, 6), dim=1) * 4
    matched = g[:, None, :].expand(4, 3, 6)
    assert fn(matched, g) < fn(torch.randn(4, 3, 6) * 4, g)
