"""Frame-deduplicated storage of stacked image observations from lock-step env streams.

An Atari observation is a stack of the last ``k`` frames, and consecutive observations of one episode
share ``k - 1`` of them. Storing ``obs`` and ``next_obs`` stacks per transition keeps every frame
``2k`` times; here each stream (one env of a vector env) appends its frames once to its own ring, and
a transition records only where its newest ``obs`` frame sits (``pos``), how many frames of its
``obs`` stack belong to its episode (``depth``) and how the rest is padded.

Per transition ``t`` of a stream, the ring holds ``..., obs_t[-1] at pos, next_obs_t[-1] at pos + 1``;
``obs_t`` is rebuilt from positions ``pos-k+1 .. pos`` and ``next_obs_t`` from ``pos-k+2 .. pos+1``.
Positions before the episode's first frame are never read: they are filled the way the env filled
them at reset. Three reset layouts are recognised so that rebuilt stacks equal the env's exactly:

- older slots all zero (ale-py's ``AtariVectorEnv``): one frame is stored, the rest zero-filled;
- older slots repeating the newest frame (gymnasium's ``FrameStackObservation``): one frame stored;
- anything else (e.g. a stack that continues across a life loss): the whole stack is stored.

The episode's final ``next_obs`` frame is kept even though the env already returned the next
episode's reset observation, so bootstrapping at a truncation sees the true final observation.

A stream writes one frame per step plus one (or ``k``) per episode start, so its ring holds a few more
frames than the stream has transition slots. If very short episodes use up that margin, the ring
overwrites frames of a stream's oldest transitions before their slots are reused; :meth:`stale`
reports those so that the buffer stops sampling them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lodestar.replay.storage import filled_part, into_capacity, zero_tail_start


class FrameStackStorage:
    """Frame rings for ``num_envs`` streams plus per-transition stack metadata.

    Transition index layout: ``index = row * num_envs + env`` (rows are written lock-step by all
    streams), so ``capacity`` must be a multiple of ``num_envs``.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        stack: int,
        frame_shape: tuple[int, ...],
        dtype: torch.dtype,
        frames_per_stream: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {stack}")
        if num_envs < 1 or capacity % num_envs:
            raise ValueError(f"capacity {capacity} must be a positive multiple of num_envs {num_envs}")
        if frames_per_stream < 2 * stack + 2:
            raise ValueError(f"frames_per_stream must be >= {2 * stack + 2}, got {frames_per_stream}")
        self.capacity = int(capacity)
        self.num_envs = int(num_envs)
        self.stack = int(stack)
        self.frame_shape = tuple(frame_shape)
        self.dtype = dtype
        self.frames_per_stream = int(frames_per_stream)
        self.device = torch.device(device)
        d = self.device
        self.ring = torch.zeros((num_envs, frames_per_stream, *self.frame_shape), dtype=dtype, device=d)
        self.frame_count = torch.zeros(num_envs, dtype=torch.long, device=d)
        self.pos = torch.zeros(capacity, dtype=torch.long, device=d)
        self.depth = torch.zeros(capacity, dtype=torch.uint8, device=d)
        self.zero_pad = torch.zeros(capacity, dtype=torch.bool, device=d)
        # Depth and padding of each stream's newest stack (the last next_obs written).
        self._stream_depth = torch.zeros(num_envs, dtype=torch.long, device=d)
        self._stream_zero_pad = torch.zeros(num_envs, dtype=torch.bool, device=d)
        self._envs = torch.arange(num_envs, device=d)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return (self.stack, *self.frame_shape)

    def write(
        self, indices: torch.Tensor, obs: torch.Tensor, next_obs: torch.Tensor, new_episode: torch.Tensor
    ) -> None:
        """Record one lock-step row: ``indices[e]`` is the slot of stream ``e``'s transition.

        ``new_episode[e]`` says that ``obs[e]`` does not continue the stream's previous ``next_obs``
        (an episode start), so its frames must be stored. ``next_obs`` must be ``obs`` shifted by one
        frame, as a frame-stacking env returns it (the true final observation where an episode ended).
        """
        k = self.stack
        # One comparison with a host answer; the per-env one only to name the offenders.
        if not torch.equal(next_obs[:, :-1], obs[:, 1:]):
            shifted = (next_obs[:, :-1] != obs[:, 1:]).flatten(1).any(1)
            envs = shifted.nonzero().flatten().tolist()
            raise ValueError(
                f"env(s) {envs}: next_obs is not obs shifted by one frame; pass the true next observation "
                "(info['final_obs'] where an episode ended), stacked the same way as obs"
            )
        depth, zero_pad = self._stream_depth, self._stream_zero_pad
        if bool(new_episode.any()):
            depth, zero_pad = self._write_episode_starts(obs, new_episode)
        self.pos[indices] = self.frame_count - 1
        self.depth[indices] = depth.to(torch.uint8)
        self.zero_pad[indices] = zero_pad
        self._flat_ring.index_copy_(0, self._slots(self._envs, self.frame_count), next_obs[:, -1])
        self.frame_count += 1
        self._stream_depth = torch.clamp(depth + 1, max=k)
        self._stream_zero_pad = zero_pad

    def _write_episode_starts(
        self, obs: torch.Tensor, new_episode: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the frames of reset stacks; returns every stream's ``obs`` depth and padding mode."""
        k = self.stack
        older = obs[:, :-1].flatten(1)
        zero = (older == 0).all(1)
        repeat = (obs[:, :-1] == obs[:, -1:]).flatten(1).all(1)
        compact = new_episode & (zero | repeat)
        full = new_episode & ~compact
        count = torch.where(full, k, 0) + compact.long()
        slot = torch.arange(k, device=self.device).unsqueeze(0)
        selected = slot >= (k - count).unsqueeze(1)
        position = self.frame_count.unsqueeze(1) + slot - (k - count).unsqueeze(1)
        env = self._envs.unsqueeze(1).expand(-1, k)
        self._flat_ring.index_copy_(0, self._slots(env[selected], position[selected]), obs[selected])
        self.frame_count += count
        depth = torch.where(new_episode, torch.where(full, k, 1), self._stream_depth)
        zero_pad = torch.where(new_episode, compact & zero, self._stream_zero_pad)
        return depth, zero_pad

    def _slots(self, env: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Row of ``_flat_ring`` holding absolute frame ``position`` of stream ``env``."""
        return env * self.frames_per_stream + position % self.frames_per_stream

    @property
    def _flat_ring(self) -> torch.Tensor:
        return self.ring.view(-1, *self.frame_shape)

    def obs(self, indices: torch.Tensor) -> torch.Tensor:
        """Rebuilt ``obs`` stacks ``[B, k, *frame_shape]`` of the transitions at ``indices``."""
        return self._stacks(indices, 0)

    def next_obs(self, indices: torch.Tensor) -> torch.Tensor:
        """Rebuilt ``next_obs`` stacks of the transitions at ``indices``."""
        return self._stacks(indices, 1)

    def _stacks(self, indices: torch.Tensor, shift: int) -> torch.Tensor:
        k = self.stack
        env = indices % self.num_envs
        pos = self.pos[indices]
        start = pos - self.depth[indices].long() + 1
        wanted = pos.unsqueeze(1) + torch.arange(shift - k + 1, shift + 1, device=self.device)
        # Slots before the episode's first frame: repeat that frame, then zero it in zero-pad mode.
        source = torch.maximum(wanted, start.unsqueeze(1))
        # index_select on the flat ring is far faster than 2-D advanced indexing on CPU.
        slots = self._slots(env.unsqueeze(1), source).flatten()
        frames = self._flat_ring.index_select(0, slots).view(*source.shape, *self.frame_shape)
        padding = (wanted < start.unsqueeze(1)) & self.zero_pad[indices].unsqueeze(1)
        # Unconditional (no `padding.any()` test): a host read here would stall CUDA every sample.
        rows = frames.view(padding.numel(), -1)
        if frames.is_floating_point():  # 0 * nan is nan: only masking zeroes every value
            rows.masked_fill_(padding.view(-1, 1), 0)
        else:  # integer pixels: a multiply by 0/1 is ~30x faster than masked_fill_ on CPU
            rows.mul_((~padding).view(-1, 1).to(frames.dtype))
        return frames

    def stale(self, indices: torch.Tensor) -> torch.Tensor:
        """Whether the ring has already overwritten frames that the transitions at ``indices`` need."""
        env = indices % self.num_envs
        start = self.pos[indices] - self.depth[indices].long() + 1
        return start < self.frame_count[env] - self.frames_per_stream

    def nbytes(self) -> int:
        tensors = (self.ring, self.frame_count, self.pos, self.depth, self.zero_pad)
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue exactly, with only the written part of the rings and of the
        per-transition metadata (what lies past it is still all zeros)."""
        frames_written = int(self.frame_count.max())
        transitions = zero_tail_start(self.pos, self.depth, self.zero_pad)
        return {
            "shape": (self.capacity, self.num_envs, self.stack, self.frame_shape, self.frames_per_stream),
            "ring": filled_part(self.ring, frames_written, dim=1),
            "frame_count": self.frame_count,
            "pos": filled_part(self.pos, transitions),
            "depth": filled_part(self.depth, transitions),
            "zero_pad": filled_part(self.zero_pad, transitions),
            "stream_depth": self._stream_depth,
            "stream_zero_pad": self._stream_zero_pad,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; full-size tensors are adopted (moved to the device), not
        copied, partial ones are put back into zeroed full-size tensors."""
        mine = (self.capacity, self.num_envs, self.stack, self.frame_shape, self.frames_per_stream)
        theirs = tuple(state["shape"])
        if (*theirs[:3], tuple(theirs[3]), theirs[4]) != mine:
            raise ValueError(
                f"frame storage state has (capacity, num_envs, stack, frame_shape, frames_per_stream)="
                f"{theirs}, this storage {mine}"
            )
        d = self.device
        ring_shape = (self.num_envs, self.frames_per_stream, *self.frame_shape)
        self.ring = into_capacity(state["ring"], ring_shape, d, "frame ring", dim=1).to(dtype=self.dtype)
        self.frame_count = state["frame_count"].to(d)
        self.pos = into_capacity(state["pos"], (self.capacity,), d, "frame positions")
        self.depth = into_capacity(state["depth"], (self.capacity,), d, "stack depths")
        self.zero_pad = into_capacity(state["zero_pad"], (self.capacity,), d, "stack padding")
        self._stream_depth = state["stream_depth"].to(d)
        self._stream_zero_pad = state["stream_zero_pad"].to(d)
