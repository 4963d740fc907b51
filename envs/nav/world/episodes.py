"""R2R-style episodes: shortest paths of a few edges between viewpoints, and the dataset splits.

As in R2R, a path is the shortest path between its two ends, has 4-6 edges and is at least 5 m
long. Paths of one house drawn for different splits (train and val_seen) never share a start/goal
pair in either direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode

SPLITS: tuple[str, ...] = ("train", "val_seen", "val_unseen", "test")


@dataclass(frozen=True)
class PathConfig:
    """Which start/goal pairs make an episode."""

    min_edges: int = 4
    max_edges: int = 6
    min_distance: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_edges <= self.max_edges:
            raise ValueError(f"need 1 <= min_edges <= max_edges, got {self.min_edges}, {self.max_edges}")


def hop_counts(graph: NavGraph) -> np.ndarray:
    """``[V, V]`` number of edges on the graph's shortest path between each pair (-1: unreachable).

    Follows ``graph.next_hop`` so the count is that of the exact path ``graph.shortest_path`` returns.
    """
    n = graph.num_viewpoints
    nxt = graph.next_hop
    hops = np.full((n, n), -1, dtype=np.int64)
    np.fill_diagonal(hops, 0)
    cols = np.broadcast_to(np.arange(n), (n, n))
    for _ in range(n):
        via = np.where(nxt >= 0, hops[np.clip(nxt, 0, None), cols], -1)
        update = (hops < 0) & (via >= 0)
        if not update.any():
            break
        hops[update] = via[update] + 1
    return hops


def candidate_pairs(graph: NavGraph, config: PathConfig | None = None) -> np.ndarray:
    """``[K, 2]`` unordered viewpoint-index pairs ``(i < j)`` whose shortest path qualifies."""
    config = config or PathConfig()
    hops = hop_counts(graph)
    ok = (hops >= config.min_edges) & (hops <= config.max_edges) & (graph.distances >= config.min_distance)
    # Weighted shortest paths are symmetric, but tie-breaking may give the two directions different
    # edge counts; require both to qualify so that either direction can be used.
    ok &= ok.T
    i, j = np.nonzero(np.triu(ok, k=1))
    return np.stack([i, j], axis=1)


def sample_paths(
    graph: NavGraph, rng: np.random.Generator, counts: Sequence[int], config: PathConfig | None = None
) -> list[list[tuple[int, int]]]:
    """Disjoint groups of ``(start, goal)`` index pairs, one group per entry of ``counts``.

    No unordered pair appears twice, so groups (e.g. train and val_seen) share no path in either
    direction. When the house has fewer qualifying pairs than asked, later groups get fewer.
    """
    pairs = candidate_pairs(graph, config)
    order = rng.permutation(len(pairs))
    flips = rng.random(len(pairs)) < 0.5
    groups, cursor = [], 0
    for count in counts:
        chosen = order[cursor : cursor + count]
        cursor += len(chosen)
        groups.append(
            [
                (int(pairs[k, 1]), int(pairs[k, 0])) if flips[k] else (int(pairs[k, 0]), int(pairs[k, 1]))
                for k in chosen
            ]
        )
    return groups


def make_episode(
    graph: NavGraph,
    start: int,
    goal: int,
    heading: float,
    path_id: int | str = -1,
    instructions: Sequence[str] = (),
) -> Episode:
    """The episode walking the shortest path from ``start`` to ``goal`` with a given start heading."""
    return Episode(
        path_id=path_id,
        scan=graph.scan,
        heading=round(float(heading) % (2 * math.pi), 6),
        path=graph.shortest_path(start, goal),
        instructions=list(instructions),
        distance=round(graph.distance(start, goal), 4),
    )


def split_of_house(index: int, num_train: int, num_val_unseen: int, num_test: int) -> str:
    """Houses ``[0, num_train)`` are seen (train + val_seen), then val_unseen, then test."""
    if index < 0 or index >= num_train + num_val_unseen + num_test:
        raise ValueError(f"house index {index} is outside the {num_train + num_val_unseen + num_test} houses")
    if index < num_train:
        return "train"
    if index < num_train + num_val_unseen:
        return "val_unseen"
    return "test"
