"""Floor plans: a rectangle partitioned into typed rooms, with doors joining them and walls between.

A house is partitioned into axis-aligned rooms: with a hallway strip and rooms on both sides of it for
larger houses, by recursive splitting for small ones. Room types follow simple rules (the largest room
is the living room, the smallest are bathrooms, the kitchen is next to the living room, ...). Doors
join rooms along a random spanning tree of the room adjacency plus a few extra doors, so every room
is reachable.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from lodestar.envs.nav.world.houses import Door, House, Room, Wall

# Rooms one passes into but rarely through; they are kept as leaves of the door tree when possible.
_LEAF_TYPES = {"bathroom", "closet", "laundry room"}
# Rooms that are often joined by a wide opening rather than a door.
_OPEN_PLAN = {"living room", "dining room", "kitchen", "family room", "hallway", "entryway"}


@dataclass(frozen=True)
class HouseConfig:
    """Parameters of the floor-plan generator."""

    min_rooms: int = 4
    max_rooms: int = 12
    hallway_min_rooms: int = 6
    room_area: tuple[float, float] = (14.0, 24.0)
    min_room_size: float = 2.4
    hallway_width: tuple[float, float] = (1.6, 2.2)
    wall_height: tuple[float, float] = (2.5, 3.0)
    wall_thickness: float = 0.12
    door_width: tuple[float, float] = (0.85, 1.1)
    opening_width: tuple[float, float] = (1.6, 3.0)
    extra_door_prob: float = 0.3

    def __post_init__(self) -> None:
        if not 2 <= self.min_rooms <= self.max_rooms:
            raise ValueError(f"need 2 <= min_rooms <= max_rooms, got {self.min_rooms}, {self.max_rooms}")


def plan_house(rng: np.random.Generator, config: HouseConfig, scan: str) -> House:
    """An unfurnished house: rooms, doors, walls and wall height, all drawn from ``rng``."""
    n_rooms = int(rng.integers(config.min_rooms, config.max_rooms + 1))
    rects, hallway, width, depth = _layout(rng, n_rooms, config)
    adjacency = _adjacency(rects, config)
    types = _room_types(rng, rects, hallway, adjacency)
    rooms = [Room(i, types[i], *(round(v, 3) for v in rect)) for i, rect in enumerate(rects)]
    doors = _doors(rng, rooms, adjacency, width, depth, config)
    wall_height = round(float(rng.uniform(*config.wall_height)), 2)
    walls = _walls(rooms, doors, config.wall_thickness, wall_height)
    return House(scan, width, depth, wall_height, config.wall_thickness, rooms, doors, walls)


# ----------------------------------------------------------------------------------------- layout


def _layout(
    rng: np.random.Generator, n_rooms: int, config: HouseConfig
) -> tuple[list[tuple[float, float, float, float]], int, float, float]:
    """Room rectangles, the hallway's index (-1 when none) and the footprint size."""
    use_hallway = n_rooms >= config.hallway_min_rooms or (n_rooms >= 5 and rng.random() < 0.5)
    if use_hallway:
        rects, hallway = _hallway_layout(rng, n_rooms, config)
    else:
        rects, hallway = _split_layout(rng, n_rooms, config), -1
    width = max(r[2] for r in rects)
    depth = max(r[3] for r in rects)
    # Mirror and transpose so that hallways and doors face every direction across houses.
    if rng.random() < 0.5:
        rects = [(width - x1, y0, width - x0, y1) for x0, y0, x1, y1 in rects]
    if rng.random() < 0.5:
        rects = [(x0, depth - y1, x1, depth - y0) for x0, y0, x1, y1 in rects]
    if rng.random() < 0.5:
        rects = [(y0, x0, y1, x1) for x0, y0, x1, y1 in rects]
        width, depth = depth, width
    rounded = [(round(x0, 3), round(y0, 3), round(x1, 3), round(y1, 3)) for x0, y0, x1, y1 in rects]
    return rounded, hallway, round(width, 3), round(depth, 3)


