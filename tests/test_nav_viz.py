"""Top-down maps, first-person frames, TensorBoard logging and the render_episode script."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import render_episode
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.perception.viz import (
    AGENT_RGB,
    GOAL_RGB,
    REFERENCE_RGB,
    START_RGB,
    episode_frames,
    log_episode,
    map_legend,
    path_headings,
    top_down_map,
    trajectory_viewpoints,
)
from lodestar.envs.nav.world.build import load_house
from lodestar.runtime.logger import RunLogger


@pytest.fixture(scope="module")
def world(perception_world: Path) -> Path:
    return perception_world


@pytest.fixture(scope="module")
def episode(world):
    dataset = NavDataset(world)
    ep = dataset.episodes("val_unseen")[0]
    house, _ = load_house(world, ep.scan)
    return ep, house, dataset.graph(ep.scan)


def detour(graph, path: list[str]) -> list[str]:
    """The first two steps of ``path``, then a neighbour off the path: a wrong turn."""
    here = graph.index[path[1]]
    off = next(graph.viewpoints[n] for n in graph.neighbours(here) if graph.viewpoints[n] not in path)
    return [path[0], path[1], off]


def has_colour(image: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return bool((image == np.array(rgb, dtype=np.uint8)).all(-1).any())


def test_top_down_map_draws_both_paths(episode):
    ep, house, graph = episode
    agent = detour(graph, ep.path)
    image = top_down_map(house, graph, ep.path, agent, size=300, legend=False)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert max(image.shape[:2]) in (300, 301)
    assert has_colour(image, REFERENCE_RGB) and has_colour(image, AGENT_RGB)
    plain = top_down_map(house, graph, size=300)
    assert not has_colour(plain, REFERENCE_RGB) and not has_colour(plain, AGENT_RGB)
    with pytest.raises(KeyError, match="not in scan"):
        top_down_map(house, graph, ["nowhere"], size=300)


def test_map_legend_explains_the_marks_that_are_drawn(episode):
    ep, house, graph = episode
    agent = detour(graph, ep.path)
    bare = top_down_map(house, graph, ep.path, agent, size=300, legend=False)
    image = top_down_map(house, graph, ep.path, agent, size=300)
    # The legend is a strip below the map; the map itself is unchanged.
    assert image.shape[1] == bare.shape[1] and image.shape[0] > bare.shape[0]
    assert np.array_equal(image[: bare.shape[0]], bare)
    strip = image[bare.shape[0] :]
    for colour in (REFERENCE_RGB, AGENT_RGB, START_RGB, GOAL_RGB):
        assert has_colour(strip, colour), colour
    labels = [entry.label for entry in map_legend(reference=True, agent=True)]
    assert labels == ["reference path", "agent path", "agent stop", "start", "goal", "success radius (3 m)"]
    # Only what the map shows: no agent path, no agent entries; no path at all, no legend.
    reference_only = top_down_map(house, graph, ep.path, size=300)
    assert not has_colour(reference_only[bare.shape[0] :], AGENT_RGB)
    assert [e.label for e in map_legend(reference=False, agent=True)] == ["agent path", "agent stop"]
    assert (
        top_down_map(house, graph, size=300).shape == top_down_map(house, graph, size=300, legend=False).shape
    )
    narrow = top_down_map(house, graph, ep.path, agent, size=64)  # entries wrap onto more rows
    assert (
        narrow.shape[0] - top_down_map(house, graph, ep.path, agent, size=64, legend=False).shape[0] > 3 * 14
    )


def test_trajectory_entries_and_headings(episode):
    ep, _, graph = episode
    entries = [[vp, 0.0, 0.0] for vp in ep.path[:2]] + [[ep.path[1], 1.0, 0.0]]
    assert trajectory_viewpoints(graph, entries) == ep.path[:2]
    headings = path_headings(graph, ep.path[:2], 0.25)
    a, b = graph.positions[graph.index[ep.path[0]]], graph.positions[graph.index[ep.path[1]]]
    assert headings[0] == 0.25 and headings[1] == pytest.approx(np.arctan2(b[0] - a[0], b[1] - a[1]))


def test_episode_frames_one_per_step(episode):
    ep, house, graph = episode
    frames = episode_frames(
        house, graph, ep.path, ep.heading, ep.instructions[0], front_size=64, strip_size=16
    )
    assert frames.dtype == np.uint8 and frames.shape == (len(ep.path), 64 + 16 + 8, 12 * 16, 3)
    # The agent moves, so what it sees changes from step to step.
    assert all(not np.array_equal(frames[t], frames[t + 1]) for t in range(len(frames) - 1))


def test_logged_map_gif_and_text_are_readable_by_tensorboard(tmp_path, episode):
    ep, house, graph = episode
    agent = detour(graph, ep.path)
    with RunLogger(tmp_path / "run") as logger:
        logged = log_episode(logger, "val_unseen/episode", 5, house, graph, ep, agent, map_size=200)
    assert "distance to goal" in logged["text"] and ep.instructions[0] in logged["text"]
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    images = acc.Tags()["images"]
    assert "val_unseen/episode/map" in images and "val_unseen/episode/frames" in images
    png = acc.Images("val_unseen/episode/map")[0]
    assert png.step == 5 and Image.open(io.BytesIO(png.encoded_image_string)).size == (
        logged["map"].shape[1],
        logged["map"].shape[0],
    )
    gif = Image.open(io.BytesIO(acc.Images("val_unseen/episode/frames")[0].encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == len(agent)
    assert any(tag.startswith("val_unseen/episode/instruction") for tag in acc.Tags()["tensors"])


def test_render_episode_script(tmp_path, world, episode, run_script):
    ep, _, graph = episode
    preds = tmp_path / "preds.json"
    agent = detour(graph, ep.path)
    preds.write_text(
        json.dumps([{"instr_id": f"{ep.path_id}_1", "trajectory": [[vp, 0.0, 0.0] for vp in agent]}])
    )
    png, gif = tmp_path / "map.png", tmp_path / "walk.gif"
    args = ["--episode", f"{ep.path_id}_1", "--trajectory", preds, "--out", png, "--out", gif]
    done = run_script(render_episode.main, "--data", world, *args)
    assert done.returncode == 0, done.stderr
    assert Image.open(png).format == "PNG" and Image.open(gif).n_frames == len(agent)
    assert ep.instructions[1] in done.stdout
    missing = run_script(render_episode.main, "--data", world, "--episode", "no_such_episode", "--out", png)
    assert missing.returncode == 2 and "no_such_episode" in missing.stderr


def _smoke_args(fixture, work: Path) -> list[object]:
    world = fixture("perception_world")
    episode = NavDataset(world).episodes("val_unseen")[0]
    return ["--data", world, "--episode", episode.path_id, "--out", "map.png"]


@pytest.mark.script_run("render_episode.py", _smoke_args)
def test_render_episode_script_smoke(script_run, episode):
    """The one command-line run of ``scripts/render_episode.py`` (in the background: tests/script_runs.py)."""
    ep, _, _ = episode
    assert script_run.returncode == 0, script_run.stderr
    assert Image.open(script_run.work / "map.png").format == "PNG" and ep.instructions[0] in script_run.stdout
