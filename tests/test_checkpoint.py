"""Atomic checkpoints: last-N retention, corrupt files, architecture mismatch, failed writes."""

from __future__ import annotations

import pytest
import torch

from lodestar.runtime import checkpoint as ckpt
from lodestar.runtime.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_config_matches,
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
    with pytest.raises(OSError, match="No space left"):
        manager.save(_state(2.0), 2, config={})
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert manager.checkpoints() == [good]
    assert torch.equal(manager.load()["model"]["w"], torch.full((3,), 1.0))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


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