def _hallway_layout(
    rng: np.random.Generator, n_rooms: int, config: HouseConfig
) -> tuple[list[tuple[float, float, float, float]], int]:
    """A hallway strip along x with rooms on both sides and optionally one room across its end."""
    side_rooms = n_rooms - 1
    end_room = side_rooms >= 5 and rng.random() < 0.5
    side_rooms -= int(end_room)
    south = side_rooms // 2 + int(side_rooms % 2 == 1 and rng.random() < 0.5)
    north = side_rooms - south
    mean_side = math.sqrt(float(np.mean(config.room_area)))
    length = max(south, north) * rng.uniform(0.85, 1.15) * mean_side
    length = max(length, max(south, north) * config.min_room_size)
    hall_w = _r(rng.uniform(*config.hallway_width))
    d_south = _r(rng.uniform(0.8, 1.3) * mean_side)
    d_north = _r(rng.uniform(0.8, 1.3) * mean_side)
    length = _r(length)
    rects: list[tuple[float, float, float, float]] = []
    for x0, x1 in _cuts(rng, 0.0, length, south, config.min_room_size):
        rects.append((x0, 0.0, x1, d_south))
    hallway = len(rects)
    rects.append((0.0, d_south, length, _r(d_south + hall_w)))
    for x0, x1 in _cuts(rng, 0.0, length, north, config.min_room_size):
        rects.append((x0, _r(d_south + hall_w), x1, _r(d_south + hall_w + d_north)))
    if end_room:
        end_w = _r(rng.uniform(0.8, 1.2) * mean_side)
        rects.append((length, 0.0, _r(length + end_w), _r(d_south + hall_w + d_north)))
    return rects, hallway


def _split_layout(
    rng: np.random.Generator, n_rooms: int, config: HouseConfig
) -> list[tuple[float, float, float, float]]:
    """Recursive splitting of a rectangle: always split the largest splittable room."""
    area = n_rooms * rng.uniform(*config.room_area)
    aspect = rng.uniform(1.0, 1.6)
    rects = [(0.0, 0.0, _r(math.sqrt(area * aspect)), _r(math.sqrt(area / aspect)))]
    while len(rects) < n_rooms:
        order = sorted(
            range(len(rects)), key=lambda i: -(rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1])
        )
        for i in order:
            x0, y0, x1, y1 = rects[i]
            along_x = (x1 - x0) >= (y1 - y0)
            lo, hi = (x0, x1) if along_x else (y0, y1)
            if hi - lo < 2 * config.min_room_size:
                continue
            cut = _r(lo + rng.uniform(0.35, 0.65) * (hi - lo))
            cut = min(max(cut, lo + config.min_room_size), hi - config.min_room_size)
            parts = (
                [(x0, y0, cut, y1), (cut, y0, x1, y1)] if along_x else [(x0, y0, x1, cut), (x0, cut, x1, y1)]
            )
            rects[i : i + 1] = parts
            break
        else:
            break  # nothing left to split: a smaller house than asked
    return rects


def _cuts(
    rng: np.random.Generator, lo: float, hi: float, count: int, min_size: float
) -> list[tuple[float, float]]:
    """Split ``[lo, hi]`` into ``count`` intervals of random sizes, each at least ``min_size``."""
    if count <= 0:
        return []
    slack = (hi - lo) - count * min_size
    shares = rng.dirichlet(np.full(count, 3.0)) * max(slack, 0.0)
    edges = [lo]
    for share in shares[:-1]:
        edges.append(_r(edges[-1] + min_size + share))
    edges.append(hi)
    return list(itertools.pairwise(edges))


def _r(value: float) -> float:
    """Plans are drawn on a 10 cm grid so that shared walls line up exactly."""
    return round(float(value) * 10) / 10


# ------------------------------------------------------------------------------- types and doors


def _adjacency(
    rects: list[tuple[float, float, float, float]], config: HouseConfig
) -> dict[tuple[int, int], tuple]:
    """Shared wall pieces long enough for a door: ``(i, j) -> (axis, fixed coord, lo, hi)``."""
    need = config.door_width[0] + 2 * (0.15 + config.wall_thickness)
    shared: dict[tuple[int, int], tuple] = {}
    for i, a in enumerate(rects):
        for j in range(i + 1, len(rects)):
            b = rects[j]
            # Rooms touch when one's far edge is the other's near edge (x for "y" walls, y for "x").
            for axis, lo_i, hi_i, lo_j, hi_j, lo, hi in (
                ("y", a[0], a[2], b[0], b[2], max(a[1], b[1]), min(a[3], b[3])),
                ("x", a[1], a[3], b[1], b[3], max(a[0], b[0]), min(a[2], b[2])),
            ):
                touch = [c for c, d in ((hi_i, lo_j), (lo_i, hi_j)) if abs(c - d) < 1e-6]
                if touch and hi - lo >= need:
                    shared[(i, j)] = (axis, touch[0], lo, hi)
    return shared


