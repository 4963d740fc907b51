"""Procedural houses: floor plans of typed rooms, walls with doorways and furniture, from a seed.

A house is a rectangle partitioned into axis-aligned rooms: with a hallway strip and rooms on both
sides of it for larger houses, by recursive splitting for small ones. Room types follow simple
rules (the largest room is the living room, the smallest are bathrooms, the kitchen is next to the
living room, ...). Doors join rooms along a random spanning tree of the room adjacency plus a few
extra doors, so every room is reachable. Each room is furnished with objects typical of its type,
stored as axis-aligned boxes. Coordinates are metres, ``x`` east, ``y`` north, ``z`` up, floor at 0.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOM_TYPES: tuple[str, ...] = (
    "living room",
    "kitchen",
    "dining room",
    "bedroom",
    "bathroom",
    "hallway",
    "office",
    "laundry room",
    "closet",
    "family room",
    "gym",
    "entryway",
    "library",
)
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


@dataclass(frozen=True)
class Room:
    """An axis-aligned room; ``(x0, y0)`` - ``(x1, y1)`` are the centre lines of its walls."""

    index: int
    type: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def depth(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.depth

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    @property
    def polygon(self) -> list[tuple[float, float]]:
        """Floor polygon, counter-clockwise."""
        return [(self.x0, self.y0), (self.x1, self.y0), (self.x1, self.y1), (self.x0, self.y1)]

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        return self.x0 + margin <= x <= self.x1 - margin and self.y0 + margin <= y <= self.y1 - margin


@dataclass(frozen=True)
class Door:
    """A gap in a wall. ``axis`` is the direction the wall runs ("x": the wall is at fixed ``y``)."""

    index: int
    rooms: tuple[int, int]  # second room is -1 for a door to the outside
    x: float
    y: float
    width: float
    axis: str

    @property
    def exterior(self) -> bool:
        return self.rooms[1] < 0

    @property
    def endpoints(self) -> tuple[tuple[float, float], tuple[float, float]]:
        half = self.width / 2
        if self.axis == "x":
            return (self.x - half, self.y), (self.x + half, self.y)
        return (self.x, self.y - half), (self.x, self.y + half)


@dataclass(frozen=True)
class Wall:
    """A straight wall piece from ``(x0, y0)`` to ``(x1, y1)`` (its centre line)."""

    x0: float
    y0: float
    x1: float
    y1: float
    thickness: float
    height: float

    @property
    def length(self) -> float:
        return math.hypot(self.x1 - self.x0, self.y1 - self.y0)


@dataclass(frozen=True)
class HouseObject:
    """A piece of furniture as an axis-aligned box: centre ``(x, y)``, base height ``z``.

    ``width``/``depth``/``height`` are the extents along x/y/z. ``mount`` says how it sits:
    ``floor`` (blocks walking), ``flat`` (rugs: walkable), ``hung`` (on a wall), ``ceiling``.
    """

    index: int
    category: str
    room: int
    x: float
    y: float
    z: float
    width: float
    depth: float
    height: float
    mount: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the footprint."""
        return (
            self.x - self.width / 2,
            self.y - self.depth / 2,
            self.x + self.width / 2,
            self.y + self.depth / 2,
        )

    @property
    def top(self) -> float:
        return self.z + self.height

    @property
    def blocks_walking(self) -> bool:
        return self.mount == "floor"


