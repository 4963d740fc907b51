"""The vector-environment protocol shared by every Lodestar environment.

Every environment is batched: ``reset`` and ``step`` take and return torch tensors (or dicts of
tensors) whose leading dimension is ``num_envs`` and which live on ``env.device``.

Autoreset convention (gymnasium's ``SAME_STEP``): when an episode ends at a step, the observation
returned by that step is already the first observation of the next episode. The true last
observation of the finished episode is never lost: it is in ``info["final_obs"]`` (same structure as
the observation; rows of envs that did not finish hold the returned observation).

Episode statistics come out the same way for every environment: ``info["episode_return"]`` (float32,
raw undiscounted, unclipped return) and ``info["episode_length"]`` (int64, agent steps) hold, for the
rows where ``terminated | truncated``, the statistics of the episode that just ended, and zero
elsewhere. :class:`EpisodeStatistics` keeps the running sums on device.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, overload

import gymnasium as gym
import torch

Observation = torch.Tensor | dict[str, torch.Tensor]
StepResult = tuple[Observation, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]

AUTORESET_MODE = gym.vector.AutoresetMode.SAME_STEP


class VecEnv(abc.ABC):
    """Batched environment whose inputs and outputs are tensors on one device."""

    num_envs: int
    device: torch.device
    single_observation_space: gym.Space
    single_action_space: gym.Space
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AUTORESET_MODE}

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> Observation:
        """Reset every env and return the batched first observation."""

    @abc.abstractmethod
    def step(self, actions: torch.Tensor) -> StepResult:
        """Advance every env by one agent step.

        Returns ``(obs, reward, terminated, truncated, info)``: reward is float32 ``[N]`` (raw),
        terminated/truncated are bool ``[N]``; see the module docstring for ``info``.
        """

    def close(self) -> None:  # noqa: B027 - a no-op is the right default for envs holding nothing
        """Release emulator threads, files or other resources."""

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EpisodeStatistics:
    """Running raw return and length per env, kept on device.

    Call :meth:`update` once per step with the raw reward and done mask; it returns the
    ``(episode_return, episode_length)`` tensors that go into ``info``.
    """

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self._returns = torch.zeros(num_envs, dtype=torch.float32, device=device)
        self._lengths = torch.zeros(num_envs, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self._returns.zero_()
        self._lengths.zero_()

    def update(self, reward: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._returns += reward.to(torch.float32)
        self._lengths += 1
        episode_return = torch.where(done, self._returns, torch.zeros_like(self._returns))
        episode_length = torch.where(done, self._lengths, torch.zeros_like(self._lengths))
        self._returns.masked_fill_(done, 0.0)
        self._lengths.masked_fill_(done, 0)
        return episode_return, episode_length


@overload
def select_rows(done: torch.Tensor, final: torch.Tensor, current: torch.Tensor) -> torch.Tensor: ...
@overload
def select_rows(
    done: torch.Tensor, final: dict[str, torch.Tensor], current: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]: ...
@overload
def select_rows(done: torch.Tensor, final: Observation, current: Observation) -> Observation: ...
def select_rows(done: torch.Tensor, final: Observation, current: Observation) -> Observation:
    """Per-row choice between two batched observations of one structure (tensor or dict of tensors)."""
    if isinstance(current, dict):
        finals = dict_observation(final)
        return {key: select_rows(done, finals[key], value) for key, value in current.items()}
    if isinstance(final, dict):
        raise TypeError("select_rows needs two observations of one structure, got a dict and a tensor")
    mask = done.view(-1, *([1] * (current.dim() - 1)))
    return torch.where(mask, final, current)


def tensor_observation(obs: Observation) -> torch.Tensor:
    """``obs`` of an env whose observations are one tensor (Atari); TypeError otherwise."""
    if not isinstance(obs, torch.Tensor):
        raise TypeError(f"expected a tensor observation, got {type(obs).__name__}")
    return obs


def dict_observation(obs: Observation) -> dict[str, torch.Tensor]:
    """``obs`` of an env whose observations are dicts of tensors (the navigation env); TypeError otherwise."""
    if not isinstance(obs, dict):
        raise TypeError(f"expected a dict of tensors as observation, got {type(obs).__name__}")
    return obs
