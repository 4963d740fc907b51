"""The batched ray caster and the oracle semantic descriptors, on hand-built and generated houses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lodestar.envs.nav.perception.materials import surface_colours
from lodestar.envs.nav.perception.render import (
    CEILING,
    FLOOR,
    OBJECT,
    SKY,
    WALL,
    CameraConfig,
    Renderer,
    Scene,
)
from lodestar.envs.nav.perception.semantics import (
    DESCRIPTOR_DIM,
    descriptor_names,
    oracle_descriptors,
    view_labels,
)
from lodestar.envs.nav.world.furniture import OBJECT_CATEGORIES
from lodestar.envs.nav.world.house_generator import generate_house
from lodestar.envs.nav.world.houses import ROOM_TYPES, Door, House, HouseObject, Room, Wall
from lodestar.envs.nav.world.viewpoints import build_viewpoint_graph

SIZE = 16
HEIGHT = 2.6


def box_room(room_type: str = "bedroom", objects: list[HouseObject] | None = None) -> House:
    """One closed 6 x 6 m room."""
    walls = [
        Wall(0, 0, 6, 0, 0.12, HEIGHT),
        Wall(0, 6, 6, 6, 0.12, HEIGHT),
        Wall(0, 0, 0, 6, 0.12, HEIGHT),
        Wall(6, 0, 6, 6, 0.12, HEIGHT),
    ]
    return House("room", 6, 6, HEIGHT, 0.12, [Room(0, room_type, 0, 0, 6, 6)], [], walls, objects or [])


def two_rooms() -> House:
    """A bedroom (south) and a kitchen (north) joined by a 1 m door in the wall at y = 4."""
    walls = [
        Wall(0, 0, 4, 0, 0.12, HEIGHT),
        Wall(0, 8, 4, 8, 0.12, HEIGHT),
        Wall(0, 0, 0, 8, 0.12, HEIGHT),
        Wall(4, 0, 4, 8, 0.12, HEIGHT),
        Wall(0, 4, 1.5, 4, 0.12, HEIGHT),
        Wall(2.5, 4, 4, 4, 0.12, HEIGHT),
    ]
    rooms = [Room(0, "bedroom", 0, 0, 4, 4), Room(1, "kitchen", 0, 4, 4, 8)]
    return House("two", 4, 8, HEIGHT, 0.12, rooms, [Door(0, (0, 1), 2.0, 4.0, 1.0, "x")], walls)


def crate(
    category: str, x: float, y: float, width: float = 1.0, depth: float = 0.5, height: float = 2.0
) -> HouseObject:
    return HouseObject(0, category, 0, x, y, 0.0, width, depth, height, "floor")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(CameraConfig(image_size=SIZE), device="cpu")


def view(
    renderer: Renderer, house: House, x: float, y: float, heading_deg: float, elevation_deg: float = 0.0
):
    """One view, as the [S, S] / [S, S, 3] arrays of the render output."""
    out = renderer.render(
        renderer.scene(house),
        np.array([[x, y, 1.5]]),
        np.array([[math.radians(heading_deg)]]),
        np.array([[math.radians(elevation_deg)]]),
    )
    return out


def chroma(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb / rgb.sum()


def test_shapes_dtypes_and_value_ranges(renderer):
    house = box_room()
    out = renderer.render_panoramas(renderer.scene(house), np.array([[3.0, 3.0, 1.5], [1.0, 2.0, 1.5]]))
    assert out.rgb.shape == (2, 36, SIZE, SIZE, 3) and out.rgb.dtype == torch.uint8
    assert out.depth.shape == (2, 36, SIZE, SIZE) and out.depth.dtype == torch.float32
    assert (
        out.category.dtype == torch.int16
        and out.room.dtype == torch.int16
        and out.surface.dtype == torch.uint8
    )
    assert torch.isfinite(out.depth).all() and (out.depth > 0).all() and (out.depth <= 10.0).all()
    # A closed room: no sky, every pixel belongs to room 0.
    assert not (out.surface == SKY).any() and (out.room == 0).all()


def test_view_facing_a_near_wall_is_close_and_wall_coloured(renderer):
    out = view(renderer, box_room("bedroom"), 3.0, 5.4, heading_deg=0)
    centre = (slice(SIZE // 2 - 1, SIZE // 2 + 1),) * 2
    assert (out.surface[0, 0][centre] == WALL).all()
    # The wall face is 6 - 0.06 - 5.4 = 0.54 m ahead.
    assert out.depth[0, 0][centre].max() == pytest.approx(0.54, abs=0.01)
    far = view(renderer, box_room("bedroom"), 3.0, 0.6, heading_deg=0)
    assert far.depth[0, 0][centre].min() > 5.0
    wall = surface_colours()["wall"][ROOM_TYPES.index("bedroom")]
    pixel = out.rgb[0, 0, SIZE // 2, SIZE // 2].numpy()
    assert np.abs(chroma(pixel) - chroma(wall)).max() < 0.02
    kitchen = (
        view(renderer, box_room("kitchen"), 3.0, 5.4, heading_deg=0).rgb[0, 0, SIZE // 2, SIZE // 2].numpy()
    )
    assert not np.array_equal(kitchen, pixel)


def test_elevation_shifts_the_horizon(renderer):
    out = renderer.render_panoramas(renderer.scene(box_room()), np.array([[3.0, 3.0, 1.5]]))
    up, level, down = out.surface[0, 24:], out.surface[0, 12:24], out.surface[0, :12]
    assert (up == CEILING).sum() > (level == CEILING).sum() > (down == CEILING).sum()
    assert (down == FLOOR).sum() > (level == FLOOR).sum() > (up == FLOOR).sum()
    # Looking level, the horizon is the middle row: no floor above it, no ceiling below it.
    assert not (level[:, : SIZE // 2] == FLOOR).any() and not (level[:, SIZE // 2 :] == CEILING).any()


def test_object_in_front_occludes_the_wall_behind(renderer):
    empty = view(renderer, box_room(), 3.0, 1.0, heading_deg=0)
    house = box_room(objects=[crate("wardrobe", 3.0, 3.0)])
    out = view(renderer, house, 3.0, 1.0, heading_deg=0)
    c = SIZE // 2
    assert empty.surface[0, 0, c, c] == WALL and empty.depth[0, 0, c, c] == pytest.approx(4.94, abs=0.02)
    assert out.surface[0, 0, c, c] == OBJECT
    assert out.depth[0, 0, c, c] == pytest.approx(1.75, abs=0.02)
    assert out.category[0, 0, c, c] == OBJECT_CATEGORIES.index("wardrobe")
    colour = surface_colours()["category"][OBJECT_CATEGORIES.index("wardrobe")]
    assert np.abs(chroma(out.rgb[0, 0, c, c].numpy()) - chroma(colour)).max() < 0.03
    # Outside the crate's silhouette the wall is still there at the same depth.
    assert out.surface[0, 0, c, 0] == WALL and out.depth[0, 0, c, 0] == empty.depth[0, 0, c, 0]


def test_doorway_shows_the_next_room(renderer):
    out = view(renderer, two_rooms(), 2.0, 1.0, heading_deg=0)
    c = SIZE // 2
    # Straight through the door to the kitchen's far wall at y = 8 - 0.06.
    assert out.surface[0, 0, c, c] == WALL and out.room[0, 0, c, c] == 1
    assert out.depth[0, 0, c, c] == pytest.approx(6.94, abs=0.02)
    # Beside the door the dividing wall belongs to the bedroom side.
    assert out.room[0, 0, c, 0] == 0 and out.depth[0, 0, c, 0] < 3.2
    # 1 m before the door, rays up to ~29 degrees pass under the lintel (2.05 m) into the kitchen;
    # steeper ones hit the lintel on the bedroom side.
    up = view(renderer, two_rooms(), 2.0, 3.0, heading_deg=0, elevation_deg=30)
    column = up.room[0, 0, :, c]
    assert (column[: SIZE // 2] == 0).all() and (column[SIZE // 2 + 1 :] == 1).all()
    assert up.surface[0, 0, SIZE // 2 - 2, c] == WALL and up.depth[0, 0, SIZE // 2 - 2, c] < 1.3


def test_heading_convention_view_15_faces_plus_x(renderer):
    house = box_room(objects=[crate("fridge", 4.5, 3.0, width=0.5, depth=0.6, height=3.0)])
    out = renderer.render_panoramas(renderer.scene(house), np.array([[1.0, 3.0, 1.5]]))
    hits = out.category[0] == OBJECT_CATEGORIES.index("fridge")
    counts = hits.flatten(1).sum(1)
    # Seen ahead (views 3, 15, 27) and beside; never when facing +y, -y or -x.
    assert counts[[3, 15, 27]].min() > 0 and counts[[0, 6, 9, 12, 18, 21, 24, 30, 33]].sum() == 0
    cols = torch.nonzero(hits[15])[:, 1].float()
    assert cols.mean() == pytest.approx((SIZE - 1) / 2, abs=0.51)
    # The views next to it (60 and 120 degrees) see it at their left and right edges.
    assert torch.nonzero(hits[14])[:, 1].float().mean() > SIZE / 2
    assert torch.nonzero(hits[16])[:, 1].float().mean() < SIZE / 2


def test_batched_rendering_equals_one_view_at_a_time():
    house = generate_house(np.random.default_rng(3))
    renderer = Renderer(CameraConfig(image_size=12, chunk_rays=1000), device="cpu")
    scene = renderer.scene(house)
    positions = np.array([[*room.center, 1.5] for room in house.rooms[:3]])
    batch = renderer.render_panoramas(scene, positions)
    single = Renderer(CameraConfig(image_size=12, chunk_rays=1 << 16), device="cpu")
    for p in range(len(positions)):
        for v in (0, 7, 13, 22, 35):
            one = single.render(
                scene,
                positions[p : p + 1],
                np.array([[v % 12 * math.pi / 6]]),
                np.array([[(v // 12 - 1) * math.pi / 6]]),
            )
            assert torch.equal(one.rgb[0, 0], batch.rgb[p, v])
            assert torch.equal(one.depth[0, 0], batch.depth[p, v])
            assert torch.equal(one.category[0, 0], batch.category[p, v])


def test_wedge_culling_matches_brute_force():
    """Against a renderer that tests every ray against every box (one wedge covering everything)."""
    house = generate_house(np.random.default_rng(5))
    fast = Renderer(CameraConfig(image_size=10), device="cpu")
    scene = fast.scene(house)
    # Doorway viewpoints come first: cameras under lintels, between jambs, looking along walls.
    positions = build_viewpoint_graph(house, np.random.default_rng(0)).positions[:10]
    out = fast.render_panoramas(scene, positions)
    count = positions.shape[0]
    every = torch.arange(scene.num_boxes).expand(count, fast.config.azimuth_bins, -1).contiguous()
    brute = Renderer(CameraConfig(image_size=10), device="cpu")
    brute._wedge_candidates = lambda s, p: (every, torch.full(every.shape[:2], scene.num_boxes))
    ref = brute.render_panoramas(scene, positions)
    assert torch.equal(out.depth, ref.depth) and torch.equal(out.surface, ref.surface)
    assert torch.equal(out.category, ref.category)


def test_generated_house_renders_every_surface_kind(renderer):
    house = generate_house(np.random.default_rng(0))
    scene = renderer.scene(house)
    positions = np.array([[*room.center, 1.5] for room in house.rooms])
    out = renderer.render_panoramas(scene, positions)
    kinds = set(out.surface.unique().tolist())
    assert {FLOOR, CEILING, WALL, OBJECT} <= kinds
    assert torch.isfinite(out.depth).all()
    seen = set(out.category[out.category >= 0].unique().tolist())
    assert seen and seen <= {OBJECT_CATEGORIES.index(o.category) for o in house.objects}


def test_oracle_descriptor_sees_the_object_and_the_room(renderer):
    house = box_room("office", objects=[crate("bookshelf", 4.5, 3.0, width=0.5, depth=1.2)])
    scene = renderer.scene(house)
    out = renderer.render_panoramas(scene, np.array([[3.0, 3.0, 1.5]]))
    desc = oracle_descriptors(out, scene, max_depth=10.0)
    assert desc.shape == (1, 36, DESCRIPTOR_DIM) and len(descriptor_names()) == DESCRIPTOR_DIM
    names = descriptor_names()
    shelf = names.index("object:bookshelf")
    assert desc[0, 15, shelf] > 0.01 and desc[0, 21, shelf] == 0
    assert desc[0, :, names.index("room:office")].min() == pytest.approx(1.0)
    assert desc[0, 15, names.index("depth:min")] < desc[0, 21, names.index("depth:min")]
    room, objects = view_labels(out, scene, torch.tensor([0]))
    assert (room == ROOM_TYPES.index("office")).all()
    assert objects[0, 15, OBJECT_CATEGORIES.index("bookshelf")] and not objects[0, 21].any()


def test_bad_scene_input_is_a_clear_error(renderer):
    house = box_room(objects=[crate("spaceship", 3.0, 3.0)])
    with pytest.raises(KeyError, match="spaceship"):
        Scene.from_house(house)
    with pytest.raises(ValueError, match="image_size"):
        CameraConfig(image_size=0)
    scene = renderer.scene(box_room())
    with pytest.raises(ValueError, match="headings and elevations"):
        renderer.render(scene, np.zeros((2, 3)), np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="finite"):
        renderer.render(scene, np.full((1, 3), np.nan), np.zeros((1, 1)), np.zeros((1, 1)))


@pytest.mark.slow
def test_nav_render_benchmark_quick_smoke():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "benchmark.py"), "nav-render", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LODESTAR_NO_PROGRESS": "1"},
    )
    assert done.returncode == 0, done.stderr
    records = [
        json.loads(line[len("BENCH ") :]) for line in done.stdout.splitlines() if line.startswith("BENCH ")
    ]
    metrics = {r["metric"].split(" (")[0] for r in records}
    assert {"batched render", "feature build", "room-type accuracy", "object mAP"} <= metrics
    assert all(r["reference_value"] is not None for r in records if r["target"] is not None)
