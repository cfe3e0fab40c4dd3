"""Queue (FIFO order, size, wrap-around), the support set (nearest neighbours, staged pushes) and memory bank
(update rule, no gradient) against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.nn import MemoryBank, Queue, SupportSet


def test_queue_fills_then_drops_the_oldest_in_order():
    q = Queue(size=5, dim=2)
    assert len(q) == 0 and q.items().shape == (0, 2)
    rows = [torch.full((2, 2), float(i)) for i in range(4)]  # batches of 2 keys: 0,0 1,1 2,2 3,3
    q.push(rows[0])
    q.push(rows[1])
    assert len(q) == 4
    assert q.items()[:, 0].tolist() == [0, 0, 1, 1]
    q.push(rows[2])  # 6 keys into 5 slots: the first 0 is dropped
    assert len(q) == 5
    assert q.items()[:, 0].tolist() == [0, 1, 1, 2, 2]
    q.push(rows[3])
    assert q.items()[:, 0].tolist() == [1, 2, 2, 3, 3]


def test_queue_keeps_the_newest_when_a_push_exceeds_its_size():
    q = Queue(size=3, dim=1)
    q.push(torch.arange(5.0)[:, None])
    assert q.items()[:, 0].tolist() == [2, 3, 4]
    q.push(torch.tensor([[9.0]]))
    assert q.items()[:, 0].tolist() == [3, 4, 9]


def test_queue_state_round_trips_through_state_dict_and_holds_no_graph():
    q = Queue(size=4, dim=3)
    k = torch.randn(3, 3, requires_grad=True)
    q.push(k * 2)
    assert not q.items().requires_grad
    q2 = Queue(size=4, dim=3)
    q2.load_state_dict(q.state_dict())
    q.push(torch.ones(2, 3))
    q2.push(torch.ones(2, 3))
    torch.testing.assert_close(q.items(), q2.items())


def test_support_set_neighbours_and_staged_pushes():
    q = SupportSet(size=4, dim=2)
    z = torch.tensor([[3.0, 0.1], [0.0, -2.0]], requires_grad=True)
    ((own, cos),) = q.neighbours(z)  # empty: each z is its own neighbour
    torch.testing.assert_close(own, F.normalize(z.detach(), dim=1))
    assert cos.tolist() == [1.0, 1.0] and not own.requires_grad
    q.stage(z * 2)
    assert len(q) == 0, "stage leaves the set unchanged until flush"
    q.flush()
    torch.testing.assert_close(q.items(), F.normalize(z.detach(), dim=1))
    q.flush()  # nothing staged: nothing pushed again
    assert len(q) == 2
    q.push(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
    (a, ca), (b, cb) = q.neighbours(torch.tensor([[-5.0, 0.5]]), torch.tensor([[1.0, 1.2]]))
    torch.testing.assert_close(a, torch.tensor([[-1.0, 0.0]]))  # the row of highest cosine, unit length
    torch.testing.assert_close(b, F.normalize(torch.tensor([[1.0, 1.0]]), dim=1))
    assert ca.item() == pytest.approx(5 / (25.25**0.5)) and cb.item() == pytest.approx(2.2 / (2 * 2.44) ** 0.5)


def test_memory_bank_update_rule_and_normalisation():
    bank = MemoryBank(10, 4, seed=0)
    torch.testing.assert_close(bank.data.norm(dim=1), torch.ones(10))
    idx = torch.tensor([2, 7])
    old = bank.get(idx)
    v = torch.randn(2, 4, requires_grad=True)
    bank.update(idx, v, momentum=0.5)
    want = F.normalize(0.5 * old + 0.5 * v.detach(), dim=1)
    torch.testing.assert_close(bank.get(idx), want)
    assert not bank.data.requires_grad
    untouched = [i for i in range(10) if i not in (2, 7)]
    torch.testing.assert_close(bank.data[untouched], MemoryBank(10, 4, seed=0).data[untouched])


def test_memory_bank_needs_its_size():
    with pytest.raises(ValueError, match="num_samples"):
        MemoryBank(None, 4)


def test_memory_bank_sampling_is_seeded():
    bank = MemoryBank(100, 4)
    a = bank.sample(50, torch.Generator().manual_seed(1))
    b = bank.sample(50, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < 100
