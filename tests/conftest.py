"""Test-wide settings and shared fixtures.

Settings: quiet progress bars, one torch thread (small ops on a shared 2-core machine).

Fixtures: the navigation datasets that many modules read are built once per session
(:func:`tiny_world`, :func:`random_feature_world`, :func:`perception_world`, :func:`grid_dataset`). They
are shared, so no test may change them: a test that writes into a dataset directory works on its own
``shutil.copytree`` copy in ``tmp_path``; each session dataset checks at the end of the session that its
files are unchanged.

Scripts: :func:`run_script` runs a script's ``main(argv)`` in this process the way ``run_main`` runs it
from the command line. Each script also has one smoke test that runs it as a real command, marked
``@pytest.mark.script_run(script, build_args)``: those commands start in the background when the
session starts and their tests run last (see ``tests/script_runs.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from lodestar.envs.nav.world.build import build_world, make_config
from lodestar.runtime.cli import run_main
from tests.follower_fixtures import add_follower_features
from tests.nav_fixtures import make_dataset
from tests.nav_perception_helpers import small_world
from tests.script_runs import BackgroundScripts, ScriptRun, script_command, spare_cores
from tests.speaker_fixtures import add_random_features

# Set in the worker processes of pytest-xdist (``-n``), which run the tests on every core.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")

os.environ.setdefault("LODESTAR_NO_PROGRESS", "1")
torch.set_num_threads(1)

ScriptMain = Callable[[list[str] | None], int]


# -- shared navigation datasets (built once, never modified) -------------------------------------------


def _fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _unchanged(root: Path) -> Iterator[Path]:
    """Yield ``root``; at the end of the session fail if a test added, removed or rewrote a file in it."""
    before = _fingerprint(root)
    yield root
    after = _fingerprint(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test modified the shared dataset {root} (copy it first): {changed[:5]}"


@pytest.fixture(scope="session")
def tiny_world_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """The ``tiny`` world preset (seed 0, no features) and its build summary."""
    root = tmp_path_factory.mktemp("tiny_world") / "tiny"
    summary = build_world(make_config("tiny"), root, show_progress=False)
    for path in _unchanged(root):
        yield path, summary


@pytest.fixture(scope="session")
def tiny_world(tiny_world_build: tuple[Path, dict]) -> Path:
    """The ``tiny`` world preset (seed 0) without features."""
    return tiny_world_build[0]


@pytest.fixture(scope="session")
def random_feature_world(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``tiny`` world with two random feature sets: ``follower_fixtures.FEATURE_NAME`` ([36, 16])
    for the follower tests and ``speaker_fixtures.FEATURES`` ([36, 8]) for the speaker tests."""
    root = Path(shutil.copytree(tiny_world, tmp_path_factory.mktemp("random_features") / "tiny"))
    add_follower_features(root)
    add_random_features(root)
    yield from _unchanged(root)


@pytest.fixture(scope="session")
def perception_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``nav_perception_helpers.small_world``: four small houses with floor plans, no features."""
    yield from _unchanged(small_world(tmp_path_factory.mktemp("perception_world") / "nav"))


@pytest.fixture(scope="session")
def grid_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``nav_fixtures.make_dataset``: hand-made grid graphs with random features (no world generator)."""
    yield from _unchanged(make_dataset(tmp_path_factory.mktemp("grid_dataset") / "data"))


# -- running scripts -----------------------------------------------------------------------------------


@pytest.fixture
def run_script(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_script(module.main, *argv)``: the script's ``main`` run in this process as ``run_main`` runs it
    (user errors exit 2 with ``error: ...`` on stderr, a diverged run exits 3), with what it printed."""

    def run(main: ScriptMain, *argv: object) -> subprocess.CompletedProcess[str]:
        args = [str(a) for a in argv]
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            run_main(lambda _: main(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, exited.value.code, out, err)

    return run


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "script_run(script, build_args, torchrun=0): the test checks one command-line run of the script, "
        "started in the background when the session starts (tests/script_runs.py)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of background command runs go last, so that the runs overlap the other tests."""
    items.sort(key=lambda item: item.get_closest_marker("script_run") is not None)  # stable


def _start_script_run(
    runs: BackgroundScripts, item: pytest.Item, fixture: Callable[[str], object], work: Path
) -> None:
    marker = item.get_closest_marker("script_run")
    assert marker is not None
    script, build_args = marker.args
    try:
        args = build_args(fixture, work)
    except Exception as exc:  # this test fails with it, the others run
        runs.fail(item.nodeid, exc)
        return
    runs.start(item.nodeid, script_command(script, args, marker.kwargs.get("torchrun", 0)), work)


@pytest.fixture(scope="session", autouse=True)
def background_scripts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackgroundScripts]:
    """Start the command of every selected ``script_run`` test, one per spare CPU core at a time (nothing
    when no such test is selected); stop what still runs when the session ends.

    Under pytest-xdist the workers already use every core: each command then starts when its test
    asks for it (:func:`script_run`), in the worker that runs the test.
    """
    runs = BackgroundScripts(workers=1 if XDIST_WORKER else spare_cores())
    if not XDIST_WORKER:
        for item in request.session.items:
            if item.get_closest_marker("script_run"):
                script = Path(item.get_closest_marker("script_run").args[0]).stem
                work = tmp_path_factory.mktemp(f"run_{script}")
                _start_script_run(runs, item, request.getfixturevalue, work)
    yield runs
    runs.close()


@pytest.fixture
def script_run(
    request: pytest.FixtureRequest, background_scripts: BackgroundScripts, tmp_path: Path
) -> ScriptRun:
    """The finished command of this test's ``script_run`` marker (waits for it)."""
    if not background_scripts.has(request.node.nodeid):
        _start_script_run(background_scripts, request.node, request.getfixturevalue, tmp_path)
    return background_scripts.result(request.node.nodeid)
