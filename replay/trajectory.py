"""A store of variable-length navigation episodes, batched with padding and masks.

An episode is an instruction (token ids ``[T]``), the viewpoints visited (``[L]``, global viewpoint
indices), the action taken at each of them (``[L]``) and optional per-step tensors (``[L, ...]``, e.g.
candidate features or teacher logits). Episodes are appended one at a time or as a padded batch (a
DAgger rollout) and stored back to back in flat tensors with offsets, so gathering a padded batch is a
few tensor ops with no Python loop over episodes.

With a ``capacity`` the oldest episodes are dropped first (FIFO), as DAgger aggregation wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lodestar.replay.storage import filled_part
from lodestar.runtime.checkpoint import atomic_save, load_file

FORMAT = "lodestar.trajectories/1"


@dataclass
class TrajectoryBatch:
    """Episodes padded to the longest one in the batch."""

    instruction: torch.Tensor  # [B, T] long, pad_token after each instruction
    instruction_mask: torch.Tensor  # [B, T] bool, True on real tokens
    viewpoints: torch.Tensor  # [B, L] long, pad_viewpoint after each episode
    actions: torch.Tensor  # [B, L] long, pad_action (default -100, cross-entropy's ignore_index)
    step_mask: torch.Tensor  # [B, L] bool, True on real steps
    lengths: torch.Tensor  # [B] long, steps per episode
    instruction_lengths: torch.Tensor  # [B] long
    indices: torch.Tensor  # [B] long, episode indices in the store
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # [B, L, ...], zero-padded


class _Flat:
    """Growable flat tensors sharing one row count (amortized doubling)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.data: dict[str, torch.Tensor] = {}
        self.used = 0

    def append(self, values: Mapping[str, torch.Tensor]) -> int:
        """Append rows (every value ``[n, ...]``); returns the first new row."""
        n = next(iter(values.values())).shape[0]
        if not self.data:
            self.data = {
                k: torch.empty((0, *v.shape[1:]), dtype=v.dtype, device=self.device)
                for k, v in values.items()
            }
        if set(values) != set(self.data):
            raise KeyError(
                f"per-step fields {sorted(values)} differ from the stored fields {sorted(self.data)}"
            )
        for key, value in values.items():
            stored = self.data[key]
            if value.shape[1:] != stored.shape[1:] or value.dtype != stored.dtype:
                raise ValueError(
                    f"field {key!r}: got {tuple(value.shape[1:])} {value.dtype} per row, the store holds "
                    f"{tuple(stored.shape[1:])} {stored.dtype}"
                )
            if self.used + n > stored.shape[0]:
                grown = torch.empty(
                    (max(2 * stored.shape[0], self.used + n, 64), *stored.shape[1:]),
                    dtype=stored.dtype,
                    device=self.device,
                )
                grown[: self.used] = stored[: self.used]
                self.data[key] = stored = grown
            stored[self.used : self.used + n] = value.to(self.device)
        first = self.used
        self.used += n
        return first

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (in this order), e.g. to drop evicted episodes."""
        self.data = {key: value[rows] for key, value in self.data.items()}
        self.used = rows.numel()

    def trimmed(self) -> dict[str, torch.Tensor]:
        """The used rows, to save: copies where the tensors have room to grow (``torch.save`` of a
        view writes the whole storage behind it)."""
        return {key: filled_part(value, self.used) for key, value in self.data.items()}


class TrajectoryStore:
    """Variable-length episodes with uniform episode sampling and padded batches."""

    def __init__(
        self,
        capacity: int | None = None,
        device: torch.device | str = "cpu",
        pad_token: int = 0,
        pad_action: int = -100,
        pad_viewpoint: int = -1,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"trajectory store capacity must be >= 1 or None, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self.pad_token, self.pad_action, self.pad_viewpoint = pad_token, pad_action, pad_viewpoint
        self._steps = _Flat(self.device)  # viewpoints, actions, extras
        self._tokens = _Flat(self.device)  # instruction
        self._episodes = _Flat(self.device)  # step_start, step_len, token_start, token_len
        self._first = 0  # episodes before this one were evicted (still in the flat tensors until compaction)

    def __len__(self) -> int:
        return self._episodes.used - self._first

    @property
    def extra_keys(self) -> list[str]:
        return sorted(k for k in self._steps.data if k not in ("viewpoints", "actions"))

    # -- writing --------------------------------------------------------------------------------
    def append(
        self,
        instruction: torch.Tensor,
        viewpoints: torch.Tensor,
        actions: torch.Tensor,
        **extras: torch.Tensor,
    ) -> None:
        """Add one episode: ``instruction [T]``, ``viewpoints [L]``, ``actions [L]``, extras ``[L, ...]``."""
        instruction, viewpoints, actions = (torch.as_tensor(x) for x in (instruction, viewpoints, actions))
        if instruction.dim() != 1 or instruction.numel() == 0:
            raise ValueError(
                f"instruction must be a non-empty 1-D tensor of token ids, got {tuple(instruction.shape)}"
            )
        if viewpoints.dim() != 1 or viewpoints.numel() == 0 or actions.shape != viewpoints.shape:
            raise ValueError(
                f"viewpoints and actions must be non-empty 1-D tensors of one length, got "
                f"{tuple(viewpoints.shape)} and {tuple(actions.shape)}"
            )
        lengths = torch.tensor([viewpoints.numel()])
        self._append(
            instruction.unsqueeze(0),
            torch.tensor([instruction.numel()]),
            viewpoints.unsqueeze(0),
            actions.unsqueeze(0),
            lengths,
            {k: torch.as_tensor(v).unsqueeze(0) for k, v in extras.items()},
        )

    def extend_padded(
        self,
        instruction: torch.Tensor,
        instruction_lengths: torch.Tensor,
        viewpoints: torch.Tensor,
        actions: torch.Tensor,
        lengths: torch.Tensor,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Add ``B`` episodes given padded: ``instruction [B, T]``, ``viewpoints``/``actions [B, L]``,
        extras ``[B, L, ...]``; only the first ``lengths[b]`` steps / ``instruction_lengths[b]`` tokens
        of row ``b`` are kept."""
        self._append(instruction, instruction_lengths, viewpoints, actions, lengths, dict(extras or {}))

    def _append(
        self,
        instruction: torch.Tensor,
        instruction_lengths: torch.Tensor,
        viewpoints: torch.Tensor,
        actions: torch.Tensor,
        lengths: torch.Tensor,
        extras: dict[str, torch.Tensor],
    ) -> None:
        d = self.device
        instruction, viewpoints, actions = instruction.to(d), viewpoints.to(d), actions.to(d)
        lengths, instruction_lengths = lengths.to(d, torch.long), instruction_lengths.to(d, torch.long)
        batch = viewpoints.shape[0]
        if viewpoints.dim() != 2 or actions.shape != viewpoints.shape or instruction.dim() != 2:
            raise ValueError(
                f"expected instruction [B, T] and viewpoints/actions [B, L], got {tuple(instruction.shape)}, "
                f"{tuple(viewpoints.shape)}, {tuple(actions.shape)}"
            )
        if (
            instruction.shape[0] != batch
            or lengths.shape != (batch,)
            or instruction_lengths.shape != (batch,)
        ):
            raise ValueError(f"instruction, lengths and instruction_lengths must all have {batch} rows")
        if bool(((lengths < 1) | (lengths > viewpoints.shape[1])).any()):
            raise ValueError(f"lengths must lie in [1, {viewpoints.shape[1]}], got {lengths.tolist()}")
        if bool(((instruction_lengths < 1) | (instruction_lengths > instruction.shape[1])).any()):
            raise ValueError(f"instruction_lengths must lie in [1, {instruction.shape[1]}]")
        if self._steps.data:
            missing = set(self.extra_keys) ^ set(extras)
            if missing:
                raise KeyError(
                    f"per-step extras {sorted(extras)} differ from the stored ones {self.extra_keys}"
                )
        for key, value in extras.items():
            if value.shape[:2] != viewpoints.shape:
                raise ValueError(
                    f"extra {key!r} must be [B, L, ...] = {tuple(viewpoints.shape)}..., got {tuple(value.shape)}"
                )
        step_mask = torch.arange(viewpoints.shape[1], device=d) < lengths.unsqueeze(1)
        token_mask = torch.arange(instruction.shape[1], device=d) < instruction_lengths.unsqueeze(1)
        steps = {"viewpoints": viewpoints.long()[step_mask], "actions": actions.long()[step_mask]}
        steps.update({key: value.to(d)[step_mask] for key, value in extras.items()})
        step_start = self._steps.append(steps) + torch.cumsum(lengths, 0) - lengths
        first_token = self._tokens.append({"tokens": instruction.long()[token_mask]})
        token_start = first_token + torch.cumsum(instruction_lengths, 0) - instruction_lengths
        table = torch.stack([step_start, lengths, token_start, instruction_lengths], 1)
        self._episodes.append({"table": table})
        self._evict()

    def _evict(self) -> None:
        if self.capacity is None or len(self) <= self.capacity:
            return
        self._first = self._episodes.used - self.capacity
        if self._first > self.capacity:  # compact once the dead prefix outweighs the live episodes
            table = self._episodes.data["table"][self._first : self._episodes.used]
            self._steps.keep(_ranges(table[:, 0], table[:, 1]))
            self._tokens.keep(_ranges(table[:, 2], table[:, 3]))
            table = table.clone()
            table[:, 0] = torch.cumsum(table[:, 1], 0) - table[:, 1]
            table[:, 2] = torch.cumsum(table[:, 3], 0) - table[:, 3]
            self._episodes.keep(torch.arange(0, device=self.device))
            self._episodes.append({"table": table})
            self._first = 0

    # -- reading --------------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TrajectoryBatch:
        """``batch_size`` episodes drawn uniformly with replacement, padded."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size > len(self):
            raise ValueError(f"cannot sample {batch_size} episodes: the store holds {len(self)}")
        indices = torch.randint(0, len(self), (batch_size,), device=self.device, generator=generator)
        return self.get(indices)

    def get(self, indices: torch.Tensor | list[int]) -> TrajectoryBatch:
        """Episodes ``indices`` (0 = oldest kept) padded into one batch."""
        indices = torch.as_tensor(indices, device=self.device, dtype=torch.long).reshape(-1)
        if indices.numel() == 0:
            raise ValueError("get() needs at least one episode index")
        if bool(((indices < 0) | (indices >= len(self))).any()):
            raise IndexError(f"episode indices must lie in [0, {len(self)}), got {indices.tolist()}")
        table = self._episodes.data["table"][indices + self._first]
        step_index, step_mask = _padded(table[:, 0], table[:, 1])
        token_index, token_mask = _padded(table[:, 2], table[:, 3])
        steps, tokens = self._steps.data, self._tokens.data["tokens"]

        def pad(values: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, fill: float) -> torch.Tensor:
            out = values[index]
            return out.masked_fill(~mask.view(*mask.shape, *([1] * (out.dim() - 2))), fill)

        return TrajectoryBatch(
            instruction=pad(tokens, token_index, token_mask, self.pad_token),
            instruction_mask=token_mask,
            viewpoints=pad(steps["viewpoints"], step_index, step_mask, self.pad_viewpoint),
            actions=pad(steps["actions"], step_index, step_mask, self.pad_action),
            step_mask=step_mask,
            lengths=table[:, 1].clone(),
            instruction_lengths=table[:, 3].clone(),
            indices=indices,
            extras={k: pad(steps[k], step_index, step_mask, 0) for k in self.extra_keys},
        )

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        table = self._episodes.trimmed()["table"][self._first :].clone() if len(self) else None
        return {
            "format": FORMAT,
            "capacity": self.capacity,
            "pads": (self.pad_token, self.pad_action, self.pad_viewpoint),
            "steps": self._steps.trimmed(),
            "tokens": self._tokens.trimmed(),
            "table": table,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise ValueError(f"not a trajectory store state (expected format {FORMAT!r})")
        self.capacity = state["capacity"]
        self.pad_token, self.pad_action, self.pad_viewpoint = state["pads"]
        self._steps, self._tokens, self._episodes = _Flat(self.device), _Flat(self.device), _Flat(self.device)
        self._first = 0
        if state["table"] is not None:
            self._steps.append(state["steps"])
            self._tokens.append(state["tokens"])
            self._episodes.append({"table": state["table"]})

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` atomically (temp file + rename)."""
        atomic_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> TrajectoryStore:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"trajectory store file {str(path)!r} does not exist")
        store = cls(device=device)
        store.load_state_dict(load_file(path, device))
        return store


def _padded(start: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices ``[B, max(length)]`` of each range (clamped inside it) and the mask of real entries."""
    offsets = torch.arange(int(length.max()), device=start.device)
    mask = offsets < length.unsqueeze(1)
    index = start.unsqueeze(1) + torch.minimum(offsets, length.unsqueeze(1) - 1)
    return index, mask


def _ranges(start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Concatenation of the ranges ``[start_i, start_i + length_i)``."""
    index, mask = _padded(start, length)
    return index[mask]
