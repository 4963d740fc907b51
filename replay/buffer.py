"""The replay buffer the DQN agent uses: storage + frame store + sampler + writer, on one device.

``num_envs`` env streams are written lock-step, one row per :meth:`ReplayBuffer.add`; transition
``index = row * num_envs + env``. Each stream keeps its own episode boundaries, so n-step windows and
frame stacks never mix streams or episodes. A transition becomes sampleable once its n-step window is
complete or ends inside the stored steps; the newest ``n - 1`` steps of a running episode wait
(:class:`~lodestar.replay.writer.StreamWriter`). n-step returns are folded at sample time
(:func:`~lodestar.replay.nstep.fold_nstep`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lodestar.replay.frames import FrameStackStorage
from lodestar.replay.nstep import fold_nstep
from lodestar.replay.samplers import PrioritizedSampler, Sampler, UniformSampler
from lodestar.replay.storage import TensorStorage
from lodestar.replay.writer import StreamWriter
from lodestar.runtime.checkpoint import atomic_save, load_file
from lodestar.runtime.device import resolve_device

FORMAT = "lodestar.replay/1"


@dataclass
class ReplayBatch:
    """A sampled batch; n-step quantities are already folded in."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor  # sum_{j<k} gamma^j r_{t+j}, float32
    discount: torch.Tensor  # gamma^k, or 0 when the episode terminated within the k steps, float32
    next_obs: torch.Tensor  # observation to bootstrap from (the true final one at a truncation)
    weights: torch.Tensor  # importance weights (ones for uniform sampling), float32
    indices: torch.Tensor  # buffer indices, for update_priorities


