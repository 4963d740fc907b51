"""Cheap random view features and a tiny follower configuration, for the follower tests.

The world itself is the session fixture ``random_feature_world`` (``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import feature_key, write_features_hdf5

FEATURE_NAME = "random"
FEATURE_DIM = 16
ANGLE_DIM = 8

# A follower small enough to train in seconds on one core.
TINY_MODEL = [
    "model.hidden_dim=32",
    "model.num_heads=2",
    "model.ffn_dim=64",
    "model.text_layers=1",
    "model.cross_layers=1",
    "model.dropout=0.0",
    "model.feature_dropout=0.0",
]


def add_follower_features(root: Path, seed: int = 0) -> Path:
    """Write ``features/random.hdf5`` ([36, 16] float16 per viewpoint) into the dataset at ``root``."""
    dataset = NavDataset(root)
    rng = np.random.default_rng(seed)
    features = {
        feature_key(scan, vp): rng.standard_normal((36, FEATURE_DIM)).astype(np.float32)
        for scan in dataset.scans
        for vp in dataset.graph(scan).viewpoints
    }
    write_features_hdf5(root / "features" / f"{FEATURE_NAME}.hdf5", features)
    return root


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a busy machine run fastest on one thread (no cross-thread synchronization)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
