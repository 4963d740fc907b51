"""Viewpoints in a house's free space and the navigation edges between them.

Viewpoints sit on a jittered grid (about ``spacing`` metres apart) inside every room, away from the
walls and from furniture, plus one in every interior doorway. Two viewpoints are joined when they are
at most ``max_edge`` apart and the straight segment between them crosses no wall (door gaps, narrowed
by a clearance at the jambs, are open) and no standing furniture. Pieces of the graph that cannot be
joined to the main one, even through an added midpoint viewpoint, are dropped, so every graph is
connected. Ids are 32-character hex strings drawn from the generator, like Matterport's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.world.houses import House, Room


@dataclass(frozen=True)
class GraphConfig:
    """Parameters of viewpoint placement and edge construction."""

    spacing: float = 2.0
    jitter: float = 0.3
    wall_margin: float = 0.5
    object_margin: float = 0.3
    min_separation: float = 1.0
    max_edge: float = 3.5
    edge_clearance: float = 0.15
    camera_height: float = 1.5
    prune_ratio: float = 1.03

    def __post_init__(self) -> None:
        if self.max_edge <= self.spacing:
            raise ValueError(f"max_edge ({self.max_edge}) must exceed the spacing ({self.spacing})")


@dataclass(frozen=True)
class Viewpoint:
    """One panorama location; ``door`` is the doorway it stands in (-1 inside a room)."""

    id: str
    x: float
    y: float
    z: float
    room: int
    door: int = -1


@dataclass
class ViewpointGraph:
    """The viewpoints of one house, their navigation edges and line-of-sight visibility."""

    scan: str
    viewpoints: list[Viewpoint]
    edges: list[tuple[int, int]]
    visible: np.ndarray
    camera_height: float

    @property
    def positions(self) -> np.ndarray:
        """``[V, 3]`` camera positions."""
        return np.array([[v.x, v.y, v.z] for v in self.viewpoints], dtype=np.float64).reshape(-1, 3)

    @property
    def adjacency(self) -> np.ndarray:
        adj = np.zeros((len(self.viewpoints), len(self.viewpoints)), dtype=bool)
        for i, j in self.edges:
            adj[i, j] = adj[j, i] = True
        return adj

    def nav_graph(self) -> NavGraph:
        return NavGraph(self.scan, [v.id for v in self.viewpoints], self.positions, list(self.edges))


def build_viewpoint_graph(
    house: House, rng: np.random.Generator, config: GraphConfig | None = None
) -> ViewpointGraph:
    """Place viewpoints in ``house`` and connect them; the result is always a connected graph."""
    config = config or GraphConfig()
    blockers = house.object_boxes(("floor",))
    points: list[tuple[float, float, int, int]] = []  # x, y, room, door
    for door in house.doors:
        if not door.exterior:
            points.append((door.x, door.y, door.rooms[0], door.index))
    for room in house.rooms:
        taken = np.array([(p[0], p[1]) for p in points], dtype=np.float64).reshape(-1, 2)
        inside = _room_points(rng, house, room, blockers, taken, config)
        points.extend((x, y, room.index, -1) for x, y in inside)
    xy = np.array([(p[0], p[1]) for p in points], dtype=np.float64)
    edges = _edges(house, xy, [p[3] for p in points], blockers, config)
    xy, rooms, doors, edges = _repair(
        house, xy, [p[2] for p in points], [p[3] for p in points], edges, blockers, config
    )
    edges = _prune(xy, edges, config.prune_ratio)
    visible = _visibility(house, xy, config.camera_height)
    ids = _unique_ids(rng, len(xy))
    z = round(config.camera_height, 4)
    viewpoints = [
        Viewpoint(ids[k], round(float(x), 4), round(float(y), 4), z, int(rooms[k]), int(doors[k]))
        for k, (x, y) in enumerate(xy)
    ]
    return ViewpointGraph(house.scan, viewpoints, sorted(edges), visible, config.camera_height)


def _room_points(
    rng: np.random.Generator,
    house: House,
    room: Room,
    blockers: np.ndarray,
    taken: np.ndarray,
    config: GraphConfig,
) -> list[tuple[float, float]]:
    """Jittered grid points in the room interior, clear of furniture and of ``taken`` points."""
    inset = house.wall_thickness / 2 + config.wall_margin
    x0, y0, x1, y1 = room.x0 + inset, room.y0 + inset, room.x1 - inset, room.y1 - inset
    if x1 <= x0 or y1 <= y0:
        return []
    # Rounding up a little keeps neighbouring viewpoints near ``spacing`` apart in 3-4 m rooms.
    nx = max(1, round((x1 - x0) / config.spacing + 0.3))
    ny = max(1, round((y1 - y0) / config.spacing + 0.3))
    cell_x, cell_y = (x1 - x0) / nx, (y1 - y0) / ny
    points: list[tuple[float, float]] = []

    def free(candidates: np.ndarray) -> np.ndarray:
        ok = ~_in_boxes(candidates, blockers, config.object_margin)
        others = np.vstack([taken, np.array(points).reshape(-1, 2)])
        if len(others):
            gaps = np.linalg.norm(candidates[:, None] - others[None], axis=-1).min(axis=1)
            ok &= gaps >= config.min_separation
        return ok

    for i in range(nx):
        for j in range(ny):
            cx, cy = x0 + (i + 0.5) * cell_x, y0 + (j + 0.5) * cell_y
            # Widen the search step by step when furniture covers the cell centre.
            for attempt in range(8):
                reach = config.jitter + attempt * 0.15
                px = float(np.clip(cx + rng.uniform(-reach, reach), x0, x1))
                py = float(np.clip(cy + rng.uniform(-reach, reach), y0, y1))
                if free(np.array([[px, py]]))[0]:
                    points.append((px, py))
                    break
    if not points:
        # A cluttered room still gets one viewpoint: the free spot nearest its centre.
        gx, gy = np.meshgrid(np.linspace(x0, x1, 13), np.linspace(y0, y1, 13))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        grid = grid[free(grid)]
        if len(grid):
            best = grid[np.argmin(np.linalg.norm(grid - np.array(room.center), axis=1))]
            points.append((float(best[0]), float(best[1])))
    return points


def _edges(
    house: House, xy: np.ndarray, doors: list[int], blockers: np.ndarray, config: GraphConfig
) -> set[tuple[int, int]]:
    i, j = np.triu_indices(len(xy), k=1)
    close = np.linalg.norm(xy[i] - xy[j], axis=1) <= config.max_edge
    i, j = i[close], j[close]
    clear = segments_clear(house, xy[i], xy[j], blockers, config.edge_clearance)
    # Two doorway viewpoints on one wall line would walk along the wall itself.
    door_line = {d.index: (d.axis, round(d.y if d.axis == "x" else d.x, 3)) for d in house.doors}
    same_wall = np.array(
        [
            doors[a] >= 0 and doors[b] >= 0 and door_line[doors[a]] == door_line[doors[b]]
            for a, b in zip(i, j, strict=True)
        ],
        dtype=bool,
    )
    keep = clear & ~same_wall
    return {(int(a), int(b)) for a, b in zip(i[keep], j[keep], strict=True)}


def segments_clear(
    house: House, p: np.ndarray, q: np.ndarray, blockers: np.ndarray, clearance: float
) -> np.ndarray:
    """Whether each segment ``p[k] -> q[k]`` is walkable: no wall (jambs widened) and no furniture."""
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    walls = house.wall_segments()
    direction = walls[:, 2:] - walls[:, :2]
    unit = direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    a, b = walls[:, :2] - clearance * unit, walls[:, 2:] + clearance * unit
    # numpy types a reduction over one axis as possibly a scalar; of an [E, W] mask it is an [E] array.
    hit = cast(np.ndarray, segments_intersect(p, q, a, b).any(axis=1))
    if len(blockers):
        hit |= segments_hit_boxes(p, q, blockers, clearance).any(axis=1)
    return ~hit


def _visibility(house: House, xy: np.ndarray, camera_height: float) -> np.ndarray:
    """Line of sight at camera height: walls and furniture taller than the camera block it."""
    n = len(xy)
    i, j = np.triu_indices(n, k=1)
    walls = house.wall_segments()
    seen = ~segments_intersect(xy[i], xy[j], walls[:, :2], walls[:, 2:]).any(axis=1)
    tall = house.object_boxes(("floor",), min_top=camera_height)
    if len(tall):
        seen &= ~segments_hit_boxes(xy[i], xy[j], tall, 0.0).any(axis=1)
    visible = np.zeros((n, n), dtype=bool)
    visible[i, j] = visible[j, i] = seen
    return visible


def segments_intersect(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[E, W]``: whether segment ``p[e]q[e]`` touches segment ``a[w]b[w]`` (2-D, inclusive)."""
    p, q = p[:, None, :], q[:, None, :]
    a, b = a[None], b[None]

    def cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    eps = 1e-9
    d1, d2 = cross(b - a, p - a), cross(b - a, q - a)
    d3, d4 = cross(q - p, a - p), cross(q - p, b - p)
    straddle = (d1 * d2 <= eps) & (d3 * d4 <= eps)
    collinear = (np.abs(d1) <= eps) & (np.abs(d2) <= eps)
    overlap = (
        (np.minimum(p[..., 0], q[..., 0]) <= np.maximum(a[..., 0], b[..., 0]) + eps)
        & (np.minimum(a[..., 0], b[..., 0]) <= np.maximum(p[..., 0], q[..., 0]) + eps)
        & (np.minimum(p[..., 1], q[..., 1]) <= np.maximum(a[..., 1], b[..., 1]) + eps)
        & (np.minimum(a[..., 1], b[..., 1]) <= np.maximum(p[..., 1], q[..., 1]) + eps)
    )
    return np.where(collinear, overlap, straddle)


