"""The writer: puts lock-step steps of ``num_envs`` env streams into storage and keeps the sampler's
sampleable set right.

Each :meth:`StreamWriter.write` fills one row (transition ``index = row * num_envs + env``, rows reused
circularly) and then:

- disables the transitions being overwritten;
- detects episode starts per stream (the caller's ``episode_end`` of the previous step, or an ``obs``
  that is not the stream's previous ``next_obs``, e.g. after a manual reset); an unannounced break
  ends the previous transition's n-step chain like a truncation;
- enables the transitions whose n-step window became complete or ends in a stop
  (:func:`~lodestar.replay.nstep.ready_in_window`);
- with frame storage, disables each stream's oldest transitions whose frames the ring overwrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lodestar.replay.frames import FrameStackStorage
from lodestar.replay.nstep import ready_in_window
from lodestar.replay.samplers import Sampler
from lodestar.replay.storage import TensorStorage


class StreamWriter:
    """Row-by-row writer for ``num_envs`` streams over a storage of ``rows * num_envs`` transitions."""

    def __init__(
        self,
        fields: TensorStorage,
        sampler: Sampler,
        num_envs: int,
        n_step: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        frames: FrameStackStorage | None = None,
    ) -> None:
        if fields.capacity % num_envs or fields.capacity // num_envs < n_step + 1:
            raise ValueError(
                f"storage capacity {fields.capacity} must be a multiple of num_envs {num_envs} "
                f"with at least n_step + 1 = {n_step + 1} rows"
            )
        self.fields, self.sampler, self.frames = fields, sampler, frames
        self.num_envs, self.n_step = num_envs, n_step
        self.rows = fields.capacity // num_envs
        self.device = fields.device
        self._on_cpu = self.device.type == "cpu"
        d = self.device
        self.steps_written = 0
        self._envs = torch.arange(num_envs, device=d)
        self._last_next_obs = torch.zeros((num_envs, *obs_shape), dtype=obs_dtype, device=d)
        # Streams whose next step starts a new episode (all of them before the first write).
        self._episode_over = torch.ones(num_envs, dtype=torch.bool, device=d)
        # Per stream, the oldest step whose frames are still in the ring.
        self._valid_from = torch.zeros(num_envs, dtype=torch.long, device=d)

    @property
    def cursor_row(self) -> int:
        """The row the next write fills."""
        return self.steps_written % self.rows

    def write(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        next_obs: torch.Tensor,
        episode_end: torch.Tensor,
    ) -> torch.Tensor:
        """Store one step of every stream (validated tensors on the device); returns the indices."""
        indices = self.cursor_row * self.num_envs + self._envs
        if self._on_cpu and torch.equal(obs, self._last_next_obs):
            # Every stream continues (the usual step): a CPU shortcut of several small ops; on an
            # accelerator it would add a host sync, so there the comparison stays on the device.
            new_episode = self._episode_over
        else:
            new_episode = self._episode_over | (obs != self._last_next_obs).flatten(1).any(1)
        if self.steps_written > 0:
            # The previous row is a contiguous slice: an in-place or on a view, no gather + scatter.
            previous = (self.steps_written - 1) % self.rows * self.num_envs
            self.fields["stop"][previous : previous + self.num_envs] |= new_episode
        if self.steps_written >= self.rows and self.n_step > 1:  # n = 1 renews the row after the write
            self.sampler.disable(indices)
        record = {
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "stop": terminated | truncated | episode_end,
        }
        if self.frames is None:
            record.update(obs=obs, next_obs=next_obs)
        self.fields.add(record)
        if self.frames is not None:
            self.frames.write(indices, obs, next_obs, new_episode)
        self.steps_written += 1
        self._enable_ready(indices)
        if self.frames is not None:
            self._disable_stale()
        self._last_next_obs.copy_(next_obs)
        self._episode_over = episode_end.clone()
        return indices

    def _enable_ready(self, row: torch.Tensor) -> None:
        """Enable the newest transitions whose n-step window is now complete or ends in a stop.

        ``row`` holds the indices just written. With n = 1 they are complete at once: their slots are
        renewed (the overwritten items' state dropped, the new ones enabled) in one sampler call.
        """
        n, written = self.n_step, self.steps_written
        if n == 1:
            self.sampler.renew(row)
            return
        steps = torch.arange(max(written - n, 0), written, device=self.device)
        window = (steps % self.rows).unsqueeze(1) * self.num_envs + self._envs
        ready = ready_in_window(self.fields["stop"][window], oldest_complete=written >= n)
        self.sampler.enable(window[ready])

    def _disable_stale(self) -> None:
        """Disable each stream's oldest transitions whose frames the ring has overwritten.

        Stale transitions form a prefix of each stream (oldest first). One step writes at most k + 1
        frames per stream, which can stale at most 2k transitions, so a window of 2k + 2 steps from
        the oldest valid one finds them all.
        """
        assert self.frames is not None
        span = 2 * self.frames.stack + 2
        oldest = torch.clamp(self._valid_from, min=max(self.steps_written - self.rows, 0))
        steps = oldest.unsqueeze(0) + torch.arange(span, device=self.device).unsqueeze(1)
        indices = (steps % self.rows) * self.num_envs + self._envs
        stale = self.frames.stale(indices) & (steps < self.steps_written)
        self.sampler.disable(indices[stale])
        self._valid_from = oldest + stale.long().cumprod(0).sum(0)

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for t in (self._last_next_obs, self._episode_over, self._valid_from)
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps_written": self.steps_written,
            "last_next_obs": self._last_next_obs,
            "episode_over": self._episode_over,
            "valid_from": self._valid_from,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the tensors are adopted (moved to the device), not copied."""
        d = self.device
        self.steps_written = int(state["steps_written"])
        self._last_next_obs = state["last_next_obs"].to(d)
        self._episode_over = state["episode_over"].to(d)
        self._valid_from = state["valid_from"].to(d)
