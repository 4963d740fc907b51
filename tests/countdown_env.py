"""A tiny deterministic protocol env for engine tests that need no emulator."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from lodestar.envs.base import EpisodeStatistics, StepResult, VecEnv


class CountdownEnv(VecEnv):
    """Env ``i`` counts ``t`` up; obs = [env, episode, t]; reward = action + 1.

    Episodes of env ``i`` terminate after ``lengths[i]`` steps, or are truncated at ``limit``.
    """

    def __init__(self, lengths: list[int], limit: int = 1000, device: str = "cpu") -> None:
        self.num_envs = len(lengths)
        self.device = torch.device(device)
        self.lengths = torch.tensor(lengths, device=self.device)
        self.limit = limit
        self.single_observation_space = gym.spaces.Box(0, np.inf, (3,), np.float32)
        self.single_action_space = gym.spaces.Discrete(3)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.episode = torch.zeros_like(self.t)
        self.stats = EpisodeStatistics(self.num_envs, self.device)

    def _obs(self) -> torch.Tensor:
        env_ids = torch.arange(self.num_envs, device=self.device)
        return torch.stack([env_ids, self.episode, self.t], dim=1).float()

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self.t.zero_()
        self.episode.zero_()
        self.stats.reset()
        return self._obs()

    def step(self, actions: torch.Tensor) -> StepResult:
        self.t += 1
        reward = actions.to(torch.float32) + 1.0
        terminated = self.t >= self.lengths
        truncated = (self.t >= self.limit) & ~terminated
        done = terminated | truncated
        final_obs = self._obs()
        episode_return, episode_length = self.stats.update(reward, done)
        self.t = torch.where(done, torch.zeros_like(self.t), self.t)
        self.episode = self.episode + done.long()
        info = {"final_obs": final_obs, "episode_return": episode_return, "episode_length": episode_length}
        return self._obs(), reward, terminated, truncated, info
