"""Oracle semantic descriptors and training labels of rendered views, from the ray casts themselves.

The descriptor of a view is a fixed-length float vector (``DESCRIPTOR_DIM`` entries):

- per object category: the fraction of the image it covers, each pixel weighted by
  ``1 / max(depth, 1 m)`` so that near objects count more than far ones;
- per room type: the fraction of pixels showing that type's floors, walls, ceilings or furniture;
- free space: mean, minimum and the 10/50/90th percentiles of the depth, divided by ``max_depth``;
- per surface kind (sky, ground, floor, ceiling, wall, object): the fraction of pixels.

It is what a perfect recogniser would report, and serves as the ``oracle`` feature option next to
the learned CNN features. Labels for training the view encoder come from the same pixels: the room
type around the view centre and the object categories covering a minimum share of the image.
"""

from __future__ import annotations

import math

import torch

from lodestar.envs.nav.perception.render import SURFACE_NAMES, RenderOutput, Scene
from lodestar.envs.nav.world.furniture import OBJECT_CATEGORIES
from lodestar.envs.nav.world.houses import ROOM_TYPES

NUM_CATEGORIES = len(OBJECT_CATEGORIES)
NUM_ROOM_TYPES = len(ROOM_TYPES)
DEPTH_QUANTILES = (0.1, 0.5, 0.9)
DESCRIPTOR_DIM = NUM_CATEGORIES + NUM_ROOM_TYPES + 2 + len(DEPTH_QUANTILES) + len(SURFACE_NAMES)


def descriptor_names() -> list[str]:
    """A name for each entry of the descriptor, in order."""
    return (
        [f"object:{c}" for c in OBJECT_CATEGORIES]
        + [f"room:{t}" for t in ROOM_TYPES]
        + ["depth:mean", "depth:min"]
        + [f"depth:p{round(q * 100)}" for q in DEPTH_QUANTILES]
        + [f"surface:{s}" for s in SURFACE_NAMES]
    )


def _flat(output: RenderOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Category, room, depth and surface as ``[N, S*S]`` over all views."""
    size = output.depth.shape[-1]
    return (
        output.category.reshape(-1, size * size).long(),
        output.room.reshape(-1, size * size).long(),
        output.depth.reshape(-1, size * size),
        output.surface.reshape(-1, size * size).long(),
    )


def _histogram(index: torch.Tensor, weight: torch.Tensor, bins: int) -> torch.Tensor:
    """Row-wise weighted histogram of ``[N, M]`` indices in ``[0, bins)`` (negative ones are skipped)."""
    rows = torch.arange(index.shape[0], device=index.device)[:, None]
    keep = index >= 0
    flat = (rows * bins + index.clamp(min=0)).reshape(-1)
    out = torch.zeros(index.shape[0] * bins, device=index.device, dtype=weight.dtype)
    out.index_add_(0, flat, (weight * keep).reshape(-1))
    return out.reshape(index.shape[0], bins)


def _quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Row-wise linear-interpolated quantiles ``[N, len(qs)]`` (``torch.quantile`` caps its input size)."""
    ordered = values.sort(dim=1).values
    last = values.shape[1] - 1
    out = []
    for q in qs:
        pos = q * last
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(ordered[:, lo] + (ordered[:, hi] - ordered[:, lo]) * (pos - lo))
    return torch.stack(out, 1)


def room_types_of_pixels(output: RenderOutput, scene: Scene) -> torch.Tensor:
    """``[N, S*S]`` room type index of each pixel (-1 outside)."""
    _, room, _, _ = _flat(output)
    if scene.room_type.numel() == 0:
        return torch.full_like(room, -1)
    return torch.where(room >= 0, scene.room_type[room.clamp(min=0)], -1)


def oracle_descriptors(output: RenderOutput, scene: Scene, max_depth: float) -> torch.Tensor:
    """``[P, V, DESCRIPTOR_DIM]`` float32 descriptors of rendered views (see the module docstring)."""
    category, _, depth, surface = _flat(output)
    pixels = category.shape[1]
    near = 1.0 / depth.clamp(min=1.0)
    objects = _histogram(category, near, NUM_CATEGORIES) / pixels
    rooms = _histogram(room_types_of_pixels(output, scene), torch.ones_like(depth), NUM_ROOM_TYPES) / pixels
    scaled = depth / max_depth
    quantiles = _quantiles(scaled, DEPTH_QUANTILES)
    stats = torch.cat([scaled.mean(1, keepdim=True), scaled.min(1, keepdim=True).values, quantiles], 1)
    kinds = _histogram(surface, torch.ones_like(depth), len(SURFACE_NAMES)) / pixels
    out = torch.cat([objects, rooms, stats, kinds], 1)
    return out.reshape(*output.depth.shape[:2], DESCRIPTOR_DIM).float()


def view_labels(
    output: RenderOutput,
    scene: Scene,
    camera_rooms: torch.Tensor,
    min_object_fraction: float = 0.005,
    centre_fraction: float = 1 / 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for the view encoder: ``[P, V]`` room type and ``[P, V, C]`` visible-object multi-hot.

    The room type is the most common one among the pixels of the central ``centre_fraction`` of the
    image; when they all show the outside, the type of the room the camera stands in
    (``camera_rooms``, ``[P]`` room indices). An object category is visible when it covers at least
    ``min_object_fraction`` of the image.
    """
    views = output.depth.shape[1]
    size = output.depth.shape[-1]
    types = room_types_of_pixels(output, scene).reshape(-1, size, size)
    lo = round(size * (1 - centre_fraction) / 2)
    hi = max(size - lo, lo + 1)
    centre = types[:, lo:hi, lo:hi].reshape(types.shape[0], -1)
    counts = _histogram(centre, torch.ones_like(centre, dtype=torch.float32), NUM_ROOM_TYPES)
    own = scene.room_type[camera_rooms.clamp(min=0)].repeat_interleave(views)
    room = torch.where(counts.sum(1) > 0, counts.argmax(1), own)
    category, _, _, _ = _flat(output)
    area = _histogram(category, torch.ones_like(category, dtype=torch.float32), NUM_CATEGORIES)
    objects = area / category.shape[1] >= min_object_fraction
    return room.reshape(-1, views), objects.reshape(-1, views, NUM_CATEGORIES)