class ReplayBuffer:
    """Replay of transitions from ``num_envs`` lock-step streams.

    ``frame_stack=None`` stores whole ``obs`` and ``next_obs`` per transition; ``frame_stack=k`` expects
    ``obs_shape == (k, *frame_shape)`` stacks and stores each frame once per stream
    (:class:`~lodestar.replay.frames.FrameStackStorage`). ``capacity`` counts transitions over all streams and
    must be a multiple of ``num_envs``.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        *,
        frame_stack: int | None = None,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.5,
        beta: float = 0.4,
        priority_eps: float = 1e-6,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if capacity < num_envs or capacity % num_envs:
            raise ValueError(
                f"capacity {capacity} must be a positive multiple of num_envs {num_envs} "
                f"(every env stream gets capacity / num_envs slots)"
            )
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if capacity // num_envs < n_step + 1:
            raise ValueError(
                f"capacity {capacity} gives each of the {num_envs} streams {capacity // num_envs} slots; "
                f"n_step={n_step} needs at least {n_step + 1}"
            )
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        obs_shape = tuple(int(s) for s in obs_shape)
        if frame_stack is not None and (len(obs_shape) < 2 or obs_shape[0] != frame_stack):
            raise ValueError(
                f"frame_stack={frame_stack} needs obs_shape (frame_stack, H, W, ...), got {obs_shape}"
            )
        self._config = {
            "capacity": int(capacity),
            "num_envs": int(num_envs),
            "obs_shape": obs_shape,
            "obs_dtype": str(obs_dtype).removeprefix("torch."),
            "frame_stack": frame_stack,
            "n_step": int(n_step),
            "gamma": float(gamma),
            "prioritized": bool(prioritized),
            "alpha": float(alpha),
            "priority_eps": float(priority_eps),
        }
        self.capacity = int(capacity)
        self.num_envs = int(num_envs)
        self.rows = self.capacity // self.num_envs
        self.obs_shape = obs_shape
        self.obs_dtype = obs_dtype
        self.frame_stack = frame_stack
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.device = resolve_device(device)
        d = self.device

        self._fields = TensorStorage(self.capacity, d)
        self._frames: FrameStackStorage | None = None
        if frame_stack is not None:
            # One frame per step plus one per episode start; the slack keeps episodes of >= ~200 steps
            # from ever evicting a transition early and guarantees the newest n steps stay intact.
            frames = self.rows + self.rows // 200 + (self.n_step + 1) * (frame_stack + 1)
            self._frames = FrameStackStorage(
                self.capacity, self.num_envs, frame_stack, obs_shape[1:], obs_dtype, frames, d
            )
        self.sampler: Sampler
        if prioritized:
            self.sampler = PrioritizedSampler(self.capacity, alpha, beta, priority_eps, d)
        else:
            self.sampler = UniformSampler(self.capacity, d)
            self._beta = float(beta)

        self.writer = StreamWriter(
            self._fields, self.sampler, self.num_envs, self.n_step, obs_shape, obs_dtype, self._frames
        )

    # -- sizes ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Transitions stored (all streams together)."""
        return len(self._fields)

    @property
    def num_sampleable(self) -> int:
        """Transitions that :meth:`sample` can return now."""
        return len(self.sampler)

    @property
    def beta(self) -> float:
        return self.sampler.beta if isinstance(self.sampler, PrioritizedSampler) else self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        if isinstance(self.sampler, PrioritizedSampler):
            self.sampler.beta = value
        elif value < 0:
            raise ValueError(f"beta must be >= 0, got {value}")
        else:
            self._beta = float(value)

    # -- writing --------------------------------------------------------------------------------
    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        next_obs: torch.Tensor,
        *,
        episode_end: torch.Tensor | None = None,
    ) -> None:
        """Store one step of every stream (each argument batched over ``num_envs``).

        ``next_obs`` is the true next observation (the env's ``final_obs`` where an episode ended).
        ``terminated`` stops bootstrapping (it may include life losses); ``episode_end`` says which
        streams start a new episode at the next add (default ``terminated | truncated``).
        """
        obs = self._check_obs("obs", obs)
        next_obs = self._check_obs("next_obs", next_obs)
        action = self._check_batched("action", action, None)
        reward = self._check_batched("reward", reward, ()).to(torch.float32)
        terminated = self._check_flag("terminated", terminated)
        truncated = self._check_flag("truncated", truncated)
        episode_end = (
            terminated | truncated if episode_end is None else self._check_flag("episode_end", episode_end)
        )
        self.writer.write(obs, action, reward, terminated, truncated, next_obs, episode_end)

    # -- reading --------------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch:
        """Draw ``batch_size`` transitions (uniformly or by priority, with replacement)."""
        available = len(self.sampler)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size > available:
            raise ValueError(
                f"cannot sample {batch_size} transitions: the buffer holds {len(self)}, of which {available} "
                f"are sampleable (with n_step={self.n_step} the newest {self.n_step - 1} steps of a running "
                "episode wait for their window)"
            )
        indices, weights = self.sampler.sample(batch_size, generator)
        return self._gather(indices, weights)

    def gather(self, indices: torch.Tensor) -> ReplayBatch:
        """The batch for given (sampleable) ``indices``, with unit weights."""
        indices = indices.reshape(-1).to(device=self.device, dtype=torch.long)
        if indices.numel() and bool(((indices < 0) | (indices >= self.capacity)).any()):
            raise ValueError(f"indices must lie in [0, {self.capacity})")
        if not bool(self.sampler.is_sampleable(indices).all()):
            bad = indices[~self.sampler.is_sampleable(indices)][:5].tolist()
            raise ValueError(
                f"indices {bad} are not sampleable (empty, overwritten or awaiting their n-step window)"
            )
        return self._gather(indices, torch.ones(indices.shape, dtype=torch.float32, device=self.device))

    def _gather(self, indices: torch.Tensor, weights: torch.Tensor) -> ReplayBatch:
        f = self._fields
        if self.n_step == 1:  # the fold below reduces to this; skipping it halves the op count
            # index_select, not advanced indexing: a fraction of the per-op cost on CPU.
            reward = f["reward"].index_select(0, indices)
            terminated = f["terminated"].index_select(0, indices)
            discount = torch.where(terminated, 0.0, self.gamma).to(torch.float32)
            bootstrap = indices
        else:
            rows, envs = indices // self.num_envs, indices % self.num_envs
            offsets = torch.arange(self.n_step, device=self.device)
            window = ((rows.unsqueeze(1) + offsets) % self.rows) * self.num_envs + envs.unsqueeze(1)
            reward, discount, steps = fold_nstep(
                f["reward"][window], f["terminated"][window], f["stop"][window], self.gamma
            )
            bootstrap = ((rows + steps - 1) % self.rows) * self.num_envs + envs
        if self._frames is None:
            obs, next_obs = f["obs"].index_select(0, indices), f["next_obs"].index_select(0, bootstrap)
        else:
            obs, next_obs = self._frames.obs(indices), self._frames.next_obs(bootstrap)
        action = f["action"].index_select(0, indices)
        return ReplayBatch(obs, action, reward, discount, next_obs, weights, indices)

    def update_priorities(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """New priorities (e.g. ``|td error|``) for sampled indices; a no-op for uniform replay."""
        self.sampler.update_priorities(indices, priorities)

    def recent_reward_mean(self, window: int = 10_000) -> float:
        """Mean stored reward over the newest ``window`` transitions (0.0 when empty)."""
        count = min(window, len(self))
        if count == 0:
            return 0.0
        newest = (self._fields.cursor - 1 - torch.arange(count, device=self.device)) % self.capacity
        return float(self._fields["reward"][newest].mean())

    def nbytes(self) -> int:
        """Bytes held by every tensor of the buffer (storage, frames, sampler, per-stream state)."""
        total = self._fields.nbytes() + self.sampler.nbytes()
        if self._frames is not None:
            total += self._frames.nbytes()
        return total + self.writer.nbytes()

    # -- validation -----------------------------------------------------------------------------
    def _check_batched(
        self, name: str, value: torch.Tensor, item_shape: tuple[int, ...] | None
    ) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() == 0 or value.shape[0] != self.num_envs:
            raise ValueError(
                f"{name} must have leading dimension num_envs={self.num_envs}, got {tuple(value.shape)}"
            )
        if item_shape is not None and tuple(value.shape[1:]) != item_shape:
            raise ValueError(
                f"{name} must have shape {(self.num_envs, *item_shape)}, got {tuple(value.shape)}"
            )
        return value.to(self.device)

    def _check_obs(self, name: str, value: torch.Tensor) -> torch.Tensor:
        value = self._check_batched(name, value, self.obs_shape)
        if value.dtype != self.obs_dtype:
            raise ValueError(f"{name} has dtype {value.dtype}, the buffer stores {self.obs_dtype}")
        return value

    def _check_flag(self, name: str, value: torch.Tensor) -> torch.Tensor:
        value = self._check_batched(name, value, ())
        if value.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {value.dtype}")
        return value

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: contents, cursors, sampler state, stream state."""
        return {
            "format": FORMAT,
            "config": dict(self._config),
            "beta": self.beta,
            "writer": self.writer.state_dict(),
            "fields": self._fields.state_dict(),
            "frames": None if self._frames is None else self._frames.state_dict(),
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the buffer must have been built with the same arguments.

        The state's tensors are adopted (moved to this buffer's device), not copied.
        """
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise ValueError(f"not a replay buffer state (expected format {FORMAT!r})")
        saved = dict(state["config"])
        saved["obs_shape"] = tuple(saved["obs_shape"])
        for key, mine in self._config.items():
            if saved.get(key) != mine:
                raise ValueError(
                    f"replay state was saved with {key}={saved.get(key)!r}, this buffer has {key}={mine!r}"
                )
        self._fields.load_state_dict(state["fields"])
        if self._frames is not None:
            self._frames.load_state_dict(state["frames"])
        self.sampler.load_state_dict(state["sampler"])
        self.beta = float(state["beta"])
        self.writer.load_state_dict(state["writer"])

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` atomically (temp file + rename)."""
        atomic_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ReplayBuffer:
        """Rebuild a buffer saved with :meth:`save`, on ``device``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"replay buffer file {str(path)!r} does not exist")
        state = load_file(path, device)
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a saved replay buffer (expected format {FORMAT!r})")
        config = dict(state["config"])
        config["obs_dtype"] = getattr(torch, config["obs_dtype"])
        capacity, num_envs = config.pop("capacity"), config.pop("num_envs")
        obs_shape, obs_dtype = config.pop("obs_shape"), config.pop("obs_dtype")
        buffer = cls(
            capacity, num_envs, obs_shape, obs_dtype, beta=float(state["beta"]), device=device, **config
        )
        buffer.load_state_dict(state)
        return buffer
