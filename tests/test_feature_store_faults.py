"""The feature store under faults: killed builds resume to the same store, damaged files never load.

A build is killed for real (SIGKILL, so no ``finally`` or file close runs) at chosen writes: the child
process forks from the test, counts calls of ``h5py``'s ``create_dataset`` and of ``os.replace`` and
kills itself at the chosen one. These builds stand in cheap made-up features for rendered ones (the
store, not the renderer, is under test); the slow variant kills the real command at random instants.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import evaluate_vln
import h5py
import numpy as np
import pytest
import torch

import lodestar.envs.nav.perception.features as features_module
from lodestar.agents.vln.follower import Follower, FollowerBundle, FollowerConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import feature_key, load_features_hdf5, write_features_hdf5
from lodestar.envs.nav.perception.features import FeatureConfig, build_features, feature_file, journal_dir
from lodestar.envs.nav.perception.semantics import DESCRIPTOR_DIM
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.script_runs import script_command

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills builds with SIGKILL (POSIX)")

CONFIG = FeatureConfig(kind="oracle", image_size=4, batch_viewpoints=16)
SCANS = 2


def fake_render(renderer: Any, scene: Any, positions: np.ndarray, views: Any = None) -> np.ndarray:
    return positions


def fake_descriptors(positions: np.ndarray, scene: Any, max_depth: float) -> torch.Tensor:
    """Features that differ by viewpoint, view and channel, in no time."""
    angle = positions @ np.array([1.0, 2.0, 3.0])
    grid = angle[:, None, None] + np.arange(36)[:, None] * 0.1 + np.arange(DESCRIPTOR_DIM) * 0.01
    return torch.from_numpy(np.sin(grid))


def skip_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds (and the processes forked from here) make up their features instead of rendering."""
    monkeypatch.setattr(features_module, "render_viewpoints", fake_render)
    monkeypatch.setattr(features_module, "oracle_descriptors", fake_descriptors)


@pytest.fixture
def cheap_features(monkeypatch: pytest.MonkeyPatch) -> None:
    skip_rendering(monkeypatch)


