"""R2R episode files: ``R2R_<split>.json``, read, written and checked against the graphs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from lodestar.envs.nav.data.errors import NavDataError, read_json
from lodestar.envs.nav.data.graph import NavGraph


@dataclass
class Episode:
    """One R2R path with its instructions; instruction ``k`` has id ``"<path_id>_<k>"``.

    In the real R2R test split ``path`` holds only the start viewpoint (the goal is hidden).
    """

    path_id: int | str
    scan: str
    heading: float
    path: list[str]
    instructions: list[str]
    distance: float | None = None

    def instr_id(self, k: int) -> str:
        return f"{self.path_id}_{k}"

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "path_id": self.path_id,
            "scan": self.scan,
            "heading": self.heading,
            "path": list(self.path),
        }
        if self.distance is not None:
            record["distance"] = self.distance
        record["instructions"] = list(self.instructions)
        return record


def load_r2r(path: str | Path) -> list[Episode]:
    """Read an R2R JSON file (unknown keys such as ``instr_encodings`` are ignored)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise NavDataError(f"{path}: expected a JSON list of episodes")
    episodes = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        where = f"{path}: episode {i}"
        if not isinstance(item, dict):
            raise NavDataError(f"{where} is not an object")
        for key in ("path_id", "scan", "heading", "path", "instructions"):
            if key not in item:
                raise NavDataError(f"{where} (path_id {item.get('path_id', '?')}) is missing key {key!r}")
        where = f"{path}: episode path_id {item['path_id']!r}"
        if not isinstance(item["path_id"], (int, str)) or isinstance(item["path_id"], bool):
            raise NavDataError(f"{where}: 'path_id' must be an int or a string")
        if str(item["path_id"]) in seen:
            raise NavDataError(f"{where}: duplicate path_id")
        seen.add(str(item["path_id"]))
        if not isinstance(item["scan"], str):
            raise NavDataError(f"{where}: 'scan' must be a string")
        if not isinstance(item["heading"], (int, float)) or not math.isfinite(item["heading"]):
            raise NavDataError(f"{where}: 'heading' must be a finite number (radians)")
        route = item["path"]
        if not isinstance(route, list) or not route or not all(isinstance(v, str) for v in route):
            raise NavDataError(f"{where}: 'path' must be a non-empty list of viewpoint ids")
        instructions = item["instructions"]
        if not isinstance(instructions, list) or not all(isinstance(s, str) for s in instructions):
            raise NavDataError(f"{where}: 'instructions' must be a list of strings")
        distance = item.get("distance")
        if distance is not None and not isinstance(distance, (int, float)):
            raise NavDataError(f"{where}: 'distance' must be a number")
        episodes.append(
            Episode(
                path_id=item["path_id"],
                scan=item["scan"],
                heading=float(item["heading"]),
                path=list(route),
                instructions=list(instructions),
                distance=None if distance is None else float(distance),
            )
        )
    return episodes


def write_r2r(path: str | Path, episodes: Iterable[Episode]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps([ep.to_json() for ep in episodes], indent=1), encoding="utf-8")


def validate_episodes(episodes: Sequence[Episode], graphs: Mapping[str, NavGraph], source: str) -> None:
    """Check that every episode's scan exists and its path is a walk along graph edges."""
    adjacency_of: dict[str, np.ndarray] = {}
    for ep in episodes:
        where = f"{source}: episode path_id {ep.path_id!r}"
        graph = graphs.get(ep.scan)
        if graph is None:
            raise NavDataError(f"{where}: unknown scan {ep.scan!r}")
        for vp in ep.path:
            if vp not in graph.index:
                raise NavDataError(f"{where}: viewpoint {vp!r} is not in scan {ep.scan!r}")
        if ep.scan not in adjacency_of:
            adjacency_of[ep.scan] = graph.adjacency
        adjacency = adjacency_of[ep.scan]
        for a, b in pairwise(ep.path):
            if not adjacency[graph.index[a], graph.index[b]]:
                raise NavDataError(f"{where}: path step {a} -> {b} is not an edge of scan {ep.scan!r}")
