"""The feature store (HDF5 layout, resume, checks), the view encoder and the build script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import build_nav_features
import h5py
import numpy as np
import pytest
import torch

import lodestar.envs.nav.perception.features as features_module
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import load_features_hdf5
from lodestar.envs.nav.perception.features import FeatureConfig, build_features, feature_file, journal_dir
from lodestar.envs.nav.perception.semantics import DESCRIPTOR_DIM, NUM_CATEGORIES, NUM_ROOM_TYPES
from lodestar.envs.nav.perception.view_encoder import (
    EncoderConfig,
    LabelledViews,
    average_precision,
    evaluate_encoder,
    load_encoder,
    train_view_encoder,
)
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.runtime.checkpoint import CheckpointError
from tests.nav_perception_helpers import cheap_features


@pytest.fixture(scope="module")
def world(perception_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the session's small world: ``oracle_store`` adds features to it."""
    return copy_world(perception_world, tmp_path_factory.mktemp("world") / "nav")


def copy_world(source: Path, target: Path) -> Path:
    return Path(shutil.copytree(source, target))


@pytest.fixture(scope="module")
def oracle_store(world) -> Path:
    build_features(world, "oracle", cheap_features("oracle"), "cpu", show_progress=False)
    return feature_file(world, "oracle")


@pytest.fixture(scope="module")
def cnn_build(perception_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the small world with CNN features (and the encoder trained for them), and the summary."""
    world = copy_world(perception_world, tmp_path_factory.mktemp("cnn") / "nav")
    return world, build_features(world, "cnn", cheap_features("cnn"), "cpu", show_progress=False)


def all_keys(world: Path) -> list[str]:
    dataset = NavDataset(world)
    return NavDataset.viewpoint_keys(dataset.graph(s) for s in dataset.scans)


def read_store(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def test_oracle_store_has_every_viewpoint_as_float16_36xD(world, oracle_store):
    data = read_store(oracle_store)
    assert sorted(data) == sorted(all_keys(world))
    for array in data.values():
        assert array.shape == (36, DESCRIPTOR_DIM) and array.dtype == np.float16
    assert not journal_dir(oracle_store).exists()
    summary = json.loads((world / "features" / "oracle_summary.json").read_text())
    assert summary["feature_dim"] == DESCRIPTOR_DIM and summary["viewpoints"] == len(data)
    assert summary["scans_written"] == len(NavDataset(world).scans)
    # The project's own reader accepts the file.
    assert len(load_features_hdf5(oracle_store)) == len(data)


def test_simulator_loads_the_written_features(world, oracle_store):
    env = NavVecEnv(world, "val_unseen", 1, features="oracle", device="cpu", sequential=True)
    obs = env.reset(seed=0)
    assert env.feature_dim == DESCRIPTOR_DIM
    assert obs["pano_feats"].shape == (1, 36, DESCRIPTOR_DIM + 4)
    stop = torch.tensor([obs["cand_mask"].shape[1] - 1])
    env.step(stop)
    record = env.trajectories()[0]
    start = record["trajectory"][0][0]
    scan = next(ep.scan for ep in env.episodes if record["instr_id"].startswith(f"{ep.path_id}_"))
    stored = read_store(oracle_store)[f"{scan}_{start}"].astype(np.float32)
    assert torch.equal(obs["pano_feats"][0, :, :DESCRIPTOR_DIM], torch.from_numpy(stored))


def interrupt_after(monkeypatch, scans_done: int) -> list[str]:
    """Make ``_render_scan`` stop the build (as Ctrl-C would) when it starts scan ``scans_done + 1``."""
    real = features_module._render_scan
    calls: list[str] = []

    def render(scan, *args, **kwargs):
        calls.append(scan)
        if len(calls) > scans_done:
            raise KeyboardInterrupt
        return real(scan, *args, **kwargs)

    monkeypatch.setattr(features_module, "_render_scan", render)
    return calls


def record_scans(monkeypatch) -> list[str]:
    real = features_module._render_scan
    calls: list[str] = []

    def render(scan, *args, **kwargs):
        calls.append(scan)
        return real(scan, *args, **kwargs)

    monkeypatch.setattr(features_module, "_render_scan", render)
    return calls


def journalled_scans(world: Path, name: str) -> list[str]:
    """The scans an interrupted build has finished, from its journal folder."""
    return sorted(p.stem for p in journal_dir(feature_file(world, name)).glob("*.hdf5"))


@pytest.mark.parametrize("kind", ["oracle", "cnn"])
def test_interrupted_build_resumes_to_the_same_result(tmp_path, perception_world, kind, monkeypatch, request):
    # The reference: an uninterrupted build of the same world with the same settings.
    if kind == "oracle":
        reference = read_store(request.getfixturevalue("oracle_store"))
    else:
        reference = read_store(feature_file(request.getfixturevalue("cnn_build")[0], kind))

    resumed_world = copy_world(perception_world, tmp_path / "resumed")
    interrupt_after(monkeypatch, scans_done=1)
    with pytest.raises(KeyboardInterrupt):
        build_features(resumed_world, kind, cheap_features(kind), "cpu", show_progress=False)
    assert not feature_file(resumed_world, kind).exists()
    scans = NavDataset(resumed_world).scans
    assert journalled_scans(resumed_world, kind) == scans[:1]

    monkeypatch.undo()
    calls = record_scans(monkeypatch)
    summary = build_features(resumed_world, kind, cheap_features(kind), "cpu", show_progress=False)
    assert calls == scans[1:] and summary["scans_kept"] == 1
    resumed = read_store(feature_file(resumed_world, kind))
    assert sorted(resumed) == sorted(reference)
    for key, array in reference.items():
        assert np.array_equal(resumed[key], array), key
    assert not journal_dir(feature_file(resumed_world, kind)).exists()
    # A finished store is kept as it is.
    calls.clear()
    build_features(resumed_world, kind, cheap_features(kind), "cpu", show_progress=False)
    assert calls == []


def test_cnn_features_train_the_encoder_once_and_report_quality(tmp_path, cnn_build):
    world = copy_world(cnn_build[0], tmp_path / "nav")  # this test adds a feature set
    config, summary = cheap_features("cnn"), cnn_build[1]
    store = read_store(feature_file(world, "cnn"))
    assert all(a.shape == (36, 32) and a.dtype == np.float16 for a in store.values())
    assert (world / "features" / "encoder.pt").is_file()
    quality = summary["encoder_report"]["val_unseen"]
    for key in ("room_accuracy", "room_majority_accuracy", "object_map", "object_prior_map"):
        assert 0.0 <= quality[key] <= 1.0
    # A second feature set reuses the saved encoder instead of training a new one.
    again = build_features(world, "cnn_copy", config, "cpu", show_progress=False)
    assert again["encoder_report"]["loaded_from"].endswith("encoder.pt")
    assert again["encoder"] == summary["encoder"]
    copy = read_store(feature_file(world, "cnn_copy"))
    assert all(np.array_equal(copy[k], store[k]) for k in store)


def test_store_settings_are_checked_on_resume(tmp_path, world, oracle_store):
    other = FeatureConfig(kind="oracle", image_size=24)
    with pytest.raises(NavDataError, match="image_size"):
        build_features(world, "oracle", other, "cpu", show_progress=False)


def test_missing_house_files_and_bad_encoder_are_clear_errors(tmp_path, perception_world):
    world = copy_world(perception_world, tmp_path / "nav")
    scan = NavDataset(world).scans[0]
    (world / "houses" / f"{scan}.json").rename(tmp_path / "moved.json")
    with pytest.raises(FileNotFoundError, match=scan):
        build_features(world, "oracle", cheap_features("oracle"), "cpu", show_progress=False)
    (tmp_path / "moved.json").rename(world / "houses" / f"{scan}.json")
    (world / "features").mkdir()
    (world / "features" / "encoder.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="encoder.pt"):
        build_features(world, "cnn", cheap_features("cnn"), "cpu", show_progress=False)


def test_average_precision_matches_hand_computed_values():
    scores = torch.tensor([[0.9, 0.5], [0.8, 0.5], [0.3, 0.5], [0.1, 0.5]])
    targets = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]]).bool()
    ap = average_precision(scores, targets)
    # Column 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2. Column 1: all tied -> positive rate.
    assert ap[0].item() == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1].item() == pytest.approx(0.25)
    assert torch.isnan(average_precision(scores, torch.zeros(4, 2, dtype=torch.bool))).all()


def synthetic_views(count: int, seed: int) -> LabelledViews:
    """Room type = which colour fills the image; object = a bright square in one corner."""
    rng = np.random.default_rng(seed)
    room = torch.from_numpy(rng.integers(0, 3, count))
    objects = torch.zeros(count, NUM_CATEGORIES, dtype=torch.bool)
    objects[:, 5] = torch.from_numpy(rng.random(count) < 0.4)
    palette = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=torch.uint8)
    images = palette[room][:, None, None, :].expand(count, 16, 16, 3).clone()
    images[objects[:, 5], :8, :8] = 255
    return LabelledViews(images, room, objects)


def test_encoder_learns_rooms_and_objects_beyond_the_baselines(tmp_path):
    config = EncoderConfig(feature_dim=16, channels=(8, 16), epochs=5, batch_size=32, lr=1e-2)
    train, val = synthetic_views(384, 0), synthetic_views(96, 1)
    encoder, _ = train_view_encoder(train, config, torch.device("cpu"))
    metrics = evaluate_encoder(encoder, val, train)
    assert metrics.room_accuracy > 0.9 > metrics.room_majority_accuracy
    assert metrics.object_map > 0.9 > metrics.object_prior_map
    assert encoder.encode(val.images).shape == (96, 16) and NUM_ROOM_TYPES > 3
    # Same seed, same weights.
    again, _ = train_view_encoder(train, config, torch.device("cpu"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(encoder.state_dict().values(), again.state_dict().values(), strict=True)
    )
    from lodestar.envs.nav.perception.view_encoder import save_encoder

    save_encoder(encoder, tmp_path / "enc.pt", config, {"image_size": 16})
    loaded, state = load_encoder(tmp_path / "enc.pt", torch.device("cpu"))
    assert state["image_size"] == 16 and torch.equal(loaded.encode(val.images), encoder.encode(val.images))


def test_build_script_writes_oracle_features(tmp_path, perception_world, run_script):
    world = copy_world(perception_world, tmp_path / "nav")
    args = ["--features", "oracle", "--image-size", "8", "--device", "cpu", "--no-progress"]
    done = run_script(build_nav_features.main, "--data", world, *args)
    assert done.returncode == 0, done.stderr
    assert "features 'oracle'" in done.stdout and feature_file(world, "oracle").is_file()
    bad = run_script(build_nav_features.main, "--data", world, "bogus_key=1")
    assert bad.returncode == 2 and "bogus_key" in bad.stderr


def _smoke_args(fixture, work: Path) -> list[object]:
    world = copy_world(fixture("perception_world"), work / "nav")
    return ["--data", world, "--features", "oracle", "--image-size", "4", "--device", "cpu", "--no-progress"]


@pytest.mark.script_run("build_nav_features.py", _smoke_args)
def test_build_script_smoke(script_run):
    """The one command-line run of ``scripts/build_nav_features.py`` (in the background: tests/script_runs.py)."""
    assert script_run.returncode == 0, script_run.stderr
    assert "features 'oracle'" in script_run.stdout
    assert feature_file(script_run.work / "nav", "oracle").is_file()


def test_scans_added_later_get_features_with_the_stored_settings(tmp_path, perception_world, monkeypatch):
    world = copy_world(perception_world, tmp_path / "nav")
    scans_file = world / "connectivity" / "scans.txt"
    scans = NavDataset(world).scans
    scans_file.write_text("".join(f"{s}\n" for s in scans[:-1]))
    build_features(world, "oracle", cheap_features("oracle"), "cpu", show_progress=False)
    scans_file.write_text("".join(f"{s}\n" for s in scans))  # a house joins the world
    calls = record_scans(monkeypatch)
    summary = build_features(world, "oracle", device="cpu", show_progress=False)
    assert calls == scans[-1:] and summary["image_size"] == 16
    assert sorted(read_store(feature_file(world, "oracle"))) == sorted(all_keys(world))
