"""Furniture: objects typical of each room's type, placed as axis-aligned boxes clear of the doorways."""

from __future__ import annotations

import numpy as np

from lodestar.envs.nav.world.houses import House, HouseObject, Room

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


def furnish_house(rng: np.random.Generator, house: House) -> None:
    """Furnish every room of ``house`` in order (objects are appended to ``house.objects``)."""
    for room in house.rooms:
        _furnish(rng, house, room)


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
