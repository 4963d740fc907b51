"""Fault injection: a DQN run hit by kills, full disks, double Ctrl-C, a second writer, broken files.

After each fault the run is resumed the way a user would (``train_dqn.py --resume``) and its final
checkpoint is compared bit for bit with an uninterrupted run's. Every trial ends in one of three
outcomes: resumed exactly, refused with a clear message, or lost data; the last must never happen.

The default run injects faults in-process (fast); ``-m slow`` adds real SIGKILLs of training
processes at seeded random instants, double SIGINT and two processes started on one run.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import train_dqn

from lodestar.runtime import atomic as atomic_module
from lodestar.runtime import checkpoint as checkpoint_module
from lodestar.runtime.checkpoint import CheckpointManager, load_file
from tests.dqn_runs import PRESET, TINY_PONG

ROOT = Path(__file__).resolve().parent.parent
# Updates from env step 40 to 80; checkpoints every 20 env steps; the default seeding period, so a
# resume replays several episodes (ale-py's own resets in between).
RUN = [*TINY_PONG, "replay.capacity=400", "checkpoint_every_steps=20", "keep_checkpoints=2", "total_steps=80"]


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing of the run's own error handling catches it."""


def _start(runs: Path, run_script, *extra: str):
    return run_script(train_dqn.main, "--config", PRESET, *RUN, *extra, "name=run", f"runs_dir={runs}")


def final_state(run_dir: Path) -> dict:
    manager = CheckpointManager(run_dir / "checkpoints")
    latest = manager.latest()
    assert latest is not None
    state = load_file(latest)
    state["replay"] = manager.load_companion(state, "replay", latest)
    return state


