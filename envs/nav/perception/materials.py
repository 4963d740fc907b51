"""What surfaces look like: colour and procedural pattern per room type and object category.

The ray caster (:mod:`~lodestar.envs.nav.perception.render`) looks hits up in these tables; maps and
legends use :func:`surface_colours`.
"""

from __future__ import annotations

import numpy as np
import torch

from lodestar.envs.nav.world.furniture import OBJECT_CATEGORIES
from lodestar.envs.nav.world.houses import ROOM_TYPES

# Patterns computed from surface coordinates (see :func:`pattern_brightness`).
PLAIN, PLANKS, TILES, CARPET, STRIPES, CHECKER, GRAIN = range(7)

_ROOM_LOOK: dict[str, tuple[tuple[int, int, int], int, tuple[int, int, int]]] = {
    # room type: (floor colour, floor pattern, wall colour)
    "living room": ((150, 105, 65), PLANKS, (222, 206, 170)),
    "kitchen": ((205, 200, 190), TILES, (235, 228, 150)),
    "dining room": ((120, 75, 45), PLANKS, (200, 150, 130)),
    "bedroom": ((110, 120, 160), CARPET, (175, 195, 225)),
    "bathroom": ((235, 235, 240), TILES, (150, 205, 210)),
    "hallway": ((170, 135, 95), PLANKS, (210, 210, 200)),
    "office": ((95, 105, 100), CARPET, (190, 215, 180)),
    "laundry room": ((180, 180, 165), TILES, (225, 225, 225)),
    "closet": ((150, 130, 120), CARPET, (230, 215, 200)),
    "family room": ((165, 120, 80), PLANKS, (230, 190, 140)),
    "gym": ((60, 60, 65), CHECKER, (200, 200, 215)),
    "entryway": ((140, 140, 135), TILES, (215, 195, 175)),
    "library": ((110, 65, 40), PLANKS, (150, 110, 85)),
}
_WET_ROOMS = ("kitchen", "bathroom", "laundry room")  # tiled below 1.2 m


def _category_look(index: int) -> tuple[tuple[float, float, float], int]:
    """A fixed colour (golden-angle hues) and pattern per object category."""
    hue = (index * 0.618034) % 1.0
    sat = 0.45 + 0.3 * ((index * 7) % 5) / 4
    val = 0.5 + 0.35 * ((index * 3) % 4) / 3
    h6 = hue * 6
    c = val * sat
    x = c * (1 - abs(h6 % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h6) % 6]
    patterns = (PLAIN, STRIPES, GRAIN, CHECKER, PLAIN, CARPET)
    red, green, blue = (v + val - c for v in rgb)
    return (red, green, blue), patterns[index % len(patterns)]


_FLOOR_RGB = np.array([_ROOM_LOOK[t][0] for t in ROOM_TYPES], dtype=np.float32) / 255
_FLOOR_PATTERN = np.array([_ROOM_LOOK[t][1] for t in ROOM_TYPES], dtype=np.int64)
_WALL_RGB = np.array([_ROOM_LOOK[t][2] for t in ROOM_TYPES], dtype=np.float32) / 255
WET_WALLS = np.array([t in _WET_ROOMS for t in ROOM_TYPES])
_CATEGORY_RGB = np.array([_category_look(i)[0] for i in range(len(OBJECT_CATEGORIES))], dtype=np.float32)
_CATEGORY_PATTERN = np.array([_category_look(i)[1] for i in range(len(OBJECT_CATEGORIES))], dtype=np.int64)
_SKY_RGB = (0.67, 0.78, 0.92)
_GROUND_RGB = (0.36, 0.5, 0.27)
_CEILING_RGB = (0.94, 0.94, 0.91)


def surface_colours() -> dict[str, np.ndarray]:
    """The colour tables (floats in [0, 1]) by name, for legends and top-down maps."""
    return {
        "floor": _FLOOR_RGB.copy(),
        "wall": _WALL_RGB.copy(),
        "category": _CATEGORY_RGB.copy(),
    }


def _hash(ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """A value in [0, 1) per integer lattice cell (integer maths, so it is the same on every device)."""
    h = ix * 73856093 ^ iy * 19349663
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 1023).to(torch.float32) / 1024


def _cell(a: torch.Tensor, size: float) -> torch.Tensor:
    return torch.floor(a / size).long()


def _planks(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    plank = _cell(v, 0.2)
    value = 0.82 + 0.22 * _hash(plank, _cell(u + 0.37 * plank.float(), 1.3))
    return torch.where(torch.frac((v / 0.2).abs()) < 0.06, 0.6, value)


def _tiles(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    grout = (torch.frac((u / 0.4).abs()) < 0.05) | (torch.frac((v / 0.4).abs()) < 0.05)
    return torch.where(grout, 0.72, 1.0) * (0.96 + 0.06 * _hash(_cell(u, 0.4), _cell(v, 0.4)))


_PATTERNS = {
    PLANKS: _planks,
    TILES: _tiles,
    CARPET: lambda u, v: 0.88 + 0.16 * _hash(_cell(u, 0.04), _cell(v, 0.04)),
    STRIPES: lambda u, v: 0.8 + 0.25 * (_cell(v, 0.12) % 2).float(),
    CHECKER: lambda u, v: 0.8 + 0.25 * ((_cell(u, 0.25) + _cell(v, 0.25)) % 2).float(),
    GRAIN: lambda u, v: 0.85 + 0.2 * _hash(_cell(u, 0.5), _cell(v, 0.03)),
}


def pattern_brightness(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Brightness multiplier of the procedural pattern ``kind`` at surface coordinates ``(u, v)`` (metres)."""
    out = torch.ones_like(u)
    # Each pixel only evaluates its own pattern.
    for k, pattern in _PATTERNS.items():
        idx = torch.nonzero(kind == k).squeeze(1)
        if idx.numel():
            out.index_copy_(0, idx, pattern(u.index_select(0, idx), v.index_select(0, idx)).to(out.dtype))
    return out


# Rows of the material tables: one per kind of surface, per room type or per object category.
SKY_MATERIAL, GROUND_MATERIAL, CEILING_MATERIAL = 0, 1, 2
FLOOR_MATERIALS = 3  # + room type index
WALL_MATERIALS = FLOOR_MATERIALS + len(ROOM_TYPES)  # + room type index
OBJECT_MATERIALS = WALL_MATERIALS + len(ROOM_TYPES)  # + object category index


def _material_tables() -> tuple[np.ndarray, np.ndarray]:
    """One colour and pattern table for every material: sky, ground, ceiling, then the floors and
    walls of each room type, then the object categories (the ranges above)."""
    types, cats = len(ROOM_TYPES), len(OBJECT_CATEGORIES)
    rgb = np.concatenate(
        [[_SKY_RGB, _GROUND_RGB, _CEILING_RGB], _FLOOR_RGB, _WALL_RGB, _CATEGORY_RGB]
    ).astype(np.float32)
    pattern = np.concatenate(
        [[PLAIN, CARPET, PLAIN], _FLOOR_PATTERN, np.full(types, PLAIN), _CATEGORY_PATTERN]
    )
    assert len(rgb) == len(pattern) == OBJECT_MATERIALS + cats
    return rgb, pattern.astype(np.int64)


MATERIAL_RGB, MATERIAL_PATTERN = _material_tables()