def segments_hit_boxes(p: np.ndarray, q: np.ndarray, boxes: np.ndarray, inflate: float) -> np.ndarray:
    """``[E, O]``: whether segment ``p[e]q[e]`` enters box ``boxes[o]`` grown by ``inflate`` (slab test)."""
    lo, hi = boxes[None, :, :2] - inflate, boxes[None, :, 2:] + inflate
    start, delta = p[:, None, :], (q - p)[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - start) / delta, (hi - start) / delta
    flat = np.abs(delta) < 1e-12
    inside_slab = (start >= lo) & (start <= hi)
    t_near = np.where(flat, np.where(inside_slab, -np.inf, np.inf), np.minimum(t1, t2))
    t_far = np.where(flat, np.where(inside_slab, np.inf, -np.inf), np.maximum(t1, t2))
    enter = np.maximum(t_near.max(axis=-1), 0.0)
    leave = np.minimum(t_far.min(axis=-1), 1.0)
    return enter <= leave


def _in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(len(points), dtype=bool)
    x, y = points[:, None, 0], points[:, None, 1]
    inside = (
        (x >= boxes[None, :, 0] - margin)
        & (x <= boxes[None, :, 2] + margin)
        & (y >= boxes[None, :, 1] - margin)
        & (y <= boxes[None, :, 3] + margin)
    )
    # numpy types a reduction over one axis as possibly a scalar; of an [P, B] mask it is a [P] array.
    return cast(np.ndarray, inside.any(axis=1))


