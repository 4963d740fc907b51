"""A small generated world and cheap feature settings for the perception tests."""

from __future__ import annotations

from pathlib import Path

from lodestar.envs.nav.perception.features import FeatureConfig
from lodestar.envs.nav.perception.view_encoder import EncoderConfig
from lodestar.envs.nav.world.build import build_world, make_config


def small_world(root: Path) -> Path:
    """Two train houses, one val_unseen and one test house with R2R files, graphs and floor plans."""
    config = make_config(
        "tiny", ["train_houses=2", "val_unseen_houses=1", "test_houses=1", "house.max_rooms=6", "seed=4"]
    )
    build_world(config, root, show_progress=False)
    return root


def cheap_features(kind: str = "cnn") -> FeatureConfig:
    """16 px views and a tiny encoder trained for one epoch: seconds, not minutes."""
    encoder = EncoderConfig(
        feature_dim=32, channels=(8, 16, 16), train_views=600, val_views=200, epochs=1, batch_size=64
    )
    return FeatureConfig(kind=kind, image_size=16, batch_viewpoints=16, encoder=encoder)
