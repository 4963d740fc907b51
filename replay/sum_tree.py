"""A sum tree (with a companion min tree) built from torch ops, for proportional prioritized replay.

The tree is ``branching``-ary rather than binary: every level is a tensor whose consecutive groups of
``branching`` nodes are the children of one node of the level above. A batch of prefix-sum queries
descends all levels at once (a gather, a cumsum and a searchsorted per level), and a batch of leaf
updates recomputes each level's touched parents with one gather + reduce. A replay batch is a few dozen
items, so the cost is the number of tensor ops, not their size: the default branching is the smallest
power of two whose square covers the capacity, which makes two levels (a 1M-leaf tree: 977 groups of
1,024 leaves under one root group) and about ten ops per level. Everything stays on the tree's device.

Leaves hold non-negative priorities; a zero leaf is never sampled. Sums are kept in float64 and
recomputed exactly from the children on every update, so no rounding drift accumulates. The min tree
starts above the leaves (a leaf group's min is taken over its positive leaves), so it costs no
leaf-sized tensor.
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


def default_branching(capacity: int) -> int:
    """The smallest power of two (at least 16) whose square covers ``capacity``: a two-level tree."""
    branching = 16
    while branching * branching < capacity:
        branching *= 2
    return branching


class SumTree:
    """Batched sum/min tree over ``capacity`` non-negative leaves.

    ``branching=None`` picks :func:`default_branching`. The branching is a layout choice only: a saved
    state holds the leaves and loads into a tree of any branching.
    """

    def __init__(
        self, capacity: int, device: torch.device | str = "cpu", branching: int | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"sum tree capacity must be >= 1, got {capacity}")
        if branching is None:
            branching = default_branching(capacity)
        if branching < 2:
            raise ValueError(f"sum tree branching must be >= 2, got {branching}")
        self.capacity = int(capacity)
        self.branching = int(branching)
        self.device = torch.device(device)
        sizes = _level_sizes(self.capacity, self.branching)
        self._sums = [torch.zeros(n, dtype=torch.float64, device=self.device) for n in sizes]
        # _mins[k] holds the min over the positive leaves below each node of level k + 1; groups
        # without one (and padding) hold +inf, so they never count as the min.
        self._mins = [
            torch.full((n,), float("inf"), dtype=torch.float64, device=self.device) for n in sizes[1:]
        ]
        self._zero = torch.zeros((), dtype=torch.float64, device=self.device)

    @property
    def num_levels(self) -> int:
        return len(self._sums)

    def total(self) -> torch.Tensor:
        """Sum of all leaves (0-dim float64 tensor)."""
        return self._sums[-1].sum()

    def min(self) -> torch.Tensor:
        """Smallest positive leaf (0-dim float64 tensor; +inf when every leaf is zero)."""
        if not self._mins:  # a single group of leaves
            return self._positive_min(self._sums[0].view(1, -1))[0]
        return self._mins[-1].min()

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Leaf values at ``indices``."""
        return self._sums[0][indices]

    def leaves(self) -> torch.Tensor:
        """All ``capacity`` leaves (a view)."""
        return self._sums[0][: self.capacity]

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Set leaves ``indices`` to ``values`` (>= 0); for a repeated index the last value wins."""
        indices = _as(indices, torch.long, self.device)
        values = _as(values, torch.float64, self.device)
        if indices.numel() != values.numel():
            raise ValueError(f"got {indices.numel()} indices but {values.numel()} values")
        if indices.numel() == 0:
            return
        indices, values = _last_occurrence(indices, values)
        self._sums[0].index_put_((indices,), values)
        b = self.branching
        # Parents repeated in ``nodes`` all receive the same recomputed value, so duplicates are harmless.
        nodes = indices
        for level in range(1, self.num_levels):
            nodes = nodes // b
            children = self._sums[level - 1].view(-1, b).index_select(0, nodes)
            self._sums[level].index_put_((nodes,), children.sum(1))
            if level == 1:
                mins = self._positive_min(children)
            else:
                mins = self._mins[level - 2].view(-1, b).index_select(0, nodes).amin(1)
            self._mins[level - 1].index_put_((nodes,), mins)

    def rebuild(self) -> None:
        """Recompute every internal level from the leaves (after bulk edits of :meth:`leaves`)."""
        b = self.branching
        for level in range(1, self.num_levels):
            children = self._sums[level - 1].view(-1, b)
            groups = children.shape[0]
            self._sums[level].zero_()
            self._sums[level][:groups] = children.sum(1)
            below = self._positive_min(children) if level == 1 else self._mins[level - 2].view(-1, b).amin(1)
            self._mins[level - 1].fill_(float("inf"))
            self._mins[level - 1][:groups] = below

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """Leaf index ``i`` with ``prefix(i) <= mass < prefix(i) + leaf(i)`` for each query in ``mass``.

        ``mass`` should lie in ``[0, total())``. Rounding can push a query past the last positive
        child of a node; it is then clamped to that child, so a zero leaf is never returned while the
        tree holds any positive leaf.
        """
        mass = _as(mass, torch.float64, self.device).unsqueeze(1)
        b = self.branching
        # The top level is one group, searched as a 1-D row by every query at once.
        top = self._sums[-1]
        cums = top.cumsum(0)
        # Just below a group's total: the search then stops at a positive child whatever the rounding.
        mass = torch.minimum(mass, torch.nextafter(cums[-1:], self._zero))
        group = torch.searchsorted(cums, mass, right=True)
        mass = mass - (cums - top)[group]
        for level in range(self.num_levels - 2, -1, -1):
            children = self._sums[level].view(-1, b).index_select(0, group.view(-1))
            cums = children.cumsum(1)
            mass = torch.minimum(mass, torch.nextafter(cums[:, -1:], self._zero))
            choice = torch.searchsorted(cums, mass, right=True)
            mass = mass - (cums - children).gather(1, choice)
            group = group * b + choice
        return group.view(-1)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self._sums, *self._mins))

    def state_dict(self) -> dict[str, Any]:
        """Capacity, branching and the leaves up to the last non-zero one (the levels above are rebuilt)."""
        leaves = filled_part(self._sums[0], zero_tail_start(self._sums[0]))
        return {"capacity": self.capacity, "branching": self.branching, "leaves": leaves}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"sum tree state is for capacity={state['capacity']}; this tree has capacity={self.capacity}"
            )
        leaves = state["leaves"].to(device=self.device, dtype=torch.float64)
        if leaves.dim() != 1 or leaves.numel() > self.capacity:
            raise ValueError(f"sum tree state has {leaves.numel()} leaves, expected at most {self.capacity}")
        self._sums[0].zero_()
        self._sums[0][: leaves.numel()] = leaves
        self.rebuild()

    @staticmethod
    def _positive_min(groups: torch.Tensor) -> torch.Tensor:
        """Min over the positive entries of each row (+inf for a row without one)."""
        return groups.masked_fill(groups == 0, float("inf")).amin(1)


def _as(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``tensor`` flattened, with ``dtype`` on ``device`` (no op when it already is)."""
    if tensor.dtype != dtype or tensor.device != device:
        tensor = tensor.to(device=device, dtype=dtype)
    return tensor.reshape(-1)


def _last_occurrence(indices: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop all but the last occurrence of each repeated index (indexed writes keep no defined order)."""
    order = torch.sort(indices, stable=True)
    sorted_idx = order.values
    keep = torch.ones_like(sorted_idx, dtype=torch.bool)
    keep[:-1] = sorted_idx[1:] != sorted_idx[:-1]
    return sorted_idx[keep], values[order.indices[keep]]
