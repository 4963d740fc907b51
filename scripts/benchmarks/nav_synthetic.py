"""A synthetic R2R-shaped dataset for the simulator benchmark and tests: jittered grid graphs with
proximity edges (no house geometry), word-salad instructions and random features."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np

from lodestar.envs.nav.data.connectivity import write_connectivity, write_scans
from lodestar.envs.nav.data.features import NUM_VIEWS, feature_key, write_features_hdf5
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode, write_r2r
from lodestar.envs.nav.data.tokenizer import build_vocab

# fmt: off
WORDS = (
    "walk", "go", "turn", "left", "right", "straight", "past", "the", "table", "sofa", "bed", "kitchen",
    "hallway", "door", "stairs", "stop", "wait", "near", "into", "out", "of", "through", "bathroom",
    "bedroom", "chair", "lamp", "and", "then", "exit", "enter", "slightly", "around", "until", "you",
    "reach", "pass", "a", "living", "room", "dining", "office", "plant", "painting", "on", "your", "at",
    "end",
)
# fmt: on


def random_graph(rng: np.random.Generator, scan: str, num_viewpoints: int) -> NavGraph:
    """A connected graph on a jittered 2 m grid (on a gentle ramp, so some edges tilt), ids like Matterport."""
    cols = max(2, math.ceil(math.sqrt(num_viewpoints)))
    cells = np.array([(i % cols, i // cols) for i in range(num_viewpoints)], dtype=np.float64)
    xy = cells * 2.0 + rng.uniform(-0.4, 0.4, size=cells.shape)
    z = 1.5 + rng.uniform(0.0, 0.7) * cells[:, 0] + rng.uniform(-0.05, 0.05, num_viewpoints)
    positions = np.column_stack([xy, z])
    gap = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    close = [(i, j) for i in range(num_viewpoints) for j in range(i + 1, num_viewpoints) if gap[i, j] < 3.2]
    keep = {e for e in close if rng.random() < 0.6}
    # A random spanning tree over the close pairs keeps the graph connected.
    adjacency: dict[int, list[int]] = {i: [] for i in range(num_viewpoints)}
    for i, j in close:
        adjacency[i].append(j)
        adjacency[j].append(i)
    seen, frontier = {0}, [0]
    while frontier:
        i = frontier.pop(int(rng.integers(len(frontier))))
        for j in rng.permutation(adjacency[i]).tolist():
            if j not in seen:
                seen.add(j)
                frontier.append(j)
                keep.add((min(i, j), max(i, j)))
    viewpoints = ["".join(rng.choice(list("0123456789abcdef"), 32)) for _ in range(num_viewpoints)]
    graph = NavGraph(scan, viewpoints, positions, sorted(keep))
    if not graph.is_connected():
        raise RuntimeError(f"synthetic scan {scan} is not connected (grid too sparse)")
    return graph


def sample_episodes(
    rng: np.random.Generator,
    graph: NavGraph,
    count: int,
    first_id: int,
    min_edges: int = 4,
    max_edges: int = 6,
) -> list[Episode]:
    """Shortest paths of ``min_edges``-``max_edges`` edges with three random word-salad instructions."""
    episodes: list[Episode] = []
    for _ in range(count * 200):
        if len(episodes) == count:
            break
        a, b = rng.integers(graph.num_viewpoints, size=2).tolist()
        path = graph.shortest_path(a, b)
        if not min_edges <= len(path) - 1 <= max_edges:
            continue
        instructions = [" ".join(rng.choice(WORDS, int(rng.integers(8, 30)))) + "." for _ in range(3)]
        episodes.append(
            Episode(
                path_id=first_id + len(episodes),
                scan=graph.scan,
                heading=float(rng.uniform(0, 2 * math.pi)),
                path=path,
                instructions=instructions,
                distance=graph.distance(a, b),
            )
        )
    return episodes


def write_synthetic_dataset(
    root: str | Path,
    num_scans: int = 60,
    viewpoints_per_scan: int = 100,
    feature_dim: int = 512,
    paths_per_scan: int = 20,
    unseen_scans: int = 0,
    seed: int = 0,
    feature_name: str | None = "random",
    min_count: int = 1,
    exclude_one: bool = False,
    path_edges: tuple[int, int] = (4, 6),
) -> Path:
    """Write a synthetic dataset directory (connectivity, R2R splits, features, vocab).

    Train scans give ``train`` and ``val_seen`` paths; the last ``unseen_scans`` scans give
    ``val_unseen``. With ``exclude_one`` each connectivity file gets one extra viewpoint with
    ``included: false`` (linked to viewpoint 0), which loaders must drop.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    conn = root / "connectivity"
    scans = ["".join(rng.choice(list(string.ascii_letters + string.digits), 11)) for _ in range(num_scans)]
    splits: dict[str, list[Episode]] = {"train": [], "val_seen": [], "val_unseen": []}
    features: dict[str, np.ndarray] = {}
    next_id = 0
    for s, scan in enumerate(scans):
        size = int(rng.integers(max(6, viewpoints_per_scan * 3 // 4), viewpoints_per_scan * 5 // 4 + 1))
        graph = random_graph(rng, scan, size)
        write_connectivity(conn / f"{scan}_connectivity.json", graph)
        if exclude_one:
            _append_excluded(conn / f"{scan}_connectivity.json", rng)
        unseen = s >= num_scans - unseen_scans
        for split, share in (("val_unseen", 1.0),) if unseen else (("train", 0.75), ("val_seen", 0.25)):
            count = max(1, round(paths_per_scan * share))
            episodes = sample_episodes(rng, graph, count, next_id, *path_edges)
            next_id += len(episodes)
            splits[split].extend(episodes)
        if feature_name is not None:
            for vp in graph.viewpoints:
                features[feature_key(scan, vp)] = rng.standard_normal(
                    (NUM_VIEWS, feature_dim), dtype=np.float32
                )
    write_scans(conn, scans)
    for split, episodes in splits.items():
        if episodes:
            write_r2r(root / f"R2R_{split}.json", episodes)
    if feature_name is not None:
        write_features_hdf5(root / "features" / f"{feature_name}.hdf5", features)
    build_vocab(root, "train", min_count=min_count)
    return root


def _append_excluded(path: Path, rng: np.random.Generator) -> None:
    data = json.loads(path.read_text())
    n = len(data) + 1
    for k, item in enumerate(data):
        item["unobstructed"].append(k == 0)
        item["visible"].append(k == 0)
    pose = list(data[0]["pose"])
    pose[3] += 0.5
    extra = {
        "image_id": "".join(rng.choice(list("0123456789abcdef"), 32)),
        "pose": pose,
        "included": False,
        "visible": [k == 0 for k in range(n)],
        "unobstructed": [k == 0 for k in range(n)],
        "height": 1.5,
    }
    data.append(extra)
    path.write_text(json.dumps(data))