def _room_types(
    rng: np.random.Generator, rects: list[tuple[float, float, float, float]], hallway: int, adjacency: dict
) -> list[str]:
    """Plausible room types: one living room (largest), one kitchen next to it, small bathrooms, ..."""
    n = len(rects)
    areas = [(r[2] - r[0]) * (r[3] - r[1]) for r in rects]
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in adjacency:
        neighbours[i].add(j)
        neighbours[j].add(i)
    types: list[str | None] = [None] * n
    if hallway >= 0:
        types[hallway] = "hallway"
    free = sorted((i for i in range(n) if types[i] is None), key=lambda i: -areas[i])

    def take(room: int, kind: str) -> None:
        types[room] = kind
        free.remove(room)

    take(free[0], "living room")
    for room in free[::-1][: 1 + int(len(free) >= 6) + int(len(free) >= 9)]:
        take(room, "bathroom")
    living = types.index("living room")
    if free:
        near = [i for i in free if i in neighbours[living]]
        take((near or free)[0], "kitchen")
    kitchen = types.index("kitchen") if "kitchen" in types else living
    if len(free) >= 3 and rng.random() < 0.8:
        near = [i for i in free if i in neighbours[kitchen] or i in neighbours[living]]
        take((near or free)[int(rng.integers(len(near or free)))], "dining room")
    if free:
        take(free[0], "bedroom")
    large = ["bedroom", "office", "family room", "gym", "library"]
    large_p = [0.55, 0.17, 0.12, 0.08, 0.08]
    small = ["closet", "laundry room", "office", "entryway", "bathroom"]
    small_p = [0.3, 0.3, 0.15, 0.15, 0.1]
    # Many homes have one utility-sized room even when the plan left no tiny rectangle for it.
    utility = free[-1] if len(free) >= 2 and rng.random() < 0.5 else -1
    for room in list(free):
        if areas[room] < 9.0 or room == utility:
            take(room, str(rng.choice(small, p=small_p)))
        else:
            take(room, str(rng.choice(large, p=large_p)))
    return [str(t) for t in types]


