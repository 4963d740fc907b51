"""Command-line smoke runs of the scripts, started in the background when the session starts.

Each script has one smoke test that runs it as a real command (tiny budgets), the way a user starts it.
Such a run is mostly interpreter and torch start-up on one CPU core, so the runs do not wait for their
test: a test declares its command with ``@pytest.mark.script_run(script, build_args)`` and reads the
finished process from its ``script_run`` fixture. ``tests/conftest.py`` starts the commands of the
selected tests at the beginning of the session, in background threads (one per spare CPU core), and
moves those tests to the end of the session, so the runs overlap the in-process tests.

``build_args(fixture, work)`` is called in the main thread before the run starts: ``fixture(name)`` gives
a session-scoped fixture (the shared datasets of ``tests/conftest.py``), ``work`` is an empty directory
of the run's own (its working directory, for its inputs and outputs); it returns the script's arguments.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300


@dataclass(frozen=True)
class ScriptRun:
    """A finished command: what it printed, its exit code and its working directory."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    work: Path


def script_command(script: str, args: list[object], torchrun: int = 0) -> list[str]:
    """``python scripts/<script> args``, or under ``torchrun --standalone --nproc_per_node <torchrun>``."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)]
    return [sys.executable, *(launcher if torchrun else []), str(ROOT / "scripts" / script), *map(str, args)]


class BackgroundScripts:
    """Runs commands in worker threads; :meth:`result` waits for one. :meth:`close` stops what is left."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="script-run")
        self._runs: dict[str, Future[ScriptRun]] = {}
        self._running: set[subprocess.Popen[str]] = set()
        self._closed = False

    def start(self, key: str, command: list[str], work: Path) -> None:
        # The environment as it is now: a test may change os.environ while the command waits for its turn.
        env = {**os.environ, "LODESTAR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
        self._runs[key] = self._pool.submit(self._run, command, work, env)

    def fail(self, key: str, error: BaseException) -> None:
        """Record that the run ``key`` could not be prepared: its test raises ``error``."""
        failed: Future[ScriptRun] = Future()
        failed.set_exception(error)
        self._runs[key] = failed

    def has(self, key: str) -> bool:
        return key in self._runs

    def result(self, key: str) -> ScriptRun:
        return self._runs[key].result()

    def _run(self, command: list[str], work: Path, env: dict[str, str]) -> ScriptRun:
        if self._closed:
            raise RuntimeError("the session ended before this command started")
        # Its own process group: stopping it also stops the processes it started (torchrun's workers).
        with subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            self._running.add(process)
            if self._closed:  # the session ended while it was starting
                _stop(process)
            try:
                out, err = process.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _stop(process)
                out, err = process.communicate()
                err += f"\n(stopped after {TIMEOUT_S} s)"
            finally:
                self._running.discard(process)
        return ScriptRun(command, process.returncode, out, err, work)

    def close(self) -> None:
        self._closed = True
        for run in self._runs.values():
            run.cancel()
        for process in list(self._running):
            _stop(process)
        self._pool.shutdown(wait=True)


def spare_cores() -> int:
    """CPU cores beside the one the test session itself uses (at least one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def _stop(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has ended already
        os.killpg(process.pid, signal.SIGKILL)
