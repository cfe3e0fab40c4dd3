"""Shuffled BatchNorm in one process: each group's BN statistics are its own, the shuffle is undone
row for row, and the key batches never share a query batch's composition."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from selfsup.nn.shuffle_bn import effective_groups, grouped_forward, shuffle_permutation, shuffled_forward


def bn_net(dim: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, dim))


def test_each_group_is_normalised_with_its_own_statistics():
    torch.manual_seed(1)
    x = torch.randn(12, 5) * 3 + torch.arange(12.0)[:, None]  # groups with clearly different means
    bn = nn.BatchNorm1d(5, affine=False)
    y = grouped_forward(bn, x, groups=3)
    for c_in, c_out in zip(x.chunk(3), y.chunk(3)):
        want = (c_in - c_in.mean(0)) / torch.sqrt(c_in.var(0, unbiased=False) + bn.eps)  # BN on the chunk alone
        torch.testing.assert_close(c_out, want)
        torch.testing.assert_close(c_out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    full = nn.BatchNorm1d(5, affine=False)(x)
    assert not torch.allclose(y, full, atol=1e-3), "grouped statistics must differ from the full batch's"


def test_grouped_forward_of_a_network_equals_separate_forwards_of_its_chunks():
    net = bn_net()
    x = torch.randn(16, 6)
    ref = copy.deepcopy(net)
    want = torch.cat([ref(c) for c in x.chunk(4)])
    torch.testing.assert_close(grouped_forward(net, x, 4), want)


def test_unshuffle_restores_the_order_exactly_when_bn_uses_fixed_statistics():
    net = bn_net()
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net.eval()  # BN with running statistics: the output of a row no longer depends on its batch
    x = torch.randn(16, 6)
    torch.manual_seed(3)
    torch.testing.assert_close(shuffled_forward(net, x, groups=4), net(x))


def test_shuffled_keys_differ_from_unshuffled_and_are_the_explicit_permuted_computation():
    net = bn_net().train()
    x = torch.randn(16, 6)
    perm = shuffle_permutation(16, 4, torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(16))
    got = shuffled_forward(net, x, groups=4, perm=perm)
    # explicit: the BN batches are the images perm[0:4], perm[4:8], ...; each output returned to its image
    want = torch.empty(16, 6)
    for chunk in perm.chunk(4):
        want[chunk] = copy.deepcopy(net)(x[chunk])
    torch.testing.assert_close(got, want)
    unshuffled = grouped_forward(net, x, 4)
    assert not torch.allclose(got, unshuffled, atol=1e-4), "shuffling must change the BN batches of the keys"


def test_no_key_group_is_normalised_over_the_images_of_a_query_group():
    gen = torch.Generator().manual_seed(0)
    for n, g in [(4, 2), (6, 3), (8, 2), (16, 8), (256, 8)]:
        query_groups = [set(c.tolist()) for c in torch.arange(n).chunk(g)]
        for _ in range(50):
            perm = shuffle_permutation(n, g, gen)
            assert sorted(perm.tolist()) == list(range(n))
            for chunk in perm.chunk(g):
                assert set(chunk.tolist()) not in query_groups, (n, g, perm.tolist())


def test_shuffle_uses_the_global_generator_so_a_resumed_run_repeats_it():
    torch.manual_seed(7)
    a = shuffle_permutation(32, 4)
    torch.manual_seed(7)
    b = shuffle_permutation(32, 4)
    assert torch.equal(a, b)


@pytest.mark.parametrize("batch,groups,want", [(256, 8, 8), (16, 8, 8), (10, 8, 5), (3, 4, 1), (1, 4, 1)])
def test_groups_keep_at_least_two_samples_for_batchnorm(batch, groups, want):
    assert effective_groups(batch, groups) == want
    net = bn_net().train()
    out = shuffled_forward(net, torch.randn(max(batch, 2), 6), groups)  # never a 1-sample BN batch
    assert torch.isfinite(out).all()
