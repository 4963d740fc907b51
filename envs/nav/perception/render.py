"""A batched torch ray caster that renders panoramic views of the procedural houses.

Geometry is converted once per house into a :class:`Scene` of device tensors: every wall piece is an
axis-aligned box (its centre line grown by the wall thickness, from the floor to the ceiling), every
doorway gets a lintel box above the gap, and every piece of furniture is its own box. The floor
(``z = 0``) and the ceiling (``z = wall_height``, only above the house) are planes; outside the house
one sees grass and sky.

Casting a ray against every box would cost ``rays x boxes``. Instead each camera position gets a
table of *azimuth wedges*: for ``azimuth_bins`` thin wedges around the camera, the boxes whose
horizontal silhouette overlaps the wedge. A ray then runs the exact 3-D slab test only against the
handful of candidates of the wedge holding its azimuth (candidates are conservative, so results are
exact). Many views of many viewpoints of one house are cast in one tensor computation, chunked to
bound memory, on any device.

Cameras follow the R2R panorama convention: heading is clockwise from +y (a heading ``h`` looks along
``(sin h, cos h)``), elevation is positive upwards, views are square with a 60 degree field of view.
View ``ix`` of a panorama has heading ``(ix % 12) * 30`` degrees and elevation
``(ix // 12 - 1) * 30`` degrees.

Colours (:mod:`~lodestar.envs.nav.perception.materials`): floors, walls and ceilings are coloured by the
type of the room they belong to, with a procedural pattern (tiles, planks, carpet...) computed from
the hit coordinates; objects have a category colour and pattern. Shading darkens surfaces by their
orientation and by distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lodestar.envs.nav.perception.materials import (
    CEILING_MATERIAL,
    FLOOR_MATERIALS,
    GROUND_MATERIAL,
    MATERIAL_PATTERN,
    MATERIAL_RGB,
    OBJECT_MATERIALS,
    SKY_MATERIAL,
    TILES,
    WALL_MATERIALS,
    WET_WALLS,
    pattern_brightness,
)
from lodestar.envs.nav.world.furniture import OBJECT_CATEGORIES
from lodestar.envs.nav.world.houses import ROOM_TYPES, House
from lodestar.runtime.device import resolve_device

NUM_VIEWS = 36
VIEW_HEADINGS = np.arange(NUM_VIEWS) % 12 * (math.pi / 6)
VIEW_ELEVATIONS = (np.arange(NUM_VIEWS) // 12 - 1) * (math.pi / 6)

# What a pixel's ray hit.
SKY, GROUND, FLOOR, CEILING, WALL, OBJECT = range(6)
SURFACE_NAMES = ("sky", "ground", "floor", "ceiling", "wall", "object")

_WALL_BOX, _OBJECT_BOX = 0, 1
_DOOR_TOP = 2.05  # lintel height above ordinary doors
_OPENING_TOP = 2.3  # above wide open-plan openings
_OPENING_WIDTH = 1.3  # gaps at least this wide count as openings
_FAR = 60.0  # rays travelling further than this (through an exterior door) see the sky


@dataclass(frozen=True)
class CameraConfig:
    """Image size, field of view (vertical = horizontal) and depth range of the rendered views."""

    image_size: int = 64
    fov_degrees: float = 60.0
    max_depth: float = 10.0
    azimuth_bins: int = 1024
    chunk_rays: int = 1 << 16  # rays cast together; small chunks stay in cache and bound memory

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if not 0.0 < self.fov_degrees < 170.0:
            raise ValueError(f"fov_degrees must be in (0, 170), got {self.fov_degrees}")
        if self.max_depth <= 0.0:
            raise ValueError(f"max_depth must be positive, got {self.max_depth}")
        if self.azimuth_bins < 8:
            raise ValueError(f"azimuth_bins must be >= 8, got {self.azimuth_bins}")


@dataclass
class Scene:
    """The geometry of one house as device tensors (see the module docstring)."""

    scan: str
    boxes: torch.Tensor  # [B, 6] float32 (xmin, ymin, zmin, xmax, ymax, zmax)
    box_kind: torch.Tensor  # [B] int64: wall or object box
    box_category: torch.Tensor  # [B] int64 index into OBJECT_CATEGORIES, -1 for walls
    box_room: torch.Tensor  # [B] int64 room of an object, -1 for walls
    room_rects: torch.Tensor  # [R, 4] float32 (x0, y0, x1, y1)
    room_type: torch.Tensor  # [R] int64 index into ROOM_TYPES
    ceiling: float

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def from_house(cls, house: House, device: str | torch.device = "cpu") -> Scene:
        """Boxes for the walls, lintels and objects of ``house``; unknown types are a ``KeyError``."""
        device = torch.empty(0, device=resolve_device(device)).device
        half = house.wall_thickness / 2
        height = house.wall_height
        boxes, kinds, cats, rooms = [], [], [], []
        for w in house.walls:
            # Growing both ends by half the thickness closes the corners where wall pieces meet.
            x0, x1 = sorted((w.x0, w.x1))
            y0, y1 = sorted((w.y0, w.y1))
            boxes.append((x0 - half, y0 - half, 0.0, x1 + half, y1 + half, w.height))
            kinds.append(_WALL_BOX)
            cats.append(-1)
            rooms.append(-1)
        for d in house.doors:
            top = _OPENING_TOP if d.width >= _OPENING_WIDTH else _DOOR_TOP
            if top >= height:
                continue
            (ax, ay), (bx, by) = d.endpoints
            boxes.append(
                (min(ax, bx) - half, min(ay, by) - half, top, max(ax, bx) + half, max(ay, by) + half, height)
            )
            kinds.append(_WALL_BOX)
            cats.append(-1)
            rooms.append(-1)
        category_index = {c: i for i, c in enumerate(OBJECT_CATEGORIES)}
        for o in house.objects:
            if o.category not in category_index:
                raise KeyError(f"scan {house.scan}: object {o.index} has unknown category {o.category!r}")
            x0, y0, x1, y1 = o.bounds
            boxes.append((x0, y0, o.z, x1, y1, o.top))
            kinds.append(_OBJECT_BOX)
            cats.append(category_index[o.category])
            rooms.append(o.room)
        type_index = {t: i for i, t in enumerate(ROOM_TYPES)}
        for r in house.rooms:
            if r.type not in type_index:
                raise KeyError(f"scan {house.scan}: room {r.index} has unknown type {r.type!r}")

        def tensor(values: Sequence, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        return cls(
            scan=house.scan,
            boxes=tensor(boxes, torch.float32).reshape(-1, 6),
            box_kind=tensor(kinds, torch.int64),
            box_category=tensor(cats, torch.int64),
            box_room=tensor(rooms, torch.int64),
            room_rects=tensor([[r.x0, r.y0, r.x1, r.y1] for r in house.rooms], torch.float32).reshape(-1, 4),
            room_type=tensor([type_index[r.type] for r in house.rooms], torch.int64),
            ceiling=float(height),
        )

    def rooms_at(self, xy: torch.Tensor) -> torch.Tensor:
        """Index of the room holding each ``[..., 2]`` point (first match), -1 outside the house."""
        r = self.room_rects
        x, y = xy[..., 0:1], xy[..., 1:2]
        inside = (x >= r[:, 0]) & (x <= r[:, 2]) & (y >= r[:, 1]) & (y <= r[:, 3])
        return torch.where(inside.any(-1), inside.to(torch.uint8).argmax(-1), -1)


@dataclass
class RenderOutput:
    """Rendered views ``[P, V, S, S]`` (viewpoints x views x rows x columns) and what each pixel saw.

    ``depth`` is the distance along the camera axis (like a depth camera), capped at ``max_depth``;
    ``category`` is the object category index (-1: no object), ``room`` the index of the room whose
    floor, wall, ceiling or furniture the pixel shows (-1: outside), ``surface`` one of
    ``SKY, GROUND, FLOOR, CEILING, WALL, OBJECT``.
    """

    rgb: torch.Tensor  # [P, V, S, S, 3] uint8
    depth: torch.Tensor  # [P, V, S, S] float32
    category: torch.Tensor  # [P, V, S, S] int16
    room: torch.Tensor  # [P, V, S, S] int16
    surface: torch.Tensor  # [P, V, S, S] uint8


class Renderer:
    """Renders views of a :class:`Scene` from many cameras at once."""

    def __init__(self, config: CameraConfig | None = None, device: str | torch.device = "auto") -> None:
        self.config = config or CameraConfig()
        # Normalised ("cuda" -> "cuda:0") so that it compares equal to the devices tensors report.
        self.device = torch.empty(0, device=resolve_device(device)).device
        size, half = self.config.image_size, math.tan(math.radians(self.config.fov_degrees) / 2)
        steps = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
        self._cols = (steps * half).to(torch.float32).to(self.device)
        self._rows = (-steps * half).to(torch.float32).to(self.device)

    def scene(self, house: House) -> Scene:
        return Scene.from_house(house, self.device)

    def render_panoramas(self, scene: Scene, positions: torch.Tensor | np.ndarray) -> RenderOutput:
        """The 36 R2R panorama views at each of ``[P, 3]`` camera positions."""
        positions = torch.as_tensor(positions, dtype=torch.float32).reshape(-1, 3)
        count = positions.shape[0]
        headings = np.broadcast_to(VIEW_HEADINGS, (count, NUM_VIEWS))
        elevations = np.broadcast_to(VIEW_ELEVATIONS, (count, NUM_VIEWS))
        return self.render(scene, positions, headings, elevations)

    def render(
        self,
        scene: Scene,
        positions: torch.Tensor | np.ndarray,
        headings: torch.Tensor | np.ndarray,
        elevations: torch.Tensor | np.ndarray,
    ) -> RenderOutput:
        """Views from ``[P, 3]`` positions at ``[P, V]`` headings and elevations (radians)."""
        if scene.device != self.device:
            raise ValueError(f"scene {scene.scan} is on {scene.device}, the renderer on {self.device}")
        positions = torch.as_tensor(positions, dtype=torch.float32).reshape(-1, 3).to(self.device)
        headings, elevations = _float64(headings), _float64(elevations)
        if not (
            torch.isfinite(positions).all() and np.isfinite(headings).all() and np.isfinite(elevations).all()
        ):
            raise ValueError(f"scene {scene.scan}: camera positions, headings and elevations must be finite")
        count = positions.shape[0]
        if headings.ndim != 2 or headings.shape[0] != count or elevations.shape != headings.shape:
            raise ValueError(
                f"headings and elevations must both be [P={count}, V], "
                f"got {headings.shape} and {elevations.shape}"
            )
        views, size = headings.shape[1], self.config.image_size
        basis = _camera_basis(headings, elevations).to(self.device)  # [P, V, 3, 3]
        candidates, counts = self._wedge_candidates(scene, positions)
        total = count * views * size * size
        rgb = torch.empty(total, 3, dtype=torch.uint8, device=self.device)
        depth = torch.empty(total, dtype=torch.float32, device=self.device)
        category = torch.empty(total, dtype=torch.int16, device=self.device)
        room = torch.empty(total, dtype=torch.int16, device=self.device)
        surface = torch.empty(total, dtype=torch.uint8, device=self.device)
        # Chunks hold whole views, so every ray of a view is computed the same way whatever the batch.
        per_chunk = max(1, self.config.chunk_rays // (size * size))
        frames, origins = basis.reshape(-1, 3, 3), positions.repeat_interleave(views, 0)
        for first in range(0, count * views, per_chunk):
            cams = slice(first, min(first + per_chunk, count * views))
            owner = torch.arange(cams.start, cams.stop, device=self.device) // views
            hit = self._cast(scene, origins[cams], frames[cams], owner, candidates, counts)
            out = slice(cams.start * size * size, cams.stop * size * size)
            rgb[out], depth[out] = _shade(scene, hit), hit.depth
            category[out], room[out], surface[out] = hit.category, hit.room, hit.surface
        shape = (count, views, size, size)
        return RenderOutput(
            rgb.reshape(*shape, 3),
            depth.reshape(shape),
            category.reshape(shape),
            room.reshape(shape),
            surface.reshape(shape),
        )

    # -- casting ------------------------------------------------------------------------------------

    def _wedge_candidates(self, scene: Scene, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[P, A, K]`` boxes that may be hit by rays in each azimuth wedge and ``[P, A]`` their count.

        A box is a candidate when its silhouette overlaps the wedge and it is not hidden behind a
        floor-to-ceiling wall box that spans the whole wedge. Candidates come first in box order.
        """
        bins = self.config.azimuth_bins
        count = positions.shape[0]
        if scene.num_boxes == 0:
            return (
                torch.zeros(count, bins, 1, dtype=torch.int64, device=self.device),
                torch.zeros(count, bins, dtype=torch.int64, device=self.device),
            )
        xy = positions[:, :2]
        mid, half = _silhouettes(scene.boxes, xy)  # [P, B]
        width = 2 * math.pi / bins
        edges = torch.arange(bins + 1, device=self.device, dtype=torch.float64) * width
        centre = ((edges[:-1] + edges[1:]) / 2).to(torch.float32)
        gap = _wrap(centre[None, :, None] - mid[:, None, :]).abs()  # [P, A, B]
        # Margins absorb float error in the azimuths, keeping candidates conservative.
        overlap = gap <= half[:, None, :] + width / 2 + 1e-3
        overlap &= _unoccluded(scene, xy, edges, margin=1e-3)
        k = max(int(overlap.sum(-1).max()), 1)
        order = torch.argsort((~overlap).to(torch.uint8), dim=-1, stable=True)[..., :k]
        return order, overlap.sum(-1)

    def _cast(
        self,
        scene: Scene,
        cam_origin: torch.Tensor,
        frame: torch.Tensor,
        owner: torch.Tensor,
        candidates: torch.Tensor,
        counts: torch.Tensor,
    ) -> _Hits:
        """Trace every pixel of ``C`` views: ``[C, 3]`` origins, ``[C, 3, 3]`` (forward, right, up) frames.

        ``owner`` is the index of each view's camera position in the candidate tables.
        """
        size = self.config.image_size
        ray = (
            frame[:, None, None, 0]
            + self._cols[None, None, :, None] * frame[:, None, None, 1]
            + self._rows[None, :, None, None] * frame[:, None, None, 2]
        ).reshape(-1, 3)
        norm = ray.norm(dim=-1)
        direction = ray / norm[:, None]
        origin = cam_origin.repeat_interleave(size * size, 0)
        pos = owner.repeat_interleave(size * size, 0)
        n = len(direction)

        # Every (ray, candidate box of its azimuth wedge) pair, flattened, through the exact slab test.
        bins = self.config.azimuth_bins
        azimuth = torch.atan2(direction[:, 0], direction[:, 1]) % (2 * math.pi)
        wedge = (azimuth / (2 * math.pi / bins)).long().clamp_(0, bins - 1)
        rows = pos * bins + wedge
        per_ray = counts.reshape(-1).index_select(0, rows)
        pair_ray = torch.repeat_interleave(torch.arange(n, device=self.device), per_ray)
        first_pair = torch.cumsum(per_ray, 0) - per_ray
        slot = torch.arange(len(pair_ray), device=self.device) - first_pair.index_select(0, pair_ray)
        width = candidates.shape[-1]
        box_of_pair = candidates.reshape(-1).index_select(0, rows.index_select(0, pair_ray) * width + slot)
        safe = torch.where(direction.abs() < 1e-9, torch.full_like(direction, 1e-9), direction)
        inv, start = (1.0 / safe).index_select(0, pair_ray), origin.index_select(0, pair_ray)
        box = scene.boxes.index_select(0, box_of_pair)
        t1 = (box[:, :3] - start) * inv
        t2 = (box[:, 3:] - start) * inv
        t_near, axis = torch.minimum(t1, t2).max(-1)
        t_far = torch.maximum(t1, t2).min(-1).values
        t_pair = torch.where((t_near <= t_far) & (t_near > 1e-4), t_near, torch.inf)
        best = torch.full((n,), torch.inf, device=self.device)
        best = best.scatter_reduce(0, pair_ray, t_pair, "amin")
        # Ties (boxes sharing a face) go to the first candidate, i.e. the lowest box index.
        winner = torch.where(t_pair == best.index_select(0, pair_ray), slot, torch.iinfo(torch.int64).max)
        first = torch.full((n,), torch.iinfo(torch.int64).max, device=self.device)
        first = first.scatter_reduce(0, pair_ray, winner, "amin")
        won = (slot == first.index_select(0, pair_ray)) & torch.isfinite(t_pair)
        box_id = torch.zeros(n, dtype=torch.int64, device=self.device)
        box_axis = torch.zeros(n, dtype=torch.int64, device=self.device)
        box_id[pair_ray[won]] = box_of_pair[won]
        box_axis[pair_ray[won]] = axis[won]

        dz = direction[:, 2]
        t_floor = torch.where(dz < 0, -origin[:, 2] / torch.where(dz < 0, dz, -1.0), torch.inf)
        t_ceil = torch.where(dz > 0, (scene.ceiling - origin[:, 2]) / torch.where(dz > 0, dz, 1.0), torch.inf)
        t_plane = torch.minimum(t_floor, t_ceil)
        is_box = best <= t_plane
        t = torch.where(is_box, best, t_plane)
        point = origin + t.clamp(max=1e6)[:, None] * direction
        # One room look-up: walls belong to the room on the viewer's side, just in front of the hit;
        # floors and ceilings to the room they lie in (none outside the house).
        lookup = torch.where(is_box[:, None], point - 0.02 * direction, point)
        room = scene.rooms_at(lookup[:, :2])
        surface = torch.where(
            t_floor <= t_ceil,
            torch.where(room >= 0, FLOOR, GROUND),
            torch.where(room >= 0, CEILING, SKY),
        )
        kind = scene.box_kind.index_select(0, box_id)
        surface = torch.where(is_box, torch.where(kind == _WALL_BOX, WALL, OBJECT), surface)
        far = (surface == SKY) | (t > _FAR)
        surface = torch.where(far, SKY, surface)
        t = torch.where(far, torch.inf, t)
        room = torch.where(surface == OBJECT, scene.box_room.index_select(0, box_id), room)
        room = torch.where((surface == SKY) | (surface == GROUND), -1, room)
        category = torch.where(surface == OBJECT, scene.box_category.index_select(0, box_id), -1)
        # Normal axis: 0/1/2 for x/y/z faces; planes face along z.
        normal_axis = torch.where(is_box & ~far, box_axis, 2)
        step_sign = direction.gather(-1, normal_axis[:, None])[:, 0]
        depth = torch.where(far, self.config.max_depth, (t / norm).clamp(max=self.config.max_depth))
        return _Hits(
            point=torch.where(far[:, None], origin, point),
            distance=torch.where(far, _FAR, t),
            depth=depth,
            surface=surface.to(torch.uint8),
            room=room.to(torch.int16),
            category=category.to(torch.int16),
            normal_axis=normal_axis,
            facing_up=step_sign < 0,
        )


