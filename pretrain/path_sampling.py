"""Sampling R2R-rule paths for speaker synthesis.

A path follows the R2R rules of the world generator (:mod:`lodestar.envs.nav.world.episodes`): it is the graph's
shortest path between its ends, has 4-6 edges and is at least 5 m long. Paths whose start/goal pair
(in either direction) is already used by a human-annotated episode are taken only after every fresh
pair is used up, so synthetic data is distinct from the human data where the houses allow it.

The order interleaves houses (one path per house in turn, each house's pairs in its own shuffled
order), so any prefix of the sampled list spreads evenly over the houses, and the result depends
only on the seed and the graphs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.world.episodes import PathConfig, candidate_pairs, hop_counts, make_episode


@dataclass(frozen=True)
class PlannedPath:
    """One path to synthesize: shortest path from ``start`` to ``goal`` (viewpoint ids) in ``scan``."""

    scan: str
    start: str
    goal: str
    heading: float

    def to_episode(self, graph: NavGraph, path_id: int | str, instructions: Sequence[str] = ()) -> Episode:
        return make_episode(
            graph, graph.index[self.start], graph.index[self.goal], self.heading, path_id, instructions
        )


def used_pairs(episodes: Iterable[Episode]) -> dict[str, set[frozenset[str]]]:
    """Unordered ``{start, goal}`` viewpoint pairs of ``episodes``, per scan."""
    used: dict[str, set[frozenset[str]]] = {}
    for ep in episodes:
        if len(ep.path) >= 2:
            used.setdefault(ep.scan, set()).add(frozenset((ep.path[0], ep.path[-1])))
    return used


def available_paths(
    graph: NavGraph, config: PathConfig | None = None, exclude: set[frozenset[str]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed ``(start, goal)`` index pairs ``[K, 2]`` that qualify: fresh ones and excluded ones."""
    pairs = candidate_pairs(graph, config)
    directed = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else pairs.reshape(0, 2)
    if not exclude:
        return directed, directed[:0]
    vps = graph.viewpoints
    taken = np.array([frozenset((vps[a], vps[b])) in exclude for a, b in directed.tolist()], dtype=bool)
    return directed[~taken], directed[taken]


def plan_paths(
    graphs: Sequence[NavGraph],
    count: int,
    seed: int,
    exclude: Mapping[str, set[frozenset[str]]] | None = None,
    config: PathConfig | None = None,
) -> list[PlannedPath]:
    """``count`` distinct directed R2R-rule paths over ``graphs`` (see the module docstring).

    Raises ``ValueError`` when the houses hold fewer qualifying paths than asked.
    """
    if count < 0:
        raise ValueError(f"path count must be >= 0, got {count}")
    exclude = exclude or {}
    fresh_lists, used_lists = [], []
    root = np.random.SeedSequence(seed)
    for graph, child in zip(graphs, root.spawn(len(graphs)), strict=True):
        rng = np.random.default_rng(child)
        fresh, used = available_paths(graph, config, exclude.get(graph.scan))
        fresh_lists.append(
            (graph, fresh[rng.permutation(len(fresh))], rng.uniform(0, 2 * math.pi, len(fresh)))
        )
        used_lists.append((graph, used[rng.permutation(len(used))], rng.uniform(0, 2 * math.pi, len(used))))
    total = sum(len(p) for _, p, _ in fresh_lists) + sum(len(p) for _, p, _ in used_lists)
    if count > total:
        raise ValueError(
            f"asked for {count} paths but the {len(graphs)} houses hold only {total} distinct R2R-rule "
            f"paths (4-6 edges, >= 5 m); add houses (--new-houses) or decode several instructions per "
            f"path (--decodes-per-path)"
        )
    planned: list[PlannedPath] = []
    for group in (fresh_lists, used_lists):
        longest = max((len(p) for _, p, _ in group), default=0)
        for i in range(longest):
            for graph, pairs, headings in group:
                if i < len(pairs):
                    a, b = pairs[i]
                    heading = round(float(headings[i]), 6)
                    planned.append(PlannedPath(graph.scan, graph.viewpoints[a], graph.viewpoints[b], heading))
                    if len(planned) == count:
                        return planned
    return planned


def check_path_rules(graph: NavGraph, path: Sequence[str], config: PathConfig | None = None) -> None:
    """Raise ``ValueError`` unless ``path`` is the shortest path of its ends and obeys the R2R rules."""
    config = config or PathConfig()
    if len(path) < 2:
        raise ValueError(f"scan {graph.scan}: path {list(path)} has fewer than two viewpoints")
    a, b = graph.index[path[0]], graph.index[path[-1]]
    edges = len(path) - 1
    if not config.min_edges <= edges <= config.max_edges:
        raise ValueError(
            f"scan {graph.scan}: path has {edges} edges, not {config.min_edges}-{config.max_edges}"
        )
    if graph.distance(a, b) < config.min_distance:
        raise ValueError(f"scan {graph.scan}: path is {graph.distance(a, b):.2f} m < {config.min_distance} m")
    if list(path) != graph.shortest_path(a, b) or hop_counts(graph)[a, b] != edges:
        raise ValueError(f"scan {graph.scan}: path {path[0]} -> {path[-1]} is not the graph's shortest path")