def _doors(
    rng: np.random.Generator,
    rooms: list[Room],
    adjacency: dict[tuple[int, int], tuple],
    width: float,
    depth: float,
    config: HouseConfig,
) -> list[Door]:
    """Doors along a random spanning tree of the adjacency (favouring hallways), plus extras."""

    def cost(pair: tuple[int, int]) -> float:
        kinds = {rooms[pair[0]].type, rooms[pair[1]].type}
        c = float(rng.random())
        c -= 1.0 * ("hallway" in kinds) + 0.5 * ("living room" in kinds)
        c += 2.0 * len(kinds & _LEAF_TYPES)
        return c

    pairs = sorted(adjacency, key=lambda p: (cost(p), p))
    parent = list(range(len(rooms)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    chosen: list[tuple[int, int]] = []
    for i, j in pairs:
        if root(i) != root(j):
            parent[root(i)] = root(j)
            chosen.append((i, j))
        elif not {rooms[i].type, rooms[j].type} & _LEAF_TYPES and rng.random() < config.extra_door_prob:
            chosen.append((i, j))
    if len({root(i) for i in range(len(rooms))}) > 1:
        raise RuntimeError("floor plan has rooms no door can reach")  # the layouts always tile
    doors: list[Door] = []
    for i, j in sorted(chosen):
        axis, fixed, lo, hi = adjacency[(i, j)]
        both_open = {rooms[i].type, rooms[j].type} <= _OPEN_PLAN
        doors.append(_door_on(rng, len(doors), (i, j), axis, fixed, lo, hi, both_open, config))
    doors.extend(_exterior_door(rng, rooms, len(doors), width, depth, config))
    return doors


def _door_on(
    rng: np.random.Generator,
    index: int,
    rooms: tuple[int, int],
    axis: str,
    fixed: float,
    lo: float,
    hi: float,
    wide: bool,
    config: HouseConfig,
) -> Door:
    """A door somewhere along the shared piece ``[lo, hi]`` of a wall, clear of the corners."""
    margin = 0.15 + config.wall_thickness
    room_for = hi - lo - 2 * margin
    door_w = rng.uniform(*config.door_width)
    if wide and rng.random() < 0.5 and room_for >= config.opening_width[0]:
        door_w = rng.uniform(config.opening_width[0], min(config.opening_width[1], room_for))
    door_w = round(min(door_w, room_for), 2)
    if door_w > room_for:  # rounding up must not push the door into the corner margins
        door_w = math.floor(room_for * 100) / 100
    low = lo + margin + door_w / 2
    high = max(low, hi - margin - door_w / 2)  # a door filling the piece: equal up to float error
    pos = round(float(rng.uniform(low, high)), 2)
    # axis "y" adjacency: the wall is at fixed x and runs along y.
    if axis == "y":
        return Door(index, rooms, fixed, pos, door_w, "y")
    return Door(index, rooms, pos, fixed, door_w, "x")


def _exterior_door(
    rng: np.random.Generator, rooms: list[Room], index: int, width: float, depth: float, config: HouseConfig
) -> list[Door]:
    """One front door on an outside wall of the entryway, hallway or living room."""
    for kind in ("entryway", "hallway", "living room"):
        for room in rooms:
            if room.type != kind:
                continue
            sides = [
                ("x", room.y0, room.x0, room.x1, room.y0 <= 1e-6),
                ("x", room.y1, room.x0, room.x1, abs(room.y1 - depth) <= 1e-6),
                ("y", room.x0, room.y0, room.y1, room.x0 <= 1e-6),
                ("y", room.x1, room.y0, room.y1, abs(room.x1 - width) <= 1e-6),
            ]
            outer = [s for s in sides if s[4] and s[3] - s[2] >= 1.6]
            if outer:
                axis, fixed, lo, hi, _ = outer[int(rng.integers(len(outer)))]
                return [_door_on(rng, index, (room.index, -1), axis, fixed, lo, hi, False, config)]
    return []


def _walls(rooms: list[Room], doors: list[Door], thickness: float, height: float) -> list[Wall]:
    """Wall pieces: the union of the room outlines on each line, minus the door gaps."""
    lines: dict[tuple[str, float], list[list[float]]] = {}
    for r in rooms:
        for axis, fixed, lo, hi in (
            ("x", r.y0, r.x0, r.x1),
            ("x", r.y1, r.x0, r.x1),
            ("y", r.x0, r.y0, r.y1),
            ("y", r.x1, r.y0, r.y1),
        ):
            lines.setdefault((axis, round(fixed, 3)), []).append([lo, hi])
    gaps: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for d in doors:
        fixed, centre = (d.y, d.x) if d.axis == "x" else (d.x, d.y)
        gaps.setdefault((d.axis, round(fixed, 3)), []).append((centre - d.width / 2, centre + d.width / 2))
    walls: list[Wall] = []
    for (axis, fixed), spans in sorted(lines.items()):
        for lo, hi in _subtract(_union(spans), sorted(gaps.get((axis, fixed), []))):
            if hi - lo < 1e-6:
                continue
            if axis == "x":
                walls.append(Wall(round(lo, 3), fixed, round(hi, 3), fixed, thickness, height))
            else:
                walls.append(Wall(fixed, round(lo, 3), fixed, round(hi, 3), thickness, height))
    return walls


def _union(spans: list[list[float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1e-6:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def _subtract(
    spans: list[tuple[float, float]], holes: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    out = []
    for lo, hi in spans:
        cursor = lo
        for h_lo, h_hi in holes:
            if h_hi <= cursor or h_lo >= hi:
                continue
            out.append((cursor, max(cursor, h_lo)))
            cursor = max(cursor, h_hi)
        out.append((cursor, hi))
    return out
