"""Fresh houses for synthesis: more environments is what scaled ScaleVLN.

New houses come from the world generator with the settings the dataset was built with
(``summary.json``) and a seed of their own, so they are new floor plans, not copies. Their
``houses/<scan>.json`` and ``connectivity/<scan>_connectivity.json`` are written like the world
build writes them and their scan ids are appended to ``connectivity/scans.txt``; they appear in no
human split. Generation is deterministic: running it again with the same seed finds the same houses
already present and adds nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from lodestar.envs.nav.data.connectivity import connectivity_path, list_scans, write_connectivity, write_scans
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.world.build import GENERATOR_VERSION, BuildConfig, HouseResult, build_house, house_path
from lodestar.runtime.config import ConfigError, from_dict
from lodestar.runtime.progress import progress


def world_config(root: str | Path) -> BuildConfig:
    """The generator settings of a built world, from its ``summary.json``."""
    path = Path(root) / "summary.json"
    if not path.is_file():
        raise NavDataError(
            f"{path} not found: new houses can only be added to a world built by scripts/build_nav_world.py"
        )
    try:
        record = dict(json.loads(path.read_text(encoding="utf-8"))["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise NavDataError(f"{path}: no readable 'config' record ({exc})") from None
    version = record.pop("generator_version", None)
    if version != GENERATOR_VERSION:
        raise NavDataError(
            f"{path}: world built by generator version {version}, this code is version {GENERATOR_VERSION}"
        )
    try:
        return from_dict(BuildConfig, record)
    except ConfigError as exc:
        raise NavDataError(f"{path}: {exc}") from None


def new_house_config(base: BuildConfig, count: int, seed: int) -> BuildConfig:
    """``count`` train-like houses without episodes, seeded apart from the world's own houses."""
    derived = int(np.random.SeedSequence([base.seed, 0x5EED5, seed]).generate_state(1)[0])
    return replace(
        base,
        seed=derived,
        train_houses=count,
        val_unseen_houses=0,
        test_houses=0,
        train_paths=0,
        val_seen_paths=0,
        workers=1,
    )


def house_record(result: HouseResult) -> str:
    """The ``houses/<scan>.json`` text of a generated house (floor plan, objects, viewpoints)."""
    extras = {**result.house.to_dict(), "viewpoints": [asdict(v) for v in result.graph.viewpoints]}
    return json.dumps(extras, separators=(",", ":"))


def write_house(root: Path, result: HouseResult) -> None:
    """The generator-only description and the connectivity file of one house."""
    nav = result.graph.nav_graph()
    heights = [result.graph.camera_height] * nav.num_viewpoints
    write_connectivity(
        connectivity_path(root / "connectivity", result.house.scan),
        nav,
        heights,
        result.graph.visible | nav.adjacency,
    )
    path = house_path(root, result.house.scan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(house_record(result), encoding="utf-8")


def add_houses(root: str | Path, count: int, seed: int = 0, show_progress: bool = True) -> list[str]:
    """Generate ``count`` houses into the dataset at ``root``; returns their scan ids (in order)."""
    root = Path(root)
    if count < 0:
        raise ValueError(f"new house count must be >= 0, got {count}")
    if count == 0:
        return []
    config = new_house_config(world_config(root), count, seed)
    existing = list_scans(root / "connectivity")
    known = set(existing)
    scans: list[str] = []
    bar = progress(total=count, desc="new houses", unit="house") if show_progress else None
    for index in range(count):
        result = build_house(index, config)
        scan = result.house.scan
        if scan in scans:
            raise RuntimeError(f"generated scan id {scan!r} twice; try another house seed")
        if scan in known:
            # The same seed regenerates the same house: present from an earlier run, keep it.
            path = house_path(root, scan)
            if not path.is_file() or path.read_text(encoding="utf-8") != house_record(result):
                raise NavDataError(
                    f"{root}: generated scan id {scan!r} collides with a different existing scan; "
                    "pick another house seed"
                )
        else:
            write_house(root, result)
        scans.append(scan)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    write_scans(root / "connectivity", existing + [s for s in scans if s not in known])
    return scans


def build_world_features(root: Path, name: str) -> None:
    """Render and encode features for every scan lacking them (the perception feature builder)."""
    from lodestar.envs.nav.perception.features import build_features

    build_features(root, name)