def _components(n: int, edges: set[tuple[int, int]]) -> np.ndarray:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        parent[root(i)] = root(j)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def _repair(
    house: House,
    xy: np.ndarray,
    rooms: list[int],
    doors: list[int],
    edges: set[tuple[int, int]],
    blockers: np.ndarray,
    config: GraphConfig,
) -> tuple[np.ndarray, list[int], list[int], set[tuple[int, int]]]:
    """Join stray components to the largest through a midpoint viewpoint, or drop them."""
    rooms, doors, edges = list(rooms), list(doors), set(edges)
    while True:
        labels = _components(len(xy), edges)
        values, counts = np.unique(labels, return_counts=True)
        if len(values) <= 1:
            return xy, rooms, doors, edges
        main = values[np.argmax(counts)]
        stray = [v for v in values if v != main]
        joined = False
        for comp in stray:
            bridge = _bridge(house, xy, labels == comp, labels == main, blockers, config)
            if bridge is None:
                continue
            a, b, mid = bridge
            xy = np.vstack([xy, mid[None]])
            rooms.append(house.room_at(float(mid[0]), float(mid[1])))
            doors.append(-1)
            edges |= {(min(a, len(xy) - 1), max(a, len(xy) - 1)), (min(b, len(xy) - 1), max(b, len(xy) - 1))}
            joined = True
            break
        if not joined:
            keep = np.flatnonzero(labels == main)
            remap = {int(old): new for new, old in enumerate(keep)}
            edges = {(remap[i], remap[j]) for i, j in edges if i in remap and j in remap}
            return xy[keep], [rooms[k] for k in keep], [doors[k] for k in keep], edges


def _bridge(
    house: House,
    xy: np.ndarray,
    comp: np.ndarray,
    main: np.ndarray,
    blockers: np.ndarray,
    config: GraphConfig,
) -> tuple[int, int, np.ndarray] | None:
    """The closest pair (stray, main) whose midpoint is free and reaches both ends in a straight line."""
    a_idx, b_idx = np.flatnonzero(comp), np.flatnonzero(main)
    dist = np.linalg.norm(xy[a_idx, None] - xy[None, b_idx], axis=-1)
    for flat in np.argsort(dist, axis=None, kind="stable"):
        ai, bi = np.unravel_index(flat, dist.shape)
        if dist[ai, bi] > 2 * config.max_edge:
            return None
        a, b = int(a_idx[ai]), int(b_idx[bi])
        mid = (xy[a] + xy[b]) / 2
        if house.room_at(*mid) < 0 or _in_boxes(mid[None], blockers, config.object_margin)[0]:
            continue
        ends = np.stack([xy[a], xy[b]])
        if segments_clear(house, np.stack([mid, mid]), ends, blockers, config.edge_clearance).all():
            return a, b, mid
    return None


def _prune(xy: np.ndarray, edges: set[tuple[int, int]], ratio: float) -> set[tuple[int, int]]:
    """Drop long edges that a two-edge detour through a common neighbour matches within ``ratio``.

    Longest edges go first, and each dropped edge is replaced by a path of shorter kept edges,
    so connectivity is preserved.
    """
    if ratio <= 1.0:
        return set(edges)
    n = len(xy)
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    adj = np.zeros((n, n), dtype=bool)
    for i, j in edges:
        adj[i, j] = adj[j, i] = True
    for i, j in sorted(edges, key=lambda e: -dist[e]):
        common = adj[i] & adj[j]
        if common.any() and (dist[i, common] + dist[common, j]).min() <= ratio * dist[i, j]:
            adj[i, j] = adj[j, i] = False
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(adj)), strict=True)}


def _unique_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        vp = rng.bytes(16).hex()
        if vp not in seen:
            seen.add(vp)
            ids.append(vp)
    return ids
