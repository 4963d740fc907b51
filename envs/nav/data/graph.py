"""Navigation graphs: viewpoints, weighted edges and all-pairs shortest paths of one scan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class NavGraph:
    """The navigation graph of one scan (house).

    ``positions`` is ``[V, 3]`` (x, y, z in metres); ``edges`` lists undirected index pairs. Edge
    weights are the Euclidean distances between the endpoint positions, as in the R2R code.
    """

    scan: str
    viewpoints: list[str]
    positions: np.ndarray
    edges: list[tuple[int, int]]
    index: dict[str, int] = field(init=False)
    distances: np.ndarray = field(init=False, repr=False)
    next_hop: np.ndarray = field(init=False, repr=False)
    adjacency: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(len(self.viewpoints), 3)
        self.index = {vp: i for i, vp in enumerate(self.viewpoints)}
        if len(self.index) != len(self.viewpoints):
            raise ValueError(f"scan {self.scan}: duplicate viewpoint ids")
        self.distances, self.next_hop = _all_pairs_shortest_paths(self.positions, self.edges)
        self.adjacency = np.zeros((self.num_viewpoints, self.num_viewpoints), dtype=bool)
        for i, j in self.edges:
            self.adjacency[i, j] = self.adjacency[j, i] = True

    @property
    def num_viewpoints(self) -> int:
        return len(self.viewpoints)

    def neighbours(self, vp: int) -> list[int]:
        """Indices adjacent to viewpoint index ``vp`` (sorted)."""
        return [int(j) for j in np.flatnonzero(self.adjacency[vp])]

    def edge_length(self, i: int, j: int) -> float:
        return float(np.linalg.norm(self.positions[i] - self.positions[j]))

    def distance(self, a: str | int, b: str | int) -> float:
        """Shortest-path length in metres between two viewpoints (ids or indices)."""
        return float(self.distances[self._idx(a), self._idx(b)])

    def shortest_path(self, a: str | int, b: str | int) -> list[str]:
        """Viewpoint ids of the shortest path from ``a`` to ``b``, both ends included."""
        i, goal = self._idx(a), self._idx(b)
        if not np.isfinite(self.distances[i, goal]):
            raise ValueError(
                f"scan {self.scan}: no path from {self.viewpoints[i]} to {self.viewpoints[goal]}"
            )
        path = [i]
        while i != goal:
            i = int(self.next_hop[i, goal])
            path.append(i)
        return [self.viewpoints[k] for k in path]

    def is_connected(self) -> bool:
        return bool(np.isfinite(self.distances).all())

    def _idx(self, vp: str | int) -> int:
        if isinstance(vp, (int, np.integer)):
            return int(vp)
        try:
            return self.index[vp]
        except KeyError:
            raise KeyError(f"scan {self.scan}: unknown viewpoint {vp!r}") from None


def _all_pairs_shortest_paths(
    positions: np.ndarray, edges: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Floyd-Warshall over Euclidean edge weights; returns distances and first-hop table.

    ``next_hop[i, j]`` is the neighbour of ``i`` on a shortest path to ``j`` (``i`` itself when
    ``i == j``, ``-1`` when unreachable). Ties break towards the smaller intermediate index, so the
    table is deterministic.
    """
    n = len(positions)
    dist = np.full((n, n), np.inf)
    nxt = np.full((n, n), -1, dtype=np.int64)
    np.fill_diagonal(dist, 0.0)
    nxt[np.arange(n), np.arange(n)] = np.arange(n)
    for i, j in edges:
        w = float(np.linalg.norm(positions[i] - positions[j]))
        if w < dist[i, j]:
            dist[i, j] = dist[j, i] = w
            nxt[i, j], nxt[j, i] = j, i
    for k in range(n):
        via = dist[:, k : k + 1] + dist[k : k + 1, :]
        better = via < dist - 1e-9
        dist = np.where(better, via, dist)
        nxt = np.where(better, nxt[:, k : k + 1], nxt)
    return dist, nxt
