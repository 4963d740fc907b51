"""Set-up shared by the ``speaker-quality`` and ``synthesis-scale`` benchmarks: data and a speaker.

Full runs use a built world with real view features (default ``data/nav/benchmark`` with ``cnn``
features, built on the spot when missing); ``--quick`` builds the ``tiny`` preset into a temporary
directory with random features, which exercises every code path in seconds but says nothing about
quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lodestar.agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import write_features_hdf5
from lodestar.envs.nav.world.build import build_world, make_config
from lodestar.runtime.config import load_config

DEFAULT_DATA = Path("data/nav/benchmark")
SPEAKER_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "vln_speaker.yaml"
QUICK_FEATURES, QUICK_FEATURE_DIM = "random", 64


def write_random_features(root: Path, name: str, dim: int, seed: int = 0) -> None:
    dataset = NavDataset(root)
    rng = np.random.default_rng(seed)
    keys = NavDataset.viewpoint_keys(dataset.graph(scan) for scan in dataset.scans)
    write_features_hdf5(root / "features" / f"{name}.hdf5", {k: rng.standard_normal((36, dim)) for k in keys})


def benchmark_data(quick: bool, options: dict[str, str], tmp: Path) -> tuple[Path, str, str]:
    """The dataset directory, the feature name and a label for the table."""
    if quick and "data" not in options:
        root = tmp / "tiny"
        build_world(make_config("tiny"), root, show_progress=False)
        write_random_features(root, QUICK_FEATURES, QUICK_FEATURE_DIM)
        return root, QUICK_FEATURES, "tiny world, random features"
    root = Path(options.get("data", DEFAULT_DATA))
    features = options.get("features", "cnn")
    if not root.exists():
        print(f"building the benchmark world into {root} ...", flush=True)
        build_world(make_config("benchmark"), root)
    dataset = NavDataset(root)
    try:
        dataset.feature_path(features)
    except FileNotFoundError:
        from lodestar.envs.nav.perception.features import build_features

        print(f"building {features!r} features for {root} ...", flush=True)
        build_features(root, features)
    return root, features, f"{root.name}, {features} features"


def train_speaker(
    root: Path, features: str, run_dir: Path, overrides: list[str], quick: bool
) -> tuple[Path, SpeakerTrainConfig]:
    """Train a speaker with ``configs/vln_speaker.yaml`` (+ overrides); returns its ``best.pt``."""
    base = [f"data_dir={root}", f"data.features={features}", "device=cpu", f"runs_dir={run_dir.parent}"]
    if quick:
        base += [
            "iterations=40",
            "eval_every=20",
            "checkpoint_every=40",
            "model.embed_dim=32",
            "model.hidden_dim=64",
            "batch_size=16",
        ]
    config = load_config(SpeakerTrainConfig, SPEAKER_CONFIG, base + overrides)
    SpeakerTrainer(config, run_dir).train()
    return run_dir / "best.pt", config
