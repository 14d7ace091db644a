"""The memory module: read, update, losses, against hand-worked numbers and invariants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mnad import memory as mem


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_init_items_are_unit_rows_and_seeded():
    a = mem.init_items(10, 32, torch.Generator().manual_seed(1))
    b = mem.init_items(10, 32, torch.Generator().manual_seed(1))
    assert a.shape == (10, 32)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(10))
    assert torch.equal(a, b) and (a >= 0).all()


def test_update_on_a_hand_built_two_item_example():
    # Items e1, e2; three queries: two nearest e1, one nearest e2.
    items = torch.eye(2)
    q = _unit([1.0, 0.0], [0.8, 0.6], [0.0, 1.0])
    s = q @ items.t()  # [[1, 0], [.8, .6], [0, 1]]
    v = torch.softmax(s, dim=0)
    # Item 0 takes queries 0 and 1, each weighted by v[k, 0] / max_k v[k, 0] (query 0 is max).
    d0 = q[0] + (v[1, 0] / v[0, 0]) * q[1]
    d1 = q[2] * 1.0  # query 2 holds the max of column 1
    expected = torch.stack([F.normalize(items[0] + d0, dim=0), F.normalize(items[1] + d1, dim=0)])
    # By hand: v[1,0]/v[0,0] = exp(0.8)/exp(1) = exp(-0.2).
    r = math.exp(-0.2)
    m0 = torch.tensor([1 + 1 + 0.8 * r, 0.6 * r])
    torch.testing.assert_close(expected[0], m0 / m0.norm())
    torch.testing.assert_close(mem.updated_items(q, items), expected)


def test_update_leaves_unchosen_items_bit_identical_and_rows_unit():
    g = torch.Generator().manual_seed(0)
    items = mem.init_items(8, 16, g)
    q = F.normalize(items[2:3] + 0.01 * torch.randn(5, 16, generator=g), dim=1)
    new = mem.updated_items(q, items)
    changed = (new != items).any(dim=1)
    assert changed.tolist() == [i == 2 for i in range(8)]
    torch.testing.assert_close(new.norm(dim=1), torch.ones(8))
    assert not new.requires_grad


@pytest.mark.parametrize("n,m,c", [(1, 2, 4), (64, 10, 32), (300, 7, 8)])
def test_vectorised_update_equals_the_per_item_loop(n, m, c):
    g = torch.Generator().manual_seed(n)
    items = mem.init_items(m, c, g)
    q = F.normalize(torch.randn(n, c, generator=g), dim=1)
    torch.testing.assert_close(mem.updated_items(q, items), mem.updated_items_loop(q, items))


def test_read_is_softmax_weighted_items_without_gradient_to_weights():
    items = torch.eye(3)
    q = _unit([1.0, 0.0, 0.0]).requires_grad_(True)
    r = mem.read(q, items)
    w = torch.softmax(torch.tensor([1.0, 0.0, 0.0]), dim=0)
    torch.testing.assert_close(r[0], w)
    assert not r.requires_grad


def test_losses_on_hand_numbers():
    items = torch.eye(2)
    q = _unit([0.6, 0.8])  # nearest item 1, second item 0
    nearest, second = mem.nearest_two(q, items)
    assert nearest.tolist() == [1] and second.tolist() == [0]
    # compactness: mean((0.6-0)^2, (0.8-1)^2) = (0.36 + 0.04) / 2
    assert mem.compactness(q, items, nearest).item() == pytest.approx(0.2)
    # separateness: max(0, |q - m1| - |q - m0| + 1); |q-m1| = sqrt(.4), |q-m0| = sqrt(.8)
    expected = math.sqrt(0.4) - math.sqrt(0.8) + 1.0
    assert mem.separateness(q, items, nearest, second).item() == pytest.approx(expected, abs=1e-5)


def test_losses_do_not_send_gradient_into_items():
    items = torch.eye(2).requires_grad_(True)
    q = _unit([0.6, 0.8], [1.0, 0.0]).requires_grad_(True)
    nearest, second = mem.nearest_two(q, items)
    loss = mem.compactness(q, items, nearest) + mem.separateness(q, items, nearest, second)
    loss.backward()
    assert items.grad is None and q.grad is not None


def test_distance_per_sample_matches_mean_over_each_sample():
    g = torch.Generator().manual_seed(3)
    items = mem.init_items(4, 8, g)
    feats = torch.randn(3, 8, 2, 2, generator=g)
    q = mem.features_to_queries(feats)  # (12, 8)
    d = mem.distance_per_sample(q, items, 3)
    for b in range(3):
        qb = q[b * 4 : (b + 1) * 4]
        nearest = torch.argmax(qb @ items.t(), dim=1)
        assert d[b].item() == pytest.approx(F.mse_loss(qb, items[nearest]).item(), rel=1e-6)


def test_memory_module_keeps_items_as_a_buffer():
    m = mem.Memory(5, 8)
    assert "items" in m.state_dict() and not list(m.parameters())
    out = m(torch.randn(2, 8, 3, 4))
    assert out.decoder_input.shape == (2, 16, 3, 4)
    assert out.queries.shape == (24, 8) and out.nearest.shape == (24,)
