"""Random view features and tiny speakers, for the speaker/synthesis tests.

The world itself is the session fixture ``random_feature_world`` (``tests/conftest.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import torch

from lodestar.agents.vln.speaker import Speaker, SpeakerBundle, SpeakerConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import feature_key, write_features_hdf5

FEATURES = "rand"
FEATURE_DIM = 8
ANGLE_SIZE = 4
TINY = SpeakerConfig(embed_dim=16, hidden_dim=32, dropout=0.0, feature_dropout=0.0)


def random_view(scan: str, viewpoint: str) -> np.ndarray:
    """A deterministic random ``[36, D]`` feature per viewpoint (seeded by its key)."""
    seed = int.from_bytes(feature_key(scan, viewpoint).encode()[-8:], "little")
    return np.random.default_rng(seed).standard_normal((36, FEATURE_DIM))


def add_random_features(root: Path, name: str = FEATURES) -> None:
    """Write (or extend) ``features/<name>.hdf5`` with random features for every scan lacking them."""
    dataset = NavDataset(root)
    path = root / "features" / f"{name}.hdf5"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        write_features_hdf5(path, {})
    with h5py.File(path, "a") as f:
        for scan in dataset.scans:
            for vp in dataset.graph(scan).viewpoints:
                key = feature_key(scan, vp)
                if key not in f:
                    f.create_dataset(key, data=random_view(scan, vp).astype(np.float16))


def copy_world(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def tiny_bundle(root: Path, seed: int = 0, config: SpeakerConfig = TINY) -> SpeakerBundle:
    """An untrained tiny speaker for the world at ``root``."""
    torch.manual_seed(seed)
    vocab = NavDataset(root).vocab()
    model = Speaker(vocab, FEATURE_DIM, ANGLE_SIZE, config)
    return SpeakerBundle(model, vocab, FEATURES, ANGLE_SIZE, 80, {"iteration": 0})
