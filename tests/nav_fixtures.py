"""Tiny hand-made navigation datasets for the data, metrics and simulator tests.

They do not depend on the procedural world generator: graphs are jittered grids with proximity edges
(the same generator the ``nav-sim`` benchmark uses at R2R size), features are random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.nav_synthetic import write_synthetic_dataset
from lodestar.envs.nav.data.graph import NavGraph

FEATURE_DIM = 8


def make_dataset(root: Path, **overrides) -> Path:
    """A small dataset: 3 train scans + 1 unseen scan, ~16 viewpoints each, random [36, 8] features.

    Each connectivity file also holds one excluded viewpoint (``included: false``).
    """
    options = dict(
        num_scans=4,
        viewpoints_per_scan=16,
        feature_dim=FEATURE_DIM,
        paths_per_scan=4,
        unseen_scans=1,
        seed=7,
        min_count=1,
        exclude_one=True,
        path_edges=(2, 6),
    )
    options.update(overrides)
    return write_synthetic_dataset(root, **options)


def line_graph(xs: list[float], scan: str = "line") -> NavGraph:
    """Viewpoints ``v0, v1, ...`` at ``(x, 0, 1.5)`` joined in a chain."""
    positions = np.array([[x, 0.0, 1.5] for x in xs])
    return NavGraph(
        scan, [f"v{i}" for i in range(len(xs))], positions, [(i, i + 1) for i in range(len(xs) - 1)]
    )


def triangle_graph(scan: str = "tri") -> NavGraph:
    """A (0,0), B (4,0), C (4,3), all joined: the direct A-C edge is 5 m, A-B-C is 7 m."""
    positions = np.array([[0.0, 0.0, 1.5], [4.0, 0.0, 1.5], [4.0, 3.0, 1.5]])
    return NavGraph(scan, ["A", "B", "C"], positions, [(0, 1), (1, 2), (0, 2)])
