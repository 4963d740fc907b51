"""A tiny protocol env that an agent can learn in a few hundred steps: name the cue you are shown."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from lodestar.envs.base import EpisodeStatistics, StepResult, VecEnv, select_rows


class CueEnv(VecEnv):
    """Each step shows a random cue (one-hot of ``num_cues``); reward 1 when the action names it, else 0.

    Episodes terminate after ``length`` steps, so a uniformly random policy returns
    ``length / num_cues`` on average and a perfect one ``length``. The best action depends on the
    observation, so only a policy that reads it can do better than chance.
    """

    def __init__(self, num_envs: int, num_cues: int = 2, length: int = 8, seed: int = 0) -> None:
        self.num_envs, self.num_cues, self.length = num_envs, num_cues, length
        self.device = torch.device("cpu")
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (num_cues,), np.float32)
        self.single_action_space = gym.spaces.Discrete(num_cues)
        self.generator = torch.Generator().manual_seed(seed)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.cue = torch.zeros(num_envs, dtype=torch.long)
        self.stats = EpisodeStatistics(num_envs, self.device)

    def _show_new_cue(self) -> torch.Tensor:
        self.cue = torch.randint(0, self.num_cues, (self.num_envs,), generator=self.generator)
        return torch.nn.functional.one_hot(self.cue, self.num_cues).float()

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.generator.manual_seed(seed)
        self.t.zero_()
        self.stats.reset()
        return self._show_new_cue()

    def step(self, actions: torch.Tensor) -> StepResult:
        reward = (actions.long() == self.cue).float()
        final_obs = torch.nn.functional.one_hot(self.cue, self.num_cues).float()
        self.t += 1
        terminated = self.t >= self.length
        episode_return, episode_length = self.stats.update(reward, terminated)
        self.t.masked_fill_(terminated, 0)
        obs = self._show_new_cue()
        info = {
            "final_obs": select_rows(terminated, final_obs, obs),
            "episode_return": episode_return,
            "episode_length": episode_length,
        }
        return obs, reward, terminated, torch.zeros_like(terminated), info
