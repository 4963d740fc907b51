"""A sum tree (with a companion min tree) built from torch ops, for proportional prioritized replay.

Leaves sit in consecutive groups of ``branching``; each level above holds one node per group of the
level below, and levels are added only until one has at most ``TOP_GROUPS`` groups of nodes. A batch
of prefix-sum queries scans that top level with one cumsum + searchsorted, then descends the levels
below with a gather, a cumsum and a searchsorted each; a batch of leaf updates recomputes each
level's touched parents with one gather + reduce. A replay batch is a few dozen items, so the cost
is the number of tensor ops, not their size: the default branching is the smallest power of two
that leaves two levels (a 1M-leaf tree: 7,813 groups of 128 leaves under a top level of 7,813 nodes),
so a query batch scans the top once and reads one group of 128 leaves per query, in about a dozen
ops. Everything stays on the tree's device.

Leaves hold non-negative priorities; a zero leaf is never sampled. Sums are kept in float64 and
recomputed exactly from the children on every update, so no rounding drift accumulates. The min tree
starts above the leaves (a leaf group's min is taken over its positive leaves), so it costs no
float64 leaf-sized tensor; duplicate indices in an update are resolved through one int32 scratch
tensor of ``capacity`` entries (4 bytes per leaf).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lodestar.replay.storage import filled_part, zero_tail_start

# The top level is scanned whole by every query batch: up to this many groups of nodes.
TOP_GROUPS = 64


def _level_sizes(capacity: int, branching: int) -> list[int]:
    """Padded length of each level, leaves first, up to one of at most ``TOP_GROUPS`` groups."""
    sizes = [-(-capacity // branching) * branching]
    while sizes[-1] > TOP_GROUPS * branching:
        groups = sizes[-1] // branching
        sizes.append(-(-groups // branching) * branching)
    return sizes


def default_branching(capacity: int) -> int:
    """The smallest power of two (at least 16) that gives a two-level tree: leaves and a top level."""
    branching = 16
    while TOP_GROUPS * branching * branching < capacity:
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
        # Each level below the top seen as [groups, branching] rows, built once: views cost an op each.
        self._sum_groups = [level.view(-1, self.branching) for level in self._sums[:-1]]
        self._min_groups = [level.view(-1, self.branching) for level in self._mins[:-1]]
        # Scratch for updates with repeated indices: the position of each index's last occurrence.
        self._last = torch.zeros(self.capacity, dtype=torch.int32, device=self.device)
        self._positions = torch.arange(0, dtype=torch.int32, device=self.device)
        self._zero = torch.zeros((), dtype=torch.float64, device=self.device)

    @property
    def num_levels(self) -> int:
        return len(self._sums)

    def total(self) -> torch.Tensor:
        """Sum of all leaves (0-dim float64 tensor)."""
        return self._sums[-1].sum()

    def min(self) -> torch.Tensor:
        """Smallest positive leaf (0-dim float64 tensor; +inf when every leaf is zero)."""
        if not self._mins:  # the leaves are the top level
            return self._positive_min(self._sums[0].view(1, -1))[0]
        return self._mins[-1].amin()

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Leaf values at ``indices``."""
        return self._sums[0].index_select(0, _as(indices, torch.long, self.device))

    def leaves(self) -> torch.Tensor:
        """All ``capacity`` leaves (a view)."""
        return self._sums[0][: self.capacity]

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Set leaves ``indices`` to ``values`` (>= 0); for a repeated index the last value wins.

        Returns the value each entry's leaf now holds (``values`` with every repeat of an index
        replaced by that index's last value).
        """
        indices = _as(indices, torch.long, self.device)
        values = _as(values, torch.float64, self.device)
        if indices.numel() != values.numel():
            raise ValueError(f"got {indices.numel()} indices but {values.numel()} values")
        if indices.numel() == 0:
            return values
        values = self._last_values(indices, values)
        # Every repeat of an index now carries the same value (and so do repeated parents below), so
        # the unordered indexed writes are deterministic.
        self._sums[0].index_copy_(0, indices, values)
        nodes = indices
        for level in range(1, self.num_levels):
            nodes = nodes.div(self.branching, rounding_mode="floor")
            children = self._sum_groups[level - 1].index_select(0, nodes)
            self._sums[level].index_copy_(0, nodes, children.sum(1))
            if level == 1:
                mins = self._positive_min(children)
            else:
                mins = self._min_groups[level - 2].index_select(0, nodes).amin(1)
            self._mins[level - 1].index_copy_(0, nodes, mins)
        return values

    def rebuild(self) -> None:
        """Recompute every internal level from the leaves (after bulk edits of :meth:`leaves`)."""
        for level in range(1, self.num_levels):
            children = self._sum_groups[level - 1]
            groups = children.shape[0]
            self._sums[level].zero_()
            self._sums[level][:groups] = children.sum(1)
            below = self._positive_min(children) if level == 1 else self._min_groups[level - 2].amin(1)
            self._mins[level - 1].fill_(float("inf"))
            self._mins[level - 1][:groups] = below

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """Leaf index ``i`` with ``prefix(i) <= mass < prefix(i) + leaf(i)`` for each query in ``mass``.

        ``mass`` should lie in ``[0, total())``. Rounding can push a query past the last positive
        child of a node; it is then clamped to that child, so a zero leaf is never returned while the
        tree holds any positive leaf.
        """
        mass = _as(mass, torch.float64, self.device)
        # The top level is searched as one row by every query at once.
        top = self._sums[-1]
        cums = top.cumsum(0)
        # Just below a row's total: the search then stops at a positive child whatever the rounding.
        mass = torch.minimum(mass, torch.nextafter(cums[-1:], self._zero))
        node = torch.searchsorted(cums, mass, right=True)
        if self.num_levels == 1:
            return node
        mass = (mass - (cums.index_select(0, node) - top.index_select(0, node))).unsqueeze(1)
        for level in range(self.num_levels - 2, -1, -1):
            children = self._sum_groups[level].index_select(0, node)
            cums = children.cumsum(1)
            mass = torch.minimum(mass, torch.nextafter(cums[:, -1:], self._zero))
            choice = torch.searchsorted(cums, mass, right=True)
            if level:  # the leaf level needs no remainder
                mass = mass - (cums - children).gather(1, choice)
            node = torch.add(choice.view(-1), node, alpha=self.branching)
        return node

    def nbytes(self) -> int:
        tensors = (*self._sums, *self._mins, self._last)
        return sum(t.numel() * t.element_size() for t in tensors)

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

    def _last_values(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``values`` with each entry replaced by the value of its index's last occurrence."""
        n = indices.numel()
        if self._positions.numel() < n:
            self._positions = torch.arange(n, dtype=torch.int32, device=self.device)
        # A max-reduction is order-free, so scattering positions finds each last occurrence exactly.
        self._last.scatter_reduce_(0, indices, self._positions[:n], "amax", include_self=False)
        return values.index_select(0, self._last.index_select(0, indices))

    @staticmethod
    def _positive_min(groups: torch.Tensor) -> torch.Tensor:
        """Min over the positive entries of each row (+inf for a row without one)."""
        return groups.masked_fill(groups == 0, float("inf")).amin(1)


def _as(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``tensor`` flattened, with ``dtype`` on ``device`` (no op when it already is)."""
    if tensor.dtype != dtype or tensor.device != device:
        tensor = tensor.to(device=device, dtype=dtype)
    return tensor.reshape(-1)