@dataclass
class House:
    """One generated house ("scan"): its rooms, doors, walls and objects."""

    scan: str
    width: float
    depth: float
    wall_height: float
    wall_thickness: float
    rooms: list[Room]
    doors: list[Door]
    walls: list[Wall]
    objects: list[HouseObject] = field(default_factory=list)

    def room_at(self, x: float, y: float) -> int:
        """Index of the room containing ``(x, y)``, or -1 outside the house."""
        for room in self.rooms:
            if room.contains(x, y):
                return room.index
        return -1

    def rooms_at(self, points: np.ndarray) -> np.ndarray:
        """Vectorized :meth:`room_at` for ``[N, 2]`` points (first matching room wins)."""
        rects = self.room_rects()
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = (
            (pts[:, None, 0] >= rects[None, :, 0])
            & (pts[:, None, 0] <= rects[None, :, 2])
            & (pts[:, None, 1] >= rects[None, :, 1])
            & (pts[:, None, 1] <= rects[None, :, 3])
        )
        return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)

    def room_rects(self) -> np.ndarray:
        """``[R, 4]`` rectangles ``(x0, y0, x1, y1)``."""
        return np.array([[r.x0, r.y0, r.x1, r.y1] for r in self.rooms], dtype=np.float64).reshape(-1, 4)

    def wall_segments(self) -> np.ndarray:
        """``[W, 4]`` wall centre lines ``(x0, y0, x1, y1)``."""
        return np.array([[w.x0, w.y0, w.x1, w.y1] for w in self.walls], dtype=np.float64).reshape(-1, 4)

    def object_boxes(self, mounts: tuple[str, ...] = ("floor",), min_top: float = 0.0) -> np.ndarray:
        """``[O, 4]`` footprints of the objects with one of ``mounts`` reaching above ``min_top``."""
        boxes = [o.bounds for o in self.objects if o.mount in mounts and o.top > min_top]
        return np.array(boxes, dtype=np.float64).reshape(-1, 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan": self.scan,
            "width": self.width,
            "depth": self.depth,
            "wall_height": self.wall_height,
            "wall_thickness": self.wall_thickness,
            "rooms": [asdict(r) for r in self.rooms],
            "doors": [asdict(d) for d in self.doors],
            "walls": [asdict(w) for w in self.walls],
            "objects": [asdict(o) for o in self.objects],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "house") -> House:
        """Inverse of :meth:`to_dict`; ``source`` names the file in error messages."""
        try:
            return cls(
                scan=str(data["scan"]),
                width=float(data["width"]),
                depth=float(data["depth"]),
                wall_height=float(data["wall_height"]),
                wall_thickness=float(data["wall_thickness"]),
                rooms=[Room(**r) for r in data["rooms"]],
                doors=[Door(**{**d, "rooms": tuple(d["rooms"])}) for d in data["doors"]],
                walls=[Wall(**w) for w in data["walls"]],
                objects=[HouseObject(**o) for o in data.get("objects", [])],
            )
        except KeyError as exc:
            raise KeyError(f"{source}: missing field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"{source}: malformed house description ({exc})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> House:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"house file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))


def scan_id(rng: np.random.Generator) -> str:
    """An 11-character alphanumeric id in the style of Matterport scan ids."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def generate_house(
    rng: np.random.Generator, config: HouseConfig | None = None, scan: str | None = None
) -> House:
    """Generate one furnished house; everything is drawn from ``rng``."""
    config = config or HouseConfig()
    scan = scan or scan_id(rng)
    n_rooms = int(rng.integers(config.min_rooms, config.max_rooms + 1))
    rects, hallway, width, depth = _layout(rng, n_rooms, config)
    adjacency = _adjacency(rects, config)
    types = _room_types(rng, rects, hallway, adjacency)
    rooms = [Room(i, types[i], *(round(v, 3) for v in rect)) for i, rect in enumerate(rects)]
    doors = _doors(rng, rooms, adjacency, width, depth, config)
    wall_height = round(float(rng.uniform(*config.wall_height)), 2)
    walls = _walls(rooms, doors, config.wall_thickness, wall_height)
    house = House(scan, width, depth, wall_height, config.wall_thickness, rooms, doors, walls)
    for room in rooms:
        _furnish(rng, house, room)
    return house


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
    return [tuple(round(v, 3) for v in r) for r in rects], hallway, round(width, 3), round(depth, 3)


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


# ------------------------------------------------------------------------------------- furniture

# category: (width, depth, height, placement). Width runs along the wall for wall-standing and
# hung objects. Placements: "wall" stands against a wall, "free" stands in the open, "around" is a
# seat next to the room's table or desk, "flat" lies on the floor (walkable), "hung" hangs on a
# wall, "ceiling" hangs from the ceiling.
SHAPES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], str]] = {
    "bed": ((1.4, 1.9), (1.95, 2.1), (0.5, 0.7), "wall"),
    "nightstand": ((0.4, 0.55), (0.4, 0.5), (0.5, 0.65), "wall"),
    "dresser": ((0.9, 1.5), (0.45, 0.55), (0.8, 1.1), "wall"),
    "wardrobe": ((1.0, 1.8), (0.55, 0.65), (1.9, 2.2), "wall"),
    "lamp": ((0.35, 0.45), (0.35, 0.45), (1.4, 1.7), "wall"),
    "desk": ((1.1, 1.6), (0.6, 0.75), (0.72, 0.76), "wall"),
    "chair": ((0.45, 0.55), (0.45, 0.55), (0.85, 1.0), "around"),
    "mirror": ((0.6, 1.0), (0.04, 0.06), (0.8, 1.4), "hung"),
    "painting": ((0.6, 1.4), (0.03, 0.05), (0.5, 1.0), "hung"),
    "rug": ((1.6, 3.0), (1.2, 2.2), (0.01, 0.02), "flat"),
    "plant": ((0.4, 0.6), (0.4, 0.6), (0.6, 1.5), "wall"),
    "tv": ((1.0, 1.6), (0.4, 0.5), (1.1, 1.4), "wall"),
    "counter": ((1.8, 3.2), (0.6, 0.65), (0.9, 0.95), "wall"),
    "fridge": ((0.7, 0.9), (0.65, 0.75), (1.7, 1.9), "wall"),
    "oven": ((0.6, 0.76), (0.6, 0.65), (0.9, 0.95), "wall"),
    "sink": ((0.5, 0.8), (0.45, 0.55), (0.85, 0.95), "wall"),
    "kitchen island": ((1.4, 2.2), (0.8, 1.0), (0.9, 0.95), "free"),
    "table": ((0.9, 1.4), (0.8, 1.0), (0.72, 0.76), "free"),
    "dining table": ((1.6, 2.2), (0.9, 1.1), (0.72, 0.76), "free"),
    "coffee table": ((0.9, 1.3), (0.5, 0.7), (0.4, 0.45), "free"),
    "side table": ((0.4, 0.6), (0.4, 0.6), (0.5, 0.6), "wall"),
    "console table": ((0.9, 1.4), (0.3, 0.35), (0.75, 0.8), "wall"),
    "cabinet": ((0.8, 1.4), (0.4, 0.55), (0.8, 1.9), "wall"),
    "filing cabinet": ((0.4, 0.5), (0.5, 0.6), (0.7, 1.3), "wall"),
    "trash can": ((0.3, 0.4), (0.3, 0.4), (0.5, 0.7), "wall"),
    "toilet": ((0.4, 0.45), (0.65, 0.75), (0.75, 0.8), "wall"),
    "bathtub": ((1.5, 1.8), (0.7, 0.8), (0.55, 0.6), "wall"),
    "shower": ((0.8, 1.0), (0.8, 1.0), (2.0, 2.1), "wall"),
    "sofa": ((1.8, 2.4), (0.85, 1.0), (0.8, 0.9), "wall"),
    "armchair": ((0.8, 0.95), (0.8, 0.95), (0.85, 1.0), "wall"),
    "fireplace": ((1.2, 1.8), (0.4, 0.6), (1.0, 1.3), "wall"),
    "bookshelf": ((0.8, 1.6), (0.3, 0.4), (1.8, 2.2), "wall"),
    "piano": ((1.4, 1.6), (0.55, 0.65), (1.1, 1.3), "wall"),
    "chandelier": ((0.6, 0.9), (0.6, 0.9), (0.5, 0.7), "ceiling"),
    "washing machine": ((0.6, 0.65), (0.6, 0.65), (0.85, 0.9), "wall"),
    "dryer": ((0.6, 0.65), (0.6, 0.65), (0.85, 0.9), "wall"),
    "shelf": ((0.8, 1.4), (0.3, 0.45), (1.6, 2.0), "wall"),
    "laundry basket": ((0.4, 0.5), (0.35, 0.45), (0.5, 0.6), "wall"),
    "clothes rack": ((0.9, 1.4), (0.45, 0.55), (1.5, 1.8), "wall"),
    "pool table": ((2.2, 2.5), (1.2, 1.4), (0.8, 0.85), "free"),
    "treadmill": ((0.8, 0.9), (1.8, 2.0), (1.3, 1.5), "wall"),
    "exercise bike": ((0.55, 0.65), (1.1, 1.3), (1.2, 1.4), "wall"),
    "weight rack": ((1.0, 1.4), (0.5, 0.6), (1.0, 1.3), "wall"),
    "bench": ((1.0, 1.5), (0.35, 0.45), (0.45, 0.5), "wall"),
    "yoga mat": ((0.6, 0.7), (1.7, 1.9), (0.01, 0.01), "flat"),
    "coat rack": ((0.4, 0.5), (0.4, 0.5), (1.7, 1.9), "wall"),
    "shoe rack": ((0.7, 1.0), (0.3, 0.35), (0.4, 0.6), "wall"),
}
OBJECT_CATEGORIES: tuple[str, ...] = tuple(SHAPES)
_MOUNTS = {
    "wall": "floor",
    "free": "floor",
    "around": "floor",
    "flat": "flat",
    "hung": "hung",
    "ceiling": "ceiling",
}
_SEAT_PARENTS = ("dining table", "table", "desk", "kitchen island")

# room type: [(category, probability, max count)], biggest pieces first so they find room.
ROOM_FURNISHING: dict[str, list[tuple[str, float, int]]] = {
    "living room": [
        ("sofa", 1.0, 1), ("tv", 0.8, 1), ("fireplace", 0.4, 1), ("piano", 0.15, 1), ("coffee table", 0.8, 1),
        ("armchair", 0.6, 2), ("bookshelf", 0.4, 1), ("side table", 0.4, 1), ("plant", 0.6, 2),
        ("lamp", 0.5, 1), ("rug", 0.6, 1), ("painting", 0.7, 2), ("chandelier", 0.2, 1),
    ],
    "kitchen": [
        ("counter", 1.0, 2), ("fridge", 1.0, 1), ("oven", 0.9, 1), ("sink", 0.9, 1), ("kitchen island", 0.4, 1),
        ("table", 0.4, 1), ("chair", 0.5, 4), ("cabinet", 0.5, 1), ("trash can", 0.5, 1), ("plant", 0.2, 1),
    ],
    "dining room": [
        ("dining table", 1.0, 1), ("chair", 0.9, 6), ("cabinet", 0.5, 1), ("painting", 0.6, 2),
        ("plant", 0.4, 1), ("chandelier", 0.6, 1), ("rug", 0.3, 1),
    ],
    "bedroom": [
        ("bed", 1.0, 1), ("wardrobe", 0.5, 1), ("dresser", 0.6, 1), ("nightstand", 0.7, 2), ("desk", 0.2, 1),
        ("chair", 0.2, 1), ("tv", 0.2, 1), ("lamp", 0.4, 1), ("plant", 0.3, 1), ("mirror", 0.4, 1),
        ("painting", 0.5, 2), ("rug", 0.4, 1),
    ],
    "bathroom": [
        ("bathtub", 0.6, 1), ("shower", 0.5, 1), ("toilet", 1.0, 1), ("sink", 1.0, 1), ("cabinet", 0.3, 1),
        ("plant", 0.1, 1), ("mirror", 0.9, 1), ("rug", 0.3, 1),
    ],
    "hallway": [
        ("console table", 0.3, 1), ("bench", 0.2, 1), ("coat rack", 0.2, 1), ("plant", 0.4, 1),
        ("painting", 0.7, 2), ("mirror", 0.3, 1), ("rug", 0.3, 1),
    ],
    "office": [
        ("desk", 1.0, 1), ("chair", 1.0, 1), ("bookshelf", 0.7, 2), ("filing cabinet", 0.4, 1),
        ("armchair", 0.2, 1), ("plant", 0.4, 1), ("lamp", 0.4, 1), ("painting", 0.3, 1), ("rug", 0.2, 1),
    ],
    "laundry room": [
        ("washing machine", 1.0, 1), ("dryer", 0.8, 1), ("sink", 0.5, 1), ("shelf", 0.5, 1),
        ("cabinet", 0.4, 1), ("laundry basket", 0.5, 1),
    ],
    "closet": [("shelf", 0.9, 2), ("clothes rack", 0.6, 1), ("dresser", 0.3, 1), ("mirror", 0.3, 1)],
    "family room": [
        ("sofa", 0.9, 1), ("tv", 0.8, 1), ("pool table", 0.2, 1), ("coffee table", 0.6, 1), ("armchair", 0.5, 2),
        ("bookshelf", 0.3, 1), ("plant", 0.4, 1), ("lamp", 0.3, 1), ("rug", 0.5, 1), ("painting", 0.4, 1),
    ],
    "gym": [
        ("treadmill", 0.8, 1), ("exercise bike", 0.6, 1), ("weight rack", 0.6, 1), ("bench", 0.4, 1),
        ("mirror", 0.6, 1), ("yoga mat", 0.3, 1), ("plant", 0.2, 1),
    ],
    "entryway": [
        ("bench", 0.6, 1), ("coat rack", 0.7, 1), ("shoe rack", 0.5, 1), ("console table", 0.4, 1),
        ("plant", 0.4, 1), ("mirror", 0.5, 1), ("rug", 0.4, 1),
    ],
    "library": [
        ("bookshelf", 1.0, 3), ("table", 0.5, 1), ("chair", 0.5, 2), ("armchair", 0.7, 1), ("lamp", 0.5, 1),
        ("plant", 0.3, 1), ("rug", 0.3, 1),
    ],
}  # fmt: skip

_DOOR_CLEARANCE = 1.1  # metres kept free in front of every door, so doorways stay passable
_MAX_FOOTPRINT = 0.4  # fraction of a room's floor that standing furniture may cover


def _furnish(rng: np.random.Generator, house: House, room: Room) -> None:
    """Place the room's objects (appended to ``house.objects``); pieces that do not fit are dropped."""
    inner = _inner_rect(room, house.wall_thickness)
    zones = _door_zones(house, room)
    placed: list[HouseObject] = []
    footprint = 0.0
    for category, prob, max_count in ROOM_FURNISHING.get(room.type, []):
        for _ in range(int(rng.binomial(max_count, prob))):
            width, depth, height = (float(rng.uniform(*span)) for span in SHAPES[category][:3])
            placement = SHAPES[category][3]
            mount = _MOUNTS[placement]
            if mount == "floor" and footprint + width * depth > _MAX_FOOTPRINT * room.area:
                continue
            box = _place(rng, placement, width, depth, inner, placed, zones)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            z = 0.0
            if mount == "hung":
                z = float(rng.uniform(1.3, 1.6)) - height / 2
            elif mount == "ceiling":
                z = house.wall_height - height
            obj = HouseObject(
                index=len(house.objects),
                category=category,
                room=room.index,
                x=round((x0 + x1) / 2, 3),
                y=round((y0 + y1) / 2, 3),
                z=round(z, 3),
                width=round(x1 - x0, 3),
                depth=round(y1 - y0, 3),
                height=round(height, 3),
                mount=mount,
            )
            house.objects.append(obj)
            placed.append(obj)
            if mount == "floor":
                footprint += obj.width * obj.depth


Rect = tuple[float, float, float, float]


def _inner_rect(room: Room, thickness: float) -> Rect:
    half = thickness / 2
    return (room.x0 + half, room.y0 + half, room.x1 - half, room.y1 - half)


def _door_zones(house: House, room: Room) -> list[Rect]:
    """Rectangles in front of the room's doors where nothing may stand or hang."""
    zones = []
    for door in house.doors:
        if room.index not in door.rooms:
            continue
        half = door.width / 2 + 0.3
        if door.axis == "x":
            sign = 1.0 if room.center[1] > door.y else -1.0
            far = door.y + sign * _DOOR_CLEARANCE
            zones.append((door.x - half, min(door.y, far), door.x + half, max(door.y, far)))
        else:
            sign = 1.0 if room.center[0] > door.x else -1.0
            far = door.x + sign * _DOOR_CLEARANCE
            zones.append((min(door.x, far), door.y - half, max(door.x, far), door.y + half))
    return zones


def _place(
    rng: np.random.Generator,
    placement: str,
    width: float,
    depth: float,
    inner: Rect,
    placed: list[HouseObject],
    zones: list[Rect],
) -> Rect | None:
    """A free footprint for a new object, or None after a few failed tries."""
    mount = _MOUNTS[placement]
    same_mount = [o.bounds for o in placed if o.mount == mount]
    parents = [o for o in placed if o.category in _SEAT_PARENTS]
    for _ in range(12):
        if placement in ("wall", "hung"):
            box = _against_wall(rng, width, depth, inner)
        elif placement == "around" and parents:
            box = _beside(rng, parents[-1], width, depth)
        else:
            margin = {"free": 0.8, "around": 0.8, "flat": 0.3, "ceiling": 0.5}[placement]
            box = _in_open(rng, width, depth, inner, margin)
        if box is None or not _within(box, inner):
            continue
        if any(_overlap(box, other, 0.05) for other in same_mount):
            continue
        if mount in ("floor", "hung") and any(_overlap(box, z, 0.0) for z in zones):
            continue
        return box
    return None


def _against_wall(rng: np.random.Generator, width: float, depth: float, inner: Rect) -> Rect | None:
    x0, y0, x1, y1 = inner
    side = int(rng.choice(4, p=_side_weights(inner)))
    if side in (0, 1):  # south / north wall: width along x
        if width > x1 - x0:
            return None
        cx = float(rng.uniform(x0 + width / 2, x1 - width / 2))
        return (
            (cx - width / 2, y0, cx + width / 2, y0 + depth)
            if side == 0
            else (cx - width / 2, y1 - depth, cx + width / 2, y1)
        )
    if width > y1 - y0:
        return None
    cy = float(rng.uniform(y0 + width / 2, y1 - width / 2))
    return (
        (x0, cy - width / 2, x0 + depth, cy + width / 2)
        if side == 2
        else (x1 - depth, cy - width / 2, x1, cy + width / 2)
    )


def _side_weights(inner: Rect) -> np.ndarray:
    w, d = inner[2] - inner[0], inner[3] - inner[1]
    lengths = np.array([w, w, d, d])
    return lengths / lengths.sum()


def _in_open(rng: np.random.Generator, width: float, depth: float, inner: Rect, margin: float) -> Rect | None:
    if rng.random() < 0.5:
        width, depth = depth, width
    x0, y0, x1, y1 = inner
    lo_x, hi_x = x0 + margin + width / 2, x1 - margin - width / 2
    lo_y, hi_y = y0 + margin + depth / 2, y1 - margin - depth / 2
    if lo_x > hi_x or lo_y > hi_y:
        return None
    cx, cy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
    return (cx - width / 2, cy - depth / 2, cx + width / 2, cy + depth / 2)


def _beside(rng: np.random.Generator, parent: HouseObject, width: float, depth: float) -> Rect:
    """A seat touching one side of ``parent`` at a random spot along that side."""
    px0, py0, px1, py1 = parent.bounds
    gap = 0.08
    side = int(rng.integers(4))
    if side < 2:
        cx = float(rng.uniform(px0 + width / 2, max(px0 + width / 2, px1 - width / 2)))
        cy = py0 - gap - depth / 2 if side == 0 else py1 + gap + depth / 2
    else:
        cy = float(rng.uniform(py0 + depth / 2, max(py0 + depth / 2, py1 - depth / 2)))
        cx = px0 - gap - width / 2 if side == 2 else px1 + gap + width / 2
    return (cx - width / 2, cy - depth / 2, cx + width / 2, cy + depth / 2)


def _within(box: Rect, inner: Rect) -> bool:
    return (
        box[0] >= inner[0] - 1e-9
        and box[1] >= inner[1] - 1e-9
        and box[2] <= inner[2] + 1e-9
        and box[3] <= inner[3] + 1e-9
    )


def _overlap(a: Rect, b: Rect, gap: float) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap
