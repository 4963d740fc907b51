"""Build a navigation world dataset directory: houses, graphs, R2R episodes and instructions.

The output is laid out like the real R2R data (see ``envs/nav/data/``)::

    connectivity/<scan>_connectivity.json, connectivity/scans.txt
    R2R_train.json, R2R_val_seen.json, R2R_val_unseen.json, R2R_test.json
    vocab.txt                          (words of the train instructions)
    houses/<scan>.json                 (generator-only extras: floor plan, objects, viewpoint rooms)
    summary.json                       (counts, sizes, instruction statistics, config, build time)

Everything is a function of the config and its seed: house ``i`` draws from its own child of
``SeedSequence(seed)``, so the output does not depend on the number of worker processes. Rendering
and view features are later steps that add ``features/`` to the same directory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lodestar.envs.nav.data.connectivity import write_connectivity, write_scans
from lodestar.envs.nav.data.r2r import Episode, write_r2r
from lodestar.envs.nav.world.episodes import SPLITS, PathConfig, make_episode, sample_paths, split_of_house
from lodestar.envs.nav.world.floorplan import HouseConfig
from lodestar.envs.nav.world.house_generator import generate_house
from lodestar.envs.nav.world.houses import House
from lodestar.envs.nav.world.instructions import generate_instructions
from lodestar.envs.nav.world.viewpoints import GraphConfig, Viewpoint, ViewpointGraph, build_viewpoint_graph
from lodestar.runtime.config import ConfigError, apply_overrides, from_dict, to_dict
from lodestar.runtime.progress import progress

# Bumped whenever generation changes, so an existing directory is not mistaken for a fresh build.
GENERATOR_VERSION = 1


@dataclass
class BuildConfig:
    """What to build. Path counts are per house; val_seen paths come from the train houses."""

    preset: str = "custom"
    seed: int = 0
    train_houses: int = 3
    val_unseen_houses: int = 1
    test_houses: int = 1
    train_paths: int = 10
    val_seen_paths: int = 3
    val_unseen_paths: int = 8
    test_paths: int = 8
    instructions_per_path: int = 3
    vocab_min_count: int = 5
    workers: int = 0  # 0: one per CPU core (at most 8); 1: build in this process
    house: HouseConfig = field(default_factory=HouseConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    paths: PathConfig = field(default_factory=PathConfig)

    def __post_init__(self) -> None:
        counts = (
            "val_unseen_houses",
            "test_houses",
            "train_paths",
            "val_seen_paths",
            "val_unseen_paths",
            "test_paths",
        )
        for name in counts:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.train_houses < 1:
            raise ValueError("train_houses must be >= 1")
        if self.instructions_per_path < 1:
            raise ValueError(f"instructions_per_path must be >= 1, got {self.instructions_per_path}")

    @property
    def num_houses(self) -> int:
        return self.train_houses + self.val_unseen_houses + self.test_houses


PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: five small houses, a few dozen paths, built in a couple of seconds in-process.
    "tiny": {
        "train_houses": 3,
        "val_unseen_houses": 1,
        "test_houses": 1,
        "train_paths": 12,
        "val_seen_paths": 4,
        "val_unseen_paths": 10,
        "test_paths": 10,
        "workers": 1,
        "house": {"min_rooms": 5, "max_rooms": 8},
    },
    # Demos and smoke runs of the whole pipeline.
    "small": {
        "train_houses": 16,
        "val_unseen_houses": 4,
        "test_houses": 4,
        "train_paths": 50,
        "val_seen_paths": 5,
        "val_unseen_paths": 50,
        "test_paths": 50,
    },
    # Close to R2R (61/11/18 houses; 4,675/340/783/1,391 paths) and under 10 minutes on 2 cores.
    "benchmark": {
        "train_houses": 60,
        "val_unseen_houses": 10,
        "test_houses": 15,
        "train_paths": 78,
        "val_seen_paths": 6,
        "val_unseen_paths": 78,
        "test_paths": 92,
    },
}


def make_config(preset: str = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> BuildConfig:
    """The named preset with ``key=value`` overrides (dotted keys reach nested sections)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown navigation world preset {preset!r}; choose from {sorted(PRESETS)}")
    data: dict[str, Any] = json.loads(json.dumps({**PRESETS[preset], "preset": preset}))
    return from_dict(BuildConfig, apply_overrides(data, overrides))


# ------------------------------------------------------------------------------------ per house


@dataclass
class HouseResult:
    """What one house contributes: its geometry, graph and episodes per split (ids unassigned)."""

    index: int
    house: House
    graph: ViewpointGraph
    episodes: dict[str, list[Episode]]


def build_house(index: int, config: BuildConfig) -> HouseResult:
    """Generate house ``index`` of the world: floor plan, viewpoint graph, paths, instructions."""
    house_seq = np.random.SeedSequence(config.seed).spawn(config.num_houses)[index]
    plan_rng, graph_rng, path_rng, text_rng = (np.random.default_rng(s) for s in house_seq.spawn(4))
    house = generate_house(plan_rng, config.house)
    graph = build_viewpoint_graph(house, graph_rng, config.graph)
    nav = graph.nav_graph()
    split = split_of_house(index, config.train_houses, config.val_unseen_houses, config.test_houses)
    if split == "train":
        # val_seen first: the few held-out paths of a small house are kept, train takes the rest.
        names, counts = ["val_seen", "train"], [config.val_seen_paths, config.train_paths]
    else:
        names, counts = [split], [config.val_unseen_paths if split == "val_unseen" else config.test_paths]
    groups = sample_paths(nav, path_rng, counts, config.paths)
    episodes: dict[str, list[Episode]] = {}
    for name, pairs in zip(names, groups, strict=True):
        episodes[name] = []
        for start, goal in pairs:
            heading = float(path_rng.uniform(0.0, 2.0 * np.pi))
            episode = make_episode(nav, start, goal, heading)
            route = [nav.index[vp] for vp in episode.path]
            episode.instructions = generate_instructions(
                house, graph.viewpoints, route, episode.heading, text_rng, config.instructions_per_path
            )
            episodes[name].append(episode)
    return HouseResult(index, house, graph, episodes)


def _build_house_job(args: tuple[int, BuildConfig]) -> HouseResult:
    return build_house(*args)


# ------------------------------------------------------------------------------------ the world


def build_world(
    config: BuildConfig, out: str | Path, overwrite: bool = False, show_progress: bool = True
) -> dict[str, Any]:
    """Build the dataset into ``out`` and return its summary.

    An existing directory built from the same config (and generator version) is kept as is, since
    later steps may have added features to it; its summary is returned with ``"reused": True``. A directory holding anything else is an error
    unless ``overwrite`` is set; the new dataset is written next to it first and swapped in only
    when complete, so a failed build never destroys the old one.
    """
    out = Path(out)
    wanted = _config_record(config)
    if out.exists() and any(out.iterdir()):
        existing = _read_summary(out)
        if existing is not None and existing.get("config") == wanted and not overwrite:
            return {**existing, "reused": True}
        if not overwrite:
            what = (
                f"a different dataset (preset {existing.get('config', {}).get('preset')!r}, "
                f"seed {existing.get('config', {}).get('seed')!r})"
                if existing is not None
                else "files that are not a navigation world build"
            )
            raise FileExistsError(f"{out} already holds {what}; pass overwrite (--overwrite) to replace it")
    started = time.perf_counter()
    results = _build_houses(config, show_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        summary = _write(staging, config, results)
        summary["build_seconds"] = round(time.perf_counter() - started, 2)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return summary


def _build_houses(config: BuildConfig, show_progress: bool) -> list[HouseResult]:
    jobs = [(i, config) for i in range(config.num_houses)]
    workers = config.workers or min(8, os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    bar = progress(total=len(jobs), desc="houses", unit="house") if show_progress else None
    results: list[HouseResult] = []
    with multiprocessing.get_context().Pool(workers) if workers > 1 else _InProcess() as pool:
        for result in pool.imap(_build_house_job, jobs, chunksize=1):
            results.append(result)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return results


class _InProcess:
    """The slice of ``multiprocessing.Pool`` that ``_build_houses`` uses, run in this process."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def imap(fn: Any, jobs: list, chunksize: int = 1) -> Any:
        return map(fn, jobs)


def _write(root: Path, config: BuildConfig, results: list[HouseResult]) -> dict[str, Any]:
    """Write every file of the dataset into ``root`` and return the summary (without build time)."""
    scans = [r.house.scan for r in results]
    if len(set(scans)) != len(scans):
        dup = [s for s, n in Counter(scans).items() if n > 1]
        raise RuntimeError(f"generated scan ids collide: {dup}; try another seed")
    conn = root / "connectivity"
    (root / "houses").mkdir(parents=True)
    for r in results:
        nav = r.graph.nav_graph()
        heights = [r.graph.camera_height] * nav.num_viewpoints
        write_connectivity(
            conn / f"{r.house.scan}_connectivity.json", nav, heights, r.graph.visible | nav.adjacency
        )
        extras = {**r.house.to_dict(), "viewpoints": [asdict(v) for v in r.graph.viewpoints]}
        house_path(root, r.house.scan).write_text(json.dumps(extras, separators=(",", ":")), encoding="utf-8")
    write_scans(conn, scans)
    by_split: dict[str, list[Episode]] = {name: [] for name in SPLITS}
    for r in results:
        for name, episodes in r.episodes.items():
            by_split[name].extend(episodes)
    path_id = 1
    for name in SPLITS:
        for episode in by_split[name]:
            episode.path_id = path_id
            path_id += 1
        write_r2r(root / f"R2R_{name}.json", by_split[name])
    from lodestar.envs.nav.data.tokenizer import VOCAB_FILE, Vocab

    train_texts = [text for ep in by_split["train"] for text in ep.instructions]
    vocab = Vocab.build(train_texts, min_count=config.vocab_min_count)
    vocab.save(root / VOCAB_FILE)
    return summarize(config, results, by_split, len(vocab))


def summarize(
    config: BuildConfig, results: list[HouseResult], by_split: dict[str, list[Episode]], vocab_file_size: int
) -> dict[str, Any]:
    """Counts and statistics of a built world (everything but the build time is deterministic)."""
    from lodestar.envs.nav.data.tokenizer import tokenize

    graphs = [r.graph for r in results]
    degrees = np.concatenate([g.adjacency.sum(axis=1) for g in graphs])
    edge_lengths = np.concatenate(
        [
            np.linalg.norm(
                g.positions[[i for i, _ in g.edges]] - g.positions[[j for _, j in g.edges]], axis=1
            )
            for g in graphs
        ]
    )
    episodes = [ep for name in SPLITS for ep in by_split[name]]
    texts = [text for ep in episodes for text in ep.instructions]
    words = [[t for t in tokenize(text) if t[0].isalnum()] for text in texts]
    lengths = np.array([len(w) for w in words], dtype=np.float64)
    path_m = np.array([ep.distance for ep in episodes], dtype=np.float64)
    path_edges = np.array([len(ep.path) - 1 for ep in episodes], dtype=np.float64)
    house_split = {
        r.house.scan: split_of_house(
            r.index, config.train_houses, config.val_unseen_houses, config.test_houses
        )
        for r in results
    }

    def stats(values: np.ndarray) -> dict[str, float]:
        if len(values) == 0:
            return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
        return {
            k: round(float(f(values)), 3)
            for k, f in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max))
        }

    return {
        "config": _config_record(config),
        "houses": len(results),
        "scans": {
            name: [s for s, sp in house_split.items() if sp == name]
            for name in ("train", "val_unseen", "test")
        },
        "rooms": sum(len(r.house.rooms) for r in results),
        "room_types": dict(sorted(Counter(room.type for r in results for room in r.house.rooms).items())),
        "objects": sum(len(r.house.objects) for r in results),
        "object_categories": dict(
            sorted(Counter(o.category for r in results for o in r.house.objects).items())
        ),
        "viewpoints": int(sum(len(g.viewpoints) for g in graphs)),
        "viewpoints_per_house": stats(np.array([len(g.viewpoints) for g in graphs], dtype=np.float64)),
        "edges": int(sum(len(g.edges) for g in graphs)),
        "degree": stats(degrees.astype(np.float64)),
        "edge_length_m": stats(edge_lengths),
        "episodes": {name: len(by_split[name]) for name in SPLITS},
        "instructions": {name: sum(len(ep.instructions) for ep in by_split[name]) for name in SPLITS},
        "path_length_m": stats(path_m),
        "path_edges": stats(path_edges),
        "instruction_words": stats(lengths),
        "vocab_words": len({w for ws in words for w in ws}),
        "vocab_file_size": vocab_file_size,
    }


def house_path(root: str | Path, scan: str) -> Path:
    """Where a build keeps the generator-only description of one scan."""
    return Path(root) / "houses" / f"{scan}.json"


def load_house(root: str | Path, scan: str) -> tuple[House, list[Viewpoint]]:
    """The floor plan and the viewpoints (with their rooms and doorways) of one built scan."""
    path = house_path(root, scan)
    house = House.load(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if "viewpoints" not in data:
        raise KeyError(f"{path}: missing field 'viewpoints'")
    try:
        viewpoints = [Viewpoint(**v) for v in data["viewpoints"]]
    except TypeError as exc:
        raise ValueError(f"{path}: malformed viewpoint record ({exc})") from None
    return house, viewpoints


def _config_record(config: BuildConfig) -> dict[str, Any]:
    """The config as JSON stores it, with the generator version; ``workers`` does not change output."""
    record = {**to_dict(config), "generator_version": GENERATOR_VERSION}
    record.pop("workers")
    return json.loads(json.dumps(record))


def _read_summary(out: Path) -> dict[str, Any] | None:
    path = out / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
