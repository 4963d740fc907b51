"""Atomic checkpoints: last-N retention, corrupt files, architecture mismatch, failed writes."""

from __future__ import annotations

import errno
import re

import pytest
import torch

from lodestar.runtime import checkpoint as ckpt
from lodestar.runtime.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
    check_config_matches,
    non_finite_entries,
    restore_module,
)


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}}


def test_save_load_and_keep_last(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        manager.save(_state(step), step, config={"lr": 0.1})
    names = [p.name for p in manager.checkpoints()]
    assert names == ["ckpt_000000000020.pt", "ckpt_000000000030.pt"]
    loaded = manager.load()
    assert loaded["step"] == 30 and loaded["config"] == {"lr": 0.1}
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 30.0))
    assert not list(tmp_path.glob("*.tmp"))


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=1)
    good = manager.save(_state(1.0), 1, config={})
    real_save = torch.save

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    expected = (
        f"no space left on device while writing {tmp_path / 'ckpt_000000000002.pt'}; "
        f"the previous checkpoint {good} is intact"
    )
    with pytest.raises(CheckpointWriteError, match=f"^{re.escape(expected)}$"):
        manager.save(_state(2.0), 2, config={})
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert manager.checkpoints() == [good]
    assert torch.equal(manager.load()["model"]["w"], torch.full((3,), 1.0))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_disk_full_inside_torch_writer_is_one_clear_error(tmp_path, monkeypatch):
    """torch's zip writer reports a failed write as a RuntimeError chained to the OSError."""

    def wrapped_failure(obj, handle, *args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64") from cause

    monkeypatch.setattr(ckpt.torch, "save", wrapped_failure)
    manager = CheckpointManager(tmp_path)
    with pytest.raises(CheckpointWriteError, match="no space left on device .* no earlier checkpoint exists"):
        manager.save(_state(1.0), 1, config={}, companions={"replay": {"x": torch.zeros(2)}})
    assert list(tmp_path.iterdir()) == []  # neither the companion nor temporary files are left


def test_companions_are_written_pruned_and_verified_with_their_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        manager.save(_state(step), step, config={}, companions={"replay": {"n": torch.tensor(step)}})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{kind}_0000000000{step}.pt" for kind in ("ckpt", "replay") for step in (20, 30)]
    state = manager.load()
    assert int(manager.load_companion(state, "replay", manager.latest())["n"]) == 30
    with pytest.raises(CheckpointError, match="has no buffer saved with it"):
        manager.load_companion(state, "buffer", manager.latest())
    # A companion of another step swapped in (what an old single replay.pt allowed) is refused.
    (tmp_path / "replay_000000000030.pt").write_bytes((tmp_path / "replay_000000000020.pt").read_bytes())
    with pytest.raises(
        CheckpointError, match="step 20, but checkpoint .* is at step 30: the pair does not match"
    ):
        manager.load_companion(state, "replay", manager.latest())


def test_clean_removes_what_killed_writes_left(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1.0), 10, config={}, companions={"replay": {}})
    (tmp_path / ".ckpt_000000000020.pt.abc.tmp").write_bytes(b"partial")
    (tmp_path / "replay_000000000020.pt").write_bytes(b"written before its checkpoint")
    removed = manager.clean()
    assert sorted(p.name for p in removed) == [".ckpt_000000000020.pt.abc.tmp", "replay_000000000020.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000000010.pt", "replay_000000000010.pt"]


def test_non_finite_entries_name_the_bad_tensors():
    state = {"model": {"w": torch.tensor([1.0, float("nan")]), "b": torch.ones(2)}, "best": float("-inf")}
    state["optimizer"] = [{"exp_avg": torch.tensor([float("inf")])}, {"step": torch.tensor(3)}]
    assert list(non_finite_entries(state)) == ["model.w", "optimizer[0].exp_avg"]


def test_truncated_and_missing_files(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(_state(1.0), 5, config={})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        manager.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        manager.load(tmp_path / "ckpt_000000000099.pt")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        CheckpointManager(tmp_path / "empty").load()
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match="not a Lodestar checkpoint"):
        manager.load(foreign)


def test_architecture_and_config_mismatch():
    small, large = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match="'q_network' was saved for a different architecture"):
        restore_module(large, small.state_dict(), "q_network", "run/ckpt.pt")
    with pytest.raises(CheckpointError, match=r"agent.dueling=False but this run has agent.dueling=True"):
        check_config_matches(
            {"agent": {"dueling": False}}, {"agent": {"dueling": True}}, ["agent.dueling"], "x"
        )
