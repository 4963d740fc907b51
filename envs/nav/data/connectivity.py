"""Matterport3D connectivity graphs: ``connectivity/<scan>_connectivity.json`` and ``scans.txt``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lodestar.envs.nav.data.errors import NavDataError, read_json
from lodestar.envs.nav.data.graph import NavGraph


def connectivity_path(conn_dir: str | Path, scan: str) -> Path:
    return Path(conn_dir) / f"{scan}_connectivity.json"


def load_connectivity(path: str | Path, scan: str | None = None) -> NavGraph:
    """Read one Matterport connectivity file into a :class:`NavGraph`.

    Only ``included`` viewpoints are kept. As in the R2R code, ``i`` and ``j`` are joined when either
    lists the other as ``unobstructed`` and both are included; edge weights are Euclidean distances
    between the positions at pose indices 3, 7 and 11.
    """
    path = Path(path)
    if scan is None:
        scan = path.name.removesuffix("_connectivity.json")
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise NavDataError(f"{path}: expected a non-empty JSON list of viewpoints")
    n = len(data)
    for i, item in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(item, dict):
            raise NavDataError(f"{where} is not an object")
        for key in ("image_id", "pose", "included", "unobstructed"):
            if key not in item:
                raise NavDataError(f"{where} ({item.get('image_id', '?')}) is missing key {key!r}")
        where = f"{path}: viewpoint {item['image_id']!r}"
        pose = item["pose"]
        if not isinstance(pose, list) or len(pose) != 16:
            raise NavDataError(f"{where}: 'pose' must be a list of 16 numbers (row-major 4x4)")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pose):
            raise NavDataError(f"{where}: 'pose' holds a non-numeric or non-finite value")
        unobstructed = item["unobstructed"]
        if not isinstance(unobstructed, list) or len(unobstructed) != n:
            raise NavDataError(
                f"{where}: 'unobstructed' must list {n} booleans (one per entry), got "
                f"{len(unobstructed) if isinstance(unobstructed, list) else type(unobstructed).__name__}"
            )
    kept = [i for i, item in enumerate(data) if item["included"]]
    if not kept:
        raise NavDataError(f"{path}: no viewpoint is 'included'")
    local = {i: k for k, i in enumerate(kept)}
    viewpoints = [str(data[i]["image_id"]) for i in kept]
    positions = np.array([[data[i]["pose"][3], data[i]["pose"][7], data[i]["pose"][11]] for i in kept])
    edges = set()
    for i in kept:
        for j, flag in enumerate(data[i]["unobstructed"]):
            if flag and j != i and j in local:
                a, b = local[i], local[j]
                edges.add((min(a, b), max(a, b)))
    try:
        return NavGraph(scan, viewpoints, positions, sorted(edges))
    except ValueError as exc:
        raise NavDataError(f"{path}: {exc}") from None


def write_connectivity(
    path: str | Path,
    graph: NavGraph,
    heights: Sequence[float] | None = None,
    visible: np.ndarray | None = None,
) -> None:
    """Write ``graph`` as a Matterport connectivity file (all viewpoints included).

    ``heights`` is each camera's height above the floor (default 1.5 m); ``visible`` is a ``[V, V]``
    bool matrix that must contain the edges (default: the adjacency itself).
    """
    adjacency = graph.adjacency
    if visible is None:
        visible = adjacency
    visible = np.asarray(visible, dtype=bool)
    if visible.shape != adjacency.shape or (adjacency & ~visible).any():
        raise ValueError(f"scan {graph.scan}: 'visible' must be [V, V] and contain every edge")
    entries = []
    for i, vp in enumerate(graph.viewpoints):
        pose = np.eye(4)
        pose[:3, 3] = graph.positions[i]
        entries.append(
            {
                "image_id": vp,
                "pose": [float(v) for v in pose.reshape(-1)],
                "included": True,
                "visible": [bool(v) for v in visible[i]],
                "unobstructed": [bool(v) for v in adjacency[i]],
                "height": float(1.5 if heights is None else heights[i]),
            }
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(entries), encoding="utf-8")


def list_scans(conn_dir: str | Path) -> list[str]:
    """Scan ids from ``scans.txt``, or from the ``*_connectivity.json`` names when it is absent."""
    conn_dir = Path(conn_dir)
    if not conn_dir.is_dir():
        raise FileNotFoundError(f"connectivity folder not found: {conn_dir}")
    scans_file = conn_dir / "scans.txt"
    if scans_file.is_file():
        scans = [line.strip() for line in scans_file.read_text(encoding="utf-8").splitlines()]
        scans = [s for s in scans if s]
        missing = [s for s in scans if not connectivity_path(conn_dir, s).is_file()]
        if missing:
            raise NavDataError(f"{scans_file}: no connectivity file for scans {missing[:10]}")
        return scans
    return sorted(p.name.removesuffix("_connectivity.json") for p in conn_dir.glob("*_connectivity.json"))


def write_scans(conn_dir: str | Path, scans: Iterable[str]) -> None:
    Path(conn_dir).mkdir(parents=True, exist_ok=True)
    (Path(conn_dir) / "scans.txt").write_text("".join(f"{s}\n" for s in scans), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# R2R episodes
