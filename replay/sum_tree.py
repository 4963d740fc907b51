"""A sum tree (with a companion min tree) built from torch ops, for proportional prioritized replay.

The tree is ``branching``-ary rather than binary: every level is a tensor whose consecutive groups of
``branching`` nodes are the children of one node of the level above. A batch of prefix-sum queries
descends all levels at once (one gather + cumsum per level), and a batch of leaf updates recomputes
each level's touched parents with one gather + reduce, so a 1M-leaf tree costs four levels of a few
tensor ops instead of twenty levels of a binary tree. Everything stays on the tree's device.

Leaves hold non-negative priorities; a zero leaf is never sampled. Sums are kept in float64 and
recomputed exactly from the children on every update, so no rounding drift accumulates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lodestar.replay.storage import filled_part, zero_tail_start


def _level_sizes(capacity: int, branching: int) -> list[int]:
    """Padded length of each level, leaves first, until one group of ``branching`` nodes is left."""
    sizes = [-(-capacity // branching) * branching]
    while sizes[-1] > branching:
        groups = sizes[-1] // branching
        sizes.append(-(-groups // branching) * branching)
    return sizes


class SumTree:
    """Batched sum/min tree over ``capacity`` non-negative leaves."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu", branching: int = 32) -> None:
        if capacity < 1:
            raise ValueError(f"sum tree capacity must be >= 1, got {capacity}")
        if branching < 2:
            raise ValueError(f"sum tree branching must be >= 2, got {branching}")
        self.capacity = int(capacity)
        self.branching = int(branching)
        self.device = torch.device(device)
        sizes = _level_sizes(self.capacity, self.branching)
        self._sums = [torch.zeros(n, dtype=torch.float64, device=self.device) for n in sizes]
        # Zero (unsampleable) and padding leaves hold +inf in the min tree so they never count as the min.
        self._mins = [torch.full((n,), float("inf"), dtype=torch.float64, device=self.device) for n in sizes]

    @property
    def num_levels(self) -> int:
        return len(self._sums)

    def total(self) -> torch.Tensor:
        """Sum of all leaves (0-dim float64 tensor)."""
        return self._sums[-1].sum()

    def min(self) -> torch.Tensor:
        """Smallest positive leaf (0-dim float64 tensor; +inf when every leaf is zero)."""
        return self._mins[-1].min()

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Leaf values at ``indices``."""
        return self._sums[0][indices]

    def leaves(self) -> torch.Tensor:
        """All ``capacity`` leaves (a view)."""
        return self._sums[0][: self.capacity]

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Set leaves ``indices`` to ``values`` (>= 0); for a repeated index the last value wins."""
        indices = indices.reshape(-1).to(device=self.device, dtype=torch.long)
        values = values.reshape(-1).to(device=self.device, dtype=torch.float64)
        if indices.numel() != values.numel():
            raise ValueError(f"got {indices.numel()} indices but {values.numel()} values")
        if indices.numel() == 0:
            return
        indices, values = _last_occurrence(indices, values)
        self._sums[0][indices] = values
        self._mins[0][indices] = torch.where(values > 0, values, torch.full_like(values, float("inf")))
        nodes = indices
        b = self.branching
        # Parents repeated in ``nodes`` all receive the same recomputed value, so duplicates are harmless.
        for level in range(1, self.num_levels):
            nodes = nodes // b
            self._sums[level][nodes] = self._sums[level - 1].view(-1, b)[nodes].sum(1)
            self._mins[level][nodes] = self._mins[level - 1].view(-1, b)[nodes].amin(1)

    def rebuild(self) -> None:
        """Recompute every internal level from the leaves (after bulk edits of :meth:`leaves`)."""
        b = self.branching
        leaves = self._sums[0]
        self._mins[0].copy_(torch.where(leaves > 0, leaves, torch.full_like(leaves, float("inf"))))
        for level in range(1, self.num_levels):
            groups = self._sums[level - 1].numel() // b
            self._sums[level].zero_()
            self._sums[level][:groups] = self._sums[level - 1].view(-1, b).sum(1)
            self._mins[level].fill_(float("inf"))
            self._mins[level][:groups] = self._mins[level - 1].view(-1, b).amin(1)

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """Leaf index ``i`` with ``prefix(i) <= mass < prefix(i) + leaf(i)`` for each query in ``mass``.

        ``mass`` should lie in ``[0, total())``. Rounding can push a query past the last positive
        child of a node; it is then clamped to that child, so a zero leaf is never returned while the
        tree holds any positive leaf.
        """
        mass = mass.reshape(-1).to(device=self.device, dtype=torch.float64)
        b = self.branching
        group = torch.zeros(mass.shape, dtype=torch.long, device=self.device)
        for level in range(self.num_levels - 1, -1, -1):
            children = self._sums[level].view(-1, b)[group]
            cums = children.cumsum(1)
            choice = (cums <= mass.unsqueeze(1)).sum(1)
            last_positive = (cums < cums[:, -1:]).sum(1)
            choice = torch.minimum(choice, last_positive)
            mass = mass - (cums - children).gather(1, choice.unsqueeze(1)).squeeze(1)
            group = group * b + choice
        return group

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self._sums, *self._mins))

    def state_dict(self) -> dict[str, Any]:
        """Capacity, branching and the leaves up to the last non-zero one (the levels above are rebuilt)."""
        leaves = filled_part(self._sums[0], zero_tail_start(self._sums[0]))
        return {"capacity": self.capacity, "branching": self.branching, "leaves": leaves}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity or int(state["branching"]) != self.branching:
            raise ValueError(
                f"sum tree state is for capacity={state['capacity']}, branching={state['branching']}; "
                f"this tree has capacity={self.capacity}, branching={self.branching}"
            )
        leaves = state["leaves"].to(device=self.device, dtype=torch.float64)
        if leaves.dim() != 1 or leaves.numel() > self._sums[0].numel():
            raise ValueError(
                f"sum tree state has {leaves.numel()} leaves, expected at most {self._sums[0].numel()}"
            )
        self._sums[0].zero_()
        self._sums[0][: leaves.numel()] = leaves
        self.rebuild()


def _last_occurrence(indices: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop all but the last occurrence of each repeated index (indexed writes keep no defined order)."""
    order = torch.sort(indices, stable=True)
    sorted_idx = order.values
    keep = torch.ones_like(sorted_idx, dtype=torch.bool)
    keep[:-1] = sorted_idx[1:] != sorted_idx[:-1]
    return sorted_idx[keep], values[order.indices[keep]]
