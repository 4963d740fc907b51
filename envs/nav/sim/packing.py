"""The graphs of a split packed into device tensors, and the feature table in packing order."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import NUM_VIEWS, feature_layout, iter_features
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.sim.feature_table import VIEW_STEP, FeatureTable


def edge_direction(src: np.ndarray, dst: np.ndarray) -> tuple[float, float]:
    """Heading (clockwise from +y) and elevation of the segment ``src -> dst``."""
    dx, dy, dz = (dst - src).tolist()
    return math.atan2(dx, dy), math.atan2(dz, math.hypot(dx, dy))


def nearest_view(heading: float, elevation: float) -> int:
    """Index of the panorama view whose direction is nearest ``(heading, elevation)``."""
    column = math.floor(heading / VIEW_STEP + 0.5) % 12
    row = 0 if elevation < -VIEW_STEP / 2 else (2 if elevation > VIEW_STEP / 2 else 1)
    return row * 12 + column


@dataclass
class PackedGraphs:
    """All graphs of a split as device tensors (see the module docstring)."""

    scans: list[str]
    viewpoint_ids: list[str]  # global index -> viewpoint id
    scan_offset: np.ndarray  # [S + 1] first global index of each scan
    max_degree: int
    neighbours: torch.Tensor  # [V, K] int64 global index (0 where masked)
    neighbour_mask: torch.Tensor  # [V, K] bool
    edge_heading: torch.Tensor  # [V, K] float32 absolute heading of the edge
    edge_elevation: torch.Tensor  # [V, K] float32
    edge_length: torch.Tensor  # [V, K] float64
    edge_view: torch.Tensor  # [V, K] int64 view facing the neighbour
    local: torch.Tensor  # [V] int64 index within its scan
    row_base: torch.Tensor  # [V] int64 pair_offset[scan] + local * V_scan
    distances: torch.Tensor  # [sum V_s^2] float64
    teacher: torch.Tensor  # [sum V_s^2] int64 candidate slot of the next hop, K at the goal

    @property
    def num_viewpoints(self) -> int:
        return len(self.viewpoint_ids)

    def global_index(self, scan: str, viewpoint: str, graph: NavGraph) -> int:
        return int(self.scan_offset[self.scans.index(scan)]) + graph.index[viewpoint]


def pack_graphs(
    graphs: Sequence[NavGraph], device: torch.device, max_degree: int | None = None
) -> PackedGraphs:
    """Pack graphs into the tables of :class:`PackedGraphs`; candidates follow graph index order."""
    # One adjacency matrix per graph (NavGraph.neighbours rebuilds it on every call).
    neighbour_lists = [[np.flatnonzero(row).tolist() for row in g.adjacency] for g in graphs]
    degree = max((len(n) for lists in neighbour_lists for n in lists), default=0)
    if max_degree is None:
        max_degree = max(degree, 1)
    elif max_degree < degree:
        raise ValueError(f"max_degree={max_degree} is below the largest viewpoint degree {degree}")
    k = max_degree
    sizes = np.array([g.num_viewpoints for g in graphs])
    scan_offset = np.concatenate([[0], np.cumsum(sizes)])
    pair_offset = np.concatenate([[0], np.cumsum(sizes**2)])
    total = int(scan_offset[-1])
    nbr = np.zeros((total, k), dtype=np.int64)
    mask = np.zeros((total, k), dtype=bool)
    heading = np.zeros((total, k), dtype=np.float64)
    elevation = np.zeros((total, k), dtype=np.float64)
    length = np.zeros((total, k), dtype=np.float64)
    view = np.zeros((total, k), dtype=np.int64)
    local = np.zeros(total, dtype=np.int64)
    row_base = np.zeros(total, dtype=np.int64)
    distances = np.zeros(int(pair_offset[-1]), dtype=np.float64)
    teacher = np.zeros(int(pair_offset[-1]), dtype=np.int64)
    for s, graph in enumerate(graphs):
        n, base = graph.num_viewpoints, int(scan_offset[s])
        slot = np.full((n, n), k, dtype=np.int64)  # slot[a, b]: candidate index of neighbour b at a
        for a, neigh in enumerate(neighbour_lists[s]):
            g = base + a
            local[g], row_base[g] = a, int(pair_offset[s]) + a * n
            for c, b in enumerate(neigh):
                h, e = edge_direction(graph.positions[a], graph.positions[b])
                nbr[g, c], mask[g, c], heading[g, c], elevation[g, c] = base + b, True, h, e
                length[g, c], view[g, c] = graph.edge_length(a, b), nearest_view(h, e)
                slot[a, b] = c
        hop = graph.next_hop
        # Unreachable goals (next_hop == -1) and the goal itself map to STOP.
        table = np.where(hop >= 0, np.take_along_axis(slot, np.maximum(hop, 0), axis=1), k)
        np.fill_diagonal(table, k)
        span = slice(int(pair_offset[s]), int(pair_offset[s + 1]))
        distances[span], teacher[span] = graph.distances.reshape(-1), table.reshape(-1)

    def dev(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(array).to(device=device, dtype=dtype)

    return PackedGraphs(
        scans=[g.scan for g in graphs],
        viewpoint_ids=[vp for g in graphs for vp in g.viewpoints],
        scan_offset=scan_offset,
        max_degree=k,
        neighbours=dev(nbr, torch.int64),
        neighbour_mask=dev(mask, torch.bool),
        edge_heading=dev(heading, torch.float32),
        edge_elevation=dev(elevation, torch.float32),
        edge_length=dev(length, torch.float64),
        edge_view=dev(view, torch.int64),
        local=dev(local, torch.int64),
        row_base=dev(row_base, torch.int64),
        distances=dev(distances, torch.float64),
        teacher=dev(teacher, torch.int64),
    )


FeatureSource = str | torch.Tensor | np.ndarray | Mapping[str, np.ndarray]


def load_feature_table(
    source: FeatureSource,
    dataset: NavDataset,
    graphs: Sequence[NavGraph],
    dtype: torch.dtype,
    angle_feature_size: int = 4,
) -> FeatureTable:
    """The :class:`FeatureTable` (on the CPU) of ``graphs`` in packing order.

    ``source`` is a feature name of ``dataset`` (read one feature at a time straight into the table,
    so loading peaks at the table plus one feature), a ``{"<scan>_<viewpoint>": [36, D]}`` map (copied
    the same way), or a ``[V, 36, D]`` tensor/array in packing order.
    """
    keys = NavDataset.viewpoint_keys(graphs)
    if isinstance(source, str):
        path = dataset.feature_path(source)
        dim, _ = feature_layout(path, keys)
        table = FeatureTable.zeros(len(keys), dim, angle_feature_size, dtype)
        rows = table.view_features
        for i, array in iter_features(path, keys):
            rows[i] = torch.from_numpy(array)
        return table
    if isinstance(source, Mapping):
        missing = [key for key in keys if key not in source]
        if missing:
            raise NavDataError(f"features: no entry for {len(missing)} viewpoints, e.g. {missing[:5]}")
        dim = np.shape(source[keys[0]])[-1] if keys else 1
        table = FeatureTable.zeros(len(keys), dim, angle_feature_size, dtype)
        rows = table.view_features
        for i, key in enumerate(keys):
            array = np.asarray(source[key])
            if array.shape != (NUM_VIEWS, dim):
                raise NavDataError(
                    f"features: {key!r} has shape {list(array.shape)}, expected [{NUM_VIEWS}, {dim}]"
                )
            rows[i] = torch.from_numpy(array)
        return table
    features = torch.as_tensor(source)
    if features.dim() != 3 or features.shape[0] != len(keys) or features.shape[1] != NUM_VIEWS:
        raise NavDataError(
            f"features: expected shape [{len(keys)}, {NUM_VIEWS}, D] (viewpoints of the split in "
            f"packing order), got {list(features.shape)}"
        )
    return FeatureTable(features, angle_feature_size, dtype)