def same_run(a: dict, b: dict) -> bool:
    """Two final checkpoints (with their replay buffers) hold the same tensors and counters."""

    def equal(x: object, y: object) -> bool:
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            return x.dtype == y.dtype and x.shape == y.shape and bool(torch.equal(x, y))
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            return len(x) == len(y) and all(equal(u, v) for u, v in zip(x, y, strict=True))
        if hasattr(x, "tolist") and hasattr(y, "tolist"):
            return x.tolist() == y.tolist()  # numpy arrays of the episode state
        return x == y

    ignored = {"train_seconds", "config"}  # wall time differs; the config is compared by the runs' setup
    return equal(
        {k: v for k, v in a.items() if k not in ignored}, {k: v for k, v in b.items() if k not in ignored}
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The uninterrupted run every faulty one must end up identical to."""
    runs = tmp_path_factory.mktemp("straight")
    code = train_dqn.main(["--config", str(PRESET), *RUN, "name=run", f"runs_dir={runs}"])
    assert code == 0
    return final_state(runs / "run")


def _kill_at_write(monkeypatch, write: int) -> None:
    """Make the ``write``-th file rename of checkpointing die like a killed process (temp file left)."""
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == write:
            raise Killed(f"killed before renaming {src}")
        return real_replace(src, dst)

    real_unlink = Path.unlink

    def keep_temporary(self, missing_ok=False):
        if self.name.endswith(".tmp"):
            return None  # a killed process cleans nothing up
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(atomic_module.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", keep_temporary)


# Checkpoint writes come in pairs: replay_<step>.pt, then ckpt_<step>.pt.
@pytest.mark.parametrize(
    ("write", "where"),
    [
        pytest.param(1, "the first replay buffer", marks=pytest.mark.slow),
        (2, "the first checkpoint"),
        pytest.param(5, "a later replay buffer", marks=pytest.mark.slow),
        pytest.param(8, "a later checkpoint", marks=pytest.mark.slow),
    ],
)
def test_a_kill_inside_a_checkpoint_write_resumes_exactly(
    tmp_path, monkeypatch, run_script, straight, write, where
):
    with monkeypatch.context() as patch:
        _kill_at_write(patch, write)
        with pytest.raises(Killed):
            _start(tmp_path, run_script)
    run_dir = tmp_path / "run"
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert leftovers, f"the kill inside {where} left its temporary file, as a real kill does"
    if CheckpointManager(run_dir / "checkpoints").checkpoints():
        result = run_script(train_dqn.main, "--resume", run_dir)
    else:  # killed inside the very first checkpoint: nothing to resume, the run starts anew
        result = _start(tmp_path, run_script)
    assert result.returncode == 0, result.stderr
    assert "left by an interrupted checkpoint write" in result.stderr
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert same_run(final_state(run_dir), straight)


def test_a_full_disk_stops_with_one_line_and_the_run_resumes_exactly(
    tmp_path, monkeypatch, run_script, straight
):
    calls = {"n": 0}
    real_save = torch.save

    def save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # the third checkpoint's replay buffer (writes: replay, ckpt, replay, ...)
            handle.write(b"partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as cause:  # torch's zip writer wraps the OSError like this
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from cause
        return real_save(obj, handle, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module.torch, "save", save)
        result = _start(tmp_path, run_script)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert line == (
        f"error: no space left on device while writing {checkpoints / 'replay_000000000060.pt'}; "
        f"the previous checkpoint {checkpoints / 'ckpt_000000000040.pt'} is intact"
    )
    resumed = run_script(train_dqn.main, "--resume", tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr
    assert same_run(final_state(tmp_path / "run"), straight)


@pytest.mark.parametrize("broken", [pytest.param(b, marks=pytest.mark.slow) for b in ("ckpt", "replay")])
def test_a_truncated_newest_pair_falls_back_to_the_previous_one_and_resumes_exactly(
    tmp_path, run_script, straight, broken
):
    assert _start(tmp_path, run_script).returncode == 0
    newest = tmp_path / "run" / "checkpoints" / f"{broken}_000000000080.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    result = run_script(train_dqn.main, "--resume", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "skipped ckpt_000000000080.pt:" in result.stderr and "truncated or corrupt" in result.stderr
    assert "resumed" in result.stdout and "at step 60" in result.stdout
    assert same_run(final_state(tmp_path / "run"), straight)


# -- real processes ---------------------------------------------------------------------------------


def _command(runs: Path, *extra: str) -> list[str]:
    script = str(ROOT / "scripts" / "train_dqn.py")
    return [sys.executable, script, "--config", str(PRESET), *RUN, *extra, "name=run", f"runs_dir={runs}"]


def _resume_to_the_end(run_dir: Path) -> subprocess.CompletedProcess[str]:
    if CheckpointManager(run_dir / "checkpoints").checkpoints():
        command = [sys.executable, str(ROOT / "scripts" / "train_dqn.py"), "--resume", str(run_dir)]
    else:
        command = _command(run_dir.parent)
    return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)


def _env() -> dict[str, str]:
    return {**os.environ, "LODESTAR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


def _outcome(run_dir: Path, result: subprocess.CompletedProcess[str], straight: dict) -> str:
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:]
        return "refused with a clear message" if message and message[0].startswith("error:") else "lost data"
    return "resumed exactly" if same_run(final_state(run_dir), straight) else "lost data"


@pytest.mark.slow
def test_sigkill_at_random_instants_never_loses_data(tmp_path, straight):
    """Seeded random kill times over the whole run (start-up, steps, checkpoint writes)."""
    trials = int(os.environ.get("LODESTAR_FAULT_TRIALS", "12"))
    chooser = random.Random(2026)
    tally: Counter[str] = Counter()
    for trial in range(trials):
        runs = tmp_path / f"trial{trial}"
        process = subprocess.Popen(
            _command(runs), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(chooser.uniform(1.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        tally[_outcome(runs / "run", _resume_to_the_end(runs / "run"), straight)] += 1
    print(f"SIGKILL trials: {dict(tally)}")
    assert tally["lost data"] == 0 and sum(tally.values()) == trials


@pytest.mark.slow
def test_double_ctrl_c_then_resume_is_exact(tmp_path, straight):
    process = subprocess.Popen(
        _command(tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(4.0)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=300)
    result = _resume_to_the_end(tmp_path / "run")
    assert _outcome(tmp_path / "run", result, straight) == "resumed exactly", result.stderr


@pytest.mark.slow
def test_two_processes_on_one_run_one_is_refused_at_once(tmp_path, straight):
    first = subprocess.Popen(
        _command(tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_dir = tmp_path / "run"
    deadline = time.monotonic() + 120
    # The second starts once the first holds the run: its lock names it and its config is written.
    while not ((run_dir / "config.yaml").is_file() and str(first.pid) in _read(run_dir / ".lock")):
        assert time.monotonic() < deadline and first.poll() is None, "the first run never took its directory"
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_dqn.py"), "--resume", str(tmp_path / "run")],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    first_out = first.communicate(timeout=300)
    assert first.returncode == 0, first_out[1]
    if second.returncode != 0:  # (it may also have started after the first one finished, and resumed it)
        assert second.returncode == 2 and f"is in use by process {first.pid}" in second.stderr, second.stderr
    assert same_run(final_state(run_dir), straight)


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""
