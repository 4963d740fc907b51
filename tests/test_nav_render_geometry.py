"""Renderer geometry against closed-form expectations: wall height, hidden objects, similarity, determinism."""

from __future__ import annotations

import math

import numpy as np
import torch

from lodestar.envs.nav.perception.render import OBJECT, WALL, CameraConfig, Renderer
from lodestar.envs.nav.world.house_generator import generate_house
from lodestar.envs.nav.world.viewpoints import build_viewpoint_graph
from tests.test_nav_render import HEIGHT, box_room, crate, two_rooms


def _view(renderer: Renderer, house, x: float, y: float, heading_deg: float):
    return renderer.render(
        renderer.scene(house),
        np.array([[x, y, 1.5]]),
        np.array([[math.radians(heading_deg)]]),
        np.array([[0.0]]),
    )


def test_wall_straight_ahead_has_the_expected_image_height():
    size = 64
    renderer = Renderer(CameraConfig(image_size=size), device="cpu")
    for distance in (3.0, 4.0):
        # the north wall's inner face is at y = 6 - 0.06; the camera (z = 1.5 m) stands `distance` before it
        out = _view(renderer, box_room(), 3.0, 5.94 - distance, heading_deg=0)
        column = out.surface[0, 0, :, size // 2]
        rows = int((column == WALL).sum())
        # pinhole camera, 60 deg vertical FOV: a wall of height H at distance d spans H / (d tan 30) of the half-image
        expected = HEIGHT / (distance * math.tan(math.radians(30))) * size / 2
        assert abs(rows - expected) <= 2, (distance, rows, expected)


def test_object_behind_a_wall_is_not_visible():
    renderer = Renderer(CameraConfig(image_size=32), device="cpu")
    house = two_rooms()
    house.objects.append(crate("wardrobe", 3.25, 6.0))
    from_bedroom = _view(renderer, house, 3.25, 2.0, heading_deg=0)
    assert int((from_bedroom.surface == OBJECT).sum()) == 0
    from_kitchen = _view(renderer, house, 3.25, 4.6, heading_deg=0)
    assert int((from_kitchen.surface == OBJECT).sum()) > 0


def test_nearby_panoramas_are_more_similar_than_far_ones_and_rendering_is_deterministic():
    rng = np.random.default_rng(3)
    house = generate_house(rng)
    graph = build_viewpoint_graph(house, rng).nav_graph()
    renderer = Renderer(CameraConfig(image_size=16), device="cpu")
    panoramas = renderer.render_panoramas(renderer.scene(house), graph.positions).rgb.float()
    near, far = [], []
    for i in range(graph.num_viewpoints):
        others = np.delete(np.arange(graph.num_viewpoints), i)
        euclid = np.linalg.norm(graph.positions[others] - graph.positions[i], axis=1)
        for j, bucket in ((others[euclid.argmin()], near), (others[euclid.argmax()], far)):
            bucket.append(float((panoramas[i] - panoramas[j]).abs().mean()))
    assert np.mean(near) < 0.8 * np.mean(far)
    again = Renderer(CameraConfig(image_size=16), device="cpu")
    repeat = again.render_panoramas(again.scene(house), graph.positions).rgb.float()
    assert torch.equal(panoramas, repeat)
