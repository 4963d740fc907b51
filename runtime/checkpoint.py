"""Atomic checkpoints: one format for every agent, last N kept, config carried inside.

A checkpoint is a dict saved with ``torch.save``: ``{"format": 1, "step": int, "config": dict, ...}``
plus whatever the agent puts in (models, target nets, optimizers, counters, RNG states). Writes go
to a temporary file in the same directory that is fsynced and then renamed over the target, so a
crash or a full disk while writing never damages the previous checkpoint.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run loading it."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with a clear error for missing, truncated or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt: {exc}") from exc


class CheckpointManager:
    """Writes ``ckpt_<step>.pt`` files into a directory and keeps the newest ``keep_last``."""

    def __init__(self, directory: str | Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def checkpoints(self) -> list[Path]:
        """Existing checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        existing = self.checkpoints()
        return existing[-1] if existing else None

    def save(self, state: dict[str, Any], step: int, config: dict[str, Any]) -> Path:
        """Write a checkpoint for ``step`` atomically, then prune old ones."""
        path = self.directory / f"ckpt_{step:012d}.pt"
        atomic_save({"format": FORMAT_VERSION, "step": step, "config": config, **state}, path)
        for old in self.checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def load(
        self, path: str | Path | None = None, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """Load ``path`` (default: the newest checkpoint) and check its format."""
        if path is None:
            path = self.latest()
            if path is None:
                raise CheckpointError(f"no checkpoint found in {str(self.directory)!r}")
        state = load_file(path, map_location)
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{str(path)!r} is not a Lodestar checkpoint (format {FORMAT_VERSION})")
        return state


def restore_module(module: torch.nn.Module, state: dict[str, Any], name: str, source: str | Path) -> None:
    """``load_state_dict`` that explains an architecture mismatch instead of a raw size error."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {str(source)!r}: '{name}' was saved for a different architecture or config "
            f"than this run's ({str(exc).splitlines()[0]} ...)"
        ) from exc


def check_config_matches(
    saved: dict[str, Any], current: dict[str, Any], keys: list[str], source: str
) -> None:
    """Refuse a checkpoint whose config differs from the run's on keys that shape the model."""
    for dotted in keys:
        a, b = _get_dotted(saved, dotted), _get_dotted(current, dotted)
        if a != b:
            raise CheckpointError(
                f"checkpoint {source!r} was written with {dotted}={a!r} but this run has {dotted}={b!r}"
            )


def _get_dotted(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
