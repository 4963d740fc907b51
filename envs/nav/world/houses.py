"""The house data model: typed rooms, doors, walls and furniture boxes, saved as JSON.

Coordinates are metres, ``x`` east, ``y`` north, ``z`` up, floor at 0.
"""

from __future__ import annotations

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
