"""The torch sum tree against a plain prefix-sum reference."""

from __future__ import annotations

import pytest
import torch

from lodestar.replay import SumTree


def reference_find(leaves: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Smallest i with cumsum(leaves)[i] > mass (the textbook definition)."""
    return torch.searchsorted(torch.cumsum(leaves, 0), mass, right=True)


# None: the default layout (leaves under one top level; at 5000 leaves, 313 groups of 16).
@pytest.mark.parametrize("branching", [2, 3, 32, None])
@pytest.mark.parametrize("capacity", [1, 7, 100, 1000, 5000])
def test_totals_min_and_find_match_a_reference(capacity: int, branching: int | None) -> None:
    g = torch.Generator().manual_seed(capacity * 31 + (branching or 0))
    tree = SumTree(capacity, branching=branching)
    leaves = torch.zeros(capacity, dtype=torch.float64)
    for _ in range(20):
        idx = torch.randint(0, capacity, (min(capacity, 17),), generator=g)
        values = torch.rand(idx.shape, generator=g, dtype=torch.float64)
        values[torch.rand(idx.shape, generator=g) < 0.3] = 0.0  # some leaves become unsampleable
        tree.update(idx, values)
        for i, v in zip(idx.tolist(), values.tolist(), strict=True):
            leaves[i] = v  # sequential loop: the last write wins
        assert torch.equal(tree.leaves(), leaves)
        assert tree.total().item() == pytest.approx(leaves.sum().item(), rel=1e-12)
        positive = leaves[leaves > 0]
        expected_min = positive.min().item() if positive.numel() else float("inf")
        assert tree.min().item() == expected_min
        if leaves.sum() > 0:
            mass = torch.rand(64, generator=g, dtype=torch.float64) * leaves.sum()
            found = tree.find(mass)
            assert torch.equal(found, reference_find(leaves, mass))
            assert bool((leaves[found] > 0).all())


def test_duplicate_indices_take_the_last_value() -> None:
    tree = SumTree(10, branching=4)
    stored = tree.update(torch.tensor([3, 5, 3, 3, 5]), torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5]))
    assert tree.get(torch.tensor([3, 5])).tolist() == [4.0, 0.5]
    assert tree.total().item() == 4.5
    assert stored.tolist() == [4.0, 0.5, 4.0, 4.0, 0.5]  # what each entry's leaf now holds
    # Again, with the repeats in another order and positions left over from the first update.
    stored = tree.update(torch.tensor([5, 5, 3]), torch.tensor([7.0, 1.5, 2.0]))
    assert stored.tolist() == [1.5, 1.5, 2.0] and tree.total().item() == 3.5


def test_default_layout_is_two_levels_at_replay_sizes() -> None:
    # Leaves in groups of 128 under one top level that every query batch scans whole.
    tree = SumTree(1_000_000)
    assert (tree.branching, tree.num_levels) == (128, 2)
    assert SumTree(100).num_levels == 1  # small trees are a single scanned row


def test_zero_leaves_are_never_found_even_at_the_boundaries() -> None:
    tree = SumTree(64, branching=4)
    tree.update(torch.tensor([0, 17, 63]), torch.tensor([0.25, 0.5, 0.25]))
    total = tree.total()
    edges = torch.tensor([0.0, 0.25, 0.75, 1.0 - 1e-12, 1.0, 1.0 + 1e-9], dtype=torch.float64) * total
    assert set(tree.find(edges).tolist()) <= {0, 17, 63}
    assert tree.find(torch.tensor([0.3])).item() == 17


def test_rebuild_after_bulk_leaf_edit_and_state_round_trip() -> None:
    tree = SumTree(50, branching=3)
    tree.leaves().copy_(torch.arange(50, dtype=torch.float64))
    tree.rebuild()
    assert tree.total().item() == sum(range(50)) and tree.min().item() == 1.0
    copy = SumTree(50, branching=3)
    copy.load_state_dict(tree.state_dict())
    assert copy.total().item() == sum(range(50)) and copy.min().item() == 1.0
    mass = torch.linspace(0, sum(range(50)) - 1, 37, dtype=torch.float64)
    assert torch.equal(copy.find(mass), reference_find(torch.arange(50, dtype=torch.float64), mass))
    # The branching is a layout choice: the leaves load into any of them.
    other = SumTree(50, branching=8)
    other.load_state_dict(tree.state_dict())
    assert torch.equal(other.find(mass), reference_find(torch.arange(50, dtype=torch.float64), mass))
    assert other.min().item() == 1.0
    with pytest.raises(ValueError, match="capacity=50; this tree has capacity=60"):
        SumTree(60, branching=3).load_state_dict(tree.state_dict())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)
    with pytest.raises(ValueError, match="branching"):
        SumTree(4, branching=1)
    with pytest.raises(ValueError, match="3 indices but 2 values"):
        SumTree(4).update(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0]))
