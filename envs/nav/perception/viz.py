"""Watching navigation episodes: a top-down map of the house and first-person frames for a GIF.

- :func:`top_down_map` draws rooms (floor colour of their type, labelled), walls, doorways,
  furniture, the navigation graph, the reference path, the agent's path, start, goal and success
  radius, with a legend of those marks (:func:`map_legend`) in a strip below the map.
- :func:`episode_frames` renders what the agent sees at each step: the view straight ahead, larger,
  and a strip of twelve views around it (elevation 0, centred on the heading), with the instruction
  written beside the front view.
- :func:`log_episode` sends both and the instruction text to TensorBoard through a ``RunLogger``.

Trajectories are viewpoint ids, or ``[viewpoint, heading, elevation]`` entries as in the R2R
submission format. The agent starts facing the episode heading and then faces along each edge it
travels, as in the simulator.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.perception.materials import surface_colours
from lodestar.envs.nav.perception.render import CameraConfig, Renderer
from lodestar.envs.nav.world.furniture import OBJECT_CATEGORIES
from lodestar.envs.nav.world.houses import ROOM_TYPES, House

REFERENCE_RGB = (40, 170, 70)
AGENT_RGB = (220, 60, 40)
START_RGB = (40, 90, 220)
GOAL_RGB = (20, 130, 40)
SUCCESS_RADIUS = 3.0

LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (40, 40, 40)

Trajectory = Sequence[str] | Sequence[Sequence[Any]]


@dataclass(frozen=True)
class LegendEntry:
    """One mark of the map: its label, its colour and how it is drawn."""

    label: str
    colour: tuple[int, int, int]
    mark: Literal["line", "dot", "ring", "cross"]


def map_legend(reference: bool, agent: bool, success_radius: float = SUCCESS_RADIUS) -> list[LegendEntry]:
    """The legend of a map that draws a reference path (with start, goal and success radius) and/or an
    agent path (with the cross where it stopped): only the marks that are on the map."""
    entries = []
    if reference:
        entries.append(LegendEntry("reference path", REFERENCE_RGB, "line"))
    if agent:
        entries += [
            LegendEntry("agent path", AGENT_RGB, "line"),
            LegendEntry("agent stop", AGENT_RGB, "cross"),
        ]
    if reference:
        entries += [
            LegendEntry("start", START_RGB, "dot"),
            LegendEntry("goal", GOAL_RGB, "dot"),
            LegendEntry(f"success radius ({success_radius:g} m)", GOAL_RGB, "ring"),
        ]
    return entries


def _rgb(values: np.ndarray, lighten: float = 0.0) -> tuple[int, int, int]:
    values = np.asarray(values, dtype=np.float64)
    values = values + (1.0 - values) * lighten
    return tuple(round(v * 255) for v in np.clip(values, 0, 1))


def trajectory_viewpoints(graph: NavGraph, trajectory: Trajectory) -> list[str]:
    """Viewpoint ids of a trajectory (ids or submission entries), consecutive repeats merged."""
    ids = [entry if isinstance(entry, str) else str(entry[0]) for entry in trajectory]
    for vp in ids:
        if vp not in graph.index:
            raise KeyError(f"trajectory viewpoint {vp!r} is not in scan {graph.scan}")
    return [vp for k, vp in enumerate(ids) if k == 0 or vp != ids[k - 1]]


def path_headings(graph: NavGraph, path: Sequence[str], start_heading: float) -> list[float]:
    """The heading at each viewpoint of ``path``: ``start_heading``, then along each travelled edge."""
    headings = [float(start_heading)]
    for a, b in itertools.pairwise(path):
        d = graph.positions[graph.index[b]] - graph.positions[graph.index[a]]
        headings.append(math.atan2(float(d[0]), float(d[1])))
    return headings


# ------------------------------------------------------------------------------------------ the map


class _Canvas:
    """World metres to map pixels (y up in the world, down in the image)."""

    def __init__(self, house: House, size: int, margin: float = 0.6) -> None:
        self.scale = size / (max(house.width, house.depth) + 2 * margin)
        self.margin = margin
        self.width = math.ceil((house.width + 2 * margin) * self.scale)
        self.height = math.ceil((house.depth + 2 * margin) * self.scale)
        self.depth = house.depth

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return ((x + self.margin) * self.scale, (self.depth - y + self.margin) * self.scale)

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        (ax, ay), (bx, by) = self.xy(x0, y0), self.xy(x1, y1)
        return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def top_down_map(
    house: House,
    graph: NavGraph,
    reference_path: Sequence[str] = (),
    agent_path: Trajectory | None = None,
    size: int = 512,
    labels: bool = True,
    success_radius: float = SUCCESS_RADIUS,
    legend: bool = True,
) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 top-down map; ``size`` is the pixel length of the map's longer side.

    With ``legend`` (and a path drawn), a strip below the map explains the marks (:func:`map_legend`).
    """
    if size < 32:
        raise ValueError(f"map size must be at least 32 pixels, got {size}")
    canvas = _Canvas(house, size)
    image = Image.new("RGB", (canvas.width, canvas.height), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    colours = surface_colours()
    type_index = {t: i for i, t in enumerate(ROOM_TYPES)}
    category_index = {c: i for i, c in enumerate(OBJECT_CATEGORIES)}
    for room in house.rooms:
        fill = (
            _rgb(colours["floor"][type_index[room.type]], lighten=0.45)
            if room.type in type_index
            else (200, 200, 200)
        )
        draw.rectangle(canvas.rect(room.x0, room.y0, room.x1, room.y1), fill=fill)
    # Rugs first, standing furniture over them; ceiling lamps only as outlines.
    order = sorted(
        house.objects, key=lambda o: {"flat": 0, "floor": 1, "hung": 2, "ceiling": 3}.get(o.mount, 1)
    )
    for obj in order:
        box = canvas.rect(*obj.bounds)
        colour = (
            _rgb(colours["category"][category_index[obj.category]])
            if obj.category in category_index
            else (128, 128, 128)
        )
        if obj.mount == "ceiling":
            draw.rectangle(box, outline=colour, width=1)
        else:
            draw.rectangle(box, fill=colour, outline=(60, 60, 60) if obj.mount == "floor" else None)
    wall_px = max(2, round(house.wall_thickness * canvas.scale))
    for wall in house.walls:
        draw.line(
            [canvas.xy(wall.x0, wall.y0), canvas.xy(wall.x1, wall.y1)], fill=(45, 45, 50), width=wall_px
        )
    for door in house.doors:
        a, b = door.endpoints
        draw.line(
            [canvas.xy(*a), canvas.xy(*b)],
            fill=(150, 110, 70) if not door.exterior else (90, 160, 210),
            width=1,
        )
    if labels:
        font = ImageFont.load_default()
        for room in house.rooms:
            cx, cy = canvas.xy(*room.center)
            draw.text((cx, cy), room.type, fill=(40, 40, 40), font=font, anchor="mm")

    points = {vp: canvas.xy(*graph.positions[i, :2]) for i, vp in enumerate(graph.viewpoints)}
    for i, j in graph.edges:
        draw.line([points[graph.viewpoints[i]], points[graph.viewpoints[j]]], fill=(160, 160, 165), width=1)
    dot = max(2.0, canvas.scale * 0.08)
    for p in points.values():
        draw.ellipse([p[0] - dot, p[1] - dot, p[0] + dot, p[1] + dot], fill=(120, 120, 125))

    reference = [vp for vp in reference_path if vp in points]
    if len(reference) != len(reference_path):
        missing = [vp for vp in reference_path if vp not in points]
        raise KeyError(f"reference path viewpoint {missing[0]!r} is not in scan {graph.scan}")
    if reference:
        goal = points[reference[-1]]
        r = success_radius * canvas.scale
        draw.ellipse([goal[0] - r, goal[1] - r, goal[0] + r, goal[1] + r], outline=GOAL_RGB, width=1)
        if len(reference) > 1:
            draw.line(
                [points[vp] for vp in reference],
                fill=REFERENCE_RGB,
                width=max(3, round(dot * 2)),
                joint="curve",
            )
    if agent_path is not None:
        agent = trajectory_viewpoints(graph, agent_path)
        if len(agent) > 1:
            draw.line([points[vp] for vp in agent], fill=AGENT_RGB, width=max(2, round(dot)), joint="curve")
        if agent:
            end = points[agent[-1]]
            m = dot * 2.5
            draw.line([end[0] - m, end[1] - m, end[0] + m, end[1] + m], fill=AGENT_RGB, width=2)
            draw.line([end[0] - m, end[1] + m, end[0] + m, end[1] - m], fill=AGENT_RGB, width=2)
    if reference:
        for vp, colour in ((reference[0], START_RGB), (reference[-1], GOAL_RGB)):
            p, m = points[vp], dot * 2.2
            draw.ellipse([p[0] - m, p[1] - m, p[0] + m, p[1] + m], fill=colour, outline=(255, 255, 255))
    entries = map_legend(bool(reference), agent_path is not None, success_radius) if legend else []
    if entries:
        image = _with_legend(image, entries)
    return np.asarray(image, dtype=np.uint8)


def _with_legend(image: Image.Image, entries: Sequence[LegendEntry]) -> Image.Image:
    """``image`` above a strip of legend entries (a swatch of each mark and its label), wrapped to its width."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(image)
    swatch, gap, row_height, pad = 18, 4, 14, 4
    spots: list[tuple[float, float]] = []  # top-left corner of each entry, relative to the strip
    x, y = float(pad), float(pad)
    for entry in entries:
        width = swatch + gap + measure.textlength(entry.label, font=font) + 3 * gap
        if x > pad and x + width > image.width:
            x, y = float(pad), y + row_height
        spots.append((x, y))
        x += width
    strip = Image.new("RGB", (image.width, round(y) + row_height + pad), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for entry, (x, y) in zip(entries, spots, strict=True):
        cy, cx = y + row_height / 2 - 1, x + swatch / 2
        if entry.mark == "line":
            draw.line([(x, cy), (x + swatch, cy)], fill=entry.colour, width=3)
        elif entry.mark == "dot":
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=entry.colour)
        elif entry.mark == "ring":
            draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=entry.colour, width=1)
        else:
            draw.line([(cx - 4, cy - 4), (cx + 4, cy + 4)], fill=entry.colour, width=2)
            draw.line([(cx - 4, cy + 4), (cx + 4, cy - 4)], fill=entry.colour, width=2)
        draw.text((x + swatch + gap, cy), entry.label, fill=LEGEND_TEXT, font=font, anchor="lm")
    framed = Image.new("RGB", (image.width, image.height + strip.height), LEGEND_BACKGROUND)
    framed.paste(image, (0, 0))
    framed.paste(strip, (0, image.height))
    return framed


# --------------------------------------------------------------------------------------- the frames


def episode_frames(
    house: House,
    graph: NavGraph,
    trajectory: Trajectory,
    start_heading: float,
    instruction: str = "",
    device: str | torch.device = "cpu",
    front_size: int = 192,
    strip_size: int = 48,
) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames, one per viewpoint of ``trajectory`` (see the module docstring)."""
    path = trajectory_viewpoints(graph, trajectory)
    if not path:
        raise ValueError("cannot draw frames of an empty trajectory")
    headings = path_headings(graph, path, start_heading)
    front = Renderer(CameraConfig(image_size=front_size), device)
    strip = Renderer(CameraConfig(image_size=strip_size), device)
    scene = front.scene(house)
    positions = graph.positions[[graph.index[vp] for vp in path]]
    heading = np.asarray(headings)[:, None]
    ahead = front.render(scene, positions, heading, np.zeros_like(heading)).rgb[:, 0].cpu().numpy()
    around = heading + (np.arange(12) - 6)[None] * (math.pi / 6)
    panorama = (
        strip.render(scene, positions, around, np.zeros_like(around)).rgb.cpu().numpy()
    )  # [T, 12, s, s, 3]

    width = 12 * strip_size
    height = front_size + strip_size + 8
    font = ImageFont.load_default()
    chars = max(20, (width - front_size - 16) // 6)
    lines = textwrap.wrap(instruction, chars) if instruction else []
    room_of = {r.index: r.type for r in house.rooms}
    frames = []
    for t, vp in enumerate(path):
        image = Image.new("RGB", (width, height), (20, 20, 24))
        image.paste(Image.fromarray(ahead[t]), (0, 0))
        strip_image = np.concatenate(list(panorama[t]), axis=1)
        image.paste(Image.fromarray(strip_image), (0, front_size + 8))
        draw = ImageDraw.Draw(image)
        # The middle of the strip is the front view.
        x0 = 6 * strip_size
        draw.rectangle([x0, front_size + 8, x0 + strip_size - 1, height - 1], outline=(255, 220, 60), width=2)
        x, y = front_size + 8, 6
        room = room_of.get(house.room_at(*graph.positions[graph.index[vp], :2]), "outside")
        draw.text(
            (x, y),
            f"step {t}/{len(path) - 1}  {room}  heading {math.degrees(headings[t]) % 360:.0f} deg",
            fill=(255, 220, 60),
            font=font,
        )
        for k, line in enumerate(lines[: (front_size - 24) // 12]):
            draw.text((x, y + 18 + 12 * k), line, fill=(235, 235, 235), font=font)
        frames.append(np.asarray(image, dtype=np.uint8))
    return np.stack(frames)


def episode_text(graph: NavGraph, episode: Episode, instruction_index: int, trajectory: Trajectory) -> str:
    """The instruction with its id and how the trajectory ended (distance to goal, success)."""
    if not 0 <= instruction_index < len(episode.instructions):
        raise IndexError(
            f"episode {episode.path_id} has {len(episode.instructions)} instructions, "
            f"asked for #{instruction_index}"
        )
    path = trajectory_viewpoints(graph, trajectory)
    error = graph.distance(path[-1], episode.path[-1])
    outcome = "success" if error < SUCCESS_RADIUS else "failure"
    return (
        f"{episode.instr_id(instruction_index)} ({episode.scan}): "
        f"{episode.instructions[instruction_index]}\n\n"
        f"steps {len(path) - 1}, distance to goal {error:.2f} m, {outcome}"
    )


def log_episode(
    logger: Any,
    tag: str,
    step: int,
    house: House,
    graph: NavGraph,
    episode: Episode,
    trajectory: Trajectory | None = None,
    instruction_index: int = 0,
    device: str | torch.device = "cpu",
    fps: float = 2.0,
    map_size: int = 512,
) -> dict[str, Any]:
    """Log the map (``<tag>/map``), the first-person GIF (``<tag>/frames``) and the instruction
    (``<tag>/instruction``) of one episode to a :class:`lodestar.runtime.logger.RunLogger`.

    ``trajectory`` defaults to the reference path. Returns what was logged (map, frames, text).
    """
    trajectory = list(episode.path) if trajectory is None else trajectory
    text = episode_text(graph, episode, instruction_index, trajectory)
    image = top_down_map(house, graph, episode.path, trajectory, size=map_size)
    frames = episode_frames(
        house, graph, trajectory, episode.heading, episode.instructions[instruction_index], device
    )
    logger.image(f"{tag}/map", image, step)
    logger.video(f"{tag}/frames", frames, step, fps=fps)
    logger.text(f"{tag}/instruction", text, step)
    return {"map": image, "frames": frames, "text": text}
