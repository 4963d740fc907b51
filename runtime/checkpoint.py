"""Atomic checkpoints: one format for every agent, last N kept, config carried inside.

A checkpoint is a dict saved with ``torch.save``: ``{"format": 1, "step": int, "config": dict, ...}``
plus whatever the agent puts in (models, target nets, optimizers, counters, RNG states). Writes go
to a temporary file in the same directory that is fsynced and then renamed over the target, so a
crash or a full disk while writing never damages the previous checkpoint.

Large state that belongs to a checkpoint but is better kept in a file of its own (the replay buffer)
is a *companion*: ``<name>_<step>.pt``, written before ``ckpt_<step>.pt`` and pruned with it. The
checkpoint names its companions, and a companion records its step, so a crash at any instant leaves
the newest complete pair loadable and a mismatched pair is refused. :meth:`CheckpointManager.clean`
removes what a killed write left behind: temporary files and companions without their checkpoint.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from lodestar.runtime.atomic import atomic_write

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
_COMPANION = re.compile(r"^([a-z][a-z0-9_]*)_(\d{12})\.pt$")
_TEMPORARY = re.compile(r"^\..+\.tmp$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run loading it."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, I/O error); what was on disk before is untouched."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through :func:`~lodestar.runtime.atomic.atomic_write`.

    A failed write removes its temporary file; an operating-system error (a full disk, an I/O error)
    becomes one :class:`CheckpointWriteError` naming the file, however deep torch wrapped it.
    """
    path = Path(path)
    try:
        with atomic_write(path) as tmp, tmp.open("wb") as handle:
            torch.save(obj, handle)
    except BaseException as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        if cause.errno == errno.ENOSPC:
            raise CheckpointWriteError(f"no space left on device while writing {path}") from exc
        raise CheckpointWriteError(f"I/O error while writing {path}: {cause.strerror or cause}") from exc


def _os_error(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc`` (torch's writer reports one as a chained RuntimeError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def non_finite_entries(state: Any, prefix: str = "") -> Iterator[str]:
    """Dotted names of the floating-point tensors in ``state`` holding NaN or infinity.

    Plain floats are not checked: ``-inf`` is a legitimate "no best score yet".
    """
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and state.numel() and not bool(torch.isfinite(state).all()):
            yield prefix or "<state>"
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from non_finite_entries(value, f"{prefix}[{index}]")


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

    def save(
        self,
        state: dict[str, Any],
        step: int,
        config: dict[str, Any],
        companions: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``companions`` (name -> state) and then the checkpoint for ``step``; prune old pairs.

        A failed write raises :class:`CheckpointWriteError` saying which checkpoint is still intact.
        """
        path = self.directory / f"ckpt_{step:012d}.pt"
        names: dict[str, str] = {}
        try:
            for name, payload in (companions or {}).items():
                if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name == "ckpt":
                    raise ValueError(f"companion name {name!r} must be lowercase letters, digits and _")
                file = self.directory / f"{name}_{step:012d}.pt"
                atomic_save(
                    {"format": FORMAT_VERSION, "step": step, "companion": name, "payload": payload}, file
                )
                names[name] = file.name
            atomic_save(
                {"format": FORMAT_VERSION, "step": step, "config": config, "companions": names, **state}, path
            )
        except CheckpointWriteError as exc:
            for name in names.values():
                (self.directory / name).unlink(missing_ok=True)
            intact = self.latest()
            kept = f"the previous checkpoint {intact} is intact" if intact else "no earlier checkpoint exists"
            raise CheckpointWriteError(f"{exc}; {kept}") from exc
        for old in self.checkpoints()[: -self.keep_last]:
            self._remove(old)
        return path

    def _remove(self, checkpoint: Path) -> None:
        step = _NAME.match(checkpoint.name)
        checkpoint.unlink(missing_ok=True)
        if step is not None:
            for companion in self.directory.glob(f"*_{int(step.group(1)):012d}.pt"):
                if _COMPANION.match(companion.name) and not _NAME.match(companion.name):
                    companion.unlink(missing_ok=True)

    def clean(self) -> list[Path]:
        """Remove what killed writes left: temporary files and companions whose checkpoint is missing.

        Only the run's one writer may call it (see :mod:`lodestar.runtime.run_lock`). Returns what it removed.
        """
        if not self.directory.is_dir():
            return []
        steps = {int(m.group(1)) for p in self.directory.iterdir() if (m := _NAME.match(p.name))}
        removed = []
        for path in sorted(self.directory.iterdir()):
            companion = _COMPANION.match(path.name)
            orphan = (
                companion is not None and not _NAME.match(path.name) and int(companion.group(2)) not in steps
            )
            if _TEMPORARY.match(path.name) or orphan:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def load_companion(
        self, state: dict[str, Any], name: str, source: str | Path, map_location: str | torch.device = "cpu"
    ) -> Any:
        """The companion ``name`` saved with the checkpoint ``state`` (loaded from ``source``), verified
        to belong to that checkpoint's step."""
        names = state.get("companions") or {}
        if name not in names:
            raise CheckpointError(f"checkpoint {str(source)!r} has no {name} saved with it")
        file = Path(source).parent / names[name]
        data = load_file(file, map_location)
        if not isinstance(data, dict) or data.get("companion") != name:
            raise CheckpointError(f"{str(file)!r} is not the {name} of a Lodestar checkpoint")
        if data.get("step") != state.get("step"):
            raise CheckpointError(
                f"{str(file)!r} holds the {name} of step {data.get('step')}, but checkpoint {str(source)!r} "
                f"is at step {state.get('step')}: the pair does not match"
            )
        return data["payload"]

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
