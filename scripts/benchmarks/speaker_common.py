"""Set-up shared by the ``speaker-quality`` and ``synthesis-scale`` benchmarks: data and a speaker.

Full runs use a built world with real view features (default ``data/nav/benchmark`` with ``cnn``
features, built on the spot when missing); ``--quick`` builds the ``tiny`` preset into a temporary
directory with random features, which exercises every code path in seconds but says nothing about
quality.

Every speaker trained here keeps its ``best.pt`` by BLEU-4 on a validation split (``SELECT_SPLIT``,
passed explicitly rather than left to the config file) and never evaluates ``test`` while it trains:
``test`` is what the benchmarks report (the evaluation protocol, DESIGN.md section 9).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lodestar.agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import write_features_hdf5
from lodestar.envs.nav.world.build import build_world, make_config
from lodestar.runtime.config import load_config
from lodestar.runtime.protocol import HELD_OUT_SPLIT, check_selection_splits

DEFAULT_DATA = Path("data/nav/benchmark")
SPEAKER_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "vln_speaker.yaml"
QUICK_FEATURES, QUICK_FEATURE_DIM = "random", 64
SELECT_SPLIT = "val_unseen"  # the validation split a trained speaker's best.pt is chosen on


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


def speaker_config(
    root: Path, features: str, run_dir: Path, overrides: list[str], quick: bool
) -> SpeakerTrainConfig:
    """The config of a speaker trained for a benchmark: ``configs/vln_speaker.yaml`` + overrides.

    ``select_split`` is set to :data:`SELECT_SPLIT` (an override may name another validation split);
    a config that would select on, or evaluate while training, ``test`` is refused.
    """
    base = [
        f"data_dir={root}", f"data.features={features}", "device=cpu", f"runs_dir={run_dir.parent}",
        f"select_split={SELECT_SPLIT}",
    ]  # fmt: skip
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
    try:
        check_selection_splits(config.select_split, config.data.eval_splits, owner="benchmark speaker")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return config


def train_speaker(
    root: Path, features: str, run_dir: Path, overrides: list[str], quick: bool
) -> tuple[Path, SpeakerTrainConfig]:
    """Train a speaker with :func:`speaker_config`; returns its ``best.pt`` and the config."""
    config = speaker_config(root, features, run_dir, overrides, quick)
    SpeakerTrainer(config, run_dir).train()
    return run_dir / "best.pt", config


def speaker_selection(info: Mapping[str, Any], path: Path) -> str:
    """The split a speaker file was selected on, from its ``info`` (``"unrecorded"`` if absent).

    Refuses a speaker that was selected on ``test`` or scored on it while training: its test BLEU
    would not be a held-out figure.
    """
    selected_on = str(info.get("select", "")).partition("/")[0] or "unrecorded"
    evaluated = sorted({key.partition("/")[0] for key in info.get("scores", {})})
    if selected_on == HELD_OUT_SPLIT or HELD_OUT_SPLIT in evaluated:
        raise SystemExit(
            f"{path} was selected on {selected_on!r} after evaluating {evaluated}: {HELD_OUT_SPLIT!r} is the "
            "reported split and must take part in no decision; train it with select_split=val_unseen"
        )
    return selected_on
