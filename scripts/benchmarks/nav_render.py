"""``nav-render``: ray-casting throughput, feature-build time and view-encoder quality.

Figures, each with a reference measured in the same run:

- rendered views per second when many views of many viewpoints are cast in one batched call, against
  the same renderer called once per view;
- wall time of the whole feature build (render every viewpoint, train the encoder, encode, write the
  HDF5 store) for the world preset, against the 15-minute budget; its reference is the time the
  rendering alone would take one view at a time, extrapolated from the measured rate;
- view-encoder room-type accuracy and object mAP on views of val_unseen houses, against the
  majority-class and prior-frequency baselines.

Options: ``data=<dir>`` (a built world; default ``data/nav/benchmark`` when it exists, else the preset
is built into a temporary directory), ``preset=benchmark`` (``tiny`` with ``--quick``),
``device=auto``, ``image_size=64`` (32 with ``--quick``), ``viewpoints=8`` (viewpoints in the
throughput test), ``threads=<n>`` (torch CPU threads; default torch's choice, 1 with ``--quick``; on a
machine shared with other jobs one thread avoids threads waiting on each other). Features are always
built in a temporary copy, so existing stores are not touched.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.perception.features import FeatureConfig, build_features
from lodestar.envs.nav.perception.render import VIEW_ELEVATIONS, VIEW_HEADINGS, CameraConfig, Renderer
from lodestar.envs.nav.perception.view_encoder import EncoderConfig
from lodestar.envs.nav.world.build import build_world, load_house, make_config
from lodestar.runtime.bench import Figure, report, timed_rate
from lodestar.runtime.device import resolve_device

DEFAULT_DATA = Path("data/nav/benchmark")
BUILD_BUDGET_SECONDS = 900.0
BATCH_SPEEDUP_TARGET = 3.0
QUALITY_RATIO_TARGET = 1.5  # room accuracy and object mAP, relative to the trivial baselines


def _world(options: dict[str, str], preset: str, tmp: Path) -> Path:
    """A copy of the world without its features (built from the preset when no data is given)."""
    source = Path(options["data"]) if "data" in options else (DEFAULT_DATA if preset == "benchmark" else None)
    target = tmp / "world"
    if source is None or not source.is_dir():
        build_world(make_config(preset), target, show_progress=False)
        return target
    target.mkdir()
    for item in source.iterdir():
        if item.name == "features":
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / item.name)
    return target


def _throughput(world: Path, count: int, image_size: int, device: torch.device) -> tuple[float, float, int]:
    """Views/s batched and one view at a time over the first ``count`` viewpoints of the first scan."""
    dataset = NavDataset(world)
    scan = dataset.scans[0]
    positions = dataset.graph(scan).positions[:count]
    renderer = Renderer(CameraConfig(image_size=image_size), device)
    scene = renderer.scene(load_house(world, scan)[0])
    renderer.render_panoramas(scene, positions[:1])  # warm-up

    def batched() -> None:
        renderer.render_panoramas(scene, positions)

    def one_at_a_time() -> None:
        for p in range(len(positions)):
            for v in range(len(VIEW_HEADINGS)):
                renderer.render(
                    scene,
                    positions[p : p + 1],
                    VIEW_HEADINGS[None, v : v + 1],
                    VIEW_ELEVATIONS[None, v : v + 1],
                )

    views = len(positions) * len(VIEW_HEADINGS)
    return timed_rate(batched, views, device), timed_rate(one_at_a_time, views, device), views


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    options = dict(options)
    # The smoke run takes one thread by default: on a busy machine two threads that keep waiting
    # for each other can make it several times slower, and its timings are not the point.
    threads = options.get("threads", "1" if quick else None)
    if threads is not None:
        torch.set_num_threads(int(threads))
    preset = options.get("preset", "tiny" if quick else "benchmark")
    device = resolve_device(options.get("device", "auto"))
    image_size = int(options.get("image_size", 32 if quick else 64))
    count = int(options.get("viewpoints", 2 if quick else 8))
    encoder = EncoderConfig(train_views=1500, val_views=600, epochs=8) if quick else EncoderConfig()
    config = FeatureConfig(kind="cnn", image_size=image_size, encoder=encoder)
    with tempfile.TemporaryDirectory(prefix="nav-render-") as tmp:
        world = _world(options, preset, Path(tmp))
        batched, single, views = _throughput(world, count, image_size, device)
        started = time.perf_counter()
        summary = build_features(world, "cnn", config, device, show_progress=not quick)
        build_seconds = time.perf_counter() - started
    quality = summary["encoder_report"].get("val_unseen", {})
    label = f"{preset}, {image_size}px"

    def fig(metric: str, value: float, unit: str, **kw: Any) -> Figure:
        return Figure("nav-render", f"{metric} ({label})", float(value), unit, device=str(device), **kw)

    figures = [
        fig(
            "batched render",
            batched,
            "views/s",
            reference=f"same renderer, one view per call ({views} views)",
            reference_value=single,
            target=BATCH_SPEEDUP_TARGET,
        ),
        fig(
            "feature build",
            build_seconds,
            "s",
            reference="rendering alone, one view per call (extrapolated)",
            reference_value=summary["views"] / single,
            target=BUILD_BUDGET_SECONDS,
            target_on="value",
            higher_is_better=False,
        ),
        fig("views rendered", summary["views"], "views"),
        fig("render time in build", summary["render_seconds"], "s"),
        fig("encode time in build", summary["encode_seconds"], "s"),
        fig("encoder training", summary["encoder_report"].get("train_seconds", math.nan), "s"),
    ]
    if quality:
        figures += [
            fig(
                "room-type accuracy (val_unseen views)",
                quality["room_accuracy"],
                "fraction",
                reference="majority class",
                reference_value=quality["room_majority_accuracy"],
                target=QUALITY_RATIO_TARGET,
            ),
            fig(
                "object mAP (val_unseen views)",
                quality["object_map"],
                "mAP",
                reference="prior frequency",
                reference_value=quality["object_prior_map"],
                target=QUALITY_RATIO_TARGET,
            ),
        ]
    report(figures, "nav-render: ray casting, feature build and view-encoder quality")
    return figures