@pytest.fixture(scope="module")
def two_scan_world(perception_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's small world cut down to its first two scans (no features)."""
    root = Path(shutil.copytree(perception_world, tmp_path_factory.mktemp("two_scans") / "nav"))
    scans = NavDataset(root).scans[:SCANS]
    (root / "connectivity" / "scans.txt").write_text("".join(f"{s}\n" for s in scans))
    return root


@pytest.fixture(scope="module")
def reference(two_scan_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The store of an uninterrupted build: attributes and arrays."""
    world = Path(shutil.copytree(two_scan_world, tmp_path_factory.mktemp("reference") / "nav"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        skip_rendering(monkeypatch)
        build_features(world, "oracle", CONFIG, "cpu", show_progress=False)
    return read_store(feature_file(world, "oracle"))


def read_store(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return {"attrs": dict(f.attrs), **{k: f[k][()] for k in f}}


def assert_same_store(store: dict[str, Any], reference: dict[str, Any]) -> None:
    assert sorted(store) == sorted(reference)
    assert store["attrs"] == reference["attrs"]
    for key in reference:
        if key != "attrs":
            assert store[key].dtype == np.float16 and np.array_equal(store[key], reference[key]), key


def _build_until_killed(world: Path, target: str, count: int, before: bool) -> None:
    """Run the build and SIGKILL this process at the ``count``-th call of ``target`` (before or after it)."""
    owner: Any = h5py.Group if target == "create_dataset" else os
    real = getattr(owner, target)
    calls = 0

    def hooked(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if before and calls == count:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if not before and calls == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, target, hooked)
    build_features(world, "oracle", CONFIG, "cpu", show_progress=False)


def kill_build(world: Path, target: str, count: int, before: bool = False) -> None:
    """The build of ``world`` killed in a forked process at the chosen call (see ``_build_until_killed``)."""
    child = multiprocessing.get_context("fork").Process(
        target=_build_until_killed, args=(world, target, count, before)
    )
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == -signal.SIGKILL, f"the build was not killed at {target} #{count}"


def assert_every_store_file_opens(world: Path) -> None:
    """What a killed build leaves is readable, apart from its hidden temporary files."""
    for path in (world / "features").rglob("*"):
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".json":
            with h5py.File(path, "r"):
                pass


def viewpoint_counts(world: Path) -> list[int]:
    dataset = NavDataset(world)
    return [dataset.graph(s).num_viewpoints for s in dataset.scans]


# (what to hook, which call as a function of the scans' viewpoint counts, kill before the call, scans kept)
KILL_POINTS = {
    "first scan, first feature": ("create_dataset", lambda n: 1, False, 0),
    "first scan, half written": ("create_dataset", lambda n: n[0] // 2, False, 0),
    "first scan written, not renamed": ("replace", lambda n: 1, True, 0),
    "first scan renamed": ("replace", lambda n: 1, False, 1),
    "store half assembled": ("create_dataset", lambda n: sum(n) + n[0], False, 2),
    "store renamed, journal left": ("replace", lambda n: SCANS + 1, False, 2),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
@posix_only
def test_build_killed_anywhere_resumes_to_the_same_store(
    point, two_scan_world, reference, tmp_path, cheap_features
):
    world = Path(shutil.copytree(two_scan_world, tmp_path / "nav"))
    target, count, before, kept = KILL_POINTS[point]
    kill_build(world, target, count(viewpoint_counts(world)), before)
    assert_every_store_file_opens(world)

    summary = build_features(world, "oracle", CONFIG, "cpu", show_progress=False)
    assert summary["scans_kept"] == kept and summary["scans_written"] == SCANS - kept
    assert_same_store(read_store(feature_file(world, "oracle")), reference)
    leftovers = [p.name for p in (world / "features").iterdir() if p.suffix not in (".hdf5", ".json")]
    assert leftovers == [] and not journal_dir(feature_file(world, "oracle")).exists()


@posix_only
def test_store_extended_by_a_killed_build_is_kept_whole(two_scan_world, reference, tmp_path, cheap_features):
    """Scans added to the world later are assembled into a copy: a kill leaves the old store intact."""
    world = Path(shutil.copytree(two_scan_world, tmp_path / "nav"))
    scans_file = world / "connectivity" / "scans.txt"
    scans = scans_file.read_text().split()
    scans_file.write_text(f"{scans[0]}\n")
    build_features(world, "oracle", CONFIG, "cpu", show_progress=False)
    before = read_store(feature_file(world, "oracle"))
    scans_file.write_text("".join(f"{s}\n" for s in scans))  # a house joins the world
    n = viewpoint_counts(world)
    kill_build(world, "create_dataset", n[1] + 2)  # while copying the new scan into the store
    assert_same_store(read_store(feature_file(world, "oracle")), before)
    summary = build_features(world, "oracle", CONFIG, "cpu", show_progress=False)
    assert summary["scans_kept"] == 2 and summary["scans_written"] == 0
    assert_same_store(read_store(feature_file(world, "oracle")), reference)


@pytest.mark.slow
@posix_only
def test_build_command_killed_at_random_instants_resumes(perception_world, tmp_path):
    """The real command, SIGKILLed at random instants of a run's duration, then run to the end: its
    store matches that of one uninterrupted run."""
    clean = Path(shutil.copytree(perception_world, tmp_path / "clean"))
    world = Path(shutil.copytree(perception_world, tmp_path / "nav"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(data: Path) -> list[str]:
        args = [
            "--data",
            data,
            "--features",
            "oracle",
            "--image-size",
            "16",
            "--device",
            "cpu",
            "--no-progress",
        ]
        return script_command("build_nav_features.py", args)

    started = time.perf_counter()
    subprocess.run(command(clean), env=env, check=True, capture_output=True)
    duration = time.perf_counter() - started
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(8):
        run = subprocess.Popen(command(world), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run.wait(timeout=float(rng.uniform(0.3, 1.0)) * duration)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
            run.wait()
            kills += 1
            assert_every_store_file_opens(world)
            continue
        assert run.returncode == 0
        break
    assert kills > 0
    subprocess.run(command(world), env=env, check=True, capture_output=True)
    assert_same_store(read_store(feature_file(world, "oracle")), read_store(feature_file(clean, "oracle")))


# -- damaged feature files and the commands that read them ---------------------------------------------


def stored_extent(path: Path, key: str) -> tuple[int, int]:
    """Byte offset and size of the stored values of ``key`` (chunked or contiguous layout)."""
    with h5py.File(path, "r") as f:
        dataset = f[key]
        if dataset.chunks is None:
            return dataset.id.get_offset(), dataset.id.get_storage_size()
        info = dataset.id.get_chunk_info(0)
        return info.byte_offset, info.size


def overwrite_values(path: Path, key: str) -> None:
    """Replace the first stored values of ``key`` on disk with 1.0 (finite, plausible, wrong)."""
    offset, size = stored_extent(path, key)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.ones(min(size - 4, 64) // 2, np.float16).tobytes())


def test_damaged_values_are_an_error_naming_file_and_feature(tmp_path):
    path = tmp_path / "features.hdf5"
    rng = np.random.default_rng(0)
    write_features_hdf5(path, {f"scanA_vp{i}": rng.standard_normal((36, 8)) for i in range(4)})
    overwrite_values(path, "scanA_vp2")
    with pytest.raises(NavDataError, match=r"features\.hdf5: cannot read feature 'scanA_vp2'"):
        load_features_hdf5(path)


@pytest.fixture(scope="module")
def follower_world(random_feature_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the follower tests' world and an untrained follower for it (``best.pt``)."""
    root = Path(shutil.copytree(random_feature_world, tmp_path_factory.mktemp("eval") / "tiny"))
    vocab = NavDataset(root).vocab()
    torch.manual_seed(0)
    config = FollowerConfig(hidden_dim=32, num_heads=2, ffn_dim=64)
    model = Follower(len(vocab), 16, ANGLE_DIM, config, vocab.pad_id)
    checkpoint = root.parent / "best.pt"
    FollowerBundle(model, vocab, FEATURE_NAME, ANGLE_DIM, 80, {"iteration": 1}).save(checkpoint)
    return root, checkpoint


def spoil_with_nan(path: Path, key: str) -> None:
    table = load_features_hdf5(path)
    table[key] = table[key].copy()
    table[key][3, 1] = np.nan
    write_features_hdf5(path, table)


@pytest.mark.parametrize("damage", ["values overwritten on disk", "NaN written"])
def test_evaluate_vln_fails_clearly_on_a_damaged_feature_file(damage, follower_world, tmp_path, run_script):
    source, checkpoint = follower_world
    world = Path(shutil.copytree(source, tmp_path / "tiny"))
    path = world / "features" / f"{FEATURE_NAME}.hdf5"
    episode = NavDataset(world).episodes("val_unseen")[0]
    key = feature_key(episode.scan, episode.path[0])
    if damage == "NaN written":
        spoil_with_nan(path, key)
    else:
        overwrite_values(path, key)
    done = run_script(
        evaluate_vln.main, "--checkpoint", checkpoint, "--data", world, "--split", "val_unseen",
        "--out-dir", tmp_path / "out", "--log-dir", tmp_path / "tb", "--log-episodes", "0",
        "--log-failures", "0", "--device", "cpu",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:]
    assert done.stderr.startswith(f"error: {path}: ") and repr(key) in done.stderr
    assert not (tmp_path / "out" / "submit_val_unseen.json").exists()