@dataclass
class _Hits:
    point: torch.Tensor  # [n, 3]
    distance: torch.Tensor  # [n] range along the ray
    depth: torch.Tensor  # [n] camera-axis depth, capped
    surface: torch.Tensor  # [n] uint8
    room: torch.Tensor  # [n] int16
    category: torch.Tensor  # [n] int16
    normal_axis: torch.Tensor  # [n] int64
    facing_up: torch.Tensor  # [n] bool: the hit face points against the ray's step along its axis


def _float64(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _camera_basis(headings: np.ndarray, elevations: np.ndarray) -> torch.Tensor:
    """``[P, V, 3, 3]`` forward, right and up unit vectors.

    Float64 maths per camera, so a view's rays do not depend on what it is batched with.
    """
    sh, ch = np.sin(headings), np.cos(headings)
    se, ce = np.sin(elevations), np.cos(elevations)
    zero = np.zeros_like(sh)
    forward = np.stack([sh * ce, ch * ce, se], -1)
    right = np.stack([ch, -sh, zero], -1)
    up = np.stack([-sh * se, -ch * se, ce], -1)
    return torch.from_numpy(np.stack([forward, right, up], -2)).to(torch.float32)


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angles to ``[-pi, pi)``."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def _silhouettes(boxes: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuth interval (centre, half width) of each box footprint seen from each ``[P, 2]`` point."""
    x = torch.stack([boxes[:, 0], boxes[:, 3], boxes[:, 3], boxes[:, 0]], -1)  # [B, 4] corners
    y = torch.stack([boxes[:, 1], boxes[:, 1], boxes[:, 4], boxes[:, 4]], -1)
    dx, dy = x[None] - xy[:, None, None, 0], y[None] - xy[:, None, None, 1]  # [P, B, 4]
    corner = torch.atan2(dx, dy)
    cx = (boxes[:, 0] + boxes[:, 3]) / 2
    cy = (boxes[:, 1] + boxes[:, 4]) / 2
    centre = torch.atan2(cx[None] - xy[:, None, 0], cy[None] - xy[:, None, 1])  # [P, B]
    rel = _wrap(corner - centre[..., None])
    lo, hi = rel.min(-1).values, rel.max(-1).values
    # From inside (or on the edge of) a footprint the box surrounds the camera: every wedge.
    pad = 1e-3
    inside = (
        (xy[:, None, 0] >= boxes[None, :, 0] - pad)
        & (xy[:, None, 0] <= boxes[None, :, 3] + pad)
        & (xy[:, None, 1] >= boxes[None, :, 1] - pad)
        & (xy[:, None, 1] <= boxes[None, :, 4] + pad)
    )
    half = torch.where(inside, 2 * math.pi, (hi - lo) / 2)
    return centre + (hi + lo) / 2, half


def _unoccluded(scene: Scene, xy: torch.Tensor, edges: torch.Tensor, margin: float) -> torch.Tensor:
    """``[P, A, B]``: box ``b`` is not hidden, for every ray of wedge ``a``, by a floor-to-ceiling wall.

    The entry distance of a ray into a convex footprint is largest at one end of an angle interval,
    so a wall box hit by both (slightly widened) edge rays of a wedge hides everything whose
    footprint lies further away than the larger of the two entry distances.
    """
    boxes = scene.boxes
    full = (scene.box_kind == _WALL_BOX) & (boxes[:, 2] <= 0.0) & (boxes[:, 5] >= scene.ceiling)
    walls = boxes[full]
    lo_edge, hi_edge = (edges[:-1] - margin).float(), (edges[1:] + margin).float()
    reach = []
    for angle in (lo_edge, hi_edge):
        direction = torch.stack([angle.sin(), angle.cos()], -1)  # [A, 2]
        safe = torch.where(direction.abs() < 1e-9, torch.full_like(direction, 1e-9), direction)
        inv = 1.0 / safe
        t1 = (walls[None, None, :, :2] - xy[:, None, None]) * inv[None, :, None]  # [P, A, W, 2]
        t2 = (walls[None, None, :, 3:5] - xy[:, None, None]) * inv[None, :, None]
        near = torch.minimum(t1, t2).max(-1).values
        far = torch.maximum(t1, t2).min(-1).values
        reach.append(torch.where((near <= far) & (far > 0), near.clamp(min=0), torch.inf))
    occluded_beyond = torch.maximum(reach[0], reach[1]).min(-1).values  # [P, A]
    gap = torch.maximum(boxes[None, :, :2] - xy[:, None], xy[:, None] - boxes[None, :, 3:5]).clamp(min=0)
    distance = gap.norm(dim=-1)  # [P, B] from the camera to each footprint
    return distance[:, None, :] <= occluded_beyond[..., None] + margin


# ----------------------------------------------------------------------------------------- shading

_FOG_RGB = (0.12, 0.12, 0.14)
# Brightness by face orientation: x faces, y faces, upward faces, downward faces.
_FACE_LIGHT = (0.78, 0.92, 1.0, 0.72)


def _shade(scene: Scene, hit: _Hits) -> torch.Tensor:
    """``[n, 3]`` uint8 colours of the hits."""
    device = hit.point.device
    surface = hit.surface.long()
    room_type = (
        scene.room_type.index_select(0, hit.room.long().clamp(min=0))
        if scene.room_type.numel()
        else torch.zeros_like(surface)
    )
    material = torch.where(
        surface == GROUND, GROUND_MATERIAL, torch.where(surface == CEILING, CEILING_MATERIAL, SKY_MATERIAL)
    )
    material = torch.where(surface == FLOOR, FLOOR_MATERIALS + room_type, material)
    material = torch.where(surface == WALL, WALL_MATERIALS + room_type, material)
    material = torch.where(surface == OBJECT, OBJECT_MATERIALS + hit.category.long(), material)
    colour = torch.as_tensor(MATERIAL_RGB, device=device).index_select(0, material)
    pattern = torch.as_tensor(MATERIAL_PATTERN, device=device).index_select(0, material)

    x, y, z = hit.point.unbind(-1)
    wall = surface == WALL
    tiled = wall & torch.as_tensor(WET_WALLS, device=device).index_select(0, room_type) & (z < 1.2)
    pattern = torch.where(tiled, TILES, pattern)
    # Surface coordinates: the two axes spanning the hit face.
    u = torch.where(hit.normal_axis == 0, y, x)
    v = torch.where(hit.normal_axis == 2, y, z)
    value = pattern_brightness(pattern, u, v)
    value = torch.where(wall & (z < 0.1), 0.45, value)  # skirting board marks the foot of walls
    top = (surface == OBJECT) & (hit.normal_axis == 2) & hit.facing_up
    value = torch.where(top, value * 1.12, value)  # lit tops
    face = torch.where(hit.normal_axis == 2, torch.where(hit.facing_up, 2, 3), hit.normal_axis)
    light = torch.tensor(_FACE_LIGHT, device=device).index_select(0, face)
    # Distance fades towards a dark fog, a cue for depth; the sky is left as is.
    keep = 1.0 / (1.0 + 0.06 * hit.distance.clamp(max=_FAR))
    keep = torch.where(surface == SKY, 1.0, keep)
    factor = torch.where(surface == SKY, 1.0, value * light * keep)
    fog = torch.tensor(_FOG_RGB, device=device)
    shaded = colour * factor[:, None] + fog * (1 - keep)[:, None]
    return (shaded.clamp(0, 1) * 255).round().to(torch.uint8)
